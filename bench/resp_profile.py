#!/usr/bin/env python3
"""bench/resp_profile.py: where a redis-benchmark SET and GET spend the machine, per request.

The redis point of bench/run.py says how fast; this says where the time goes, per process:
CPU (user + system, from /proc), syscalls and context switches (`perf stat`) per request on
each of the three kvserver nodes and on redis-benchmark itself, the share of requests that
node 1 forwards to another node's leader (the UDP client requests the other nodes receive)
and the datagrams each node receives per request. The same is measured against one
redis-server with `appendfsync always`, so the two columns compare process by process.
Counts, unlike wall-clock figures, barely move with this shared machine's load.

Starts a fresh 3-node cluster the way bench/run.py does (8 shards, fsync on, free loopback
ports, temp data dirs), waits for leaders, and runs `redis-benchmark -c 50 -P 1 -d 100
-r 10000 -t set` then `-t get` against node 1. Needs `perf` and permission to read
tracepoints (root here), redis-benchmark and redis-server.

    python3 bench/resp_profile.py --target target/release              # ReadIndex reads
    python3 bench/resp_profile.py --target target/release --lease      # lease reads
    python3 bench/resp_profile.py --target target/release --record DIR # + perf record of node 1 (GET, SET)
    python3 bench/resp_profile.py --target target/release --leaders-on-1  # no forward hop
    perf probe -x /lib/x86_64-linux-gnu/libc.so.6 -a malloc   # once, for --mallocs
    python3 bench/resp_profile.py --target target/release --mallocs    # + libc mallocs per request

`--mallocs` counts calls of libc's malloc (the kvserver nodes use glibc's allocator;
redis-server uses its own jemalloc, so it counts 0). The uprobe makes every malloc trap, so
CPU figures of a --mallocs run are inflated; take them from a run without it.
"""
import argparse, os, signal, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the cluster and redis-server helpers of bench/run.py)

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--target", required=True, help="directory holding release kvserver and kvcli")
p.add_argument("--lease", action="store_true", help="lease reads on (default: ReadIndex, the linearizable default)")
p.add_argument("--requests", type=int, default=50_000, help="requests per test (default 50,000)")
p.add_argument("--record", metavar="DIR",
               help="also `perf record -g` node 1 during GET into DIR/perf.data and during SET into "
                    "DIR/perf-set.data (DIR is created)")
p.add_argument("--mallocs", action="store_true",
               help="also count libc malloc calls per request (needs the probe_libc:malloc uprobe: "
                    "`perf probe -x <libc.so.6> -a malloc`)")
p.add_argument("--no-redis", action="store_true", help="skip the redis-server column")
p.add_argument("--leaders-on-1", action="store_true",
               help="first make node 1 lead every shard (kvcli shard leader), so that no GET is forwarded")
a = p.parse_args()


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def metric_sum(http_port, prefix):
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(prefix))


def measure(port, test, procs, auth, metrics=None, record=None):
    """Runs one redis-benchmark test against `port`; returns (csv row, per-process counts)."""
    before = {name: cpu_s(pid) for name, pid in procs.items()}
    m0 = {name: {k: metric_sum(hp, pre) for k, pre in metrics["what"].items()}
          for name, hp in metrics["ports"].items()} if metrics else {}
    events = "raw_syscalls:sys_enter,context-switches" + (",probe_libc:malloc" if a.mallocs else "")
    stat_out = tempfile.mktemp(prefix="perfstat-", dir=work)
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "--per-thread", "-e", events, "-o", stat_out,
                             "-p", ",".join(str(x) for x in procs.values())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = None
    if record:
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-o",
                                str(record), "-p", str(procs["node 1"])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-c", str(bench.REDIS_CONNECTIONS),
           "-P", "1", "-n", str(a.requests), "-d", str(bench.VALUE_SMALL), "-r", str(bench.KEYS), "--csv", "-e"]
    if auth:
        cmd += ["--user", auth[0], "-a", auth[1]]
    rb = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rb_cpu = 0.0
    while rb.poll() is None:
        try:
            rb_cpu = cpu_s(rb.pid)
        except OSError:
            pass
        time.sleep(0.05)
    out, err = rb.communicate()
    if rb.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {err[-1000:]}")
    for x in (stat, rec):
        if x:
            x.send_signal(signal.SIGINT)
            x.wait()
    row = bench.parse_redis_benchmark_csv(out)[test.upper()]
    n = a.requests
    counts = {name: {"cpu us": (cpu_s(pid) - before[name]) * 1e6 / n} for name, pid in procs.items()}
    # The last sample before it exited: a lower bound of the client's own CPU.
    counts["redis-benchmark"] = {"cpu us": rb_cpu * 1e6 / n}
    names = {str(pid): name for name, pid in procs.items()}
    for line in open(stat_out):
        f = line.strip().split(",")
        if len(f) < 4:
            continue
        try:
            value = float(f[1])
        except ValueError:
            continue
        pid = f[0].rsplit("-", 1)[-1]
        # --per-thread names threads, not processes: fold a process's threads together.
        owner = next((name for p_, name in names.items() if os.path.exists(f"/proc/{p_}/task/{pid}")), None)
        if owner:
            key = "syscalls" if "sys_enter" in f[3] else "mallocs" if "malloc" in f[3] else "switches"
            counts[owner][key] = counts[owner].get(key, 0.0) + value / n
    for name, hp in (metrics["ports"].items() if metrics else []):
        for k, pre in metrics["what"].items():
            counts[name][k] = (metric_sum(hp, pre) - m0[name][k]) / n
    os.unlink(stat_out)
    return row, counts


def show(title, row, counts):
    print(f"{title}: {row['rps']:,.0f} requests/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, c in counts.items():
        cells = ", ".join(f"{k} {v:.3f}" if k != "cpu us" else f"cpu {v:.1f} us" for k, v in c.items())
        print(f"  {name:16} {cells}")


work = Path(tempfile.mkdtemp(prefix="resp-profile-"))
bins = {"kvserver": Path(a.target) / "kvserver", "kvcli": Path(a.target) / "kvcli"}
cluster = bench.RaftkvCluster(bins, bench.BASE_SHARDS, work, lease_reads=a.lease)
server = None
if a.leaders_on_1:
    # An admin client key beside the bench one, for `kvcli shard leader`
    # (`kvserver keygen --config` makes the key named admin an admin).
    text = cluster.config.read_text()
    cluster.config.write_text(text.replace('client_key_files = ["keys/bench.key"]',
                                           'client_key_files = ["keys/bench.key", "keys/admin.key"]'))
    subprocess.run([str(bins["kvserver"]), "keygen", "--config", str(cluster.config)], check=True,
                   stdout=subprocess.DEVNULL)
try:
    cluster.start()
    status = cluster.wait_leaders()
    if a.leaders_on_1:
        admin = ["--key-file", str(cluster.dir / "keys" / "admin.key")]
        for shard in range(bench.BASE_SHARDS):
            cluster.kvcli(*admin, "shard", "leader", str(shard), "1")
        deadline = time.time() + 60
        while [r.get("leader") for r in status["shards"]] != [1] * bench.BASE_SHARDS:
            if time.time() > deadline:
                raise SystemExit(f"node 1 did not take every shard's leadership: {status['shards']}")
            time.sleep(0.5)
            status = cluster.status() or status
    leaders = [r.get("leader") for r in status["shards"]]
    print(f"raftkv, {'lease' if a.lease else 'ReadIndex'} reads; leaders of shards 0..{len(leaders) - 1}: {leaders}; "
          f"node 1 leads {leaders.count(1)} of {len(leaders)}")
    key_text = (cluster.dir / "keys" / "bench.key").read_text()
    secret = next(l.split('"')[1] for l in key_text.splitlines() if l.startswith("key = "))
    procs = {f"node {n}": cluster.procs[n].pid for n in (1, 2, 3)}
    metrics = {
        "ports": {f"node {n}": cluster.http_ports[n] for n in (1, 2, 3)},
        "what": {
            "udp client requests": 'raftkv_requests_total{front_end="udp"',
            "datagrams in": "raftkv_datagrams_received_total",
        },
    }
    for test in ("set", "get"):
        record = None
        if a.record:
            Path(a.record).mkdir(parents=True, exist_ok=True)
            record = Path(a.record) / ("perf.data" if test == "get" else "perf-set.data")
        row, counts = measure(cluster.redis_ports[1], test, procs, ("bench", secret), metrics, record)
        show(f"raftkv {test.upper()}", row, counts)
    cluster.stop()
    if not a.no_redis:
        port = bench.free_port()
        rdir = work / "redis"
        rdir.mkdir()
        server = bench.spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(rdir),
                              "--appendonly", "yes", "--appendfsync", "always", "--save", ""], rdir / "redis.log")
        deadline = time.time() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        for test in ("set", "get"):
            row, counts = measure(port, test, {"redis-server": server.pid}, None)
            show(f"redis {test.upper()}", row, counts)
finally:
    if server is not None:
        bench.stop(server)
    cluster.stop()
    subprocess.run(["rm", "-rf", str(work)])

#!/usr/bin/env python3
"""bench/run.py: the raftkv benchmark suite in one command (issue 6).

Builds release binaries, starts fresh local 3-node kvserver clusters (fsync on, temp
data dirs, free loopback ports, one generated cluster file per shard count), compares
1, 8 and 64 shards at 64 clients in interleaved rounds (all three clusters up at once;
medians and ratios against 1 shard), runs the client and value sweep on 8 shards with
`kvcli bench --json`, measures the servers' CPU per operation and RSS from
/proc, times a follower's catch-up, and, when an `etcd` binary is installed, runs the
same put/get points against a 3-member etcd with bench/etcd-load and prints the ratio
raftkv/etcd per point. With redis-benchmark and redis-server installed it also runs
SET and GET over the Redis protocol (50 connections, pipelining 1 and 16) against raftkv
and against one redis-server with appendfsync always. Writes bench/results/<timestamp>.json and latest.json, and PNG
plots under bench/results/plots/.

Benchmarks are not tests: nothing here asserts speed, and CI does not run it.

    python3 bench/run.py            # the default sweep, 15 s per point
    python3 bench/run.py --quick    # a smoke run: few points, 3 s each
    python3 bench/run.py --full     # default sweep plus catch-up on 1,000,000 keys
    python3 bench/run.py --full --only catchup   # the 1,000,000-key point alone
    python3 bench/run.py --only redis  # redis-benchmark: raftkv vs redis-server (appendfsync always)
    python3 bench/run.py --only auth   # what authentication costs: protection none / mac / encrypt
    python3 bench/run.py --only auth --protections none,mac   # the A/B of none and mac alone
    python3 bench/run.py --only leaders  # leaders = "spread" against "pack": 1, 8, 64 shards, and RESP
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
PLOTS = RESULTS / "plots"
VENV = BENCH_DIR / ".venv"

# Linux reports utime/stime in USER_HZ, fixed at 100 for user space.
USER_HZ = 100.0
# The key set (`kvcli bench --key-set`) every raftkv point names its keys from, so that
# gets read the values puts (or a preload) wrote; without one, each kvcli run names its
# keys afresh and every get finds nothing.
KEY_SET = "sweep"
# The workload of the issue: 16-byte keys, 100-byte values, 10,000 keys, uniform.
KEY_SIZE = 16
KEYS = 10_000
VALUE_SMALL = 100
# Seconds the idle cluster is watched to price idle shards.
IDLE_SECONDS = 10
# Shard counts whose clusters the sweep starts; BASE_SHARDS carries the client sweep.
BASE_SHARDS = 8
# How long a cluster may take to elect every shard's leader.
LEADER_WAIT_S = 30
# How long leader spreading (or packing) may take to place every shard's leadership.
PLACED_WAIT_S = 90
# How long a restarted follower may take to catch up before the point counts as failed.
CATCHUP_WAIT_S = 300

# Every process this script started, so that an exception or Ctrl-C still stops them.
_children = []


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stop_children():
    for p in _children:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 5
    for p in _children:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


atexit.register(_stop_children)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def spawn(cmd, log_path):
    f = open(log_path, "ab")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    f.close()
    _children.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port nothing is bound to right now (both UDP and TCP, so either fits)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


# ---------------------------------------------------------------- /proc measurements


def proc_cpu_s(pid):
    """utime + stime of a process in seconds (fields 14, 15 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / USER_HZ


def proc_rss_kb(pid):
    """(VmRSS, VmHWM) in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    except OSError:
        return None, None
    return out.get("VmRSS"), out.get("VmHWM")


def cpu_of(pids):
    return {pid: proc_cpu_s(pid) for pid in pids}


def cpu_delta(before, after):
    return sum((after[p] or 0) - (before[p] or 0) for p in before)


def machine_info():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


FSYNC_PROBE_WRITES = 400
FSYNC_PROBE_BYTES = 4096


def fdatasync_latency(workdir, writes=FSYNC_PROBE_WRITES, size=FSYNC_PROBE_BYTES):
    """The data disk's fdatasync as the WAL pays it at low load, the floor under a put's
    latency: `writes` writes of `size` bytes, each followed by fdatasync, timed together,
    into a file in `workdir` (where the clusters' data dirs go) that was first filled with
    zeros and synced, as the WAL preallocates its space, so that no sync changes the file's
    size. `extending_p50_us` is the same for appends that extend the file, which cost the
    disk a metadata write more. `pair_p50_us` is the later of two such syncs issued at
    once by two processes into files of their own, what a majority commit at one client
    waits for when three nodes share the disk (the two followers' syncs; see
    `concurrent_pair`). Percentiles in µs."""
    def timed(path, preallocate):
        block = b"\xa5" * size
        times = []
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if preallocate:
                os.write(fd, b"\0" * (size * writes))
                os.fsync(fd)
                os.lseek(fd, 0, os.SEEK_SET)
            for _ in range(writes):
                t0 = time.perf_counter()
                os.write(fd, block)
                os.fdatasync(fd)
                times.append((time.perf_counter() - t0) * 1e6)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
        times.sort()
        return lambda q: round(times[min(len(times) - 1, int(q * len(times)))], 1)

    path = Path(workdir) / "fdatasync-probe"
    pick = timed(path, preallocate=True)
    extending = timed(path, preallocate=False)
    pair = sorted(concurrent_pair(Path(workdir), writes, size))
    return {"writes": writes, "bytes": size, "p50_us": pick(0.5), "p90_us": pick(0.9), "p99_us": pick(0.99),
            "extending_p50_us": extending(0.5), "pair_p50_us": round(pair[len(pair) // 2], 1)}


def concurrent_pair(workdir, writes, size):
    """`writes` rounds in which two processes (this one and a forked child), released
    together through a pipe each round, each write `size` bytes into a preallocated file
    of their own and fdatasync it; returns each round's later completion in µs, timed
    from the release. Whether a disk serves two syncs side by side or one after the
    other shows here and not in one process's syncs."""
    block = b"\xa5" * size
    paths = [workdir / "fdatasync-pair-0", workdir / "fdatasync-pair-1"]
    fds = []
    for path in paths:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"\0" * (size * writes))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        fds.append(fd)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Each side keeps only its own pipe ends, so that either one's end shows the
        # other an end of file instead of a wait for ever.
        os.close(go_w)
        os.close(done_r)
        try:
            for _ in range(writes):
                if not os.read(go_r, 1):
                    break
                os.write(fds[1], block)
                os.fdatasync(fds[1])
                os.write(done_w, b"d")
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(done_w)
    times = []
    try:
        for _ in range(writes):
            t0 = time.perf_counter()
            os.write(go_w, b"g")
            os.write(fds[0], block)
            os.fdatasync(fds[0])
            if not os.read(done_r, 1):
                raise RuntimeError("fdatasync probe: the second process of the pair ended early")
            times.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(go_w)
        os.waitpid(pid, 0)
        for fd in fds + [done_r]:
            os.close(fd)
        for path in paths:
            path.unlink(missing_ok=True)
    return times


def git_commit():
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------- building


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def etcd_load_bin():
    """bench/etcd-load's release binary: that crate is a workspace of its own, so it builds
    into its own target dir unless CARGO_TARGET_DIR names one for every build."""
    target = Path(os.environ["CARGO_TARGET_DIR"]) if "CARGO_TARGET_DIR" in os.environ \
        else BENCH_DIR / "etcd-load" / "target"
    return target / "release" / "etcd-load"


def build_etcd_load():
    """Builds bench/etcd-load (separate crate, not in the workspace); returns its binary."""
    if not shutil.which("protoc"):
        log("etcd-load needs protoc (the etcd client compiles etcd's .proto files): installing protobuf-compiler")
        subprocess.run(["apt-get", "install", "-y", "protobuf-compiler"], check=True)
    log("building bench/etcd-load (separate crate, not in the workspace)")
    subprocess.run(["cargo", "build", "--release"], cwd=BENCH_DIR / "etcd-load", check=True)
    return etcd_load_bin()


def raftkv_bins():
    return {n: target_dir() / "release" / n for n in ("kvserver", "kvcli")}


def build(with_raftkv, with_etcd):
    bins = raftkv_bins()
    if with_raftkv:
        log("building release binaries (kvserver, kvcli)")
        subprocess.run(["cargo", "build", "--release", "-p", "kv-server", "-p", "kvcli"], cwd=REPO, check=True)
    if with_etcd:
        bins["etcd-load"] = build_etcd_load()
    return bins


def prebuilt(with_etcd, build_etcd=build_etcd_load):
    """--no-build: the binaries already built. bench/etcd-load's is built when it is
    missing (no workspace build makes it), before any etcd starts."""
    bins = raftkv_bins()
    if with_etcd:
        bins["etcd-load"] = etcd_load_bin()
        if not bins["etcd-load"].exists():
            log(f"--no-build, but {bins['etcd-load']} is missing: building it")
            bins["etcd-load"] = build_etcd()
    return bins


def ensure_matplotlib():
    """The python of bench/.venv with matplotlib, created on first use; None if pip fails."""
    py = VENV / "bin" / "python"
    try:
        if not py.exists():
            log("creating bench/.venv for matplotlib")
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        if subprocess.run([str(py), "-c", "import matplotlib"], capture_output=True).returncode != 0:
            subprocess.run([str(py), "-m", "pip", "install", "--quiet", "matplotlib"], check=True)
        return py
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"no plots: could not set up matplotlib ({e})")
        return None


# ---------------------------------------------------------------- raftkv cluster


class RaftkvCluster:
    """Three kvserver processes on loopback with fresh data dirs and a generated cluster file."""

    def __init__(self, bins, shards, workdir, extra_args=(), protection="mac", lease_reads=True, leaders=None):
        self.bins = bins
        self.shards = shards
        self.leaders = leaders
        self.dir = Path(tempfile.mkdtemp(prefix=f"raftkv-{shards}s-{protection}-", dir=workdir))
        self.extra_args = list(extra_args)
        self.ports = {}
        used = set()
        for n in (1, 2, 3):
            while True:
                port = free_port(socket.SOCK_DGRAM)
                if port not in used:
                    break
            used.add(port)
            self.ports[n] = port
        # TCP front ends on ports of their own: the defaults (UDP port + 1000, + 2000)
        # might be taken on a busy machine.
        self.redis_ports = {}
        self.http_ports = {}
        for n in (1, 2, 3):
            for ports in (self.redis_ports, self.http_ports):
                while True:
                    port = free_port(socket.SOCK_STREAM)
                    if port not in used:
                        break
                used.add(port)
                ports[n] = port
        self.config = self.dir / "cluster.toml"
        nodes = "".join(
            f'\n[[nodes]]\nid = {n}\naddr = "127.0.0.1:{p}"\n'
            f'redis_addr = "127.0.0.1:{self.redis_ports[n]}"\nhttp_addr = "127.0.0.1:{self.http_ports[n]}"\n'
            for n, p in self.ports.items()
        )
        self.config.write_text(
            f"# Generated by bench/run.py: {shards} shards, fsync on (kvserver always syncs).\n"
            f"cluster_id = {7100 + shards}\nshards = {shards}\ndata_dir = \"{self.dir}\"\n"
            # The nodes register through the metadata group with client_key_file, an admin
            # operation: with a read-write key every node retried it all run long.
            'key_file = "keys/cluster.key"\nclient_key_files = ["keys/bench.key", "keys/admin.key"]\n'
            f'client_key_file = "keys/admin.key"\nprotection = "{protection}"\n\n'
            "[timing]\ntick_ms = 10\nheartbeat_ticks = 5\nelection_ticks_min = 30\nelection_ticks_max = 60\n"
            # One machine, one clock: leaders answer reads from their lease. None leaves
            # the key out, for builds older than it (bench/ab.py --lease-reads omit).
            + ("" if lease_reads is None else f"lease_reads = {'true' if lease_reads else 'false'}\n")
            # None leaves the section out: the build's default, and builds older than it.
            + ("" if leaders is None else f'\n[placement]\nleaders = "{leaders}"\n')
            + nodes
        )
        subprocess.run(
            [str(bins["kvserver"]), "keygen", "--config", str(self.config)],
            check=True, stdout=subprocess.DEVNULL,
        )
        self.procs = {}
        # Nodes stopped on purpose, whose exit is no failure.
        self.stopped = set()

    def start_node(self, n):
        cmd = [
            str(self.bins["kvserver"]), "--config", str(self.config), "--node", str(n),
            "--data-dir", str(self.dir / f"node-{n}"), "--log-level", "warn",
        ] + self.extra_args
        self.procs[n] = spawn(cmd, self.dir / f"node-{n}.log")
        self.stopped.discard(n)

    def start(self):
        for n in (1, 2, 3):
            self.start_node(n)
        self.wait_leaders()

    def stop_node(self, n):
        stop(self.procs[n])
        self.stopped.add(n)

    def stop(self):
        for n in list(self.procs):
            self.stop_node(n)

    def pids(self):
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def kvcli(self, *args, timeout=60):
        cmd = [str(self.bins["kvcli"]), "--cluster", str(self.config)] + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def status(self):
        r = self.kvcli("--json", "status", timeout=20)
        for line in reversed(r.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
        return None

    def wait_leaders(self, timeout=LEADER_WAIT_S):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for n, p in self.procs.items():
                if n not in self.stopped and p.poll() is not None:
                    tail = (self.dir / f"node-{n}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"kvserver node {n} exited with {p.returncode}:\n{tail}")
            s = self.status()
            if s and s.get("shards") and all(r.get("leader") for r in s["shards"]):
                return s
            time.sleep(0.3)
        raise RuntimeError(f"not every shard of the {self.shards}-shard cluster elected a leader in {timeout} s")

    def wait_placed(self, timeout=PLACED_WAIT_S):
        """Waits until the leaderships sit where the cluster's leader policy puts them: all
        on node 1 with "pack", within one of the mean per node with "spread" (leader
        spreading hands a shard over once its preferred leader caught up)."""
        deadline = time.time() + timeout
        leaders = []
        while time.time() < deadline:
            s = self.status()
            leaders = [r.get("leader") for r in (s or {}).get("shards", [])]
            if len(leaders) == self.shards and all(leaders):
                counts = [leaders.count(n) for n in (1, 2, 3)]
                if self.leaders == "pack" and counts[0] == self.shards:
                    return
                if self.leaders != "pack" and max(counts) - min(counts) <= 1:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"leaders = {self.leaders}: leaderships not placed in {timeout} s: {leaders}")

    def bench(self, clients, duration_s, mix, value_size, keys=KEYS, ops=None, seed=1):
        args = [
            "bench", "--clients", str(clients), "--mix", str(mix), "--keys", str(keys),
            "--key-size", str(KEY_SIZE), "--value-size", str(value_size), "--dist", "uniform",
            "--seed", str(seed), "--key-set", KEY_SET, "--json",
        ]
        args += ["--ops", str(ops)] if ops else ["--duration", f"{duration_s}s"]
        timeout = (duration_s if not ops else 3600) + 120
        r = self.kvcli(*args, timeout=timeout)
        return last_json(r, "kvcli bench")

    def preload(self, value_size=VALUE_SMALL, keys=KEYS):
        """Writes every key of KEY_SET once (outside any measurement), so that gets find
        values, as etcd's are preloaded."""
        r = self.kvcli("bench", "--preload", "--clients", "64", "--keys", str(keys), "--key-size", str(KEY_SIZE),
                       "--value-size", str(value_size), "--key-set", KEY_SET, "--json", timeout=600)
        return last_json(r, "kvcli bench --preload")


def last_json(r, what):
    for line in reversed(r.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what} printed no JSON report (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def retire(cluster, keep):
    """Stops a cluster (raftkv or etcd) and removes its data dirs and logs unless keep."""
    cluster.stop()
    if not keep:
        shutil.rmtree(cluster.dir, ignore_errors=True)


def rotated(items, rnd):
    """items starting one further along for each round: the order of round rnd in an
    interleaved comparison, so that no side always runs first."""
    k = rnd % len(items)
    return list(items[k:]) + list(items[:k])


# ---------------------------------------------------------------- etcd cluster


class EtcdCluster:
    """Three etcd members on loopback with fresh data dirs and default fsync behaviour."""

    def __init__(self, bins, workdir):
        self.bins = bins
        self.dir = Path(tempfile.mkdtemp(prefix="etcd-", dir=workdir))
        used = set()

        def port():
            while True:
                p = free_port()
                if p not in used:
                    used.add(p)
                    return p

        self.members = [(f"m{n}", port(), port()) for n in (1, 2, 3)]
        self.procs = []

    def endpoints(self):
        return ",".join(f"http://127.0.0.1:{c}" for _, c, _ in self.members)

    def start(self):
        initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in self.members)
        for name, client, peer in self.members:
            cmd = [
                shutil.which("etcd"), "--name", name, "--data-dir", str(self.dir / name),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", initial, "--initial-cluster-token", "raftkv-bench",
                "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn",
            ]
            self.procs.append(spawn(cmd, self.dir / f"{name}.log"))
        deadline = time.time() + LEADER_WAIT_S
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"etcd exited with {p.returncode}; logs in {self.dir}")
            r = subprocess.run(
                ["etcdctl", "--endpoints", self.endpoints(), "endpoint", "status", "-w", "json"],
                capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"},
            )
            if r.returncode == 0:
                try:
                    st = json.loads(r.stdout)
                    if len(st) == 3 and all(m["Status"]["leader"] for m in st):
                        return
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass
            time.sleep(0.3)
        raise RuntimeError("etcd did not elect a leader")

    def stop(self):
        for p in self.procs:
            stop(p)

    def pids(self):
        return [p.pid for p in self.procs if p.poll() is None]

    def bench(self, clients, duration_s, mix, value_size, preload, seed=1):
        cmd = [
            str(self.bins["etcd-load"]), "--endpoints", self.endpoints(), "--clients", str(clients),
            "--duration", f"{duration_s}s", "--mix", str(mix), "--keys", str(KEYS), "--key-size", str(KEY_SIZE),
            "--value-size", str(value_size), "--seed", str(seed), "--json",
        ] + (["--preload"] if preload else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 300)
        return last_json(r, "etcd-load")


# ---------------------------------------------------------------- the sweep


def plan(args):
    """The points of the client and value sweeps on BASE_SHARDS shards: (group, op, shards,
    clients, value_size), op put|get|mix; the shard counts run_shard_counts compares; the
    client counts."""
    if args.quick:
        clients = [1, 64]
        shard_counts = [1, 8]
        value_sizes = [4096]
    else:
        clients = [1, 16, 64, 256]
        shard_counts = [1, 8, 64]
        value_sizes = [4096, 32768]
    pts = []
    for op in ("put", "get"):
        for c in clients:
            pts.append(("clients", op, BASE_SHARDS, c, VALUE_SMALL))
    pts.append(("clients", "mix", BASE_SHARDS, 64, VALUE_SMALL))
    # The shard counts are compared by run_shard_counts, interleaved, not by points here.
    for v in value_sizes:
        pts.append(("values", "put", BASE_SHARDS, 64, v))
    return pts, shard_counts, clients


MIX = {"put": 0.0, "get": 1.0, "mix": 0.8}


def point_name(op, clients, shards=None, value_size=VALUE_SMALL):
    label = {"put": "put", "get": "get (linearizable)", "mix": "mix 80/20"}[op]
    s = f"{label}, {clients} client{'s' if clients != 1 else ''}"
    if shards is not None:
        s += f", {shards} shard{'s' if shards != 1 else ''}"
    if value_size != VALUE_SMALL:
        s += f", {value_size // 1024} KiB values"
    return s


def measure(system, cluster, op, clients, shards, value_size, duration_s, runner):
    pids = cluster.pids()
    before = cpu_of(pids)
    t0 = time.time()
    report = runner()
    wall = time.time() - t0
    after = cpu_of(pids)
    server_cpu = cpu_delta(before, after)
    rss = {str(pid): proc_rss_kb(pid)[0] for pid in pids}
    ops = max(report.get("ops", 0), 1)
    r = report.get("latency", {})
    point = {
        "system": system, "op": op, "clients": clients, "shards": shards, "value_size": value_size,
        "name": point_name(op, clients, shards if system == "raftkv" else None, value_size),
        "ops_per_s": report.get("ops_per_s", 0.0), "latency_us": r, "errors": report.get("errors", 0),
        "not_found": report.get("not_found", 0), "ops": report.get("ops", 0),
        "server_cpu_s": server_cpu, "server_cpu_us_per_op": 1e6 * server_cpu / ops,
        "client_cpu_percent": report.get("cpu", {}).get("percent_of_one_core"),
        "rss_kb": rss, "wall_s": wall, "report": report,
    }
    log(
        f"{system:6} {point['name']:45} {point['ops_per_s']:>9.0f} ops/s  p50 {r.get('p50_us', 0) / 1000:.2f} ms"
        f"  p99 {r.get('p99_us', 0) / 1000:.2f} ms  errors {point['errors']}  server cpu {point['server_cpu_us_per_op']:.1f} us/op"
    )
    if point["not_found"]:
        log(f"warning: {point['not_found']} of {point['ops']} operations read a key that held no value")
    return point


def ab_row(system, cluster, op, clients, shards, duration_s, rep):
    """One repetition of an A/B point (the auth and leader comparisons): the figures both
    keep of `measure`'s point, each repetition with its own key seed."""
    point = measure(
        system, cluster, op, clients, shards, VALUE_SMALL, duration_s,
        lambda: cluster.bench(clients, duration_s, MIX[op], VALUE_SMALL, seed=rep + 1),
    )
    return {
        "repetition": rep, "op": op, "ops_per_s": point["ops_per_s"],
        "server_cpu_us_per_op": point["server_cpu_us_per_op"], "errors": point["errors"],
        "p50_us": point["latency_us"].get("p50_us"), "p99_us": point["latency_us"].get("p99_us"),
        "client_cpu_percent": point["client_cpu_percent"], "load_average_1m": os.getloadavg()[0],
    }


def idle_cpu(cluster, seconds=IDLE_SECONDS):
    """Server CPU of a cluster that serves nothing: the price of idle shards."""
    time.sleep(2)  # let the elections' traffic settle
    pids = cluster.pids()
    before = cpu_of(pids)
    time.sleep(seconds)
    used = cpu_delta(before, cpu_of(pids))
    return {"seconds": seconds, "cpu_s": used, "percent_of_one_core": 100 * used / seconds}


def run_raftkv(args, bins, workdir, results):
    """The client and value sweeps, on one cluster of BASE_SHARDS shards."""
    mine, _, _ = plan(args)
    log(f"raftkv: starting a 3-node cluster with {BASE_SHARDS} shards")
    c = RaftkvCluster(bins, BASE_SHARDS, workdir, leaders=args.leaders)
    try:
        c.start()
        # 100 B puts first: they fill the key space (same seed, so same keys) for the
        # gets; the large-value puts last, so that gets read 100 B values.
        mine.sort(key=lambda p: (p[0] == "values", p[1] != "put", p[1] == "mix", p[3]))
        preloaded = False
        for group, op, s, clients, value in mine:
            if op != "put" and not preloaded:
                # Every key once more at 100 B before the first get, outside the
                # measurement: the puts before may not have reached every key.
                c.preload()
                preloaded = True
            point = measure(
                "raftkv", c, op, clients, s, value, args.duration,
                lambda: c.bench(clients, args.duration, MIX[op], value),
            )
            point["group"] = group
            results["points"].append(point)
    finally:
        retire(c, args.keep)


# Rounds of the interleaved shard-count comparison (run_shard_counts).
SHARD_ROUNDS = 3


def run_shard_counts(args, bins, workdir, results):
    """Puts, then linearizable gets, at 64 clients on one 3-node cluster per shard count,
    all up at once, in --shard-rounds interleaved rounds: each round runs every shard
    count's point once, starting one shard count further along than the round before, so
    that whatever else loads the shared machine meets every shard count alike (one point
    after another, the same build moves by 10-15 % between points here). Each cluster's
    idle CPU is measured first, while the others idle too. Every cluster gets every key
    once before the first get. Records every round's point, and per (shards, op) the
    median round (a real run, its latencies with it) in results["points"] (group
    "shards") and the medians and ratios against 1 shard in results["shard_counts"]."""
    _, counts, _ = plan(args)
    rounds = args.shard_rounds
    clusters = {}
    rows = []
    try:
        for shards in counts:
            log(f"shard counts: starting a 3-node cluster with {shards} shards")
            clusters[shards] = RaftkvCluster(bins, shards, workdir, leaders=args.leaders)
            clusters[shards].start()
        for shards, c in clusters.items():
            c.wait_placed()
        for shards, c in clusters.items():
            idle = idle_cpu(c, args.idle_seconds)
            idle.update(shards=shards)
            results["idle"].append(idle)
            log(f"raftkv idle, {shards} shards: {idle['percent_of_one_core']:.1f}% of one core")
        for op in ("put", "get"):
            if op == "get":
                for c in clusters.values():
                    c.preload()
            for rnd in range(rounds):
                order = rotated(counts, rnd)
                for shards in order:
                    c = clusters[shards]
                    point = measure(
                        "raftkv", c, op, 64, shards, VALUE_SMALL, args.duration,
                        lambda: c.bench(64, args.duration, MIX[op], VALUE_SMALL, seed=rnd + 1),
                    )
                    point.update(group="shards", round=rnd + 1, load_average_1m=os.getloadavg()[0])
                    rows.append(point)
    finally:
        for c in clusters.values():
            retire(c, args.keep)
    summary = shard_count_summary(rows, counts)
    for row in summary:
        results["points"].append(row.pop("median_point"))
    results["shard_counts"] = {
        "counts": counts, "clients": 64, "rounds": rounds, "duration_s": args.duration,
        "rows": [{k: v for k, v in r.items() if k != "report"} for r in rows], "summary": summary,
    }


def shard_count_summary(rows, counts):
    """Per (op, shards) of run_shard_counts' rows: the medians over the rounds, the
    ratios of those medians against 1 shard, the range of the per-round throughput
    ratios (each round's S-shard point against the same round's 1-shard point), and the
    median round's point itself (`median_point`)."""
    summary = []
    for op in ("put", "get"):
        base = {r["round"]: r for r in rows if r["op"] == op and r["shards"] == counts[0]}
        base_median = median([r["ops_per_s"] for r in base.values()])
        for shards in counts:
            mine = sorted((r for r in rows if r["op"] == op and r["shards"] == shards), key=lambda r: r["ops_per_s"])
            if not mine:
                continue
            ops = median([r["ops_per_s"] for r in mine])
            per_round = [r["ops_per_s"] / base[r["round"]]["ops_per_s"] for r in mine
                         if r["round"] in base and base[r["round"]]["ops_per_s"]]
            summary.append({
                "op": op, "shards": shards, "rounds": len(mine), "ops_per_s": ops,
                "server_cpu_us_per_op": median([r["server_cpu_us_per_op"] for r in mine]),
                "p50_us": median([r["latency_us"].get("p50_us") or 0 for r in mine]),
                "p99_us": median([r["latency_us"].get("p99_us") or 0 for r in mine]),
                "errors": sum(r["errors"] for r in mine),
                "ratio_to_base": ops / base_median if base_median else None,
                "round_ratio_min": min(per_round) if per_round else None,
                "round_ratio_max": max(per_round) if per_round else None,
                "median_point": {**mine[(len(mine) - 1) // 2], "rounds": len(mine)},
            })
    return summary


def run_catchup(args, bins, workdir, results):
    """Node 3 down, load N keys, restart it, time until it has caught up on every shard."""
    n_keys = args.catchup_keys
    log(f"raftkv catch-up: loading ~{n_keys} keys of {VALUE_SMALL} B with node 3 down")
    # A quick run loads too few keys to pass the default 10,000-entry snapshot threshold
    # of a shard; a lower one makes it exercise the snapshot path all the same.
    extra = ["--snapshot-threshold", "1000"] if args.quick else []
    c = RaftkvCluster(bins, BASE_SHARDS, workdir, extra, leaders=args.leaders)
    try:
        c.start()
        c.stop_node(3)
        c.wait_leaders()  # the shards node 3 led elect new leaders before the load starts
        # Random keys from a space 1.75x the target, 1.5x as many puts: about n_keys distinct.
        load = c.bench(256, 0, 0.0, VALUE_SMALL, keys=int(n_keys * 1.75), ops=int(n_keys * 1.5), seed=7)
        st = c.status()
        keys_loaded = sum(r.get("keys", 0) for r in st["shards"]) if st else None
        live = [c.procs[1].pid, c.procs[2].pid]
        rss_live = {str(n): proc_rss_kb(c.procs[n].pid) for n in (1, 2)}
        log(f"loaded {keys_loaded} keys ({load['ops_per_s']:.0f} puts/s); restarting node 3")
        t0 = time.time()
        c.start_node(3)
        caught = None
        polls = 0
        while time.time() - t0 < CATCHUP_WAIT_S:
            polls += 1
            s = c.status()
            if s and all(r.get("leader") for r in s["shards"]):
                # Node 3's own applied index (not the leader's belief) reaching the commit.
                applied = [next((x["applied"] for x in r["replicas"] if x["node"] == 3), None) for r in s["shards"]]
                if all(a is not None and a >= r["commit"] for a, r in zip(applied, s["shards"])):
                    caught = time.time() - t0
                    break
            time.sleep(0.1)
        time.sleep(1)
        rss_after = {str(n): proc_rss_kb(c.procs[n].pid) for n in (1, 2, 3)}
        results["catchup"] = {
            "target_keys": n_keys, "keys_loaded": keys_loaded, "value_size": VALUE_SMALL, "shards": BASE_SHARDS,
            "load_puts_per_s": load["ops_per_s"], "load_errors": load["errors"],
            "catchup_s": caught, "status_polls": polls, "kvserver_extra_args": extra,
            "rss_kb_after_load": {n: v[0] for n, v in rss_live.items()},
            "rss_kb_after_catchup": {n: v[0] for n, v in rss_after.items()},
            "hwm_kb_after_catchup": {n: v[1] for n, v in rss_after.items()},
            "live_pids": live,
        }
        log(f"catch-up: {'%.2f s' % caught if caught is not None else 'NOT caught up'}; RSS after (KiB) {results['catchup']['rss_kb_after_catchup']}")
    finally:
        retire(c, args.keep)


def run_etcd(args, bins, workdir, results):
    pts, _, _ = plan(args)
    # The same put/get points with 100-byte values; etcd has no shards.
    mine = sorted({(op, clients) for g, op, s, clients, v in pts if g == "clients"}, key=lambda p: (p[0] != "put", p[0] == "mix", p[1]))
    log("etcd: starting a 3-member cluster")
    e = EtcdCluster(bins, workdir)
    try:
        e.start()
        idle = idle_cpu(e, args.idle_seconds)
        results["etcd_idle"] = idle
        loaded = False
        for op, clients in mine:
            if op != "put" and not loaded:
                # Every key once, outside the measurement, so gets find values as on raftkv
                # (whose put points, run first with the same seed, fill the key space).
                e.bench(64, 0, 1.0, VALUE_SMALL, preload=True)
                loaded = True
            point = measure(
                "etcd", e, op, clients, None, VALUE_SMALL, args.duration,
                lambda: e.bench(clients, args.duration, MIX[op], VALUE_SMALL, preload=False),
            )
            point["group"] = "clients"
            results["points"].append(point)
    finally:
        retire(e, args.keep)


# ---------------------------------------------------------------- redis-benchmark point

# redis-benchmark's settings for the Redis-protocol point: 50 connections, 100-byte
# values, keys drawn from 10,000 (key:__rand_int__), pipelining 1 and 16.
REDIS_CONNECTIONS = 50
REDIS_PIPELINES = (1, 16)
# Rounds of the alternating runs; each point's row is its median round.
REDIS_ROUNDS = 5


def redis_benchmark(port, pipeline, requests, auth=None):
    """One redis-benchmark run of SET and GET, each connection first sending AUTH with
    `auth` = (user, password) if given; returns {test: {rps, p50_ms, p99_ms}}."""
    cmd = [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
        "-c", str(REDIS_CONNECTIONS), "-P", str(pipeline), "-n", str(requests),
        "-d", str(VALUE_SMALL), "-r", str(KEYS), "--csv", "-e",
    ]
    if auth:
        cmd += ["--user", auth[0], "-a", auth[1]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {r.stderr[-1000:]}")
    return parse_redis_benchmark_csv(r.stdout)


def parse_redis_benchmark_csv(stdout):
    """redis-benchmark --csv -e output as {test: {rps, p50_ms, p99_ms}}. An error reply
    (which redis-benchmark counts as a reply like any other; -e prints it, at most one a
    second) fails the point: the issue asks for runs that complete with no error."""
    errors = [l for l in stdout.splitlines() if l.startswith("Error from server")]
    if errors:
        raise RuntimeError(f"redis-benchmark saw error replies, e.g. {errors[0]!r}")
    out = {}
    header = None
    for line in stdout.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if cells[0] == "test":
            header = cells
            continue
        if header and len(cells) == len(header):
            row = dict(zip(header, cells))
            out[row["test"]] = {
                "rps": float(row["rps"]),
                "p50_ms": float(row.get("p50_latency_ms", "nan")),
                "p99_ms": float(row.get("p99_latency_ms", "nan")),
            }
    if not out:
        raise RuntimeError(f"no results in redis-benchmark's output:\n{stdout[-1000:]}")
    return out


def redis_benchmark_spread(ports, pipeline, requests, auth=None):
    """SET, then GET, with the REDIS_CONNECTIONS connections spread over `ports` (one
    redis-benchmark process per node, all at once; a Redis Cluster-unaware client pool
    that connects to every node). Per test: requests/s is all requests over the slowest
    process's time; p50 and p99 are the worst of the processes'."""
    out = {}
    for test in ("set", "get"):
        procs = []
        for i, port in enumerate(ports):
            conns = REDIS_CONNECTIONS // len(ports) + (1 if i < REDIS_CONNECTIONS % len(ports) else 0)
            cmd = [
                "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test,
                "-c", str(conns), "-P", str(pipeline), "-n", str(requests // len(ports)),
                "-d", str(VALUE_SMALL), "-r", str(KEYS), "--csv", "-e",
            ]
            if auth:
                cmd += ["--user", auth[0], "-a", auth[1]]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        rows = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=900)
            if p.returncode != 0:
                raise RuntimeError(f"redis-benchmark failed: {stderr[-1000:]}")
            rows.append(parse_redis_benchmark_csv(stdout)[test.upper()])
        each = requests // len(ports)
        seconds = max(each / r["rps"] for r in rows)
        out[test.upper()] = {
            "rps": each * len(ports) / seconds,
            "p50_ms": max(r["p50_ms"] for r in rows),
            "p99_ms": max(r["p99_ms"] for r in rows),
        }
    return out


def redis_point_names(leaders):
    """The --only redis point's raftkv rows, each named by its clusters' leader policy
    (`raftkv-pack`, as --only leaders names a cluster), then how it is reached when that
    is not every connection to node 1 with lease reads."""
    return {
        "node1": f"raftkv-{leaders}",
        "all_nodes": f"raftkv-{leaders}-all-nodes",
        "readindex": f"raftkv-{leaders}-readindex",
    }


def run_redis_point(args, bins, workdir, results):
    """SET and GET with redis-benchmark against raftkv (3 nodes, fsync on, the client
    connected to node 1; lease reads, and ReadIndex reads on a second cluster; rows named
    by `redis_point_names`) and against one redis-server with appendfsync always. Both run
    side by side and the runs alternate between them, REDIS_ROUNDS times, so that a busy
    spell of the machine hits both; the table shows each point's median round."""
    for tool in ("redis-benchmark", "redis-server"):
        if not shutil.which(tool):
            log(f"no {tool} on PATH (Debian: apt-get install redis-tools redis-server): skipping the Redis point")
            return
    requests = args.redis_requests or (20_000 if args.quick else 200_000)
    runs = []
    # Lease reads (the headline, as before) and ReadIndex reads (the linearizable
    # default, lease_reads = false): both clusters stay up for the whole point so that
    # they see the same spells of load.
    cluster = RaftkvCluster(bins, BASE_SHARDS, workdir, leaders=args.leaders)
    readindex = RaftkvCluster(bins, BASE_SHARDS, workdir, lease_reads=False, leaders=args.leaders)
    port = free_port(socket.SOCK_STREAM)
    rdir = Path(tempfile.mkdtemp(prefix="redis-", dir=workdir))
    server = None
    try:
        cluster.start()
        readindex.start()
        server = spawn([
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(rdir),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ], rdir / "redis.log")
        deadline = time.time() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        # raftkv's RESP users are its client keys: AUTH bench <the key file's hex key>.
        def secret_of(c):
            key_text = (c.dir / "keys" / "bench.key").read_text()
            return next(l.split('"')[1] for l in key_text.splitlines() if l.startswith("key = "))
        secret = secret_of(cluster)
        # The headline: every connection to node 1, as an application that knows one
        # address connects. "...-all-nodes": the same connections spread over the three
        # nodes (still Cluster-unaware: on nodes that do not lead a key's shard a SET is
        # forwarded to its leader and a GET is a follower read the leader confirms).
        names = redis_point_names(args.leaders)
        targets = [
            (names["node1"], cluster.redis_ports[1], ("bench", secret)),
            ("redis", port, None),
            (names["all_nodes"], [cluster.redis_ports[n] for n in (1, 2, 3)], ("bench", secret)),
            (names["readindex"], readindex.redis_ports[1], ("bench", secret_of(readindex))),
        ]
        for round_no in range(REDIS_ROUNDS):
            # Alternate who goes first, so neither always runs right after the other.
            order = targets if round_no % 2 == 0 else targets[::-1]
            for pipeline in args.redis_pipelines:
                for system, target_port, auth in order:
                    log(f"round {round_no + 1}/{REDIS_ROUNDS}: redis-benchmark against {system}, -P {pipeline}")
                    run = redis_benchmark_spread if isinstance(target_port, list) else redis_benchmark
                    for test, r in run(target_port, pipeline, requests, auth).items():
                        runs.append({
                            "system": system, "test": test, "pipeline": pipeline, "round": round_no + 1,
                            "load_average_1m": os.getloadavg()[0], **r,
                        })
    finally:
        if server is not None:
            stop(server)
        cluster.stop()
        readindex.stop()
    results["redis"] = {
        "connections": REDIS_CONNECTIONS, "requests": requests, "rounds": REDIS_ROUNDS,
        "runs": runs, "rows": median_rows(runs),
    }


def median_rows(runs):
    """Per (system, test, pipeline), the round with the median requests/s (its latencies
    with it, so a row is one real run)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["system"], r["test"], r["pipeline"]), []).append(r)
    rows = []
    for key in sorted(groups, key=lambda k: (k[2], k[1], k[0])):
        ordered = sorted(groups[key], key=lambda r: r["rps"])
        rows.append(ordered[(len(ordered) - 1) // 2])
    return rows


# ---------------------------------------------------------------- the cost of authentication

# The cluster file's protection settings compared, the first being the baseline.
AUTH_PROTECTIONS = ("none", "mac", "encrypt")
AUTH_CLIENTS = 64
AUTH_REPETITIONS = 5


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] + xs[(n - 1) // 2]) / 2 if xs else None


def run_auth(args, bins, workdir, results):
    """The same build with protection none, mac and encrypt: one 3-node cluster each (fsync
    on, BASE_SHARDS shards), all running at once; each repetition measures puts then
    linearizable gets at AUTH_CLIENTS clients on every cluster in turn, the order rotated
    each repetition, so that load from other work on the machine hits every variant."""
    protections = args.protections
    clusters = {}
    try:
        for p in protections:
            log(f"auth: starting a 3-node cluster with {BASE_SHARDS} shards, protection = {p}")
            clusters[p] = RaftkvCluster(bins, BASE_SHARDS, workdir, protection=p, leaders=args.leaders)
            clusters[p].start()
        rows = []
        for rep in range(args.repetitions):
            turn = rep % len(protections)
            order = protections[turn:] + protections[:turn]
            for p in order:
                c = clusters[p]
                for op in ("put", "get"):
                    row = ab_row(f"raftkv-{p}", c, op, AUTH_CLIENTS, BASE_SHARDS, args.duration, rep)
                    rows.append({"protection": p, **row})
    finally:
        for c in clusters.values():
            retire(c, args.keep)
    summary = []
    for op in ("put", "get"):
        base = None
        for p in protections:
            mine = [r for r in rows if r["op"] == op and r["protection"] == p]
            s = {
                "op": op, "protection": p, "repetitions": len(mine),
                "ops_per_s": median([r["ops_per_s"] for r in mine]),
                "server_cpu_us_per_op": median([r["server_cpu_us_per_op"] for r in mine]),
                "p50_us": median([r["p50_us"] or 0 for r in mine]),
                "p99_us": median([r["p99_us"] or 0 for r in mine]),
                "errors": sum(r["errors"] for r in mine),
            }
            base = base or s
            s["throughput_ratio"] = s["ops_per_s"] / base["ops_per_s"] if base["ops_per_s"] else None
            s["cpu_per_op_ratio"] = (
                s["server_cpu_us_per_op"] / base["server_cpu_us_per_op"] if base["server_cpu_us_per_op"] else None
            )
            summary.append(s)
    results["auth"] = {
        "protections": list(protections), "clients": AUTH_CLIENTS, "shards": BASE_SHARDS, "duration_s": args.duration,
        "repetitions": args.repetitions, "rows": rows, "summary": summary,
    }


# ---------------------------------------------------------------- where leaderships go

# The cluster file's [placement] leaders policies compared, and where.
LEADER_POLICIES = ("spread", "pack")
# The policy of every other point's clusters: the one configs/local-3.toml uses, which
# --only leaders measured ahead on this one-machine setup.
LEADERS_DEFAULT = "pack"
LEADERS_SHARDS = (1, 8, 64)
LEADERS_CLIENTS = 64


def run_leaders(args, bins, workdir, results):
    """The same build with leaders = "spread" and "pack": per shard count, one 3-node
    cluster per policy (fsync on), both up at once and their leaderships placed; each
    repetition measures puts then linearizable gets at LEADERS_CLIENTS clients on both
    clusters in turn, the order alternating, so that load from other work on the machine
    hits both. At BASE_SHARDS, each repetition also runs redis-benchmark (SET and GET,
    every connection to node 1, each -P of --redis-pipelines) on both."""
    rows, redis_runs = [], []
    with_redis = shutil.which("redis-benchmark") is not None
    requests = args.redis_requests or (20_000 if args.quick else 200_000)
    for shards in LEADERS_SHARDS:
        clusters = {}
        try:
            for policy in LEADER_POLICIES:
                log(f"leaders: starting a 3-node cluster with {shards} shards, leaders = {policy}")
                clusters[policy] = RaftkvCluster(bins, shards, workdir, leaders=policy)
                clusters[policy].start()
            for policy, c in clusters.items():
                c.wait_placed()
            for rep in range(args.repetitions):
                order = LEADER_POLICIES if rep % 2 == 0 else LEADER_POLICIES[::-1]
                for policy in order:
                    c = clusters[policy]
                    for op in ("put", "get"):
                        row = ab_row(f"raftkv-{policy}", c, op, LEADERS_CLIENTS, shards, args.duration, rep)
                        rows.append({"leaders": policy, "shards": shards, **row})
                    if shards != BASE_SHARDS or not with_redis:
                        continue
                    key_text = (c.dir / "keys" / "bench.key").read_text()
                    secret = next(l.split('"')[1] for l in key_text.splitlines() if l.startswith("key = "))
                    for pipeline in args.redis_pipelines:
                        log(f"leaders: redis-benchmark against leaders = {policy}, -P {pipeline}")
                        for test, r in redis_benchmark(c.redis_ports[1], pipeline, requests, ("bench", secret)).items():
                            redis_runs.append({
                                "system": f"raftkv-{policy}", "test": test, "pipeline": pipeline,
                                "round": rep + 1, "load_average_1m": os.getloadavg()[0], **r,
                            })
        finally:
            for c in clusters.values():
                retire(c, args.keep)
    summary = []
    for shards in LEADERS_SHARDS:
        for op in ("put", "get"):
            for policy in LEADER_POLICIES:
                mine = [r for r in rows if (r["shards"], r["op"], r["leaders"]) == (shards, op, policy)]
                summary.append({
                    "shards": shards, "op": op, "leaders": policy, "repetitions": len(mine),
                    "ops_per_s": median([r["ops_per_s"] for r in mine]),
                    "server_cpu_us_per_op": median([r["server_cpu_us_per_op"] for r in mine]),
                    "p50_us": median([r["p50_us"] or 0 for r in mine]),
                    "p99_us": median([r["p99_us"] or 0 for r in mine]),
                    "errors": sum(r["errors"] for r in mine),
                })
    results["leaders"] = {
        "policies": list(LEADER_POLICIES), "clients": LEADERS_CLIENTS, "duration_s": args.duration,
        "repetitions": args.repetitions, "rows": rows, "summary": summary,
        "redis": {"connections": REDIS_CONNECTIONS, "requests": requests, "runs": redis_runs,
                  "rows": median_rows(redis_runs)},
    }


def ratios(results):
    out = []
    ours = {(p["op"], p["clients"]): p for p in results["points"]
            if p["system"] == "raftkv" and p["group"] == "clients"}
    for p in results["points"]:
        if p["system"] != "etcd":
            continue
        r = ours.get((p["op"], p["clients"]))
        if not r or not p["ops_per_s"]:
            continue
        lat = lambda x, k: x["latency_us"].get(k) or 0
        out.append({
            "op": p["op"], "clients": p["clients"], "name": point_name(p["op"], p["clients"]),
            "raftkv_ops_per_s": r["ops_per_s"], "etcd_ops_per_s": p["ops_per_s"],
            "throughput_ratio": r["ops_per_s"] / p["ops_per_s"],
            "p50_ratio": lat(r, "p50_us") / max(lat(p, "p50_us"), 1),
            "p99_ratio": lat(r, "p99_us") / max(lat(p, "p99_us"), 1),
            "cpu_per_op_ratio": r["server_cpu_us_per_op"] / max(p["server_cpu_us_per_op"], 1e-9),
        })
    return out


# ---------------------------------------------------------------- output


def ms(us):
    return f"{(us or 0) / 1000:.2f}"


def section(lines, heading, rows, row_line):
    """Appends a blank line, the heading lines and one line per row."""
    lines.append("")
    lines.extend(heading)
    lines.extend(row_line(r) for r in rows)


def table(results):
    lines = []
    head = f"{'system':7} {'point':48} {'ops/s':>9} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>8} {'err':>5} {'cpu us/op':>9}"
    lines.append("latencies in ms; cpu = the 3 server processes' user+system CPU per operation")
    lines.append(head)
    lines.append("-" * len(head))
    for p in results["points"]:
        l = p["latency_us"]
        lines.append(
            f"{p['system']:7} {p['name']:48} {p['ops_per_s']:>9.0f} {ms(l.get('p50_us')):>7} {ms(l.get('p90_us')):>7} "
            f"{ms(l.get('p99_us')):>7} {ms(l.get('p999_us')):>7} {ms(l.get('max_us')):>8} {p['errors']:>5} {p['server_cpu_us_per_op']:>9.1f}"
        )
    f = results.get("fdatasync")
    if f:
        lines.append("")
        # Results files written before the probe preallocated have no extending_p50_us:
        # their percentiles are of appends.
        preallocated = "extending_p50_us" in f
        kind = "write into preallocated space" if preallocated else "append"
        pair = f.get("pair_p50_us")
        lines.append(
            f"data disk: fdatasync of a {f['bytes']} B {kind} p50 {ms(f['p50_us'])} ms, "
            f"p90 {ms(f['p90_us'])} ms, p99 {ms(f['p99_us'])} ms ({f['writes']} writes, before the clusters start)"
            + (f"; of an append that extends the file p50 {ms(f['extending_p50_us'])} ms" if preallocated else "")
            + (f"; two processes syncing at once, the later done p50 {ms(pair)} ms" if pair else "")
        )
        for p in results["points"]:
            if p["system"] == "raftkv" and p.get("op") == "put" and p.get("clients") == 1:
                over = (p["latency_us"]["p50_us"] - f["p50_us"]) / 1000
                line = f"  {p['name']}: p50 is fdatasync p50 + {over:.3f} ms"
                if pair:
                    line += f", two concurrent syncs' p50 + {(p['latency_us']['p50_us'] - pair) / 1000:.3f} ms"
                lines.append(line)
    if results["ratios"]:
        lines.append("")
        lines.append(f"{'raftkv / etcd, same run':48} {'throughput':>10} {'p50':>7} {'p99':>7} {'cpu/op':>7}")
        for r in results["ratios"]:
            lines.append(f"{r['name']:48} {r['throughput_ratio']:>9.2f}x {r['p50_ratio']:>6.2f}x {r['p99_ratio']:>6.2f}x {r['cpu_per_op_ratio']:>6.2f}x")
    sc = results.get("shard_counts")
    if sc:
        section(
            lines,
            [f"shard counts: {sc['clients']} clients, medians of {sc['rounds']} interleaved rounds of {sc['duration_s']} s; "
             f"ratios against {sc['counts'][0]} shard (medians, and the range of the rounds' own ratios)",
             f"{'op':4} {'shards':>6} {'ops/s':>9} {'ratio':>6} {'rounds':>11} {'cpu us/op':>9} {'p50':>6} {'p99':>6} {'err':>5}"],
            sc["summary"],
            lambda r: f"{r['op']:4} {r['shards']:>6} {r['ops_per_s']:>9.0f} {r['ratio_to_base'] or 0:>5.2f}x "
                      f"{r['round_ratio_min'] or 0:>5.2f}-{r['round_ratio_max'] or 0:.2f}x {r['server_cpu_us_per_op']:>9.1f} "
                      f"{ms(r['p50_us']):>6} {ms(r['p99_us']):>6} {r['errors']:>5}",
        )
    if results["idle"] or results.get("etcd_idle"):
        lines.append("")
        for i in results["idle"]:
            lines.append(f"idle raftkv, {i['shards']:>2} shards: {i['percent_of_one_core']:5.1f}% of one core (3 nodes, {i['seconds']} s)")
        if results.get("etcd_idle"):
            lines.append(f"idle etcd:             {results['etcd_idle']['percent_of_one_core']:5.1f}% of one core")
    au = results.get("auth")
    if au:
        section(
            lines,
            [
                f"the cost of authentication: {au['clients']} clients, {au['shards']} shards, "
                f"medians of {au['repetitions']} interleaved runs of {au['duration_s']} s; ratios against protection none",
                f"{'op':4} {'protection':10} {'ops/s':>9} {'ratio':>6} {'cpu us/op':>9} {'ratio':>6} {'p50':>6} {'p99':>6} {'err':>5}",
            ],
            au["summary"],
            lambda r: f"{r['op']:4} {r['protection']:10} {r['ops_per_s']:>9.0f} {r['throughput_ratio']:>6.3f} "
            f"{r['server_cpu_us_per_op']:>9.1f} {r['cpu_per_op_ratio']:>6.3f} {ms(r['p50_us']):>6} {ms(r['p99_us']):>6} {r['errors']:>5}",
        )
    ld = results.get("leaders")
    if ld:
        section(
            lines,
            [
                f"where leaderships go: {ld['clients']} clients, medians of {ld['repetitions']} interleaved runs "
                f"of {ld['duration_s']} s per shard count (3 nodes, fsync on)",
                f"{'shards':>6} {'op':4} {'leaders':8} {'ops/s':>9} {'cpu us/op':>9} {'p50':>6} {'p99':>6} {'err':>5}",
            ],
            ld["summary"],
            lambda r: f"{r['shards']:>6} {r['op']:4} {r['leaders']:8} {r['ops_per_s']:>9.0f} "
            f"{r['server_cpu_us_per_op']:>9.1f} {ms(r['p50_us']):>6} {ms(r['p99_us']):>6} {r['errors']:>5}",
        )
        if ld["redis"]["rows"]:
            section(
                lines,
                [f"redis-benchmark to node 1, {ld['redis']['connections']} connections, "
                 f"{ld['redis']['requests']} requests per test, median round"],
                ld["redis"]["rows"],
                lambda row: f"{row['system']:16} {row['test']:4} -P {row['pipeline']:<3} {row['rps']:>10.0f} req/s  "
                f"p50 {row['p50_ms']:.3f}  p99 {row['p99_ms']:.3f}  load {row['load_average_1m']:.1f}",
            )
    rd = results.get("redis")
    if rd:
        section(
            lines,
            [
                f"redis-benchmark, {rd['connections']} connections, {rd['requests']} requests per test, "
                f"median of {rd.get('rounds', 1)} alternating rounds (p50/p99 in ms)"
            ],
            rd["rows"],
            lambda row: f"{row['system']:24} {row['test']:4} -P {row['pipeline']:<3} {row['rps']:>10.0f} req/s  p50 {row['p50_ms']:.3f}  p99 {row['p99_ms']:.3f}"
            f"  load {row.get('load_average_1m', float('nan')):.1f}",
        )
        by = {(r["system"], r["test"], r["pipeline"]): r["rps"] for r in rd["rows"]}
        for (system, test, pipeline), rps in sorted(by.items()):
            other = by.get(("redis", test, pipeline))
            if system != "redis" and other:
                lines.append(f"{system} / redis {test} -P {pipeline}: {rps / other:.2f}x")
    c = results.get("catchup")
    if c:
        lines.append("")
        got = f"{c['catchup_s']:.2f} s" if c["catchup_s"] is not None else "did not catch up"
        rss = ", ".join(f"n{n} {v / 1024:.0f} MiB" for n, v in c["rss_kb_after_catchup"].items() if v)
        loaded = ", ".join(f"n{n} {v / 1024:.0f} MiB" for n, v in c["rss_kb_after_load"].items() if v)
        lines.append(f"catch-up of a restarted follower on {c['keys_loaded']} keys: {got}; RSS after: {rss}")
        lines.append(f"load: {c['load_puts_per_s']:.0f} puts/s; RSS of the live nodes after the load: {loaded}")
    return "\n".join(lines)


def write_results(results, stamp, partial=False):
    RESULTS.mkdir(parents=True, exist_ok=True)
    body = json.dumps(results, indent=1)
    (RESULTS / f"{stamp}.json").write_text(body)
    # latest.json (kept in git) stands for a whole sweep; a single point must not replace it.
    if not partial:
        (RESULTS / "latest.json").write_text(body)
    return RESULTS / f"{stamp}.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer points, 3 s each, 20,000-key catch-up")
    ap.add_argument("--full", action="store_true", help="catch-up on 1,000,000 keys (the issue's target)")
    ap.add_argument("--duration", type=int, help="seconds per point (default 15, --quick 3)")
    ap.add_argument("--idle-seconds", type=int, default=None, help=f"seconds an idle cluster is watched (default {IDLE_SECONDS}, --quick 3)")
    ap.add_argument("--catchup-keys", type=int, help="keys loaded for the catch-up point (default 200,000; --full 1,000,000; --quick 20,000)")
    ap.add_argument("--no-raftkv", action="store_true", help="skip raftkv (etcd side only)")
    ap.add_argument("--no-etcd", action="store_true", help="skip etcd even if installed")
    ap.add_argument("--no-catchup", action="store_true", help="skip the catch-up point")
    ap.add_argument("--only", choices=["catchup", "redis", "auth", "leaders"], help="run only this point (no etcd, no sweep; latest.json and plots untouched)")
    ap.add_argument("--shard-rounds", type=int, default=SHARD_ROUNDS,
                    help=f"interleaved rounds of the 1/8/64-shard comparison at 64 clients (default {SHARD_ROUNDS})")
    ap.add_argument("--repetitions", type=int, default=AUTH_REPETITIONS, help=f"--only auth, --only leaders: interleaved repetitions (default {AUTH_REPETITIONS})")
    ap.add_argument("--leaders", choices=LEADER_POLICIES, default=LEADERS_DEFAULT,
                    help=f"the clusters' [placement] leaders (default {LEADERS_DEFAULT}); --only leaders compares both")
    ap.add_argument("--protections", type=lambda s: tuple(s.split(",")), default=AUTH_PROTECTIONS,
                    help=f"--only auth: the protections compared, the first the baseline (default {','.join(AUTH_PROTECTIONS)})")
    ap.add_argument("--no-redis", action="store_true", help="skip the redis-benchmark point")
    ap.add_argument("--redis-requests", type=int, help="redis-benchmark requests per test (default 200,000; --quick 20,000)")
    ap.add_argument("--redis-pipelines", type=lambda s: tuple(int(x) for x in s.split(",")), default=REDIS_PIPELINES,
                    help="redis-benchmark -P values (default 1,16; the issue's bar is at 1)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep data dirs and server logs")
    ap.add_argument("--replot", metavar="JSON", help="only redraw the plots of a results file")
    args = ap.parse_args()
    if args.replot:
        draw(json.loads(Path(args.replot).read_text()))
        return 0
    args.duration = args.duration or (3 if args.quick else 15)
    if args.idle_seconds is None:
        args.idle_seconds = 3 if args.quick else IDLE_SECONDS
    args.catchup_keys = args.catchup_keys or (1_000_000 if args.full else 20_000 if args.quick else 200_000)
    if args.only:
        args.no_etcd = args.no_plots = True
    # The etcd point needs both: etcd serves, etcdctl tells when it is up.
    with_etcd = not args.no_etcd and all(shutil.which(t) for t in ("etcd", "etcdctl"))
    if not args.no_etcd and not with_etcd:
        log("no etcd or no etcdctl on PATH (Debian: apt-get install etcd-server etcd-client): raftkv only")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
        "machine": machine_info(), "settings": {
            "duration_s": args.duration, "quick": args.quick, "full": args.full, "key_size": KEY_SIZE,
            "keys": KEYS, "base_shards": BASE_SHARDS, "catchup_keys": args.catchup_keys,
            "leaders": args.leaders,
        },
        "points": [], "idle": [], "etcd_idle": None, "catchup": None, "ratios": [],
    }
    if args.no_build:
        bins = prebuilt(with_etcd)
    else:
        bins = build(not args.no_raftkv, with_etcd)
    workdir = Path(tempfile.mkdtemp(prefix="raftkv-bench-"))
    log(f"data dirs and logs under {workdir}")
    results["fdatasync"] = fdatasync_latency(workdir)
    f = results["fdatasync"]
    log(f"fdatasync of a {f['bytes']} B write into preallocated space: p50 {ms(f['p50_us'])} ms, p99 {ms(f['p99_us'])} ms "
        f"({f['writes']} writes); of an extending append: p50 {ms(f['extending_p50_us'])} ms; "
        f"the later of two at once: p50 {ms(f['pair_p50_us'])} ms")
    try:
        if with_etcd:
            run_etcd(args, bins, workdir, results)
        if args.only == "catchup":
            run_catchup(args, bins, workdir, results)
        elif args.only == "redis":
            run_redis_point(args, bins, workdir, results)
        elif args.only == "auth":
            run_auth(args, bins, workdir, results)
        elif args.only == "leaders":
            run_leaders(args, bins, workdir, results)
        elif not args.no_raftkv:
            run_shard_counts(args, bins, workdir, results)
            run_raftkv(args, bins, workdir, results)
            if not args.no_catchup:
                run_catchup(args, bins, workdir, results)
            if not args.no_redis:
                run_redis_point(args, bins, workdir, results)
    finally:
        results["ratios"] = ratios(results)
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        path = write_results(results, stamp, partial=args.only is not None)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    print(f"\nresults: {path}" + ("" if args.only else f" (and {RESULTS / 'latest.json'})"))
    if not args.no_plots:
        draw(results)
    return 0


def draw(results):
    py = ensure_matplotlib()
    if py is None:
        return
    PLOTS.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([str(py), str(BENCH_DIR / "plot.py"), "-", str(PLOTS)], input=json.dumps(results), text=True)
    if r.returncode == 0:
        print(f"plots: {PLOTS}/*.png")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""bench/callgrind.py: CPU per operation as instruction counts, repeatable on a noisy machine.

Starts a fresh 3-node kvserver cluster (free loopback ports, temp data dirs, fsync on)
with every node under `valgrind --tool=callgrind`, runs one fixed workload with
`kvcli bench --ops N` (16 B keys, 100 B values, 10,000 keys, seed 1), stops the nodes
with SIGTERM and prints the three processes' total instructions divided by N. The count
starts once every shard has a leader (callgrind_control --zero), so startup and election
are left out unless --count-startup; with --leaders-on the zero comes after the move, so
the status polls that find the leaders (and the `shard leader` requests) are left out
too. What the servers do per unit of time during the run still counts (ticks,
heartbeats, the balancer's status rounds), which is why N should be large (20,000); so
does the status request kvcli bench sends each node when it connects.
Throughput under callgrind means nothing; compare instructions/op between builds.

    python3 bench/callgrind.py --target $CARGO_TARGET_DIR/release --shards 8 --ops 20000
    python3 bench/callgrind.py --target ... --protection none   # the same, unauthenticated
    python3 bench/callgrind.py --target ... --shards 8 --tick-ms 50   # no elections under valgrind's slowdown
    python3 bench/callgrind.py --target ... --shards 8 --tick-ms 50 --leaders-on 1   # per-group cost alone
    python3 bench/callgrind.py --target ... --op get --lease-reads   # gets as the sweep serves them
    python3 bench/callgrind.py --target ... --leaders-on 1 --count kvcli   # the load generator's instructions
"""
import json, subprocess, tempfile, socket, argparse, re, shutil
from leaders import prepare
p = argparse.ArgumentParser()
p.add_argument("--target", required=True, help="directory holding release kvserver and kvcli")
p.add_argument("--shards", type=int, default=1)
p.add_argument("--op", default="put")
p.add_argument("--clients", default="64")
p.add_argument("--ops", default="20000")
p.add_argument("--protection", default="mac", choices=["mac", "encrypt", "none"],
               help="the cluster file's protection: compare none with mac for what authentication costs")
p.add_argument("--tick-ms", type=int, default=10,
               help="the cluster file's tick (default 10, as the sweep). Under callgrind a turn takes ~50x longer, "
                    "so at 8+ shards 10 ms ticks can time out elections and requests; 50 keeps every leader, and the "
                    "figure then counts the work of the puts rather than of retries and elections")
p.add_argument("--count-startup", action="store_true",
               help="count from the servers' start (default: from when every shard has a leader, via callgrind_control --zero)")
p.add_argument("--leaders-on", type=int, default=0, metavar="N",
               help="before counting, pause the balancer and move every shard's leadership to node N "
                    "(bench/leaders.py): the rounds of 1 shard, so the count shows what many groups cost apart "
                    "from what spreading their leaders costs")
p.add_argument("--lease-reads", action="store_true",
               help="lease_reads = true in the cluster file, as bench/run.py's clusters have it: a leader then answers "
                    "linearizable gets from its lease; without it every get takes a ReadIndex heartbeat round")
p.add_argument("--count", default="servers", choices=["servers", "kvcli"],
               help="whose instructions: the three servers' (default), or the load generator's alone (the servers run "
                    "natively and `kvcli bench` under callgrind; its whole process: start, status, bench)")
p.add_argument("--keep", action="store_true", help="keep the callgrind files (for callgrind_annotate) and print their directory")
a = p.parse_args()
d = tempfile.mkdtemp(prefix="cgkv-")
# The key set (`kvcli bench --key-set`) the run's puts and gets name their keys from.
KEY_SET = "cg"


def free_ports(kind, n, taken):
    got = []
    while len(got) < n:
        s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); pt = s.getsockname()[1]; s.close()
        if pt not in taken and pt not in got: got.append(pt)
    return got
ports = free_ports(socket.SOCK_DGRAM, 3, [])
# The Redis and HTTP ports are listed, not derived from the UDP port (+1000, +2000),
# which may be taken by other clusters on the machine.
tcp = free_ports(socket.SOCK_STREAM, 6, ports)
cfg = f"{d}/cluster.toml"
# `kvserver keygen` makes a client key named admin.key an admin, which `shard leader` needs.
key = "keys/admin.key" if a.leaders_on else "keys/bench.key"
open(cfg, "w").write(f"cluster_id = 9{a.shards}\nshards = {a.shards}\ndata_dir = \"{d}\"\nkey_file = \"keys/cluster.key\"\nclient_key_files = [\"{key}\"]\nclient_key_file = \"{key}\"\nprotection = \"{a.protection}\"\n[timing]\ntick_ms = {a.tick_ms}\nheartbeat_ticks = 5\nelection_ticks_min = 30\nelection_ticks_max = 60\n" + ("lease_reads = true\n" if a.lease_reads else "") + "".join(f'\n[[nodes]]\nid = {n}\naddr = "127.0.0.1:{ports[n-1]}"\nredis_addr = "127.0.0.1:{tcp[n-1]}"\nhttp_addr = "127.0.0.1:{tcp[n+2]}"\n' for n in (1,2,3)))
subprocess.run([f"{a.target}/kvserver", "keygen", "--config", cfg], check=True, stdout=subprocess.DEVNULL)
procs = []
for n in (1,2,3):
    grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.{n}", "--dump-instr=no"]
    cmd = (grind if a.count == "servers" else []) + [
           f"{a.target}/kvserver", "--config", cfg, "--node", str(n), "--data-dir", f"{d}/node-{n}", "--log-level", "warn"]
    procs.append(subprocess.Popen(cmd, stdout=open(f"{d}/n{n}.log","w"), stderr=subprocess.STDOUT))
kvcli = [f"{a.target}/kvcli", "--cluster", cfg]
try:
    prepare(kvcli, a.shards, a.leaders_on, KEY_SET if a.op == "get" else None)
    if not a.count_startup and a.count == "servers":
        # Count from here, after every status poll and leader move above: they would
        # otherwise weigh on the figure by how long the loaded machine took to elect and
        # to move leaderships. The bench that follows asks each node once, at connect.
        for x in procs:
            subprocess.run(["callgrind_control", "--zero", str(x.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mix = {"put":"0","get":"1"}[a.op]
    grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.kvcli", "--dump-instr=no"]
    r = subprocess.run((grind if a.count == "kvcli" else []) + kvcli + ["bench","--clients",a.clients,"--ops",a.ops,"--mix",mix,"--value-size","100","--key-size","16","--keys","10000","--key-set",KEY_SET,"--json"],capture_output=True,text=True,timeout=1200)
    j = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
except BaseException:
    # A failed run (no leaders, leaderships that did not move, no bench output) leaves
    # nothing behind but with --keep.
    for x in procs: x.terminate()
    for x in procs: x.wait()
    if not a.keep: shutil.rmtree(d, ignore_errors=True)
    raise
finally:
    for x in procs: x.terminate()
    for x in procs: x.wait()
tot = 0
counted = [1, 2, 3] if a.count == "servers" else ["kvcli"]
for n in counted:
    # callgrind writes its totals when the process exits, SIGTERM included.
    txt = open(f"{d}/cg.{n}").read()
    m = re.search(r"^summary:\s+(\d+)", txt, re.M) or re.search(r"^totals:\s+(\d+)", txt, re.M)
    tot += int(m.group(1))
if a.keep:
    print("callgrind files: " + " ".join(f"{d}/cg.{n}" for n in counted), flush=True)
else:
    shutil.rmtree(d, ignore_errors=True)
ops = j["ops"]
# Every get should find its value (preloaded above): say how many did not.
found = f" not-found={j.get('not_found', 0)}/{j.get('reads', 0)}" if a.op == "get" else ""
on = (f" leaders-on-n{a.leaders_on}" if a.leaders_on else "") + (" lease-reads" if a.lease_reads else "")
print(f"{a.target} {'kvcli alone ' if a.count == 'kvcli' else ''}{a.protection} tick={a.tick_ms}ms {a.shards}sh{on} {a.op} c={a.clients} ops={ops} err={j['errors']}{found} {j['ops_per_s']:.0f}/s  Ir total={tot/1e9:.2f}G  Ir/op={tot/ops:.0f}", flush=True)

#!/usr/bin/env python3
"""bench/syscalls.py: what one benchmark point costs the kernel, per operation.

CPU per op says how much a put costs; this says where the kernel's share goes, which on
this VM is most of it: datagrams sent and received, epoll wake-ups, fsyncs and context
switches per operation, counted with `perf stat` on the three server processes while one
`kvcli bench` point runs (counts, unlike times, barely move with the machine's load).

Starts a fresh 3-node kvserver cluster (free loopback ports, temp data dirs, fsync on,
the timing of bench/callgrind.py), waits for leaders, optionally moves every shard's
leadership to one node (`--leaders-on N`, through `kvcli shard leader`, with the balancer
paused first so that it does not spread them again: separates the cost of many groups
from the cost of spreading their leaders over the nodes), runs the
point (16 B keys, 100 B values, 10,000 keys) and prints the counts per operation, then
the servers' own turn counters per operation (from `kvcli --json status`, before and after
the point): event-loop turns by what woke the loop, disk writes handed to the disk thread,
WAL group commits, and peer datagrams sent; and the load generator's own datagrams per
operation (requests sent, replies received, and how many each carried).
Needs `perf` and permission to read tracepoints (root here).

    python3 bench/syscalls.py --target target/release --shards 8
    python3 bench/syscalls.py --target target/release --shards 8 --leaders-on 1
    python3 bench/syscalls.py --target target/release --shards 8 --leaders-on 1 --op get --lease-reads
    python3 bench/syscalls.py --target target/release --shards 64 --leaders-on 1 --duration 5 --timeline 0.5

`--timeline SECONDS` records the syscalls instead of counting them and prints where a
round's wall-clock time goes, hop by hop (bench/timeline.py).
"""
import argparse, atexit, json, os, re, shutil, signal, socket, subprocess, tempfile, time

import timeline
from leaders import leaders, prepare
from run import free_port

# The key set (`kvcli bench --key-set`) the point's puts and gets name their keys from.
KEY_SET = "sc"
SYSCALLS = ["sendto", "recvfrom", "epoll_wait", "fdatasync", "write", "futex", "brk", "mmap", "munmap", "madvise"]

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--target", required=True, help="directory holding release kvserver and kvcli")
p.add_argument("--shards", type=int, default=1)
p.add_argument("--op", default="put", choices=["put", "get"])
p.add_argument("--clients", default="64")
p.add_argument("--duration", default="10", help="seconds of the point (default 10)")
p.add_argument("--leaders-on", type=int, default=0, metavar="N",
               help="first make node N the preferred leader of every shard, and wait until it leads them all")
p.add_argument("--lease-reads", action="store_true",
               help="lease_reads = true in the cluster file, as bench/run.py's clusters have it; without it "
                    "every linearizable get takes a ReadIndex heartbeat round (peer datagrams per round)")
p.add_argument("--timeline", type=float, default=0, metavar="SECONDS",
               help="instead of counting syscalls, record them for SECONDS (from 2 s into the point) and "
                    "print where a round's time goes, hop by hop (bench/timeline.py); needs --leaders-on")
a = p.parse_args()
if a.timeline and not a.leaders_on:
    p.error("--timeline needs --leaders-on: a round is followed through one leader")
if a.timeline and float(a.duration) < a.timeline + 3:
    p.error(f"--duration must be at least --timeline + 3 s ({a.timeline + 3:g})")

d = tempfile.mkdtemp(prefix="sckv-")
# Removed however the script ends (an error, or its output piped into `head`).
atexit.register(shutil.rmtree, d, ignore_errors=True)
ports = []
while len(ports) < 3:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); pt = s.getsockname()[1]; s.close()
    if pt not in ports: ports.append(pt)
# The Redis and HTTP ports are listed, not derived from the UDP port (+1000, +2000), which
# other clusters on the machine may hold: a node that cannot bind exits.
tcp = []
while len(tcp) < 6:
    pt = free_port()
    if pt not in ports and pt not in tcp: tcp.append(pt)
cfg = f"{d}/cluster.toml"
# keys/admin.key: `kvserver keygen` makes the client key of that name an admin (for `shard leader`).
open(cfg, "w").write(
    f"cluster_id = 7{a.shards}\nshards = {a.shards}\ndata_dir = \"{d}\"\nkey_file = \"keys/cluster.key\"\n"
    "client_key_files = [\"keys/admin.key\"]\nclient_key_file = \"keys/admin.key\"\nprotection = \"mac\"\n"
    "[timing]\ntick_ms = 10\nheartbeat_ticks = 5\nelection_ticks_min = 30\nelection_ticks_max = 60\n"
    + ("lease_reads = true\n" if a.lease_reads else "")
    + "".join(f'\n[[nodes]]\nid = {n}\naddr = "127.0.0.1:{ports[n-1]}"\nredis_addr = "127.0.0.1:{tcp[n-1]}"\n'
              f'http_addr = "127.0.0.1:{tcp[n+2]}"\n' for n in (1, 2, 3)))
kvcli = [f"{a.target}/kvcli", "--cluster", cfg]
subprocess.run([f"{a.target}/kvserver", "keygen", "--config", cfg], check=True, stdout=subprocess.DEVNULL)
procs = [subprocess.Popen([f"{a.target}/kvserver", "--config", cfg, "--node", str(n), "--data-dir", f"{d}/node-{n}",
                           "--log-level", "warn"], stdout=open(f"{d}/n{n}.log", "w"), stderr=subprocess.STDOUT)
         for n in (1, 2, 3)]


def counters():
    """Each runtime counter of the turn structure, summed over the three nodes."""
    r = subprocess.run(kvcli + ["--json", "status"], capture_output=True, text=True, timeout=60)
    total = {}
    try:
        nodes = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])["nodes"]
    except (IndexError, KeyError, ValueError):
        return total
    for n in nodes:
        for name, v in (n.get("counters") or {}).items():
            if name.startswith(("raftkv_loop_turns", "raftkv_disk_writes", "raftkv_wal_syncs",
                                "raftkv_peer_datagrams_sent", "raftkv_datagrams_sent",
                                "raftkv_datagrams_received")):
                total[name] = total.get(name, 0) + v
    return total


def cpu_s(pid):
    """(user, system) CPU seconds of a process so far."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) / os.sysconf("SC_CLK_TCK"), int(f[12]) / os.sysconf("SC_CLK_TCK")


def cpu_total(pids):
    """(user, system) CPU seconds of the three servers together."""
    both = [cpu_s(p) for p in pids]
    return sum(u for u, _ in both), sum(s for _, s in both)


try:
    prepare(kvcli, a.shards, a.leaders_on, KEY_SET if a.op == "get" else None)
    time.sleep(1)
    events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS) + ",context-switches,page-faults"
    turns0 = counters()
    cpu0 = cpu_total([x.pid for x in procs])
    node0 = [sum(cpu_s(x.pid)) for x in procs]
    t0 = time.monotonic()
    if a.timeline:
        # System-wide, for the load generator's syscalls too; the point is warm by then.
        stat = subprocess.Popen(["bash", "-c", 'sleep 2; exec "$@"', "perf", "perf", "record", "-q", "-a"]
                                + timeline.perf_events() + ["-o", f"{d}/perf.data", "--", "sleep", str(a.timeline)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-o", f"{d}/perf.txt",
                                 "-p", ",".join(str(x.pid) for x in procs)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = subprocess.run(kvcli + ["bench", "--clients", a.clients, "--duration", a.duration,
                                "--mix", {"put": "0", "get": "1"}[a.op], "--value-size", "100", "--key-size", "16",
                                "--keys", "10000", "--key-set", KEY_SET, "--json"], capture_output=True, text=True, timeout=1200)
    cpu1 = cpu_total([x.pid for x in procs])
    node1 = [sum(cpu_s(x.pid)) for x in procs]
    elapsed = time.monotonic() - t0
    if not a.timeline:
        stat.send_signal(signal.SIGINT)
    stat.wait()
    if a.timeline:
        events_seen = timeline.read_perf(f"{d}/perf.data")
    turns1 = counters()
    if a.leaders_on and leaders(kvcli) != [a.leaders_on] * a.shards:
        print(f"warning: node {a.leaders_on} no longer leads every shard after the point: {leaders(kvcli)}")
    j = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
finally:
    for x in procs:
        x.terminate()
    for x in procs:
        x.wait()
ops = j["ops"]
print(f"{a.shards} shards{f', leaders on n{a.leaders_on}' if a.leaders_on else ''}{', lease reads' if a.lease_reads else ''}: {a.op} c={a.clients} "
      f"ops={ops} err={j['errors']} {j['ops_per_s']:.0f}/s server cpu/op={(sum(cpu1) - sum(cpu0)) / ops * 1e6:.1f} us "
      f"(user {(cpu1[0] - cpu0[0]) / ops * 1e6:.1f}, system {(cpu1[1] - cpu0[1]) / ops * 1e6:.1f}) "
      f"load={os.getloadavg()[0]:.1f}")
# Per node: the leader's share is the requests' own work; the followers' is what their
# groups cost while awake (ticks, heartbeats), which grows with the shards, not the gets.
print("  server cpu per node  " + ", ".join(
    f"node {n}: {(b - a_) / elapsed * 100:.1f} % of a core" for n, (a_, b) in enumerate(zip(node0, node1), 1)))
c = j.get("client", {})
print(f"  {'client request datagrams':30} {c.get('datagrams_sent', 0) / ops:7.3f} per op"
      f" ({c.get('requests_sent', 0) / max(c.get('datagrams_sent', 0), 1):.1f} requests each)")
if "reply_datagrams_received" in c:
    print(f"  {'client reply datagrams':30} {c['reply_datagrams_received'] / ops:7.3f} per op"
          f" ({c.get('replies_received', 0) / max(c['reply_datagrams_received'], 1):.1f} replies each)")
if a.timeline:
    leader = procs[a.leaders_on - 1].pid
    followers = [x.pid for x in procs if x.pid != leader]
    print(timeline.report(events_seen, leader, followers))
    raise SystemExit(0)
for line in open(f"{d}/perf.txt"):
    f = line.strip().split(",")
    if len(f) > 2 and re.match(r"^[\d.]+$", f[0]):
        print(f"  {f[2].replace('syscalls:sys_enter_', ''):18} {float(f[0]) / ops:7.3f} per op")
for name in sorted(turns1):
    short = name.replace("raftkv_", "").replace("_total", "")
    print(f"  {short:30} {(turns1[name] - turns0.get(name, 0)) / ops:7.3f} per op")

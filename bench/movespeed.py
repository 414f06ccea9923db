#!/usr/bin/env python3
"""bench/movespeed.py: where the time of one replica move goes (issue 11).

On release binaries, with fresh temp data dirs and free loopback ports, the balancer off:

1. 3 kvserver nodes from a generated cluster file on 127.0.0.1 (replication = 3,
   --shards shards, 8 by default) are preloaded with --keys keys (240,000: about 30,000
   keys, 4 MB, a shard, as 1,000,000 keys over 32 shards) of 100 B.
2. Node 4 joins with `kvserver --join` on 127.0.0.2.
3. One shard's replica moves from a follower to node 4 (`kvcli shard move`) with no load,
   then another shard's under a --clients (16) `kvcli bench` load (--mix 0.5), then, with
   --leader-moves, a leader's replica of each kind.

Each move is broken down from the nodes' core-event log lines (their timestamps):
asked -> learner added (the `AddLearner` applied on the leader) -> snapshot send started
-> snapshot installed on node 4 -> promoted (`PromoteLearner` applied on the leader) ->
old replica removed (`RemoveNode` applied on the leader) -> answered (`kvcli` returned).
Also counted during each move: snapshot sends to the new node (a transfer restarted
from zero after the leader compacted again counts once more), datagrams dropped and the
slowest event-loop turn any node logged; over the whole run, the metadata group's
elections (each a new balancer).

Writes bench/results/movespeed-<timestamp>.json and movespeed-latest.json and prints a
table. Benchmarks are not tests: nothing here asserts, and CI does not run it.

    python3 bench/movespeed.py                      # ~2 min after the build
    python3 bench/movespeed.py --keys 1000000 --shards 32 --leader-moves
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cluster
from run import RESULTS, build, git_commit, log, machine_info

MOVE_WAIT_S = 300
# Core events (elections, membership changes, snapshot sends and installs, moves) and
# the event loop's slow-turn warnings; nothing per request.
LOG_FILTER = "warn,kv_server::core_events=info,kv_server::server=info"
METADATA_SHARD = 2**32 - 1
# One log line of tracing's default format: timestamp, level, target, message, fields.
LINE = re.compile(r"^(\S+)\s+(\w+)\s+(\S+):\s+(.*)$")
FIELD = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")


def parse_ts(s):
    # 2026-12-03T03:19:00.123456Z: Python wants at most 6 fractional digits.
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".")
        s = f"{head}.{frac[:6]}"
    return datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp()


def events(path):
    """(time, message, fields) of every log line of a node."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if not m:
            continue
        try:
            t = parse_ts(m.group(1))
        except ValueError:
            continue
        rest = m.group(4)
        fields = {k: v.strip('"') for k, v in FIELD.findall(rest)}
        msg = FIELD.sub("", rest).strip()
        out.append((t, msg, fields))
    return out


class Cluster(cluster.Cluster):
    """The move timing's cluster: the balancer off, core events logged."""

    def __init__(self, bins, workdir, shards):
        super().__init__(bins, workdir, "movespeed", 7312, shards, "enabled = false\n", LOG_FILTER)

    def counters(self):
        """Each node's counters (`kvcli --json status`), by node id."""
        return {n["node"]: n.get("counters", {}) for n in self.status().get("nodes", [])}


def counter(counters, name, label=None):
    """Sum of a counter's series, optionally only those whose labels contain `label`."""
    total = 0.0
    for node in counters.values():
        for k, v in (node.items() if isinstance(node, dict) else node):
            if k.split("{")[0] == name and (label is None or label in k):
                total += float(v)
    return total


def breakdown(cluster, shard, src, dst, t_ask, t_answer):
    """The move's milestones from every node's log lines between t_ask and t_answer."""
    marks = {"asked": t_ask}
    sends = 0
    installs = 0
    meta_leader_changes = 0
    slow_turn_ms = 0.0
    for n in cluster.procs:
        for t, msg, f in events(cluster.log_path(n)):
            if t < t_ask - 0.5 or t > t_answer + 0.5:
                continue
            if f.get("shard") == str(METADATA_SHARD) and msg.startswith("leader changed") and n == dst:
                meta_leader_changes += 1
            if msg.startswith("slow event loop turn"):
                slow_turn_ms = max(slow_turn_ms, float(f.get("ms", 0)))
            if f.get("shard") != str(shard):
                continue
            if msg == "snapshot send started" and f.get("to") == str(dst):
                sends += 1
                marks.setdefault("snapshot_send_started", t)
            elif msg == "snapshot installed" and n == dst:
                installs += 1
                marks.setdefault("snapshot_installed", t)
            elif msg == "membership changed":
                voters = f.get("voters", "").split(",")
                learners = f.get("learners", "").split(",")
                if str(dst) in learners:
                    marks.setdefault("learner_added", t)
                if str(dst) in voters:
                    marks.setdefault("promoted", t)
                if str(dst) in voters and str(src) not in voters:
                    marks.setdefault("old_removed", t)
    marks["answered"] = t_answer
    order = ["asked", "learner_added", "snapshot_send_started", "snapshot_installed", "promoted",
             "old_removed", "answered"]
    steps = {}
    prev = None
    for k in order:
        if k in marks:
            if prev is not None:
                steps[f"{prev}->{k}"] = round(marks[k] - marks[prev], 3)
            prev = k
    return {
        "total_s": round(t_answer - t_ask, 3), "steps_s": steps, "snapshot_sends": sends,
        "snapshot_installs": installs, "metadata_leader_changes_seen_by_dst": meta_leader_changes,
        "slowest_event_loop_turn_ms": slow_turn_ms,
    }


class Load:
    """A `kvcli bench` on its own thread, for as long as the moves under load take."""

    def __init__(self, cluster, clients, seconds, value_size):
        self.result = None
        args = ["bench", "--clients", str(clients), "--duration", f"{seconds}s", "--keys", "10000",
                "--value-size", str(value_size), "--mix", "0.5"]
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", cluster.kvcli_json(*args, timeout=seconds + 300)))
        self.thread.start()

    def finish(self):
        self.thread.join()
        report, run = self.result
        return {"exit": run.returncode, "ops_per_s": round(report.get("ops_per_s", 0)),
                "errors": report.get("errors"), "latency_us": report.get("latency")}


def move(cluster, shard, src, dst):
    before = cluster.counters()
    t0 = time.time()
    report, r = cluster.kvcli_json("shard", "move", str(shard), "--from", str(src), "--to", str(dst),
                                   "--wait", str(MOVE_WAIT_S), timeout=MOVE_WAIT_S + 60)
    t1 = time.time()
    after = cluster.counters()
    res = breakdown(cluster, shard, src, dst, t0, t1)
    res.update({"shard": shard, "from": src, "to": dst, "exit": r.returncode,
                "answer": report.get("result") or r.stdout.strip()[-300:] or r.stderr.strip()[-300:]})
    res["datagrams_dropped"] = counter(after, "raftkv_datagrams_dropped_total") - counter(
        before, "raftkv_datagrams_dropped_total")
    return res


def pick(status, used, leader_move, dst):
    """A shard not moved yet and the replica to move: a follower's, or its leader's."""
    for row in status["shards"]:
        s = row["shard"]
        if s in used or dst in row["voters"] or not row.get("leader") or row["leader"] == dst:
            continue
        if leader_move:
            return s, row["leader"]
        return s, next(v for v in row["voters"] if v != row["leader"])
    raise RuntimeError("no shard left to move")


def run(args, bins, workdir):
    res = {"settings": vars(args).copy(), "moves": []}
    c = Cluster(bins, workdir, args.shards)
    try:
        for n in (1, 2, 3):
            c.start_node(n)
        c.wait_leaders()
        log(f"preloading {args.keys} keys of {args.value_size} B")
        t0 = time.time()
        report, _ = c.kvcli_json("bench", "--preload", "--keys", str(args.keys), "--value-size",
                                 str(args.value_size), "--clients", "256", timeout=3600)
        res["preload"] = {"seconds": round(time.time() - t0, 1),
                          "puts_per_s": round(report.get("ops_per_s", 0)), "errors": report.get("errors")}
        log(f"preload: {res['preload']}")
        c.join_node(4, "127.0.0.2")
        log("node 4 joined")
        used = set()
        kinds = [("idle", False), ("loaded", False)]
        if args.leader_moves:
            kinds += [("idle", True), ("loaded", True)]
        for kind, leader_move in kinds:
            st = c.wait_leaders()
            shard, src = pick(st, used, leader_move, 4)
            used.add(shard)
            keys = next(r.get("keys") for r in st["shards"] if r["shard"] == shard)
            load = None
            if kind == "loaded":
                load = Load(c, args.clients, args.load_s, args.value_size)
                time.sleep(3)
            log(f"moving shard {shard} ({keys} keys) from node {src} to node 4, {kind}"
                f"{', its leader' if leader_move else ''}")
            m = move(c, shard, src, 4)
            m.update({"load": kind, "leader_replica": leader_move, "keys": keys,
                      "loadavg": [round(x, 2) for x in os.getloadavg()]})
            if load:
                m["bench"] = load.finish()
            log(f"move: {json.dumps(m)}")
            res["moves"].append(m)
        if args.concurrent:
            # As the balancer does (moves_max at once onto a fresh node), under a larger
            # load: followers' replicas, then leaders' (each needs a transfer first).
            c.join_node(5, "127.0.0.3")
            log("node 5 joined")
            for leader_move in (False, True):
                st = c.wait_leaders()
                batch = []
                for _ in range(args.concurrent):
                    shard, src = pick(st, used, leader_move, 5)
                    used.add(shard)
                    batch.append((shard, src, next(r.get("keys") for r in st["shards"] if r["shard"] == shard)))
                load = Load(c, args.concurrent_clients, args.load_s, args.value_size)
                time.sleep(3)
                log(f"moving {len(batch)} shards at once to node 5{', leaders' if leader_move else ''}: {batch}")
                out = [None] * len(batch)
                threads = [threading.Thread(target=lambda i=i, b=b: out.__setitem__(i, move(c, b[0], b[1], 5)))
                           for i, b in enumerate(batch)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                bench = load.finish()
                for m, (shard, src, keys) in zip(out, batch):
                    m.update({"load": f"loaded x{len(batch)}", "leader_replica": leader_move, "keys": keys,
                              "loadavg": [round(x, 2) for x in os.getloadavg()], "bench": bench})
                    log(f"move: {json.dumps(m)}")
                    res["moves"].append(m)
        # Counted before the nodes stop (stopping them elects new leaders).
        res["metadata_elections"] = sum(
            1 for n in c.procs for _, msg, f in events(c.log_path(n))
            if msg == "election started" and f.get("shard") == str(METADATA_SHARD))
        res["run_s"] = round(time.time() - t0, 1)
        return res
    finally:
        c.stop_all()
        if args.keep:
            log(f"kept {c.dir}")
        else:
            subprocess.run(["rm", "-rf", str(c.dir)])


def table(r):
    lines = ["| move | keys | total | learner added | snapshot started | installed | promoted | "
             "old removed | answered | sends | drops |", "|" + " --- |" * 11]
    for m in r["moves"]:
        s = m["steps_s"]

        def step(a, b):
            v = s.get(f"{a}->{b}")
            return "-" if v is None else f"{v:.2f} s"
        lines.append(
            f"| {m['load']}{' leader' if m['leader_replica'] else ''} shard {m['shard']} "
            f"{m['from']}->{m['to']} | {m['keys']} | {m['total_s']:.2f} s | "
            f"{step('asked', 'learner_added')} | {step('learner_added', 'snapshot_send_started')} | "
            f"{step('snapshot_send_started', 'snapshot_installed')} | {step('snapshot_installed', 'promoted')} | "
            f"{step('promoted', 'old_removed')} | {step('old_removed', 'answered')} | {m['snapshot_sends']} | "
            f"{int(m['datagrams_dropped'])} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=240_000, help="keys preloaded (default 240,000)")
    ap.add_argument("--shards", type=int, default=8, help="shards (default 8)")
    ap.add_argument("--value-size", type=int, default=100, help="value bytes (default 100)")
    ap.add_argument("--clients", type=int, default=16, help="clients of the load during a loaded move (default 16)")
    ap.add_argument("--load-s", type=int, default=30, help="seconds of load around a loaded move (default 30)")
    ap.add_argument("--leader-moves", action="store_true", help="also move a leader's replica, idle and loaded")
    ap.add_argument("--concurrent", type=int, default=0,
                    help="then join node 5 and move this many followers' replicas to it at once, then as many leaders' (default 0: none)")
    ap.add_argument("--concurrent-clients", type=int, default=64, help="clients of the load during concurrent moves (default 64)")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--bin-dir", help="take kvserver and kvcli from this directory (an A/B of two builds); implies --no-build")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (node logs) afterwards")
    args = ap.parse_args()
    bins = build(not (args.no_build or args.bin_dir), False)
    if args.bin_dir:
        bins = {name: Path(args.bin_dir) / name for name in ("kvserver", "kvcli")}
    workdir = Path(tempfile.gettempdir())
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    r = run(args, bins, workdir)
    r.update({"commit": git_commit(), "machine": machine_info(), "stamp": stamp})
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in (f"movespeed-{stamp}.json", "movespeed-latest.json"):
        (RESULTS / name).write_text(json.dumps(r, indent=2) + "\n")
    print(table(r))
    print(f"metadata group elections (not transfers) over {r['run_s']} s from the preload on: "
          f"{r['metadata_elections']}")


if __name__ == "__main__":
    sys.exit(main())

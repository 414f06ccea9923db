#!/usr/bin/env python3
"""bench/elastic.py: measures issue 11's "Done when" figures for elastic clusters.

On release binaries, with fresh temp data dirs and free loopback ports, the balancer on
(the cluster file's `[balancer]` section: its defaults unless --balancer-interval-ms,
--moves-max, --repairs-max or --transfers-max say otherwise); nothing here runs `kvcli rebalance`:

1. 3 kvserver nodes from a generated cluster file on 127.0.0.1 (replication = 3,
   --shards shards, 64 by default) are preloaded with --keys keys (1,000,000) of 100 B
   (`kvcli bench --preload`).
2. While a --clients (64) `kvcli bench --check` runs, nodes 4 and 5 join with
   `kvserver --join` on 127.0.0.2 and 127.0.0.3 and the balancer spreads replicas and
   leaders onto them. Reported: the time from node 4's start (and from node 5 listed
   active) until `kvcli --json status` shows the cluster balanced (judged here: replicas
   and leaders per node within one of the mean, every shard R voters, no learner, a
   leader), the balancer's moves and transfers (its counters in `kvcli rebalance
   status`), and the bench's errors, max latency and linearizability verdict.
3. Under a second checked bench, `kvcli node drain 5` marks node 5 draining and waits
   while the balancer empties it onto nodes 1-4 (which take back shards they left); the
   time until node 5 holds 0 replicas and is marked removed; then node 5 is stopped.
4. Once the balancer has settled (balanced over nodes 1-4, or --settle-wait-s passed),
   under a third checked bench: kill -9 of node 4 and `kvcli node remove 4 --dead`,
   which marks it removed; the balancer rebuilds its replicas on nodes 1-3.
   Reported: the time from the kill until `status` shows no under-replicated shard.
   With --fresh-nodes, nodes 6 and 7 join before the drain and node 8 before the kill,
   so that no node takes back a shard it left.

The load average is recorded at the start and at every phase. Writes
bench/results/elastic-<timestamp>.json and bench/results/elastic-latest.json and prints a
table. Benchmarks are not tests: nothing here asserts, and CI does not run it.

    python3 bench/elastic.py                 # the issue's figures (~10 min)
    python3 bench/elastic.py --keys 100000   # a quicker run
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cluster
from cluster import REPLICATION
from run import RESULTS, build, git_commit, log, machine_info, proc_rss_kb, stop, target_dir

# One drain or removal, as kvcli is told (--wait; --drive-wait-s): past it the run goes
# on and reports what was left.
DRIVE_WAIT_S = 300
# The nodes' log filter: warnings, and every move and transfer the balancer asks for and
# how each ended (kept with --keep).
LOG_FILTER = "warn,kv_server::balancer=info"
# How long the balancer may take to spread onto joined nodes before the run goes on.
BALANCE_WAIT_S = 600
# Seconds of load before a phase starts and after it ends.
MARGIN_S = 5
# How often the independent balance and replication checks poll `kvcli status`.
POLL_S = 1.0


class Cluster(cluster.Cluster):
    """The elastic run's cluster: the balancer on, its log lines kept."""

    def __init__(self, bins, workdir, shards, balancer, log_filter=LOG_FILTER):
        section = (
            f"enabled = true\ninterval_ms = {balancer['interval_ms']}\nmoves_max = {balancer['moves_max']}\n"
            + (f"repairs_max = {balancer['repairs_max']}\n" if balancer.get("repairs_max") else "")
            + (f"transfers_max = {balancer['transfers_max']}\n" if balancer["transfers_max"] else "")
        )
        super().__init__(bins, workdir, "elastic", 7311, shards, section, log_filter)

    def balancer(self):
        """The balancer's counters (`kvcli rebalance status`): the metadata leader's own."""
        return self.kvcli_json("rebalance", "status", timeout=30)[0].get("balancer") or {}


def unbalanced(status, live):
    """Why status is not balanced over exactly the nodes live (None if it is). Replicas are
    counted as the balancer counts them: the metadata group's voters too."""
    reachable = {n["node"] for n in status.get("nodes", []) if n.get("reachable")}
    if reachable != set(live):
        return f"reachable {sorted(reachable)}, expected {sorted(live)}"
    replicas = {n: 0 for n in live}
    leaders = {n: 0 for n in live}
    for r in status.get("shards", []):
        if len(r["voters"]) != REPLICATION or r["learners"] or not r.get("leader"):
            return f"shard {r['shard']}: voters {r['voters']} learners {r['learners']} leader {r.get('leader')}"
        if any(v not in live for v in r["voters"]):
            return f"shard {r['shard']} has a voter off the live nodes: {r['voters']}"
        for v in r["voters"]:
            replicas[v] += 1
        leaders[r["leader"]] = leaders.get(r["leader"], 0) + 1
    for v in (status.get("metadata") or {}).get("voters", []):
        if v in replicas:
            replicas[v] += 1
    for what, counts in (("replicas", replicas), ("leaders", leaders)):
        mean = sum(counts.values()) / len(live)
        far = {n: c for n, c in counts.items() if abs(c - mean) >= 1}
        if far:
            return f"{what} {counts} (mean {mean:.2f})"
    return None


def shares(status):
    replicas, leaders = {}, {}
    for r in status.get("shards", []):
        for v in r["voters"] + r["learners"]:
            replicas[v] = replicas.get(v, 0) + 1
        if r.get("leader"):
            leaders[r["leader"]] = leaders.get(r["leader"], 0) + 1
    return dict(sorted(replicas.items())), dict(sorted(leaders.items()))


class Bench:
    """A checked `kvcli bench` on its own thread."""

    def __init__(self, cluster, clients, seconds, value_size):
        self.result = None
        args = ["bench", "--clients", str(clients), "--duration", f"{seconds}s", "--keys", "10000",
                "--value-size", str(value_size), "--check"]
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", cluster.kvcli_json(*args, timeout=seconds + 600)))
        self.thread.start()

    def finish(self):
        self.thread.join()
        report, run = self.result
        if not report:
            raise RuntimeError(f"bench printed no report (exit {run.returncode}):\n{run.stderr[-3000:]}")
        return {
            "exit": run.returncode, "ops": report["ops"], "ops_per_s": round(report["ops_per_s"]),
            "errors": report["errors"], "errors_by_kind": report["errors_by_kind"],
            "latency_us": report["latency"], "check": report.get("check", {}).get("verdict"),
            "checked_ops": report.get("check", {}).get("checked"),
        }


def timed_drive(cluster, wait_s, *args):
    t0 = time.time()
    report, run = cluster.kvcli_json(*args, "--wait", str(wait_s), timeout=wait_s + 60)
    took = time.time() - t0
    if run.returncode != 0:
        log(f"kvcli {' '.join(args)} exited {run.returncode}: {run.stdout[-2000:]} {run.stderr[-2000:]}")
    return report, run.returncode, took


def wait_until(what, predicate, timeout):
    """Polls predicate() every POLL_S; returns the seconds it took, or None on timeout."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return time.time() - t0
        time.sleep(POLL_S)
    log(f"{what}: not reached within {timeout} s")
    return None


def balancer_delta(before, after):
    """What the balancer did between two readings of its counters (the same metadata
    leader's, else the counters restarted and the delta is not known)."""
    if not before or before.get("active_on") != after.get("active_on"):
        return {"active_on": [before.get("active_on"), after.get("active_on")], "moves_done": None}
    return {
        "active_on": after.get("active_on"), "rounds": after["rounds"] - before["rounds"],
        "moves_done": after["moves_done"] - before["moves_done"],
        "moves_failed": after["moves_failed"] - before["moves_failed"],
    }


def metadata_leader_changes(cluster):
    """How many times a node began to lead the metadata group (each start of a balancer
    that remembers nothing of its predecessor's moves), from the nodes' logs."""
    return sum(
        p.read_text(errors="replace").count("this node leads the metadata group")
        for p in cluster.dir.glob("node-*.log")
    )


def load():
    return [round(x, 2) for x in os.getloadavg()]


def run(args, bins, workdir):
    res = {"settings": vars(args).copy(), "loadavg": {}}
    c = Cluster(bins, workdir, args.shards, {"interval_ms": args.balancer_interval_ms, "moves_max": args.moves_max,
                                            "repairs_max": args.repairs_max,
                                            "transfers_max": args.transfers_max}, args.log_level)
    try:
        for n in (1, 2, 3):
            c.start_node(n)
        c.wait_leaders()
        log(f"preloading {args.keys} keys of {args.value_size} B")
        res["loadavg"]["preload"] = load()
        t0 = time.time()
        report, run_ = c.kvcli_json("bench", "--preload", "--keys", str(args.keys), "--value-size",
                                    str(args.value_size), "--clients", "256", timeout=3600)
        st = c.status()
        res["preload"] = {
            "seconds": round(time.time() - t0, 1), "puts_per_s": round(report.get("ops_per_s", 0)),
            "errors": report.get("errors"), "keys_in_status": sum(r.get("keys", 0) for r in st["shards"]),
        }
        log(f"preload: {res['preload']}")

        # 2. Nodes 4 and 5 join under load; the balancer alone spreads onto them.
        bench = Bench(c, args.clients, args.spread_bench_s, args.value_size)
        time.sleep(MARGIN_S)
        res["loadavg"]["join_4_5"] = load()
        counters = c.balancer()
        log("nodes 4 and 5 join; the balancer spreads")
        five = {1, 2, 3, 4, 5}
        t0 = time.time()
        c.join_node(4, "127.0.0.2")
        c.join_node(5, "127.0.0.3")
        joined = time.time() - t0
        took = wait_until("balanced over nodes 1-5", lambda: unbalanced(c.status(), five) is None, BALANCE_WAIT_S)
        st = c.status()
        res["spread"] = {
            "nodes_joined_s": round(joined, 1),
            "balanced_after_join_s": round(joined + took, 1) if took is not None else None,
            "balanced_after_node_5_active_s": round(took, 1) if took is not None else None,
            "balancer": balancer_delta(counters, c.balancer()), "unbalanced_after": unbalanced(st, five),
            "shares_after": shares(st),
        }
        log(f"spread 3 -> 5: {res['spread']}")
        res["spread_bench"] = bench.finish()
        log(f"bench during the spread: {res['spread_bench']}")
        res["rss_kb"] = {n: proc_rss_kb(p.pid)[0] for n, p in c.procs.items()}

        # 3. Drain node 5 (with --fresh-nodes, nodes 6 and 7 join first).
        fresh = (6, 7) if args.fresh_nodes else ()
        for n, ip in zip(fresh, ("127.0.0.2", "127.0.0.3")):
            log(f"node {n} joins")
            c.join_node(n, ip)
        bench = Bench(c, args.clients, args.drain_bench_s, args.value_size)
        time.sleep(MARGIN_S)
        res["loadavg"]["drain"] = load()
        log("node drain 5 (the balancer empties it)")
        counters = c.balancer()
        report, code, took = timed_drive(c, args.drive_wait_s, "node", "drain", "5")
        replicas, leaders = shares(c.status())
        state_5 = next((r["state"] for r in c.node_list().get("nodes", []) if r["id"] == 5), None)
        drained = replicas.get(5, 0) == 0
        t_stop = time.time()
        if drained:
            stop(c.procs[5])
            c.stopped.add(5)
        res["drain"] = {
            "command_s": round(took, 1), "exit": code, "by": report.get("by"),
            "balancer": balancer_delta(counters, c.balancer()),
            "replicas_left_on_5": replicas.get(5, 0), "leaders_left_on_5": leaders.get(5, 0),
            "node_5_state": state_5, "node_5_stopped": drained, "stop_s": round(time.time() - t_stop, 2),
        }
        log(f"drain: {res['drain']}")
        res["drain_bench"] = bench.finish()
        log(f"bench during the drain: {res['drain_bench']}")

        # 4. Kill -9 and replace, from a settled cluster (node 5, if the drain did not end,
        # keeps running so that no shard loses a majority when node 4 dies).
        remaining = {1, 2, 3, 4, *fresh}
        took = None
        if drained:
            took = wait_until(f"balanced over nodes {sorted(remaining)}",
                              lambda: unbalanced(c.status(), remaining) is None, args.settle_wait_s)
        st = c.status()
        res["settle"] = {"nodes": sorted(remaining), "balanced_s": round(took, 1) if took is not None else None,
                         "unbalanced": unbalanced(st, remaining), "shares": shares(st)}
        log(f"settled: {res['settle']}")
        if args.fresh_nodes:
            log("node 8 joins")
            c.join_node(8, "127.0.0.2")
        bench = Bench(c, args.clients, args.remove_bench_s, args.value_size)
        time.sleep(MARGIN_S)
        res["loadavg"]["remove_dead"] = load()
        log("kill -9 node 4, node remove 4 --dead (the balancer rebuilds its replicas)")
        counters = c.balancer()
        c.procs[4].kill()
        c.procs[4].wait()
        c.stopped.add(4)
        killed = time.time()
        under = {}

        def watch_under():
            while "done" not in under:
                s = c.status()
                if s.get("shards") and not any(r["under_replicated"] for r in s["shards"]):
                    under.setdefault("t", time.time() - killed)
                    return
                time.sleep(POLL_S)

        # Give status a moment to see node 4 gone, so "0 under-replicated" is not the
        # state before the kill.
        time.sleep(POLL_S)
        watcher = threading.Thread(target=watch_under)
        watcher.start()
        report, code, took = timed_drive(c, args.drive_wait_s, "node", "remove", "4", "--dead")
        wait_until("no under-replicated shard", lambda: "t" in under, 120)
        under["done"] = True
        watcher.join()
        st = c.status()
        res["remove_dead"] = {
            "command_s": round(took, 1), "exit": code, "by": report.get("by"),
            "balancer": balancer_delta(counters, c.balancer()),
            "under_replicated_zero_after_kill_s": round(under["t"], 1) if "t" in under else None,
            "under_replicated_after": sum(1 for r in st["shards"] if r["under_replicated"]),
            "shares_after": shares(st),
        }
        log(f"remove --dead: {res['remove_dead']}")
        res["remove_bench"] = bench.finish()
        log(f"bench during the removal: {res['remove_bench']}")
    finally:
        res["loadavg"]["end"] = load()
        c.stop_all()
        res["metadata_leader_changes"] = metadata_leader_changes(c)
        if not args.keep:
            shutil.rmtree(c.dir, ignore_errors=True)
        else:
            log(f"kept {c.dir}")
    return res


def table(r):
    sp, b1, dr, b2, se, rm, b3 = (r[k] for k in ("spread", "spread_bench", "drain", "drain_bench", "settle",
                                                 "remove_dead", "remove_bench"))
    ms = lambda us: f"{us / 1000:.0f} ms"
    s = r["settings"]
    bench = lambda b: (f"{b['ops_per_s']} ops/s, errors {b['errors']}, p99 {ms(b['latency_us']['p99_us'])}, "
                       f"max {ms(b['latency_us']['max_us'])}, {b['check']} ({b['checked_ops']} ops)")
    return "\n".join([
        f"elastic: {s['shards']} shards, R = {REPLICATION}, {s['keys']} keys of {s['value_size']} B "
        f"(preload {r['preload']['puts_per_s']} puts/s), {s['clients']}-client bench --check, balancer "
        f"interval_ms {s['balancer_interval_ms']}, moves_max {s['moves_max']}, "
        f"repairs_max {s.get('repairs_max') or 'default'}, "
        f"transfers_max {s.get('transfers_max') or 'default'}, commit {r['commit']}, "
        f"load average {r['loadavg']}; metadata leader changes {r.get('metadata_leader_changes')}",
        f"| 3 -> 5 nodes, balancer alone | balanced {sp['balanced_after_join_s']} s after node 4 started "
        f"({sp['balanced_after_node_5_active_s']} s after node 5 was active); balancer {sp['balancer']}; "
        f"shares {sp['shares_after']} |",
        f"| bench during the spread | {bench(b1)} |",
        f"| node drain 5 | {dr['command_s']} s (by {dr['by']}, exit {dr['exit']}), balancer {dr['balancer']}, "
        f"{dr['replicas_left_on_5']} replicas left, node 5 {dr['node_5_state']}; stopped: {dr['node_5_stopped']} |",
        f"| bench during the drain | {bench(b2)} |",
        f"| settled over {se.get('nodes')} | {se['balanced_s']} s after the drain; {se['unbalanced'] or 'balanced'} |",
        f"| kill -9 node 4 + node remove 4 --dead | under-replicated 0 after {rm['under_replicated_zero_after_kill_s']} s "
        f"(command {rm['command_s']} s, by {rm['by']}, exit {rm['exit']}), balancer {rm['balancer']} |",
        f"| bench during the removal | {bench(b3)} |",
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys preloaded (default 1,000,000)")
    ap.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    ap.add_argument("--shards", type=int, default=64, help="shards (default 64)")
    ap.add_argument("--clients", type=int, default=64, help="clients of the checked bench (default 64)")
    ap.add_argument("--moves-max", type=int, default=4, help="[balancer] moves_max (default 4, the cluster file's default)")
    ap.add_argument("--repairs-max", type=int, default=None,
                    help="[balancer] repairs_max (default: left out, the cluster file's default)")
    ap.add_argument("--transfers-max", type=int, default=None,
                    help="[balancer] transfers_max (default: left out, the cluster file's default)")
    ap.add_argument("--balancer-interval-ms", type=int, default=2000,
                    help="[balancer] interval_ms (default 2000, the cluster file's default)")
    ap.add_argument("--spread-bench-s", type=int, default=90, help="seconds of the bench around the joins and the spread (default 90)")
    ap.add_argument("--drain-bench-s", type=int, default=60, help="seconds of the bench around the drain (default 60)")
    ap.add_argument("--remove-bench-s", type=int, default=60, help="seconds of the bench around kill -9 and remove --dead (default 60)")
    ap.add_argument("--drive-wait-s", type=int, default=DRIVE_WAIT_S,
                    help=f"kvcli's --wait for node drain and node remove --dead (default {DRIVE_WAIT_S})")
    ap.add_argument("--settle-wait-s", type=int, default=180, help="how long the balancer may take to settle after the drain (default 180)")
    ap.add_argument("--fresh-nodes", action="store_true",
                    help="join nodes 6 and 7 before the drain and node 8 before the kill (the older figures' order)")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--keep", action="store_true", help="keep data dirs and server logs")
    ap.add_argument("--log-level", default=LOG_FILTER,
                    help=f"the nodes' log filter (default {LOG_FILTER!r}; add kv_server::core_events=info "
                         "for every election, membership change and snapshot)")
    args = ap.parse_args()
    bins = {n: target_dir() / "release" / n for n in ("kvserver", "kvcli")}
    if not args.no_build:
        bins = build(True, False)
    workdir = Path(tempfile.mkdtemp(prefix="raftkv-elastic-"))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
               "machine": machine_info()}
    try:
        results.update(run(args, bins, workdir))
    finally:
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        RESULTS.mkdir(parents=True, exist_ok=True)
        body = json.dumps(results, indent=1)
        (RESULTS / f"elastic-{stamp}.json").write_text(body)
        (RESULTS / "elastic-latest.json").write_text(body)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    print(f"\nresults: {RESULTS / f'elastic-{stamp}.json'} (and elastic-latest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

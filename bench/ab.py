#!/usr/bin/env python3
"""bench/ab.py: the same benchmark points against two builds in one run, interleaved.

A is a baseline revision, built in release mode in a temporary git worktree with a
target directory of its own under /tmp (both removed once its binaries are copied out);
B is this checkout, built as bench/run.py builds it. For each shard count, a fresh
3-node cluster of each build (fsync on, fresh temp data dirs, free loopback ports, the
cluster file bench/run.py writes) runs at the same time; each point runs on A and on B
back to back, A first in odd rounds and B first in even ones, so that whatever else
loads the machine hits both builds alike. Puts run before gets, as in bench/run.py;
every point names its keys from one key set (`kvcli bench --key-set`), and each cluster
is preloaded with a value for every key before its first get, so gets find their values
(`--ops get` runs the gets alone).

Reported per point: the median throughput, p50, p99, server CPU per operation and the
load generator's CPU per operation of each build over the rounds, the ratios B/A of
those medians, and the range of the per-round throughput ratios (each round's A and B
ran next to each other). The machine's load average is recorded at the start and with
every measurement. Writes
bench/results/ab-<timestamp>.json. Benchmarks are not tests: nothing here asserts.

    python3 bench/ab.py --baseline 2972744                   # 1 and 8 shards, 3 rounds of 8 s
    python3 bench/ab.py --baseline 2972744 --shards 1,8,64 --rounds 5
    python3 bench/ab.py --baseline 2972744 --baseline-bin /tmp/base   # A's binaries already built
    python3 bench/ab.py --baseline 2972744 --baseline-bin /tmp/base --shards 64 --ops get --clients 64 --rounds 8
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import (
    MIX, REPO, RESULTS, VALUE_SMALL, RaftkvCluster, build, git_commit, log, machine_info, measure, median,
    point_name, retire, target_dir, LEADER_POLICIES,
)

BINARIES = ("kvserver", "kvcli")


def build_revision(rev, tmp, seed_target):
    """Release kvserver and kvcli of git revision rev, built in a temporary worktree with
    its own target dir under tmp; returns {name: path} of copies kept in tmp/bin."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    src, target, out = tmp / "src", tmp / "target", tmp / "bin"
    tmp.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(src), sha], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        seed = target_dir() / "release"
        if seed_target and seed.is_dir():
            # Dependencies this checkout already compiled are reused when the baseline
            # locks the same versions; the workspace's own crates build again.
            log(f"seeding the baseline's target dir with a copy of {seed}")
            target.mkdir(parents=True)
            subprocess.run(["cp", "-a", "--reflink=auto", str(seed), str(target / "release")], check=True)
        log(f"building {rev} ({sha[:10]}) in {src}, target dir {target}")
        env = {**os.environ, "CARGO_TARGET_DIR": str(target)}
        subprocess.run(["cargo", "build", "--release", "-p", "kv-server", "-p", "kvcli"], cwd=src, env=env,
                       check=True)
        out.mkdir()
        for name in BINARIES:
            shutil.copy2(target / "release" / name, out / name)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(src)], check=False)
        shutil.rmtree(target, ignore_errors=True)
    return sha, {name: out / name for name in BINARIES}


# --lease-reads: the cluster file's `lease_reads` (None: the key left out).
LEASE_READS = {"on": True, "off": False, "omit": None}


def points(ops, clients):
    """(op, clients) in the order they run on a cluster: puts first, then gets."""
    return [(op, c) for op in ("put", "get") if op in ops for c in clients]


def run_shards(args, shards, builds, workdir, rows):
    clusters = {}
    try:
        for side, bins in builds.items():
            n = args.b_shards if side == "B" and args.b_shards else shards
            log(f"{side}: starting a 3-node cluster with {n} shards")
            clusters[side] = RaftkvCluster(bins, n, workdir, lease_reads=LEASE_READS[args.lease_reads],
                                           leaders=args.leaders)
            clusters[side].start()
            if "get" in args.ops:
                clusters[side].preload()
        for rnd in range(args.rounds):
            order = list(builds) if rnd % 2 == 0 else list(builds)[::-1]
            for op, clients in points(args.ops, args.clients):
                for side in order:
                    c = clusters[side]
                    log(f"round {rnd + 1}/{args.rounds}, build {side}:")
                    p = measure(
                        "raftkv", c, op, clients, c.shards, VALUE_SMALL, args.duration,
                        lambda: c.bench(clients, args.duration, MIX[op], VALUE_SMALL, seed=rnd + 1),
                    )
                    rows.append({
                        "side": side, "round": rnd, "shards": shards, "op": op, "clients": clients,
                        "ops_per_s": p["ops_per_s"], "p50_us": p["latency_us"].get("p50_us"),
                        "p99_us": p["latency_us"].get("p99_us"), "max_us": p["latency_us"].get("max_us"),
                        "errors": p["errors"], "server_cpu_us_per_op": p["server_cpu_us_per_op"],
                        "client_cpu_us_per_op": client_cpu_us_per_op(p, args.duration),
                        "loadavg": os.getloadavg(),
                    })
    finally:
        for c in clusters.values():
            retire(c, args.keep)


def client_cpu_us_per_op(point, duration_s):
    """The load generator's (kvcli bench) CPU per operation, from its own report."""
    percent, ops = point.get("client_cpu_percent"), point.get("ops")
    if percent is None or not ops:
        return None
    elapsed = point["report"].get("elapsed_s") or duration_s
    return 1e6 * percent / 100 * elapsed / ops


def summarize(rows, shard_counts, ops, clients):
    out = []
    for shards in shard_counts:
        for op, c in points(ops, clients):
            mine = [r for r in rows if (r["shards"], r["op"], r["clients"]) == (shards, op, c)]
            per_side = {}
            for side in ("A", "B"):
                rs = [r for r in mine if r["side"] == side]
                per_side[side] = {
                    k: median([r.get(k) or 0 for r in rs])
                    for k in ("ops_per_s", "p50_us", "p99_us", "server_cpu_us_per_op", "client_cpu_us_per_op")
                }
                per_side[side]["errors"] = sum(r["errors"] for r in rs)
                per_side[side]["rounds"] = len(rs)
            a, b = per_side["A"], per_side["B"]
            ratio = lambda k: b[k] / a[k] if a[k] else None
            by_round = {}
            for r in mine:
                by_round.setdefault(r["round"], {})[r["side"]] = r["ops_per_s"]
            round_ratios = sorted(v["B"] / v["A"] for v in by_round.values() if v.get("A") and "B" in v)
            out.append({
                "shards": shards, "op": op, "clients": c, "name": point_name(op, c, shards), "A": a, "B": b,
                "throughput_ratio": ratio("ops_per_s"), "p50_ratio": ratio("p50_us"), "p99_ratio": ratio("p99_us"),
                "cpu_per_op_ratio": ratio("server_cpu_us_per_op"),
                "client_cpu_per_op_ratio": ratio("client_cpu_us_per_op"),
                "round_throughput_ratios": round_ratios,
            })
    return out


def table(res):
    ms = lambda us: f"{(us or 0) / 1000:.2f}"
    x = lambda r: f"{r:.2f}x" if r is not None else "-"
    lines = [
        f"A = {res['baseline']['rev']} ({res['baseline']['commit'][:10]}), B = "
        f"{res['settings']['candidate_bin'] or 'this checkout'} ({res['candidate']}); "
        f"medians of {res['settings']['rounds']} interleaved rounds of {res['settings']['duration_s']} s; "
        f"leaders {res['settings'].get('leaders') or 'placed by each build'}; "
        + (f"B runs {res['settings']['b_shards']} shards (points named by A's); " if res['settings'].get('b_shards') else "")
        + f"load average at start {', '.join(f'{l:.2f}' for l in res['machine']['loadavg_at_start'])}",
        f"{'point':38} {'A ops/s':>9} {'B ops/s':>9} {'B/A':>6} {'rounds B/A':>12} {'A p99':>6} {'B p99':>6} "
        f"{'B/A':>6} {'A cpu':>6} {'B cpu':>6} {'B/A':>6} {'A cli':>6} {'B cli':>6} {'B/A':>6} {'err':>4}",
    ]
    for s in res["summary"]:
        a, b = s["A"], s["B"]
        rr = s["round_throughput_ratios"]
        spread = f"{rr[0]:.2f}-{rr[-1]:.2f}" if rr else "-"
        lines.append(
            f"{s['name']:38} {a['ops_per_s']:>9.0f} {b['ops_per_s']:>9.0f} {x(s['throughput_ratio']):>6} {spread:>12} "
            f"{ms(a['p99_us']):>6} {ms(b['p99_us']):>6} {x(s['p99_ratio']):>6} {a['server_cpu_us_per_op']:>6.1f} "
            f"{b['server_cpu_us_per_op']:>6.1f} {x(s['cpu_per_op_ratio']):>6} {a['client_cpu_us_per_op']:>6.1f} "
            f"{b['client_cpu_us_per_op']:>6.1f} {x(s['client_cpu_per_op_ratio']):>6} {a['errors'] + b['errors']:>4}"
        )
    lines.append("p99 in ms; cpu = the 3 server processes' user+system CPU us per operation; "
                 "cli = the same of kvcli bench (its own report)")
    return "\n".join(lines)


def parse_ops(text):
    ops = text.split(",")
    bad = [o for o in ops if o not in ("put", "get")]
    if bad or not ops:
        raise argparse.ArgumentTypeError(f"expected put, get or put,get, not {text!r}")
    return ops


def binaries_in(directory, flag):
    """{name: path} of kvserver and kvcli in directory; exits naming what is missing."""
    bins = {n: Path(directory) / n for n in BINARIES}
    missing = [str(b) for b in bins.values() if not b.is_file()]
    if missing:
        sys.exit(f"{flag}: missing {', '.join(missing)}")
    return bins


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, metavar="REV", help="git revision of build A")
    ap.add_argument("--shards", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                    help="shard counts, one pair of clusters each (default 1,8)")
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64],
                    help="client counts of the put and get points (default 1,64)")
    ap.add_argument("--ops", type=parse_ops, default=["put", "get"],
                    help="which points: put, get or put,get (default); each cluster is preloaded with every key "
                         "before the rounds when gets run, so gets find 100 B values")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per point (default 8)")
    ap.add_argument("--no-build", action="store_true", help="B: use this checkout's release binaries as built")
    ap.add_argument("--no-seed-target", action="store_true",
                    help="build A from an empty target dir instead of a copy of this checkout's target/release")
    ap.add_argument("--baseline-bin", metavar="DIR",
                    help="A: use the kvserver and kvcli already built from REV in DIR instead of building REV "
                         "(saves a release build; REV only labels the results)")
    ap.add_argument("--candidate-bin", metavar="DIR",
                    help="B: use the kvserver and kvcli in DIR instead of this checkout's (implies --no-build; "
                         "for example a directory holding one build's kvserver and the other's kvcli)")
    ap.add_argument("--b-shards", type=int, metavar="N",
                    help="B's clusters run N shards whatever --shards says (rows stay keyed by A's count): with "
                         "one build on both sides, shard counts compared in one interleaved run, as "
                         "--baseline-bin DIR --candidate-bin DIR --shards 1 --b-shards 8")
    ap.add_argument("--keep", action="store_true", help="keep data dirs and server logs")
    ap.add_argument("--lease-reads", choices=sorted(LEASE_READS), default="on",
                    help="lease reads in both clusters' files (default on, as bench/run.py); 'omit' leaves "
                         "the key out for a baseline older than it, whose gets then always run ReadIndex")
    ap.add_argument("--leaders", choices=LEADER_POLICIES,
                    help="both clusters' [placement] leaders, as bench/run.py --leaders (pack: every shard led by "
                         "node 1, the sweep's default); unset, the key is left out and each build places them "
                         "its own way (a build older than the key needs it left out)")
    args = ap.parse_args()

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    res = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
        "candidate": git_commit(),
        "settings": {"lease_reads": args.lease_reads, "leaders": args.leaders, "shards": args.shards, "b_shards": args.b_shards, "ops": args.ops, "clients": args.clients,
                     "rounds": args.rounds, "candidate_bin": args.candidate_bin,
                     "duration_s": args.duration, "value_size": VALUE_SMALL},
    }
    tmp = Path(tempfile.mkdtemp(prefix="raftkv-ab-"))
    workdir = tmp / "data"
    workdir.mkdir()
    rows = []
    try:
        if args.candidate_bin:
            b_bins = binaries_in(args.candidate_bin, "--candidate-bin")
        elif args.no_build:
            b_bins = {n: target_dir() / "release" / n for n in BINARIES}
        else:
            b_bins = build(True, False)
        if args.baseline_bin:
            sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{args.baseline}^{{commit}}"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            a_bins = binaries_in(args.baseline_bin, "--baseline-bin")
        else:
            sha, a_bins = build_revision(args.baseline, tmp / "baseline", not args.no_seed_target)
        res["baseline"] = {"rev": args.baseline, "commit": sha}
        builds = {"A": a_bins, "B": b_bins}
        for shards in args.shards:
            run_shards(args, shards, builds, workdir, rows)
    finally:
        res["rows"] = rows
        res["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        res["loadavg_at_end"] = os.getloadavg()
        shutil.rmtree(tmp, ignore_errors=True)
    res["summary"] = summarize(rows, args.shards, args.ops, args.clients)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ab-{stamp}.json"
    path.write_text(json.dumps(res, indent=1))
    print(table(res))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""bench/sync_floor.py: how much of a lone client's put is the disk's syncs, and how much
is the rest of the path.

A put commits once a majority of its shard's replicas have synced it. On one machine the
three nodes' data dirs usually share one disk, which may serve concurrent syncs one after
the other; on a real cluster each node has a disk of its own. Three 3-node clusters (8
shards, every leadership on node 1, fsync on, free loopback ports) run at the same time
and take 1-client puts in interleaved rounds:

- `disk`: every node's data dir on the disk (under --workdir), as bench/run.py runs them;
- `one-disk`: node 3's data dir on /dev/shm, so a round commits on one disk sync (node
  2's; node 1, the leader, defers its own) with nothing else syncing beside it: what a
  put costs when each node has a disk of its own;
- `no-disk`: every data dir on /dev/shm: wake-ups, hops and CPU alone.

Before the clusters start it runs bench/run.py's disk probe (one sync; two processes
syncing at once, the later done). Prints each round's put p50 and, per cluster, the
median over the rounds and its distance from the probe's one sync and from its pair.
Benchmarks are not tests: nothing here asserts.

    python3 bench/sync_floor.py                        # target/release, 5 rounds of 5 s
    python3 bench/sync_floor.py --target DIR --rounds 7 --duration 5
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from run import RaftkvCluster, fdatasync_latency, rotated, target_dir

SHARDS = 8
LAYOUTS = ("disk", "one-disk", "no-disk")
SHM = Path("/dev/shm")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=Path, default=target_dir() / "release",
                    help="directory holding release kvserver and kvcli (default: this checkout's target/release)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per point (default 5)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the on-disk data dirs go (default: the temp dir, as bench/run.py)")
    args = ap.parse_args()
    bins = {name: args.target / name for name in ("kvserver", "kvcli")}
    disk = Path(tempfile.mkdtemp(prefix="sync-floor-", dir=args.workdir))
    shm = Path(tempfile.mkdtemp(prefix="sync-floor-", dir=SHM))
    clusters = {}
    try:
        probe = fdatasync_latency(disk)
        print(f"disk probe: one sync p50 {probe['p50_us']:.0f} us, two at once (the later) p50 "
              f"{probe['pair_p50_us']:.0f} us", flush=True)
        for layout in LAYOUTS:
            c = RaftkvCluster(bins, SHARDS, shm if layout == "no-disk" else disk, leaders="pack")
            if layout == "one-disk":
                # kvserver creates its data dir if missing; this one is there already, on tmpfs.
                away = shm / f"{c.dir.name}-node-3"
                away.mkdir()
                os.symlink(away, c.dir / "node-3")
            clusters[layout] = c
            c.start()
        for c in clusters.values():
            c.wait_placed()
        p50 = {layout: [] for layout in LAYOUTS}
        for rnd in range(args.rounds):
            order = rotated(LAYOUTS, rnd)
            for layout in order:
                report = clusters[layout].bench(1, args.duration, 0.0, 100, seed=rnd + 1)
                p50[layout].append(report["latency"]["p50_us"])
            print(f"round {rnd + 1}: " + ", ".join(f"{l} {p50[l][-1]:.0f} us" for l in LAYOUTS), flush=True)
        print(f"put at 1 client, {SHARDS} shards, p50 (median of {args.rounds} rounds):")
        for layout in LAYOUTS:
            m = statistics.median(p50[layout])
            print(f"  {layout:9} {m:5.0f} us = one sync + {m - probe['p50_us']:4.0f} us"
                  f" = two syncs at once + {m - probe['pair_p50_us']:4.0f} us")
    finally:
        for c in clusters.values():
            c.stop()
        shutil.rmtree(disk, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

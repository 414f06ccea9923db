"""bench/test_run.py: checks of bench/run.py's decisions that need no cluster and no build.

    python3 -m unittest bench/test_run.py
"""
import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


class NoBuild(unittest.TestCase):
    """--no-build takes the binaries already built, but builds bench/etcd-load's when it
    is missing, since running etcd without its load generator can only fail."""

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-test-"))
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.etcd_load = self.dir / "etcd-load"
        self.built = []

    def prebuilt(self, with_etcd):
        def build():
            self.built.append(self.etcd_load)
            return self.etcd_load

        with mock.patch.object(run, "etcd_load_bin", return_value=self.etcd_load):
            return run.prebuilt(with_etcd, build_etcd=build)

    def test_a_missing_etcd_load_is_built(self):
        bins = self.prebuilt(with_etcd=True)
        self.assertEqual(self.built, [self.etcd_load])
        self.assertEqual(bins["etcd-load"], self.etcd_load)

    def test_a_present_etcd_load_is_used_as_it_is(self):
        self.etcd_load.write_bytes(b"")
        bins = self.prebuilt(with_etcd=True)
        self.assertEqual(self.built, [])
        self.assertEqual(bins["etcd-load"], self.etcd_load)

    def test_without_etcd_nothing_is_built(self):
        bins = self.prebuilt(with_etcd=False)
        self.assertEqual(self.built, [])
        self.assertNotIn("etcd-load", bins)
        self.assertEqual(set(bins), {"kvserver", "kvcli"})


class RedisRowNames(unittest.TestCase):
    """--only redis names its raftkv rows by the leader policy of their clusters, so that
    no row of a packed cluster reads as spread leaders."""

    def test_every_row_names_its_policy_and_no_other(self):
        for policy in run.LEADER_POLICIES:
            names = list(run.redis_point_names(policy).values())
            self.assertEqual(len(set(names)), len(names), names)
            for name in names:
                self.assertTrue(name.startswith(f"raftkv-{policy}"), name)
                for other in set(run.LEADER_POLICIES) - {policy}:
                    self.assertNotIn(other, name)

class FsyncProbeLabel(unittest.TestCase):
    """The table names the kind of sync a results file's probe timed: files written
    before the probe preallocated (no extending_p50_us) timed appends."""

    @staticmethod
    def disk_line(fdatasync):
        results = {"points": [], "ratios": [], "idle": [], "fdatasync": fdatasync}
        return [l for l in run.table(results).splitlines() if l.startswith("data disk")][0]

    def test_an_old_file_reads_as_appends_and_a_new_one_as_preallocated(self):
        old = {"writes": 400, "bytes": 4096, "p50_us": 120.0, "p90_us": 160.0, "p99_us": 210.0}
        self.assertIn("4096 B append p50 0.12 ms", self.disk_line(old))
        self.assertNotIn("preallocated", self.disk_line(old))
        new = dict(old, extending_p50_us=180.0)
        line = self.disk_line(new)
        self.assertIn("write into preallocated space p50 0.12 ms", line)
        self.assertIn("extends the file p50 0.18 ms", line)
        self.assertNotIn("two processes", line)

    def test_a_pair_probe_is_shown_and_the_one_client_put_measured_against_it(self):
        f = {"writes": 400, "bytes": 4096, "p50_us": 100.0, "p90_us": 160.0, "p99_us": 210.0,
             "extending_p50_us": 180.0, "pair_p50_us": 170.0}
        put = {"system": "raftkv", "op": "put", "clients": 1, "name": "put, 1 client, 8 shards",
               "ops_per_s": 1, "errors": 0, "server_cpu_us_per_op": 1,
               "latency_us": {"p50_us": 300.0}}
        results = {"points": [put], "ratios": [], "idle": [], "fdatasync": f}
        text = run.table(results)
        self.assertIn("two processes syncing at once, the later done p50 0.17 ms", text)
        self.assertIn("p50 is fdatasync p50 + 0.200 ms, two concurrent syncs' p50 + 0.130 ms", text)


class ConcurrentPair(unittest.TestCase):
    """The pair probe times every round until both processes' syncs are done, and leaves
    no file behind."""

    def test_one_positive_time_per_round_and_no_file_left(self):
        with tempfile.TemporaryDirectory() as d:
            times = run.concurrent_pair(Path(d), 20, 4096)
            self.assertEqual(len(times), 20)
            self.assertTrue(all(t > 0 for t in times))
            self.assertEqual(os.listdir(d), [])

    def test_a_second_process_that_ends_early_is_an_error_not_a_hang(self):
        parent = os.getpid()
        real = os.fdatasync

        def fails_in_the_child(fd):
            if os.getpid() != parent:
                raise OSError("no sync here")
            real(fd)

        with tempfile.TemporaryDirectory() as d, mock.patch("os.fdatasync", fails_in_the_child):
            with self.assertRaisesRegex(RuntimeError, "ended early"):
                run.concurrent_pair(Path(d), 5, 4096)
            self.assertEqual(os.listdir(d), [])


class KeySet(unittest.TestCase):
    """Every raftkv point and the preload before the gets name their keys from one key
    set, so gets read values the puts or the preload wrote (without one, each kvcli run
    names its keys afresh and every get finds nothing)."""

    def test_points_and_the_preload_name_keys_from_one_set(self):
        c = run.RaftkvCluster.__new__(run.RaftkvCluster)  # no ports, dirs or processes
        calls = []

        def kvcli(*args, timeout=60):
            calls.append(args)
            return mock.Mock(stdout='{"ops": 1}', stderr="", returncode=0)

        c.kvcli = kvcli
        c.bench(64, 1, 1.0, run.VALUE_SMALL)
        c.bench(64, 1, 0.0, run.VALUE_SMALL, keys=100, ops=10)
        c.preload()
        self.assertEqual(len(calls), 3)
        for args in calls:
            self.assertEqual(args[args.index("--key-set") + 1], run.KEY_SET, args)
        self.assertIn("--preload", calls[2])


class ShardCounts(unittest.TestCase):
    """The interleaved shard-count comparison: medians over the rounds, ratios of the
    medians against 1 shard, and the range of each round's own ratio."""

    @staticmethod
    def row(op, shards, rnd, ops):
        return {"op": op, "shards": shards, "round": rnd, "ops_per_s": ops, "server_cpu_us_per_op": ops / 1e4,
                "latency_us": {"p50_us": 100 * rnd, "p99_us": 1000 * rnd}, "errors": 0}

    def test_medians_ratios_and_the_round_range(self):
        rows = [self.row("put", 1, r, ops) for r, ops in ((1, 100.0), (2, 120.0), (3, 80.0))]
        rows += [self.row("put", 8, r, ops) for r, ops in ((1, 90.0), (2, 132.0), (3, 100.0))]
        summary = run.shard_count_summary(rows, [1, 8])
        self.assertEqual([(r["op"], r["shards"]) for r in summary], [("put", 1), ("put", 8)])
        one, eight = summary
        self.assertEqual(one["ops_per_s"], 100.0)
        self.assertEqual(eight["ops_per_s"], 100.0)
        self.assertAlmostEqual(eight["ratio_to_base"], 1.0)
        # Rounds: 90/100, 132/120, 100/80.
        self.assertAlmostEqual(eight["round_ratio_min"], 0.9)
        self.assertAlmostEqual(eight["round_ratio_max"], 1.25)
        # The median round is a real run: round 3's 100 ops/s, with its latencies.
        self.assertEqual(eight["median_point"]["round"], 3)
        self.assertEqual(eight["median_point"]["rounds"], 3)
        self.assertEqual(one["median_point"]["round"], 1)

    def test_each_side_runs_first_once_in_as_many_rounds(self):
        orders = [run.rotated((1, 8, 64), rnd) for rnd in range(3)]
        self.assertEqual(orders, [[1, 8, 64], [8, 64, 1], [64, 1, 8]])
        self.assertEqual(run.rotated(("a", "b"), 3), ["b", "a"])

    def test_the_sweep_plans_no_sequential_shard_points(self):
        args = mock.Mock(quick=False)
        pts, counts, _ = run.plan(args)
        self.assertEqual(counts, [1, 8, 64])
        self.assertFalse([p for p in pts if p[0] == "shards"])
        self.assertEqual({p[2] for p in pts}, {run.BASE_SHARDS})


if __name__ == "__main__":
    unittest.main()

"""bench/test_timeline.py: bench/timeline.py's reading of a round from syscall events.

    python3 -m unittest bench/test_timeline.py
"""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import timeline  # noqa: E402

CLIENT, LEADER, F2, F3 = 100, 1, 2, 3


def script(pid, comm, t_us, side, name, ret=None):
    """One line as `perf script -F comm,pid,tid,time,event,trace` prints it."""
    rest = f"0x{ret & ((1 << 64) - 1):x}" if side == "exit" else "fd: 0x0000000a"
    return f"  {comm} {pid}/{pid} {t_us / 1e6:.6f}:  syscalls:sys_{side}_{name}: {rest}"


def round_lines(t0, late_follower=F3):
    """A round starting at t0 µs: request, leader turn, two followers (F2 woken 30 µs after
    the first Append, F3 90 µs), acks, reply; `late_follower` syncs 100 µs longer than
    the other, so the round waits for its ack."""
    lines = [
        script(CLIENT, "kvcli", t0, "enter", "sendto"),
        script(LEADER, "kvserver", t0 + 20, "exit", "recvfrom", 8000),
        script(LEADER, "kvserver", t0 + 21, "exit", "recvfrom", -11),
        script(LEADER, "kvserver", t0 + 60, "enter", "sendto"),
        script(LEADER, "kvserver", t0 + 70, "enter", "sendto"),
        script(LEADER, "kvserver", t0 + 72, "enter", "epoll_wait"),
    ]
    acks = []
    for f, wake in ((F2, 30), (F3, 90)):
        extra = 100 if f == late_follower else 0
        got = t0 + 60 + wake
        lines += [
            script(f, "kvserver", got - 1, "exit", "epoll_wait", 1),
            script(f, "kvserver", got, "exit", "recvfrom", 8000),
            script(f, "kvserver", got + 25, "enter", "fdatasync"),
            script(f, "kvserver", got + 175 + extra, "exit", "fdatasync", 0),
            script(f, "kvserver", got + 185 + extra, "enter", "sendto"),
        ]
        acks.append(got + 185 + extra)
    last_ack = max(acks)
    lines += [
        script(LEADER, "kvserver", last_ack + 40, "exit", "recvfrom", 300),
        script(LEADER, "kvserver", last_ack + 90, "enter", "sendto"),
        script(CLIENT, "kvcli", last_ack + 95, "exit", "recvfrom", 900),
    ]
    return lines, last_ack + 95


def sorted_events(lines):
    return sorted(timeline.parse(lines), key=lambda e: e[0])


class Rounds(unittest.TestCase):
    def two_rounds(self, late_follower=F3):
        first, reply_read = round_lines(1_000_000, late_follower)
        second, _ = round_lines(reply_read + 50, late_follower)
        return sorted_events(first + second)

    def test_each_hop_of_a_round(self):
        rs, skipped = timeline.rounds(self.two_rounds(), LEADER, [F2, F3], CLIENT)
        self.assertEqual((len(rs), skipped), (1, 0))
        r = rs[0]
        self.assertAlmostEqual(r["leader wake"], 20, places=3)
        self.assertAlmostEqual(r["leader send"], 50, places=3)
        # The round waited for F3: woken 90 µs after the first Append, synced 250 µs.
        self.assertAlmostEqual(r["follower wake"], 90, places=3)
        self.assertAlmostEqual(r["sync"], 250, places=3)
        self.assertAlmostEqual(r["sync@2"], 150, places=3)
        self.assertAlmostEqual(r["follower ack"], 10, places=3)
        self.assertAlmostEqual(r["leader wake2"], 40, places=3)
        self.assertAlmostEqual(r["leader reply"], 50, places=3)
        self.assertAlmostEqual(r["client"], 50, places=3)
        self.assertAlmostEqual(r["round"], 60 + 90 + 285 + 90 + 5 + 50, places=3)

    def test_the_round_waits_for_the_later_ack(self):
        rs, _ = timeline.rounds(self.two_rounds(late_follower=F2), LEADER, [F2, F3], CLIENT)
        self.assertAlmostEqual(rs[0]["follower wake"], 30, places=3)
        self.assertAlmostEqual(rs[0]["sync"], 250, places=3)

    def test_a_round_missing_a_hop_is_skipped_not_guessed(self):
        events = [e for e in self.two_rounds() if not (e[2] == F2 and e[5] == "fdatasync")]
        rs, skipped = timeline.rounds(events, LEADER, [F2, F3], CLIENT)
        self.assertEqual((len(rs), skipped), (0, 1))

    def test_negative_returns_are_errors_not_reads(self):
        e = timeline.parse([script(LEADER, "kvserver", 5, "exit", "recvfrom", -11)])[0]
        self.assertEqual(e[6], -11)

    def test_summary_names_every_hop(self):
        rs, skipped = timeline.rounds(self.two_rounds(), LEADER, [F2, F3], CLIENT)
        text = timeline.summary(rs, skipped, [F2, F3])
        for hop in timeline.HOPS:
            self.assertIn(hop, text)
        self.assertEqual(timeline.summary([], 3, [F2, F3]), "no complete round (3 skipped)")


if __name__ == "__main__":
    unittest.main()

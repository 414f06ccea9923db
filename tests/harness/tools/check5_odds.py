#!/usr/bin/env python3
"""How often check 5 (at most 10% of intended gets not generated) fails by the workload
alone: kvharness's generator (workload.rs `generate`) with every put acknowledged at
once, so the only misses are gets a client wants before its first put. Usage:
python3 tests/harness/tools/check5_odds.py [trials]"""
import random
import sys


def failure_rate(requests, mix, clients=8, trials=100_000):
    fails = 0
    for _ in range(trials):
        acked = [False] * clients
        intended = missed = 0
        for _ in range(requests):
            c = random.randrange(clients)
            if random.random() < mix:
                intended += 1
                if acked[c]:
                    continue
                missed += 1
            acked[c] = True  # the put (or the get turned put) is acknowledged at once
        if intended and missed / intended > 0.1:
            fails += 1
    return fails / trials


if __name__ == "__main__":
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for name, requests, mix in [
        ("advanced-3", 200, 0.2),
        ("advanced-1", 250, 0.2),
        ("crash-4, advanced-2/4, partition-2/4", 300, 0.2),
        ("crash-3, partition-1/3", 400, 0.2),
        ("simple-2 and other 500-request rows", 500, 0.2),
    ]:
        print(f"{name:40} {failure_rate(requests, mix, trials=trials):.4f}")

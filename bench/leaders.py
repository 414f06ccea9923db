"""bench/leaders.py: puts every shard's leadership on one node, so that a point measures what
many groups cost apart from what spreading their leaders over the nodes costs.

Used by bench/syscalls.py and bench/callgrind.py (`--leaders-on N`), through `prepare`, which
also waits for the cluster and writes the values gets will read. The cluster's client key
must be an admin (`kvserver keygen` makes the key named admin.key one), for `shard leader`.
"""
import json
import subprocess
import time

# How long the leaderships may take to move (a loaded machine, or nodes under valgrind).
MOVE_WAIT_S = 120


def leaders(kvcli):
    """Each shard's leader as `kvcli --json status` reports it ([] if it cannot be read).

    kvcli is the command line up to the subcommand: [binary, "--cluster", file]."""
    r = subprocess.run(kvcli + ["--json", "status"], capture_output=True, text=True, timeout=60)
    try:
        return [x.get("leader") for x in json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])["shards"]]
    except (IndexError, KeyError, ValueError):
        return []


def put_leaders_on(kvcli, shards, node):
    """Pauses the balancer (it would spread the leaderships again during the point), asks
    for node to lead every shard and waits until it does; exits with a message if not."""
    r = subprocess.run(kvcli + ["rebalance", "pause"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"kvcli rebalance pause failed: {r.stdout}{r.stderr}")
    for shard in range(shards):
        subprocess.run(kvcli + ["shard", "leader", str(shard), str(node)], capture_output=True, timeout=60)
    deadline = time.monotonic() + MOVE_WAIT_S
    while time.monotonic() < deadline:
        if leaders(kvcli) == [node] * shards:
            return
        time.sleep(0.5)
    raise SystemExit(f"node {node} did not take every shard's leadership: {leaders(kvcli)}")


def prepare(kvcli, shards, leaders_on, preload_key_set=None):
    """Waits until every shard has a leader, puts the leaderships on node leaders_on (if
    given) and, with preload_key_set, writes the 10,000 100-byte values of that key set
    that a point's gets read (`kvcli bench --key-set`)."""
    for _ in range(300):
        ls = leaders(kvcli)
        if ls and all(ls):
            break
        time.sleep(0.5)
    if leaders_on:
        put_leaders_on(kvcli, shards, leaders_on)
    if preload_key_set:
        subprocess.run(kvcli + ["bench", "--preload", "--clients", "64", "--value-size", "100", "--key-size", "16",
                                "--keys", "10000", "--key-set", preload_key_set],
                       check=True, capture_output=True, timeout=600)

"""bench/timeline.py: where a put round's wall-clock time goes, hop by hop.

CPU per op and instruction counts say what a put costs; they do not say what a round of
closed-loop puts waits for. This reads the syscalls of the three servers and the load
generator, recorded with `perf record -a -e syscalls:sys_{enter,exit}_*` (bench/syscalls.py
`--timeline SECONDS` records them during its point), and splits every round into its hops:

    client        kvcli: reply datagram received -> next request datagram sent
    leader wake   request sent -> the leader's loop has read it
    leader send   the leader read it -> it sent the last Append of that turn
    follower wake the leader's first Append sent -> the follower read it
    follower cpu  the follower read it -> its WAL sync starts
    sync          fdatasync, the follower's
    follower ack  its sync done -> its ack sent
    leader wake2  the later ack sent -> the leader's loop has read it
    leader reply  the leader read it -> it sent the reply datagram
    round         request sent -> the next request sent

It prints each hop's median and 90th percentile over the rounds, per follower and for the
follower whose ack came last (the one the round waited for), and the wake-ups per round:
epoll_wait returns and futex calls of every process.

Only rounds whose hops all appear in order count (a round that a tick, a heartbeat or a
second request datagram interleaves is skipped, and their number is printed): the tool
is for the steady state of one shard leader (`--leaders-on`) and one load generator.

    python3 bench/syscalls.py --target target/release --shards 64 --leaders-on 1 --timeline 0.5
    python3 bench/timeline.py --data /tmp/perf.data --pids LEADER,FOLLOWER,FOLLOWER --client-comm kvcli
"""
import argparse
import re
import statistics
import subprocess

# The syscalls a round is reconstructed from, each recorded at entry and exit.
SYSCALLS = ["sendto", "recvfrom", "fdatasync", "epoll_wait", "futex", "pwrite64"]

HOPS = ["client", "leader wake", "leader send", "follower wake", "follower cpu", "sync",
        "follower ack", "leader wake2", "leader reply", "round"]

_LINE = re.compile(r"\s*(\S+)\s+(\d+)/(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)")


def perf_events():
    """`perf record` arguments for the tracepoints this module reads."""
    out = []
    for s in SYSCALLS:
        out += ["-e", f"syscalls:sys_enter_{s}", "-e", f"syscalls:sys_exit_{s}"]
    return out


def parse(lines):
    """Events from `perf script -F comm,pid,tid,time,event,trace` lines:
    (time in µs, comm, pid, tid, 'enter'|'exit', syscall, return value or None)."""
    events = []
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        comm, pid, tid, t, side, name, rest = m.groups()
        ret = None
        if side == "exit":
            try:
                ret = int(rest.split()[0], 16)
                if ret >= 1 << 63:
                    ret -= 1 << 64
            except (IndexError, ValueError):
                ret = None
        events.append((float(t) * 1e6, comm, int(pid), int(tid), side, name, ret))
    return events


class _View:
    """The events of one round, searched forward from a time."""

    def __init__(self, events):
        self.events = events

    def first(self, pid, side, name, after, positive=False):
        for e in self.events:
            if e[0] >= after and e[2] == pid and e[4] == side and e[5] == name:
                if positive and not (e[6] is not None and e[6] > 0):
                    continue
                return e[0]
        return None

    def turn_sends(self, pid, after):
        """Times of `pid`'s sendto calls from `after` until it next waits in epoll_wait."""
        sends = []
        for e in self.events:
            if e[0] < after or e[2] != pid:
                continue
            if e[4] == "enter" and e[5] == "epoll_wait":
                break
            if e[4] == "enter" and e[5] == "sendto":
                sends.append(e[0])
        return sends


def rounds(events, leader, followers, client_pid):
    """From `events` in time order, each complete round's hops in µs (a dict per round, keyed by HOPS, with the
    follower hops under 'follower wake' etc. for the follower the round waited for and
    under 'follower wake@PID' for each), and the number of rounds skipped."""
    starts = [e[0] for e in events
              if e[2] == client_pid and e[4] == "enter" and e[5] == "sendto"]
    out, skipped = [], 0
    lo = 0
    for t0, t1 in zip(starts, starts[1:]):
        while lo < len(events) and events[lo][0] < t0:
            lo += 1
        hi = lo
        while hi < len(events) and events[hi][0] <= t1:
            hi += 1
        r = _round(_View(events[lo:hi]), t0, t1, leader, followers, client_pid)
        if r is None:
            skipped += 1
        else:
            out.append(r)
    return out, skipped


def _round(v, t0, t1, leader, followers, client_pid):
    """The hops of the round from the request sent at t0 to the next one at t1, or None
    if one of them is not in `v` in order."""
    read = v.first(leader, "exit", "recvfrom", t0, positive=True)
    if read is None:
        return None
    sends = v.turn_sends(leader, read)
    if len(sends) < len(followers):
        return None
    first_append, last_append = sends[0], sends[len(followers) - 1]
    r = {"leader wake": read - t0, "leader send": last_append - read}
    acks = {}
    for f in followers:
        got = v.first(f, "exit", "recvfrom", first_append, positive=True)
        sync = got is not None and v.first(f, "enter", "fdatasync", got)
        done = sync and v.first(f, "exit", "fdatasync", sync)
        ack = done and v.first(f, "enter", "sendto", done)
        if not ack:
            return None
        acks[f] = ack
        hops = {"follower wake": got - first_append, "follower cpu": sync - got,
                "sync": done - sync, "follower ack": ack - done}
        for k, x in hops.items():
            r[f"{k}@{f}"] = x
    last = max(followers, key=lambda f: acks[f])
    for k in ("follower wake", "follower cpu", "sync", "follower ack"):
        r[k] = r[f"{k}@{last}"]
    read2 = v.first(leader, "exit", "recvfrom", acks[last], positive=True)
    got_reply = read2 is not None and v.first(client_pid, "exit", "recvfrom", read2, positive=True)
    if not got_reply:
        return None
    reply = max((e[0] for e in v.events if e[2] == leader and e[4] == "enter"
                 and e[5] == "sendto" and read2 <= e[0] <= got_reply), default=None)
    if reply is None:
        return None
    r["leader wake2"] = read2 - acks[last]
    r["leader reply"] = reply - read2
    r["client"] = t1 - got_reply
    r["round"] = t1 - t0
    wakes = [e for e in v.events if e[0] < t1 and e[4] == "exit" and e[5] == "epoll_wait"
             and e[6] is not None and e[6] > 0]
    r["epoll returns"] = len(wakes)
    r["futex calls"] = sum(1 for e in v.events if e[0] < t1 and e[4] == "enter" and e[5] == "futex")
    return r


def percentile(xs, p):
    """The p-th percentile of xs, the nearest rank at or below."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def summary(rs, skipped, followers):
    """The printed table: median and p90 of each hop over the rounds `rs`."""
    if not rs:
        return f"no complete round ({skipped} skipped)"
    lines = [f"{len(rs)} rounds ({skipped} skipped); µs, median and p90 over the rounds",
             f"  {'hop':44} {'median':>8} {'p90':>8}"]

    def row(name, key):
        xs = [r[key] for r in rs]
        lines.append(f"  {name:44} {statistics.median(xs):8.1f} {percentile(xs, 90):8.1f}")

    for hop in HOPS:
        if hop.startswith(("follower", "sync")):
            row(f"{hop} (the follower waited for)", hop)
            for f in followers:
                row(f"  {hop}, pid {f}", f"{hop}@{f}")
        else:
            row(hop, hop)
    for k in ("epoll returns", "futex calls"):
        row(f"{k} per round (all processes)", k)
    return "\n".join(lines)


def report(events, leader, followers, client_comm="kvcli"):
    """The summary of every round in `events` of one load generator named `client_comm`."""
    clients = {e[2] for e in events if e[1] == client_comm}
    if len(clients) != 1:
        raise SystemExit(f"expected one {client_comm} process in the recording, found {len(clients)}")
    rs, skipped = rounds(events, leader, followers, clients.pop())
    return summary(rs, skipped, followers)


def read_perf(data):
    """The events of a perf.data file recorded with perf_events()."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    # perf script orders by time already; the rounds rely on it, so it is made sure.
    return sorted(parse(out.splitlines()), key=lambda e: e[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a perf.data recorded with perf_events()")
    p.add_argument("--pids", required=True, help="LEADER,FOLLOWER,FOLLOWER: the servers' pids")
    p.add_argument("--client-comm", default="kvcli", help="the load generator's process name")
    a = p.parse_args()
    pids = [int(x) for x in a.pids.split(",")]
    print(report(read_perf(a.data), pids[0], pids[1:], a.client_comm))


if __name__ == "__main__":
    main()

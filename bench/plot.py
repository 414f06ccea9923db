#!/usr/bin/env python3
"""bench/plot.py: draws the suite's PNG plots from a results JSON (bench/run.py calls it
inside bench/.venv, where matplotlib is installed).

    bench/.venv/bin/python bench/plot.py bench/results/latest.json bench/results/plots
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"raftkv": {"color": "tab:blue", "ls": "-"}, "etcd": {"color": "tab:orange", "ls": "--"}}
OP_MARK = {"put": "o", "get": "s", "mix": "^"}
PCTS = [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9"), ("max_us", "max")]


def subtitle(results):
    m = results.get("machine", {})
    return (f"{results.get('started', '')}, commit {results.get('commit', '?')}, {m.get('cores', '?')} shared cores, "
            f"{results['settings']['duration_s']} s/point, 3 nodes on loopback, fsync on")


def client_points(results, system, op):
    pts = [p for p in results["points"] if p["system"] == system and p["op"] == op and p.get("group") == "clients"]
    return sorted(pts, key=lambda p: p["clients"])


def throughput(results, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    for system in ("raftkv", "etcd"):
        for op in ("put", "get"):
            pts = client_points(results, system, op)
            if pts:
                ax.plot([p["clients"] for p in pts], [p["ops_per_s"] for p in pts], marker=OP_MARK[op],
                        label=f"{system} {op}", **STYLE[system])
        mix = client_points(results, system, "mix")
        if mix:
            ax.plot([p["clients"] for p in mix], [p["ops_per_s"] for p in mix], marker="^", ls="none", ms=9,
                    color=STYLE[system]["color"], label=f"{system} 80/20 mix")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent closed-loop clients")
    ax.set_ylabel("operations per second")
    ax.set_title("Throughput, 16 B keys, 100 B values, 10,000 keys\n" + subtitle(results), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)


def latency(results, out):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, op in zip(axes, ("put", "get")):
        for system in ("raftkv", "etcd"):
            pts = client_points(results, system, op)
            for i, p in enumerate(pts):
                ys = [max(p["latency_us"].get(k, 0), 1) / 1000 for k, _ in PCTS]
                shade = 0.35 + 0.65 * (i + 1) / len(pts)
                ax.plot([n for _, n in PCTS], ys, marker=OP_MARK[op], ls=STYLE[system]["ls"],
                        color=STYLE[system]["color"], alpha=shade, label=f"{system}, {p['clients']} clients")
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.set_title(f"{'put' if op == 'put' else 'linearizable get'} latency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("latency (ms)")
    fig.suptitle("Latency percentiles by client count\n" + subtitle(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


def shards(results, out):
    pts = [p for p in results["points"] if p["system"] == "raftkv" and p["clients"] == 64
           and p["value_size"] == 100 and p["op"] in ("put", "get")]
    # Since the shard counts are compared in interleaved rounds, their points (group
    # "shards", one median round each) stand for every count, BASE_SHARDS included.
    if any(p.get("group") == "shards" and p.get("rounds") for p in pts):
        pts = [p for p in pts if p.get("group") == "shards"]
    counts = sorted({p["shards"] for p in pts})
    if len(counts) < 2:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    width = 0.38
    xs = list(range(len(counts)))
    for j, op in enumerate(("put", "get")):
        by = {p["shards"]: p for p in pts if p["op"] == op}
        off = [x + (j - 0.5) * width for x in xs]
        axes[0].bar(off, [by[s]["ops_per_s"] if s in by else 0 for s in counts], width, label=op)
        axes[1].bar(off, [by[s]["server_cpu_us_per_op"] if s in by else 0 for s in counts], width, label=op)
    idle = {i["shards"]: i["percent_of_one_core"] for i in results.get("idle", [])}
    axes[2].bar(xs, [idle.get(s, 0) for s in counts], 0.5, color="tab:gray")
    for ax, title in zip(axes, ("ops/s at 64 clients", "server CPU per op (us, 3 nodes)", "idle cluster CPU (% of one core)")):
        ax.set_xticks(xs, [str(s) for s in counts])
        ax.set_xlabel("shards")
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.suptitle("raftkv: cost of shards\n" + subtitle(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "shards.png", dpi=110)
    plt.close(fig)


def values(results, out):
    pts = sorted([p for p in results["points"] if p["system"] == "raftkv" and p["op"] == "put" and p["clients"] == 64
                  and p["shards"] == 8], key=lambda p: p["value_size"])
    if len(pts) < 2:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = [f"{p['value_size']} B" if p["value_size"] < 1024 else f"{p['value_size'] // 1024} KiB" for p in pts]
    xs = list(range(len(pts)))
    axes[0].bar(xs, [p["ops_per_s"] * p["value_size"] / 2**20 for p in pts], 0.5)
    axes[0].set_title("put payload throughput (MiB/s), 64 clients", fontsize=10)
    for k, name in PCTS[:4]:
        axes[1].plot(xs, [p["latency_us"].get(k, 0) / 1000 for p in pts], marker="o", label=name)
    axes[1].set_yscale("log")
    axes[1].set_title("put latency (ms)", fontsize=10)
    axes[1].legend()
    for ax in axes:
        ax.set_xticks(xs, labels)
        ax.set_xlabel("value size")
        ax.grid(True, alpha=0.3)
    fig.suptitle("raftkv: value size\n" + subtitle(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "values.png", dpi=110)
    plt.close(fig)


def main():
    src, out = sys.argv[1], Path(sys.argv[2])
    results = json.load(sys.stdin) if src == "-" else json.loads(Path(src).read_text())
    out.mkdir(parents=True, exist_ok=True)
    for draw in (throughput, latency, shards, values):
        draw(results, out)


if __name__ == "__main__":
    main()

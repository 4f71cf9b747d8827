"""Two-hop locality at S = 8, 16, 64 for hash, community and community + replication; table + plot.

    .venv/bin/python -m benchmarks.locality_table GRAPH [GRAPH ...] [--png docs/locality.png]

GRAPH is an edge file, or `synth:USERS:DEGREE` for the cached synthetic graph of bench_fof.
Prints a markdown table (for docs/RESULTS.md) and writes a plot of locality against S.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pymk.graph.locality import locality_report
from pymk.graph.partition import partition, plan_replicas
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.build import ingest

ROWS = (("hash", "hash", 0.0), ("hash + replication", "hash", 0.25), ("community", "community", 0.0),
        ("community + replication", "community", 0.25))


def load(spec: str) -> tuple[str, CSRGraph]:
    if spec.startswith("synth:"):
        from benchmarks.bench_fof import load_graph

        _, users, deg = spec.split(":")
        return f"synth {int(users) // 1000}K x {deg}", load_graph(int(users), float(deg), Path("bench-data"))
    edges, _ = ingest(spec, show_progress=False, log=lambda s: None)
    return Path(spec).name.split(".")[0], CSRGraph.from_edges(edges)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("graphs", nargs="+")
    ap.add_argument("--shards", default="8,16,64")
    ap.add_argument("--png", type=Path, default=Path("docs/locality.png"))
    ap.add_argument("--json", type=Path, default=Path("bench-data/locality.json"))
    args = ap.parse_args()
    shard_counts = [int(s) for s in args.shards.split(",")]
    results = {}
    print("| graph | S | method | two_hop_locality | edge_locality | balance | replication_overhead | "
          "cross-shard requests / traversal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.graphs:
        name, g = load(spec)
        for s in shard_counts:
            homes = {m: partition(g, s, m) for m in ("hash", "community")}
            for label, method, budget in ROWS:
                rep = locality_report(g, plan_replicas(g, homes[method], s, method, budget))
                results.setdefault(name, {}).setdefault(label, {})[s] = rep.to_dict()
                print(f"| {name} | {s} | {label} | {rep.two_hop_locality:.3f} | {rep.edge_locality:.3f} | "
                      f"{rep.balance:.3f} | {rep.replication_overhead:.3f} | {rep.cross_shard_requests_mean:.2f} |",
                      flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    plot(results, shard_counts, args.png)


def plot(results: dict, shard_counts: list[int], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), sharey=True, squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items(), strict=True):
        for label, by_s in rows.items():
            ax.plot(shard_counts, [by_s[s]["two_hop_locality"] for s in shard_counts], marker="o", label=label)
        for s in shard_counts:
            ax.plot([s], [1 / s], "k.", alpha=0.4)
        ax.axhline(0.8, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shard_counts, [str(s) for s in shard_counts])
        ax.set_title(name)
        ax.set_xlabel("shards S")
    axes[0][0].set_ylabel("two-hop locality (path-weighted)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Share of 2-hop path expansions read on the user's home shard (dots: 1/S)", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()

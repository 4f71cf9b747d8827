"""Choosing a default without the protocol's test edges: the shared protocol run on the training graph alone.

    .venv/bin/python -m benchmarks.internal_choice --edges PATH [--edges PATH ...] \
        --vary ranker.negatives=0.05,0.15,0.4 --vary ranker.splits=1,3,5 [--json OUT]

For each graph the protocol's split is made once and its test edges are set aside unread; the protocol
is then run again on the training edges only (its own seeded 10% becomes the held-out set), once for
the default config and once for each value of each `--vary` key, one key at a time. A default is chosen
on these figures and only then checked on the protocol's test edges (`pymk eval`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pymk.config import PymkConfig
from pymk.eval.protocol import split_edges
from pymk.eval.runner import evaluate
from pymk.pipeline.build import ingest


def _set(cfg: dict, key: str, value: str) -> dict:
    node = cfg
    *path, last = key.split(".")
    for p in path:
        node = node[p]
    old = node[last]
    node[last] = type(old)(value) if not isinstance(old, bool) else value.lower() in ("1", "true", "yes")
    return cfg


def variants(vary: list[str]) -> list[tuple[str, PymkConfig]]:
    """("default", default config) then one (label, config) per value of each `key=v1,v2` in `vary`."""
    out = [("default", PymkConfig())]
    for spec in vary:
        key, _, values = spec.partition("=")
        for v in values.split(","):
            out.append((f"{key}={v}", PymkConfig.from_dict(_set(PymkConfig().to_dict(), key, v))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", action="append", required=True)
    ap.add_argument("--vary", action="append", default=[], help="key=v1,v2,... (dotted config key)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for path in args.edges:
        edges, _ = ingest(path, show_progress=False, log=lambda s: None)
        train = split_edges(edges).train  # the protocol's test edges are never read below
        for label, cfg in variants(args.vary):
            t = time.perf_counter()
            r = evaluate(train, dataset=Path(path).name, config=cfg, log=lambda s: None)
            row = {"graph": Path(path).name, "variant": label, **{m: round(r.methods["pymk"][m], 4)
                   for m in ("recall@20", "ndcg@10", "mrr")},
                   "stage1@1000": round(r.stage1_recall["@1000"], 4), "serving": r.ranker.get("serving"),
                   "seconds": round(time.perf_counter() - t, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| graph | variant | internal R@20 | NDCG@10 | MRR | Stage-1 @1000 | serves |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['graph']} | {r['variant']} | {r['recall@20']:.4f} | {r['ndcg@10']:.4f} | {r['mrr']:.4f} "
              f"| {r['stage1@1000']:.4f} | {r['serving']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""What capping friends-of-friends expansion costs in recall, and what it saves in time.

    .venv/bin/python benchmarks/eval_max_expand.py EDGES [--caps 0,200,100,50,25]

For each cap, under the shared evaluation protocol: pymk's Stage-1 recall@1000, Recall@20 of the
default pipeline, the 2-hop paths walked per evaluation user and the Stage-1 time per user.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pymk.candidates.fof import _expand_order, friends_of_friends
from pymk.config import CandidatesConfig, FofConfig, PymkConfig
from pymk.eval.protocol import split_edges
from pymk.eval.runner import evaluate
from pymk.graph.snapshot import CSRGraph
from pymk.pipeline.build import ingest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("edges")
    ap.add_argument("--caps", default="0,200,100,50,25")
    args = ap.parse_args()
    edges, _ = ingest(args.edges, show_progress=False, log=lambda s: None)
    split = split_edges(edges)
    train = CSRGraph.from_edges(split.train)
    deg = train.degree
    print(f"{args.edges}: {edges.num_users:,} users, {edges.num_edges:,} edges, max degree {deg.max()}")
    print(f"{'max_expand':>10}{'stage1@1000':>13}{'recall@20':>11}{'paths/user':>12}{'ms/user':>9}"
          f"{'users capped':>14}")
    for cap in (int(c) for c in args.caps.split(",")):
        cfg = PymkConfig(candidates=CandidatesConfig(fof=FofConfig(max_expand=cap)))
        rep = evaluate(edges, dataset=args.edges, config=cfg)
        paths = np.mean([deg[_expand_order(train.indptr, train.neighbors(u), cap)].sum() for u in split.users])
        friends_of_friends(train, split.users[:4], 1000, max_expand=cap)
        t = time.perf_counter()
        friends_of_friends(train, split.users, 1000, max_expand=cap)
        ms = (time.perf_counter() - t) / split.users.size * 1e3
        capped = int((deg[split.users] > cap).sum()) if cap else 0
        print(f"{cap or 'none':>10}{rep.stage1_recall['@1000']:>13.4f}{rep.methods['pymk']['recall@20']:>11.4f}"
              f"{paths:>12,.0f}{ms:>9.3f}{capped:>14}")


if __name__ == "__main__":
    main()

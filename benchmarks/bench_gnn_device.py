"""GNN training on each device, side by side: time, epochs and embedding-only Stage-1 recall.

    .venv/bin/python -m benchmarks.bench_gnn_device --edges tests/data/lastfm-asia.csv.gz [--devices cpu,cuda]
        [--epochs 30] [--json F]

The protocol of `pymk eval` (the same train/test split): the GNN trains on the train graph with the
default `GnnConfig` and only `device` changed; recall@100/500/1000 of exact inner-product search over
its embeddings is measured on the held-out edges. One run per device, in one process.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    from pymk.candidates.embedding import exact_search
    from pymk.eval.metrics import hit_matrix, micro_recall
    from pymk.eval.protocol import split_edges
    from pymk.gnn.config import GnnConfig
    from pymk.gnn.train import Trainer, infer
    from pymk.graph.snapshot import CSRGraph
    from pymk.pipeline.build import ingest

    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", required=True)
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=GnnConfig().epochs)
    ap.add_argument("--json")
    args = ap.parse_args()
    edges, _ = ingest(args.edges, show_progress=False, log=lambda s: None)
    split = split_edges(edges)
    train = CSRGraph.from_edges(split.train)
    n_truth = np.diff(split.truth_ptr)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-"
    print(f"{args.edges}: {train.num_users:,} users, {train.num_edges:,} train edges, {split.users.size:,} "
          f"evaluation users; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, GPU {gpu}")
    rows = []
    for device in args.devices.split(","):
        cfg = GnnConfig(device=device, epochs=args.epochs)
        t0 = time.perf_counter()
        trainer = Trainer(train, cfg)
        result = trainer.fit(progress=False, log=lambda s: None)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb = infer(trainer.model, train, trainer.struct)
        t_infer = time.perf_counter() - t0
        _, top = exact_search(emb, split.users, 1000, train)
        hits = hit_matrix(top, split.users.size, split.truth_ptr, split.truth_idx, train.num_users)
        row = {"device": device, "train_s": round(t_train, 1), "infer_s": round(t_infer, 2),
               "epochs": len(result.history), "best_epoch": result.best_epoch,
               "ms_per_step": round(result.step_seconds / max(1, result.steps) * 1e3, 2),
               "sample_share": round(result.sample_seconds / max(result.step_seconds, 1e-9), 3),
               **{f"recall@{k}": round(micro_recall(hits[:, :k], n_truth), 4) for k in (100, 500, 1000)}}
        rows.append(row)
        print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            print(f"  {r['device']} vs {base['device']}: training {base['train_s'] / r['train_s']:.1f}x faster, "
                  f"step {base['ms_per_step'] / r['ms_per_step']:.1f}x, recall@1000 {r['recall@1000']} vs "
                  f"{base['recall@1000']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"edges": args.edges, "gpu": gpu, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

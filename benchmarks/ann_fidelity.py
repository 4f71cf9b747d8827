"""ANN fidelity on real embeddings: recall@100 (and @1000) of each index kind against exact search.

    .venv/bin/python -m benchmarks.ann_fidelity MODEL_DIR [MODEL_DIR ...] [--kinds hnsw,ivf_flat,ivf_sq8,ivf_pq]

MODEL_DIR: a model built with `[gnn] enabled = true` (its gnn/embeddings.npy). Each kind is built with
the default config and calibrated as `pymk build` does (doubling nprobe / efSearch until recall@100
and recall@1000 on 500 sampled users reach 0.97); recall is then measured on 1,000 other users.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pymk.candidates.ann import AnnIndex, calibrate, recall_against_exact
from pymk.config import AnnConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--kinds", default="hnsw,ivf_flat,ivf_sq8,ivf_pq")
    args = ap.parse_args()
    print(f"{'embeddings':<28}{'kind':<10}{'param':>7}{'recall@100':>12}{'recall@1000':>13}{'build+cal s':>13}")
    for model in args.models:
        emb = np.load(model / "gnn" / "embeddings.npy")
        n = emb.shape[0]
        held_out = np.sort(np.random.default_rng(123).choice(n, min(1000, n), replace=False))
        for kind in args.kinds.split(","):
            cfg = AnnConfig(kind=kind)
            t = time.perf_counter()
            index = AnnIndex.build(emb, None, cfg, kind=kind)
            cal = calibrate(index, emb, cfg, depth=1000)
            secs = time.perf_counter() - t
            r100 = recall_against_exact(index, emb, held_out, 100)
            r1000 = recall_against_exact(index, emb, held_out, min(1000, n - 1))
            name = f"{model.name} {n:,}x{emb.shape[1]}"
            print(f"{name:<28}{kind:<10}{cal['param']:>7}{r100:>12.4f}{r1000:>13.4f}{secs:>13.1f}")


if __name__ == "__main__":
    main()

"""`pymk eval`: CN, AA, RA and pymk's current pipeline side by side under the shared protocol.

Heuristic baselines list the 2-hop non-friends by score (ties: smaller index), up to 1,000; users with
score 0 are not listed, which is how the shared README's baseline table was computed (a zero-score
tail in index order changes its figures by up to 0.002). pymk's row is the model that
`pymk build` makes with the given config, built on the train graph only.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pymk.candidates.fof import friends_of_friends, two_hop_coverage, within_two_hops
from pymk.config import PymkConfig
from pymk.eval.metrics import hit_matrix, micro_recall, ranking_metrics
from pymk.eval.protocol import Split, split_edges
from pymk.graph.edges import EdgeList
from pymk.graph.snapshot import CSRGraph

LIST_LEN = 1000
STAGE1_KS = (100, 500, 1000, 3000)
SOURCES = ("fof", "ppr", "embedding")
METRIC_COLS = ("recall@10", "recall@20", "recall@50", "ndcg@10", "mrr")


@dataclass
class EvalReport:
    dataset: str
    users: int
    test_edges: int
    two_hop_ceiling: float
    cn_top1000_recall: float
    methods: dict[str, dict[str, float]] = field(default_factory=dict)
    stage1_recall: dict[str, float] = field(default_factory=dict)
    source_recall: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> @k -> recall, alone
    beyond_two_hops: dict[str, int] = field(default_factory=dict)  # test pairs past 2 hops found in top 1000
    ranker: dict = field(default_factory=dict)  # which ranker the pymk row used, and why
    stage1: dict = field(default_factory=dict)  # the friends-of-friends order the build chose, and why
    gnn_stage1_recall: dict[str, float] = field(default_factory=dict)
    gnn: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # pymk's recall@20 over the best of CN / AA / RA (the learned ranker's target is 1.10x)
    vs_best_heuristic: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    def table(self) -> str:
        head = f"{'method':<8}" + "".join(f"{c:>11}" for c in METRIC_COLS)
        lines = [
            f"dataset {self.dataset}: {self.users} eval users, {self.test_edges} test edges",
            f"2-hop ceiling {self.two_hop_ceiling:.4f}   CN top-1000 recall {self.cn_top1000_recall:.4f}",
            "pymk Stage-1 recall  " + "   ".join(f"@{k[1:]} {v:.4f}" for k, v in self.stage1_recall.items()),
            *(["gnn  Stage-1 recall  " + "   ".join(f"@{k[1:]} {v:.4f}" for k, v in self.gnn_stage1_recall.items())
               + f"   (top-1000 finds {self.gnn.get('found_beyond_two_hops@1000', 0)} of the "
               f"{self.gnn.get('test_edges_beyond_two_hops', 0)} test edges beyond two hops)"]
              if self.gnn_stage1_recall else []),
        ]
        if self.source_recall:
            lines.append(f"{'Stage-1 recall':<16}" + "".join(f"{'@' + str(c):>9}" for c in STAGE1_KS)
                         + "   beyond 2 hops found @1000")
            rows = {**self.source_recall, "merged": self.stage1_recall}
            for name, rec in rows.items():
                lines.append(f"  {name:<14}" + "".join(f"{rec.get(f'@{c}', float('nan')):>9.4f}" for c in STAGE1_KS)
                             + f"   {self.beyond_two_hops.get(name, 0)} of {self.beyond_two_hops.get('total', 0)}")
        if self.stage1:
            rec = self.stage1.get(f"recall@{self.stage1.get('k')}", {})
            lines.append(f"pymk Stage 1: friends-of-friends by {self.stage1.get('chosen')} (internal split recall@"
                         f"{self.stage1.get('k')}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()) + ")")
        if self.ranker:
            val = self.ranker.get("validation_recall@20", {})
            lines.append(f"pymk ranker: {self.ranker.get('serving')}"
                         + (" (internal validation recall@20: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items())
                            + ")" if val else ""))
        lines += [head, "-" * len(head)]
        for name, row in self.methods.items():
            lines.append(f"{name:<8}" + "".join(f"{row[c]:>11.4f}" for c in METRIC_COLS))
        v = self.vs_best_heuristic
        if v:
            ratio = "n/a (the heuristics score 0)" if v["ratio"] is None else f"{v['ratio']:.3f}x"
            lines.append(f"pymk recall@20 {v['pymk']:.4f} vs best heuristic {v['best']} {v['best_recall']:.4f}: "
                         f"{ratio}")
        return "\n".join(lines)


def best_heuristic_ratio(methods: dict[str, dict[str, float]], metric: str = "recall@20") -> dict:
    """pymk's `metric` over the best of CN / AA / RA (first listed wins a tie); ratio None when that is 0."""
    best = max(("CN", "AA", "RA"), key=lambda m: methods[m][metric])
    base, ours = methods[best][metric], methods["pymk"][metric]
    return {"metric": metric, "pymk": ours, "best": best, "best_recall": base,
            "ratio": ours / base if base > 0 else None}


def evaluate(edges: EdgeList, *, dataset: str = "edges", config: PymkConfig | None = None,
             log=print, executor=None) -> EvalReport:
    """Runs the protocol on normalised edges (see `pymk.eval.protocol`); `executor`: where pymk's build
    runs its chunked stages (`pymk.pipeline.executor`; the report does not depend on it)."""
    from pymk.pipeline.build import build_from_edges
    from pymk.pipeline.model import Model

    config = config or PymkConfig()
    split: Split = split_edges(edges)
    n = edges.num_users
    train = CSRGraph.from_edges(split.train)
    users = split.users
    n_truth = np.diff(split.truth_ptr)

    def hits_of(lists):
        return hit_matrix(lists, users.size, split.truth_ptr, split.truth_idx, n)

    seconds = {}
    t = time.perf_counter()
    ceil_hits, _ = two_hop_coverage(train, users, split.truth_ptr, split.truth_idx)
    report = EvalReport(dataset, int(users.size), int(split.test_lo.size),
                        float(ceil_hits.sum() / max(1, n_truth.sum())), 0.0)
    for name, score in (("CN", "cn"), ("AA", "aa"), ("RA", "ra")):
        hits = hits_of(friends_of_friends(train, users, LIST_LEN, score=score).cand)
        report.methods[name] = ranking_metrics(hits, n_truth)
        if name == "CN":
            report.cn_top1000_recall = micro_recall(hits, n_truth)
    seconds["baselines"] = time.perf_counter() - t

    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pymk-eval-") as tmp:
        build_from_edges(split.train, Path(tmp) / "model", config, log=lambda s: None, executor=executor)
        model = Model.load(Path(tmp) / "model")
        seconds["pymk_build"] = time.perf_counter() - t
        report.stage1 = dict(model.meta["stages"].get("stage1", {}))
        stage = model.meta["stages"].get("ranker", {})
        report.ranker = {"serving": model.ranker_kind, **{k: stage[k] for k in ("objective", "validation_recall@20",
                                                                                "importance", "skipped") if k in stage}}
        t = time.perf_counter()
        ranked = model.recommend(users, LIST_LEN)
        report.methods["pymk"] = ranking_metrics(hits_of(ranked.cand), n_truth)
        report.vs_best_heuristic = best_heuristic_ratio(report.methods)
        report.beyond_two_hops["total"] = int(n_truth.sum() - ceil_hits.sum())

        def beyond(lists, hits):
            """Hits of the top LIST_LEN that lie past two hops in the train graph."""
            rows, cols = np.nonzero(hits[:, :LIST_LEN])
            return int((~within_two_hops(train, users[rows], lists[rows, cols])).sum())

        for c in STAGE1_KS:
            cands = model.candidates(users, k=c)
            hits = hits_of(cands.cand)
            report.stage1_recall[f"@{c}"] = micro_recall(hits, n_truth)
            if c == LIST_LEN:
                report.beyond_two_hops["merged"] = beyond(cands.cand, hits)
        seconds["pymk_recommend"] = time.perf_counter() - t
        t = time.perf_counter()
        by_source = {}  # source alone -> (lists, hits), ranked by its own score
        for src in SOURCES:
            if src == "embedding" and model.embeddings is None:
                continue
            lists = model.stage1.generate(users, k=max(STAGE1_KS), sources=(src,)).cand
            hits = hits_of(lists)
            by_source[src] = (lists, hits)
            report.source_recall[src] = {f"@{c}": micro_recall(hits[:, :c], n_truth) for c in STAGE1_KS}
            report.beyond_two_hops[src] = beyond(lists, hits)
        seconds["per_source"] = time.perf_counter() - t
        if "embedding" in by_source:  # the GNN stage ran: embedding-only ranking (its own top LIST_LEN)
            _, hits = by_source["embedding"]
            hits = hits[:, :LIST_LEN]
            report.methods["gnn"] = ranking_metrics(hits, n_truth)
            for c in STAGE1_KS:
                if c <= LIST_LEN:
                    report.gnn_stage1_recall[f"@{c}"] = micro_recall(hits[:, :c], n_truth)
            report.gnn = dict(model.meta["stages"]["gnn"])
            report.gnn["test_edges_found@1000"] = int(hits.sum())
            report.gnn["found_beyond_two_hops@1000"] = report.beyond_two_hops["embedding"]
            report.gnn["test_edges_beyond_two_hops"] = int(n_truth.sum() - ceil_hits.sum())
        del model
    report.seconds = {k: round(v, 3) for k, v in seconds.items()}
    return report

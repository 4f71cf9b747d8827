"""`pymk report`: one self-contained HTML file (PNG plots inlined) about a model and how it does.

Sections, each drawn when its input is there (and said in words when it is not):
    model        version, size, build / update stages and their times        (DIR/model.json)
    evaluation   Recall@K, NDCG, MRR of pymk against CN / AA / RA; Stage-1 recall by depth for each source,
                 with the 2-hop ceiling                                        (`pymk eval --json`, or DIR/eval.json)
    serving      latency of whole requests and of each request step, as histograms (`bench_serve.py --json`)
    shards       the plan's 2-hop locality, balance and cross-shard requests (a model built with --shards), and
                 what hash / community sharding of the graph gives at S = 4, 8, 16, as a plot
    staleness    users by new neighbours since their embedding / degree        (a `pymk update` with a GNN)
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path


class ReportError(ValueError):
    """An input the report cannot read (names the file)."""


def _pyplot():
    """matplotlib's pyplot on the file-only backend (a report is written where no display may be)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(head: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return html.escape(str(v))

    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
            + "</tbody></table>")


def read_json(path: Path | None, what: str) -> dict | None:
    if path is None:
        return None
    if not Path(path).exists():
        raise ReportError(f"{what} not found: {path}")
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None


def _model_section(model_dir: Path) -> tuple[str, dict]:
    from pymk.pipeline.model import model_version, read_model_meta

    meta = read_model_meta(model_dir)
    stages = meta.get("stages", {})
    rows = [[name, st.get("seconds", ""), ", ".join(f"{k} {v}" for k, v in st.items()
                                                    if k in ("users", "edges", "chosen", "refreshed", "events"))]
            for name, st in stages.items()]
    g = stages.get("graph", {})
    body = (f"<p>version <b>{html.escape(model_version(meta))}</b>, built "
            f"{html.escape(str(meta.get('created_at', '')))} by pymk {html.escape(str(meta.get('pymk_version', '')))}"
            f"; {g.get('users', 0):,} users, {g.get('edges', 0):,} friendships</p>"
            + _table(["stage", "seconds", "what it did"], rows))
    return body, meta


def _evaluation_section(ev: dict) -> str:
    plt = _pyplot()
    methods = ev.get("methods", {})
    cols = sorted({c for m in methods.values() for c in m})
    out = [f"<p>{ev.get('dataset', '?')}: {ev.get('users', 0):,} evaluation users, {ev.get('test_edges', 0):,} "
           f"held-out friendships; 2-hop ceiling {ev.get('two_hop_ceiling', float('nan')):.4f}</p>",
           _table(["method", *cols], [[name, *(m.get(c, "") for c in cols)] for name, m in methods.items()])]
    ks = [c for c in ("recall@10", "recall@20", "recall@50") if c in cols]
    if ks:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        width = 0.8 / max(len(methods), 1)
        for i, (name, m) in enumerate(methods.items()):
            ax.bar([j + i * width for j in range(len(ks))], [m.get(k, 0) for k in ks], width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ks))], [k.replace("recall", "Recall") for k in ks])
        ax.set_ylabel("recall")
        ax.set_title("Recall@K: pymk against CN / AA / RA")
        ax.legend(fontsize=8)
        out.append(_png(fig))
    curves = {**ev.get("source_recall", {}), "merged": ev.get("stage1_recall", {})}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for name, rec in curves.items():
            depth = sorted(int(k[1:]) for k in rec)
            ax.plot(depth, [rec[f"@{d}"] for d in depth], marker="o", label=name, lw=2.5 if name == "merged" else 1.2)
        if "two_hop_ceiling" in ev:
            ax.axhline(ev["two_hop_ceiling"], color="grey", ls="--", label="2-hop ceiling")
        ax.set_xscale("log")
        ax.set_xlabel("Stage-1 depth (candidates per user)")
        ax.set_ylabel("recall")
        ax.set_title("Stage-1 recall by depth, each source alone and merged")
        ax.legend(fontsize=8)
        out.append(_png(fig))
    return "\n".join(out)


def _serving_section(bench: dict) -> str:
    plt = _pyplot()
    out = [f"<p>{html.escape(str(bench.get('model', '')))}: {bench.get('users', 0):,} users; uncached p50 "
           f"{bench['uncached_ms']['p50']:.2f} ms / p99 {bench['uncached_ms']['p99']:.2f} ms, cache hit p50 "
           f"{bench['hit_ms']['p50']:.2f} ms; {html.escape(str(bench.get('machine', '')))}</p>"]
    whole = bench.get("request_ms") or {}
    if whole.get("uncached"):
        import numpy as np

        fig, ax = plt.subplots(figsize=(7, 2.8))
        top = float(np.percentile(whole["uncached"], 99.9))
        bins = np.linspace(0, max(top, 1e-3), 40)
        for name in ("uncached", "hit"):
            if whole.get(name):
                ax.hist(np.minimum(whole[name], top), bins=bins, alpha=0.6, label=f"{name} ({len(whole[name])})")
        for q, style in ((50, "--"), (99, ":")):
            ax.axvline(float(np.percentile(whole["uncached"], q)), color="k", linestyle=style, linewidth=1,
                       label=f"uncached p{q}")
        ax.set_xlabel("ms per request, client side (the last bin holds the slowest 0.1%)")
        ax.set_ylabel("requests")
        ax.legend(fontsize=8)
        ax.set_title("whole requests")
        fig.tight_layout()
        out.append(_png(fig))
    hist = bench.get("step_hist") or {}
    steps = [s for s, _ in sorted(bench.get("step_ms", {}).items(), key=lambda kv: -kv[1]) if hist.get(s)]
    if steps:
        fig, axes = plt.subplots(len(steps), 1, figsize=(7, 1.3 * len(steps) + 0.6), sharex=True)
        axes = [axes] if len(steps) == 1 else axes
        for ax, step in zip(axes, steps, strict=True):
            les, counts = zip(*hist[step], strict=True)
            per = [c - p for c, p in zip(counts, (0, *counts[:-1]), strict=True)]  # cumulative -> per bucket
            labels = [f"<={le * 1e3:g}" if le != float("inf") else "more" for le in les]
            ax.bar(range(len(per)), per)
            ax.set_ylabel(step, rotation=0, ha="right", fontsize=8)
            ax.set_xticks(range(len(per)), labels, fontsize=7)
        axes[-1].set_xlabel("ms per request (bucket upper bound)")
        fig.suptitle("uncached requests: time in each step")
        out.append(_png(fig))
    if bench.get("step_ms"):
        out.append(_table(["step", "mean ms", "share"], [[s, v, bench["step_share"].get(s, 0.0)] for s, v in
                                                        sorted(bench["step_ms"].items(), key=lambda kv: -kv[1])]))
    return "\n".join(out)


def _shards_section(model_dir: Path, meta: dict, shard_counts: tuple[int, ...] = (4, 8, 16)) -> str:
    """The model's own plan (a sharded model), and what hash and community sharding of its graph would give at
    each of `shard_counts` (with the balance and replica budget of `meta`'s config): two-hop locality and the
    shards a friends-of-friends request contacts."""
    from pymk.config import PymkConfig
    from pymk.graph.locality import locality_curve, locality_report
    from pymk.graph.sharded import load_plan
    from pymk.graph.snapshot import CSRGraph

    plt = _pyplot()
    graph = CSRGraph.load(model_dir / "graph")
    plan = load_plan(model_dir / "graph")
    out = []
    if plan is None:
        out.append('<p class="missing">The model is not sharded (pymk build --shards S)'
                   + (": below, what sharding its graph would give." if shard_counts else ".") + "</p>")
    else:
        rep = locality_report(graph, plan).to_dict()
        out.append(f"<p>This model: {plan.shards} {html.escape(plan.method)} shards.</p>")
        out.append(_table(["measure", "value"], [[k, v] for k, v in rep.items()]))
    try:
        config = PymkConfig.from_dict(meta.get("config", {}))
    except Exception:  # noqa: BLE001 - an older or partial config: the defaults
        config = None
    curve = locality_curve(graph, shard_counts, config=config) if shard_counts else []
    if curve:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
        for method in dict.fromkeys(r.method for r in curve):
            pts = [r for r in curve if r.method == method]
            xs = [r.shards for r in pts]
            a.plot(xs, [r.two_hop_locality for r in pts], marker="o", label=method)
            b.plot(xs, [r.cross_shard_requests_mean for r in pts], marker="o", label=method)
        for ax, what in ((a, "2-hop locality (with replicas)"), (b, "shards contacted per fof request")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(shard_counts), [str(x) for x in shard_counts])
            ax.set_xlabel("shards")
            ax.set_title(what, fontsize=10)
            ax.legend(fontsize=8)
        if plan is not None:
            a.scatter([plan.shards], [rep["two_hop_locality"]], s=90, facecolors="none", edgecolors="k", zorder=3)
            b.scatter([plan.shards], [rep["cross_shard_requests_mean"]], s=90, facecolors="none",
                      edgecolors="k", zorder=3)
        fig.suptitle(f"{graph.num_users:,} users, {graph.num_edges:,} friendships"
                     + (" (circled: this model's plan)" if plan is not None else ""), fontsize=10)
        fig.tight_layout()
        out.append(_png(fig))
        out.append(_table(["method", "shards", "2-hop locality", "edge locality", "balance",
                           "shards per request (mean)", "p99"],
                          [[r.method, r.shards, r.two_hop_locality, r.edge_locality, r.balance,
                            r.cross_shard_requests_mean, r.cross_shard_requests_p99] for r in curve]))
    return "\n".join(out)


def _staleness_section(meta: dict) -> str | None:
    plt = _pyplot()
    hist = meta.get("stages", {}).get("gnn", {}).get("staleness_hist")
    if not hist:
        return None
    bins, users = hist["bins"], hist["users"]
    labels = [f"{bins[i]}-{bins[i + 1]}" for i in range(len(users) - 1)] + [f">= {bins[-2]} or new"]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(len(users)), users)
    ax.set_xticks(range(len(users)), labels, fontsize=8, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("users")
    thr = meta["stages"]["gnn"].get("staleness")
    ax.set_title(f"new neighbours since the last embedding / degree (re-embedded above {thr})")
    return _png(fig)


CSS = ("body{font:14px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;color:#1d2433}"
       "table{border-collapse:collapse;margin:.6em 0}td,th{padding:.2em .7em;border-bottom:1px solid #e3e6ee;"
       "text-align:left}h2{margin-top:1.6em;border-bottom:2px solid #1d2433}.missing{color:#8a93a6}img{max-width:100%}")


def write_report(out: Path, *, model_dir: Path | None = None, evaluation: dict | None = None,
                 bench: dict | None = None, locality_shards: tuple[int, ...] = (4, 8, 16)) -> Path:
    """Writes the HTML report to `out` (every plot inlined); returns `out`."""
    title = "pymk report"
    parts = []
    meta: dict = {}
    if model_dir is not None:
        body, meta = _model_section(model_dir)
        parts.append(("Model", body))
        if evaluation is None and (model_dir / "eval.json").exists():
            evaluation = read_json(model_dir / "eval.json", "evaluation")
    missing = ('<p class="missing">{}</p>').format
    parts.append(("Evaluation", _evaluation_section(evaluation) if evaluation else missing(
        "No evaluation: pass --eval JSON (from `pymk eval --json`) or put it at MODEL/eval.json.")))
    parts.append(("Serving latency", _serving_section(bench) if bench else missing(
        "No serving measurement: pass --bench JSON (from `benchmarks/bench_serve.py --json`).")))
    if model_dir is not None:
        parts.append(("Shard locality", _shards_section(model_dir, meta, locality_shards)))
        stale = _staleness_section(meta)
        parts.append(("Embedding staleness", stale or missing(
            "No staleness figures: they come with a `pymk update` of a model with GNN embeddings.")))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>"
           f"<body><h1>{title}</h1>" + "".join(f"<h2>{h}</h2>\n{b}\n" for h, b in parts) + "</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    return out

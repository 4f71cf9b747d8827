"""The one path that changes a served model: events from the log applied to its living graph.

`apply_events(model, events)` takes events in log order (`pymk.stream.log.EdgeEvent`) and applies them:
    add      a friendship; an id the model has never seen becomes a new user (the id map grows);
    remove   an unfriending; the two are remembered so neither is recommended back to the other;
    erase    the account: every friendship removed, the user flagged erased and taken out of the ANN
             index; later events that name it are ignored (counted), never resurrecting it;
    block, dismiss   handed back in `actions` for the service's user-action store;
    hide, show   the user set itself undiscoverable (never recommended to anyone, still served its own
             recommendations) or discoverable again.
Everything else (Stage 1, features, filters, explanations) reads the graph, so it sees the change on
the next request. Returns a `Change`: who changed, for the caller's embedding refresh and cache drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pymk.graph.live import ADD, REMOVE, LiveGraph
from pymk.pipeline.model import ModelError


@dataclass
class Change:
    """What a batch of events did. `ends`: sorted dense users whose friendships changed."""

    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    added: int = 0
    removed: int = 0
    added_pairs: tuple = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))  # lo, hi, ts
    new_users: list = field(default_factory=list)  # dense indices created
    erased: list = field(default_factory=list)  # dense indices erased
    actions: list = field(default_factory=list)  # (op, src id, dst id) for block / dismiss
    ignored: int = 0  # events naming an erased user, or removing for a user never seen


class LiveGraphError(ModelError):
    """A model whose graph cannot change here (one assembled over a frozen CSRGraph)."""


def apply_events(model, events) -> Change:
    """Applies events to a model's living graph, its shard servers (a sharded model) and its ANN index (see
    the module docstring)."""
    g = model.graph
    tier = getattr(g, "tier", False)  # a ranking tier's graph writes every change to the shard servers itself
    if not isinstance(g, LiveGraph) and not tier:
        raise LiveGraphError(f"{model.path}: this model's graph is a frozen snapshot (open it with Model.load)")
    servers = None if tier else getattr(model, "servers", None)
    batches: list = []
    n_before = g.num_users
    out = apply_to_graph(g, events, sink=None if servers is None else batches.append)
    if tier:
        g.add_users([])  # users created by events that changed nothing get their home shard too
    if servers is not None:
        new = np.arange(n_before, g.num_users, dtype=np.int64)
        servers.add_users(new, np.asarray(g.ids)[n_before:])
        if batches or new.size:
            none = [(ADD, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))]  # new users only
            kinds, lo, hi, ts = zip(*(batches or none), strict=True)
            k = np.concatenate([np.full(a.size, x, np.int8) for x, a in zip(kinds, lo, strict=True)])
            servers.apply(k, np.concatenate(lo), np.concatenate(hi), np.concatenate(ts), new_users=new)
    if out.erased:
        ann = getattr(model.stage1, "ann", None)
        if ann is not None:
            erased = np.array(out.erased, np.int64)
            held = erased[ann.contains(erased)]
            if held.size:
                ann.remove(held)
    return out


def fold_events(edges, events, *, log=print):
    """An edge list with the log's changes folded in, for the next build: friendships added and removed,
    new users in, erased users out entirely (no id, no friendship). Returns (EdgeList, summary dict)."""
    out, summary, _ = fold_with_standing(edges, events, log=log)
    return out, summary


def fold_with_standing(edges, events, standing=None, *, log=print):
    """`fold_events` on a graph that remembers `standing` (the previous version's `Standing`: erased ids stay
    erased, unfriended pairs stay apart); returns (EdgeList, summary, the next version's Standing)."""
    from pymk.graph.edges import EdgeList
    from pymk.graph.snapshot import CSRGraph
    from pymk.pipeline.standing import Standing

    standing = standing or Standing.empty()
    live = LiveGraph(CSRGraph.from_edges(edges))
    standing.install(live)
    change = apply_to_graph(live, events)
    after = standing.after(live, change.actions)
    g = live.to_graph()
    lo, hi, ts = g.edge_pairs(with_ts=True)
    keep = ~live.erased
    ids = np.asarray(g.ids)[keep]
    order = np.argsort(ids, kind="stable")
    remap = np.full(g.num_users, -1, np.int64)
    remap[np.flatnonzero(keep)[order]] = np.arange(order.size)
    a, b = remap[lo], remap[hi]  # erased users have no friendships left, so every end is kept
    dtype = np.int32 if order.size < 2**31 else np.int64
    x, y = np.minimum(a, b), np.maximum(a, b)
    srt = np.lexsort((y, x))
    out = EdgeList(ids[order], x[srt].astype(dtype), y[srt].astype(dtype), None if ts is None else ts[srt])
    summary = {"events": len(events), "added": change.added, "removed": change.removed,
               "new_users": len(change.new_users), "erased": len(change.erased), "ignored": change.ignored}
    log(f"events: {len(events):,} folded in: {change.added:,} friendships added, {change.removed:,} removed, "
        f"{len(change.new_users):,} new users, {len(change.erased):,} erased ({change.ignored:,} ignored)")
    return out, summary, after


def apply_to_graph(g: LiveGraph, events, *, sink=None) -> Change:
    """The graph part of `apply_events`, for any LiveGraph. `sink((kind, lo, hi, ts))` is handed every
    friendship change that changed the graph, in order (an erasure as the removal of each friendship)."""
    out = Change()
    ends, add_lo, add_hi, add_ts = [], [], [], []
    run: list = []

    def flush():
        if not run:
            return
        op = run[0].op
        src = np.array([e.src for e in run], np.int64)
        dst = np.array([e.dst for e in run], np.int64)
        ts = np.array([e.ts for e in run])
        a, b = g.resolve(src), g.resolve(dst)
        if op == "add":  # unseen ids become users, unless the other end is erased (nothing would link them)
            new_a, new_b = (a == -1) & (b != -2), (b == -1) & (a != -2)
            if new_a.any():
                a[new_a] = g.resolve(src[new_a], create=True)
            if new_b.any():
                b[new_b] = g.resolve(dst[new_b], create=True)
        ok = (a >= 0) & (b >= 0)
        out.ignored += int((~ok).sum())
        a, b, ts = a[ok], b[ok], ts[ok]
        changed = g.apply(ADD if op == "add" else REMOVE, a, b, ts)
        if sink is not None and changed.any():
            sink((ADD if op == "add" else REMOVE, a[changed], b[changed], ts[changed].astype(np.float64)))
        if op == "remove":
            g.remember_unfriended(a, b)
            out.removed += int(changed.sum())
        else:
            out.added += int(changed.sum())
            add_lo.append(a[changed])
            add_hi.append(b[changed])
            add_ts.append(ts[changed])
        ends.append(a[changed])
        ends.append(b[changed])
        run.clear()

    n_before = g.num_users
    for e in events:
        if e.op in ("block", "dismiss"):
            flush()
            if e.src in g.erased_ids or e.dst in g.erased_ids:
                out.ignored += 1  # an erased account gets no action sets back
            else:
                out.actions.append((e.op, e.src, e.dst))
        elif e.op in ("hide", "show"):
            flush()
            u = int(g.resolve([e.src])[0])
            if u < 0:
                out.ignored += 1  # never seen, or erased
            else:
                g.set_discoverable(u, e.op == "show")
        elif e.op == "erase":
            flush()
            u = int(g.resolve([e.src])[0])
            if u < 0:
                out.ignored += 1
                continue
            f = g.erase(u)
            if sink is not None and f.size:
                sink((REMOVE, np.full(f.size, u, np.int64), f, np.full(f.size, e.ts, np.float64)))
            out.removed += int(f.size)
            out.erased.append(u)
            ends.append(f)
        else:
            if run and run[0].op != e.op:
                flush()
            run.append(e)
    flush()
    out.new_users = list(range(n_before, g.num_users))
    if out.erased:
        ends.append(np.array(out.erased, np.int64))
    if add_lo:
        out.added_pairs = (np.concatenate(add_lo), np.concatenate(add_hi), np.concatenate(add_ts))
    out.ends = np.unique(np.concatenate(ends)) if ends else out.ends
    return out

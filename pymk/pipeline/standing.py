"""What a served graph remembers that its snapshot does not show, carried from one model version to the next.

A snapshot holds friendships. The living graph also remembers, from the event log:
    erased      accounts erased: never recreated by a later event naming them, never answered (404)
    unfriended  pairs who unfriended: neither is recommended to the other again
    blocked     (user, other): neither is recommended to the other
    dismissed   (user, candidate): never recommended to that user again
    hidden      users who set themselves undiscoverable: recommended to no one
A version made from the log (`pymk update`, `pymk build --events`) folds the friendships into its snapshot
and writes the rest to `DIR/standing.npz`; `Model.load` puts `erased` and `unfriended` into its living
graph and the service puts the actions into its action store, so a swap to the new version (which replays
only the log after its cut) forgets nothing a user did before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "standing.npz"


def _pairs(x=None) -> np.ndarray:
    return np.zeros((0, 2), np.int64) if x is None or len(x) == 0 else np.asarray(x, np.int64).reshape(-1, 2)


@dataclass
class Standing:
    """Shapes: erased (e,) external ids, sorted; unfriended (u, 2) id pairs a < b; blocked and dismissed
    (m, 2) (user, other) as posted."""

    erased: np.ndarray
    unfriended: np.ndarray
    blocked: np.ndarray
    dismissed: np.ndarray
    hidden: np.ndarray = None  # (h,) external ids, sorted

    def __post_init__(self):
        self.hidden = np.zeros(0, np.int64) if self.hidden is None else np.asarray(self.hidden, np.int64)

    @classmethod
    def empty(cls) -> Standing:
        return cls(np.zeros(0, np.int64), _pairs(), _pairs(), _pairs())

    @classmethod
    def load(cls, model_dir: Path) -> Standing:
        path = Path(model_dir) / FILE
        if not path.exists():
            return cls.empty()
        with np.load(path) as z:
            return cls(z["erased"].astype(np.int64), _pairs(z["unfriended"]), _pairs(z["blocked"]),
                       _pairs(z["dismissed"]), z["hidden"] if "hidden" in z.files else None)

    def save(self, model_dir: Path) -> None:
        np.savez(Path(model_dir) / FILE, erased=self.erased, unfriended=self.unfriended, blocked=self.blocked,
                 dismissed=self.dismissed, hidden=self.hidden)

    def __len__(self) -> int:
        return int(self.erased.size + self.unfriended.shape[0] + self.blocked.shape[0] + self.dismissed.shape[0]
                   + self.hidden.size)

    def install(self, graph) -> None:
        """Into a living graph (`LiveGraph` or `TierGraph`): erased ids (never recreated), unfriended pairs and
        undiscoverable users."""
        graph.erased_ids.update(self.erased.tolist())
        for u in graph.index_of(self.hidden).tolist():
            if u >= 0:
                graph.set_discoverable(u, False)
        if self.unfriended.shape[0]:
            a = graph.index_of(self.unfriended[:, 0])
            b = graph.index_of(self.unfriended[:, 1])
            ok = (a >= 0) & (b >= 0)
            graph.remember_unfriended(a[ok], b[ok])

    def actions(self):
        """(kind, user, other) for a `UserActions` store."""
        for kind, rows in (("blocked", self.blocked), ("dismissed", self.dismissed)):
            for a, b in rows.tolist():
                yield kind, a, b

    def after(self, live, actions: list) -> Standing:
        """This standing with the events applied to `live` (a LiveGraph this was installed in) and their
        `actions` ((op, src, dst) block / dismiss, in order): what the next version remembers. The rows of
        an erased account go with it."""
        erased = np.union1d(self.erased, np.fromiter(live.erased_ids, np.int64, len(live.erased_ids)))
        ids = np.asarray(live.ids)
        pairs = [(ids[x], ids[y]) for x, ys in live.unfriended.items() for y in ys if x < y]
        unfriended = _pairs(sorted((min(a, b), max(a, b)) for a, b in pairs))
        blocked = [tuple(r) for r in self.blocked.tolist()] + [(s, d) for op, s, d in actions if op == "block"]
        dismissed = [tuple(r) for r in self.dismissed.tolist()] + [(s, d) for op, s, d in actions if op == "dismiss"]

        def alive(rows):
            rows = np.unique(_pairs(rows), axis=0)
            return rows[~np.isin(rows, erased).any(axis=1)] if rows.size else rows

        hidden = np.setdiff1d(np.fromiter(live.hidden_ids, np.int64, len(live.hidden_ids)), erased)
        return Standing(erased, alive(unfriended), alive(blocked), alive(dismissed), hidden)

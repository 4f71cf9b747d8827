"""What users did since the model was built: blocks, dismissals and new friendships.

Each is a set of external user ids per user, never recommended to that user again:
    dismissed   one way: the user does not want this candidate again;
    blocked     both ways: neither is recommended to the other;
    friends     both ways: new friendships (`POST /v1/edges`), until a rebuild puts them in the graph.
Kept in process always; with a Redis link also in Redis sets `pymk:act:{kind}:{user}` (shared by every
worker; ids are external, so they survive model rebuilds). A user's three sets are read in one pipelined
round trip. Writes that could not reach Redis are kept and replayed when it recovers.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from pymk.serving.redis_link import RedisDown, RedisLink

KINDS = ("dismissed", "blocked", "friends")


class UserActions:
    """Args: link: a `RedisLink`, or None for the in-process store only."""

    def __init__(self, link: RedisLink | None = None, *, prefix: str = "pymk:act"):
        self.link = link
        self.prefix = prefix
        self._local = {kind: defaultdict(set) for kind in KINDS}
        self._unsent: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        if link is not None:
            link.on_recover(self.flush)

    def key(self, kind: str, user: int) -> str:
        return f"{self.prefix}:{kind}:{user}"

    def add(self, kind: str, user: int, other: int) -> list[int]:
        """Records the action; returns the users whose recommendations it changes. Raises RedisDown after
        recording it locally if Redis could not take it (it is replayed later)."""
        if kind not in KINDS:
            raise ValueError(f"unknown action {kind!r}")
        pairs = [(user, other)] if kind == "dismissed" else [(user, other), (other, user)]
        with self._lock:
            for a, b in pairs:
                self._local[kind][a].add(b)
            if self.link is not None:
                self._unsent.extend((kind, a, b) for a, b in pairs)
        self.flush()
        return sorted({a for a, _ in pairs})

    def add_local(self, kind: str, user: int, other: int) -> None:
        """Records an action in this worker only (one another worker took and logged; Redis has it if used)."""
        pairs = [(user, other)] if kind == "dismissed" else [(user, other), (other, user)]
        with self._lock:
            for a, b in pairs:
                self._local[kind][a].add(b)

    def forget_local(self, user: int) -> None:
        """Drops an erased user's own action sets from this worker."""
        with self._lock:
            for kind in KINDS:
                self._local[kind].pop(user, None)

    def forget(self, user: int) -> None:
        """Drops an erased user's action sets here and in Redis (raises RedisDown if Redis is away)."""
        self.forget_local(user)
        with self._lock:
            self._unsent = [x for x in self._unsent if x[1] != user]
        if self.link is not None:
            keys = [self.key(kind, user) for kind in KINDS]
            self.link.call(lambda c: c.delete(*keys))

    def flush(self) -> None:
        """Writes the actions Redis has not taken yet, one pipeline per pass, until none is left. One
        flush at a time (a prefix written is the prefix removed); a flush started meanwhile (another
        thread, or Redis's recovery callback inside this one) returns at once: the running one loops."""
        if self.link is None or not self._flush_lock.acquire(blocking=False):
            return
        try:
            while True:
                with self._lock:
                    todo = list(self._unsent)
                if not todo:
                    return

                def write(c, todo=todo):
                    pipe = c.pipeline(transaction=False)
                    for kind, a, b in todo:
                        pipe.sadd(self.key(kind, a), b)
                    pipe.execute()

                self.link.call(write)
                with self._lock:
                    del self._unsent[: len(todo)]
        finally:
            self._flush_lock.release()

    def excluded(self, user: int) -> tuple[set[int], bool]:
        """External ids never to recommend to `user`, and whether Redis was missed (local sets only)."""
        with self._lock:
            out = set().union(*(self._local[kind].get(user, ()) for kind in KINDS))
        if self.link is None:
            return out, False

        def read(c):
            pipe = c.pipeline(transaction=False)
            for kind in KINDS:
                pipe.smembers(self.key(kind, user))
            return pipe.execute()

        try:
            for members in self.link.call(read):
                out.update(int(x) for x in members)
        except RedisDown:
            return out, True
        return out, False

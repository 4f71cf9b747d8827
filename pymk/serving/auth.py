"""API keys and scopes: who may read recommendations and who may change the graph.

A key is `pymk_<id>_<secret>`: `id` (8 hex) names it in listings and logs, `secret` (32 random bytes,
URL-safe) is shown once, at `pymk keys create`, and only its SHA-256 is stored (a random 256-bit
secret needs no slow hash: nothing is left to guess from its digest). A request carries it as
`Authorization: Bearer <key>`; the digest is compared in constant time.

Scopes:
    recommendations:read  GET a user's recommendations;
    actions:write         dismissals, blocks and unfriending (DELETE /v1/users/{id}/friends/{friend});
    admin                 everything: posting friendships, erasing accounts, and the two above.
A key bound to a user (`--user ID`) reads only that user's recommendations and acts only as that user.

The keys live beside the model (`DIR/serving/keys.json`, owned by `KeyStore`); each worker re-reads the
file when it changes (checked at most every `RELOAD_S`), so a revoked key stops working in every worker
of the machine without a restart. A model with no keys serves without authentication: `pymk serve`
allows that only on a loopback interface and says so (`pymk.cli`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

SCOPES = ("recommendations:read", "actions:write", "admin")
KEYS_FORMAT = "pymk-keys"
KEYS_VERSION = 1
RELOAD_S = 1.0


class AuthError(ValueError):
    """A keys file or a key request that cannot be honoured (the message says which and why)."""


@dataclass
class ApiKey:
    id: str
    hash: str
    scopes: list[str]
    user: int | None = None
    name: str = ""
    created: float = 0.0
    revoked: bool = False

    def allows(self, scope: str) -> bool:
        return not self.revoked and ("admin" in self.scopes or scope in self.scopes)


def keys_path(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / "serving" / "keys.json"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> list[str]:
    """`admin` or a comma-separated list of scopes -> the list, checked."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if not scopes or bad:
        raise AuthError(f"unknown scope(s) {bad or [text]}; choose from {list(SCOPES)}")
    return sorted(set(scopes), key=SCOPES.index)


class KeyStore:
    """The API keys of one model directory (the only writer and reader of its keys file)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._keys: dict[str, ApiKey] = {}
        self._stamp = None  # (mtime_ns, size) of the file last read
        self._checked = 0.0
        self._lock = threading.Lock()
        self.reload()

    @classmethod
    def of_model(cls, model_dir: str | os.PathLike) -> KeyStore:
        return cls(keys_path(model_dir))

    # -- reading ------------------------------------------------------------------------------------
    def reload(self) -> None:
        """Reads the file (no file: no keys); a malformed one is an error naming it."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is None:  # never had a file: no keys
                self._keys = {}
                return
            # the file went away under a running service: keep enforcing the keys read last (fail closed)
            raise AuthError(f"{self.path}: the keys file is gone; serving with the keys read last") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AuthError(f"{self.path}: cannot read the keys file: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != KEYS_FORMAT or data.get("version") != KEYS_VERSION:
            data = data if isinstance(data, dict) else {}
            raise AuthError(f"{self.path}: not a {KEYS_FORMAT} v{KEYS_VERSION} file (found "
                            f"{data.get('format')!r} v{data.get('version')!r})")
        self._keys = {k["id"]: ApiKey(**k) for k in data.get("keys", [])}
        self._stamp = stamp

    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_S:
            with self._lock:
                if now - self._checked >= RELOAD_S:
                    try:
                        self.reload()
                    except AuthError:
                        pass  # a half-written or broken file: keep serving the keys read last
                    self._checked = now

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a key: the model has keys (revoked ones count: revoking the last
        key must not open the service)."""
        self._fresh()
        return bool(self._keys)

    def keys(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: k.created)

    def verify(self, token: str) -> ApiKey | None:
        """The live key `token` is, or None (unknown, malformed, revoked)."""
        self._fresh()
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "pymk":
            return None
        key = self._keys.get(parts[1])
        if key is None or key.revoked:
            return None
        return key if hmac.compare_digest(key.hash, _digest(parts[2])) else None

    # -- writing ------------------------------------------------------------------------------------
    def create(self, scopes: list[str], *, user: int | None = None, name: str = "") -> tuple[ApiKey, str]:
        """A new key: (its record, the key string, which is never stored)."""
        with self._writing():
            kid = secrets.token_hex(4)
            while kid in self._keys:
                kid = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            key = ApiKey(kid, _digest(secret), list(scopes), user, name, round(time.time(), 3))
            self._keys[kid] = key
            self._write()
        return key, f"pymk_{kid}_{secret}"

    def revoke(self, kid: str) -> ApiKey:
        with self._writing():
            if kid not in self._keys:
                raise AuthError(f"no key {kid!r} in {self.path} (pymk keys list shows the ids)")
            self._keys[kid].revoked = True
            self._write()
        return self._keys[kid]

    @contextmanager
    def _writing(self):
        """Read, change and write the file under an exclusive lock (`DIR/serving/keys.lock`), so that two
        `pymk keys` commands run at once both land: without it the later write dropped the earlier key."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name("keys.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._stamp = None  # read it whatever its stamp: another writer may have changed it just now
                self.reload()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": KEYS_FORMAT, "version": KEYS_VERSION,
                                   "keys": [asdict(k) for k in self.keys()]}, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)  # readers see the old file or the new one, never half of it
        self._stamp = None
        self.reload()

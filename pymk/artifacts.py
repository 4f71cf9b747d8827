"""Self-describing artifacts: every stored piece (checkpoint, ANN index, ranker, feature table) keeps a
JSON file with its format name and version beside it, and refuses to load under another."""

from __future__ import annotations

import json
from pathlib import Path


def read_artifact_meta(path: str | Path, name: str, fmt: str, version: int, error: type[Exception], *,
                       what: str, fix: str) -> tuple[Path, dict]:
    """Reads `path/name`; raises `error` naming the file when it is missing or of another format.

    Args:
        what: the artifact in words ("ANN index"); fix: what the user should run instead.
    Returns: (the JSON file's path, its content).
    """
    meta_path = Path(path) / name
    if not meta_path.exists():
        raise error(f"{path} holds no {what} ({name} missing); {fix}")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != fmt or meta.get("format_version") != version:
        raise error(f"{meta_path}: {what} format {meta.get('format')!r} version {meta.get('format_version')} is "
                    f"not {fmt!r} version {version}; {fix}")
    return meta_path, meta

"""Reading user-id files and writing recommendation / candidate CSVs (the CLI contract's files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pymk.candidates.base import source_label

RECOMMEND_HEADER = ("user_id", "candidate_id", "rank", "score", "mutual_friends", "source", "mutual_sample")
CANDIDATES_HEADER = ("user_id", "candidate_id", "rank", "source")
_LABELS = np.array([source_label(i) for i in range(256)], dtype=object)


class UsersFileError(ValueError):
    """A users file line that is not a 64-bit integer id."""


def read_user_ids(path: str | os.PathLike) -> np.ndarray:
    """One user id per line; blank lines and '#' comments skipped; repeats kept once (first wins).

    Returns: (q,) int64 in file order.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"users file not found: {path}")
    out: list[int] = []
    with open(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                value = int(text)
            except ValueError:
                raise UsersFileError(f"{path}:{line_no}: not an integer user id: {text!r}") from None
            if not -(2**63) <= value < 2**63:
                raise UsersFileError(f"{path}:{line_no}: user id outside int64: {text!r}")
            out.append(value)
    ids = np.asarray(out, np.int64)
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


class CsvRowWriter:
    """Streams contract CSVs chunk by chunk (header once), via pyarrow's CSV writer."""

    def __init__(self, path: str | os.PathLike, header: tuple[str, ...]):
        import pyarrow.csv as pcsv

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.header = header
        self._pcsv = pcsv
        self._writer = None
        self.rows = 0

    def write(self, user_ext: np.ndarray, cand_ext: np.ndarray, count: np.ndarray, source: np.ndarray,
              score: np.ndarray | None = None, mutual: np.ndarray | None = None,
              sample: list[str] | None = None) -> None:
        """Appends rows for a batch: user b gets its first count[b] candidates, ranked 1..count[b].

        Shapes: user_ext (B,) external ids; cand_ext, source, score, mutual: (B, k); sample: one
        'id;id;id' string per written row (mutual friends shown as the explanation).
        """
        import pyarrow as pa

        keep = np.arange(cand_ext.shape[1])[None, :] < count[:, None]
        cols = {
            "user_id": np.repeat(user_ext, count),
            "candidate_id": cand_ext[keep],
            "rank": np.broadcast_to(np.arange(1, cand_ext.shape[1] + 1), cand_ext.shape)[keep],
        }
        if "score" in self.header:
            cols["score"] = np.round(score[keep], 6)
            cols["mutual_friends"] = mutual[keep].astype(np.int64)
        cols["source"] = pa.array(_LABELS[source[keep]].tolist(), pa.string())
        if "mutual_sample" in self.header:
            cols["mutual_sample"] = pa.array(sample, pa.string())
        table = pa.table({name: cols[name] for name in self.header})
        if self._writer is None:
            # pyarrow quotes header names whatever the quoting style, so the header is written here
            self._fh = open(self.path, "wb")
            self._fh.write((",".join(self.header) + "\n").encode())
            opts = self._pcsv.WriteOptions(include_header=False, quoting_style="none")
            self._writer = self._pcsv.CSVWriter(self._fh, table.schema, write_options=opts)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is None:  # no rows at all: still a valid file with its header
            self.path.write_text(",".join(self.header) + "\n")
        else:
            self._writer.close()
            self._fh.close()

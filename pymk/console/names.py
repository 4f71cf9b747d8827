"""Display names for the console: the operator's `id,name` CSV (`PYMK_USER_NAMES`), shown beside the ids.

pymk ingests friendships between ids only; the people who run it know their users by name. The file is the
operator's export of their user table (a header line `id,name`, then one user per line; a name may hold
commas when quoted, as CSV does). It is read once when the service starts, kept in memory (a deployment whose
names do not fit looks them up in its own user service instead) and shown only through the console's JSON,
behind the admin scope. A malformed file stops the service at start with the file and line named.
"""

from __future__ import annotations

import csv
from pathlib import Path


class UserNamesError(ValueError):
    """A names file that cannot be read as `id,name` lines (the message names the file and line)."""


class UserNames:
    """Args: names: external user id -> display name."""

    def __init__(self, names: dict[int, str] | None = None):
        self.names = names or {}

    @classmethod
    def load(cls, path: str | Path) -> UserNames:
        path = Path(path)
        names: dict[int, str] = {}
        first_line: dict[int, int] = {}
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = csv.reader(f)
                header = next(rows, None)
                if header is None or [h.strip().lower() for h in header] != ["id", "name"]:
                    raise UserNamesError(f"{path}:1: the first line must be the header 'id,name', got {header!r}")
                for row in rows:
                    line = rows.line_num
                    if not row:
                        continue
                    if len(row) != 2:
                        raise UserNamesError(f"{path}:{line}: expected 2 fields (id,name), got {len(row)}: {row!r}")
                    try:
                        uid = int(row[0])
                    except ValueError:
                        raise UserNamesError(f"{path}:{line}: id {row[0]!r} is not an integer") from None
                    if uid in first_line:
                        raise UserNamesError(f"{path}:{line}: id {uid} already named on line {first_line[uid]}")
                    first_line[uid] = line
                    names[uid] = row[1].strip()
        except UnicodeDecodeError as exc:
            raise UserNamesError(f"{path}: not UTF-8 text ({exc})") from None
        except OSError as exc:
            raise UserNamesError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return cls(names)

    def of(self, ids) -> dict[str, str]:
        """The names known for `ids` (external), keyed by the id as a string (JSON object keys)."""
        return {str(int(i)): self.names[int(i)] for i in ids if int(i) in self.names}

"""What can be wrong with a data set, and how ``load_examples`` reports it.

Every check records a ``Problem`` (file, row, column, message) instead of stopping at the
first one, so one ``DataError`` can list everything a user has to fix before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data; ``row`` None = the whole source, ``line`` from 1."""

    source: str
    row: int | None
    column: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = [self.source]
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return ", ".join(where) + ": " + self.message


class DataError(ValueError):
    """Data that cannot be trained on; ``.problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = [f"{len(self.problems)} problem(s) in the data:"]
        lines += [f"  - {p}" for p in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED_PROBLEMS} more")
        super().__init__("\n".join(lines))


def source_error(source: str, message: str) -> DataError:
    """A ``DataError`` about the whole source (no row, no column): a file that cannot be read at all."""
    return DataError([Problem(source, None, None, message)])


class BadValue(Exception):
    """A value that fails validation; the message says why. The caller turns it into a row's Problem."""


def short(value, limit: int = 60) -> str:
    """The value as messages quote it: its repr, cut so one bad cell cannot flood the report."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

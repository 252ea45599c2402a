"""Checking a source against a ``Layout``: columns the source lacks, and every row's values.

A row's problems are collected as (column, message) pairs, all of them, so that one
``DataError`` names every cell to fix; a column the source lacks is reported once for the
whole source, not again in every row.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from grouptune.data.presets import Layout
from grouptune.data.problems import BadValue, Problem, short
from grouptune.data.readers import Table

MISSING = object()  # a column a row does not have (None is a value: JSON null, an empty CSV cell)


@dataclass(frozen=True)
class RowRules:
    """What every row of one source is checked against."""

    layout: Layout
    text_cells: bool  # CSV: lists, chat messages and nested objects arrive as JSON text
    absent: frozenset[str]  # columns the source lacks: reported once (``missing_columns``), not per row
    gold_checks: Sequence[Callable[[str], str | None]] = ()  # why a gold answer cannot be judged, or None
    min_teachers: int = 0  # fewer teacher completions (but some) is a problem of the row


# ----------------------------------------------------------------------------- columns


def missing_columns(table: Table, layout: Layout) -> tuple[frozenset[str], list[Problem]]:
    """Columns the layout reads that the source lacks; a Problem for each required one."""
    absent = frozenset(c for c in layout.read_columns() if not _has_column(table, c))
    problems = [
        Problem(table.name, None, c, _not_found(c, table.columns)) for c in sorted(absent & layout.columns)
    ]
    return absent, problems


def _has_column(table: Table, column: str) -> bool:
    """In the source's columns; for CSV also a dotted name inside a cell's JSON object."""
    if column in table.columns:
        return True
    return table.text_cells and any(
        r is not None and lookup(r, column, True) is not MISSING for r in table.rows
    )


def _not_found(column: str, columns: set[str]) -> str:
    """The message for a missing column, suggesting close names (a different case first)."""
    names = sorted(columns)
    lower = {c.lower(): c for c in names}
    close = [lower[column.lower()]] if column.lower() in lower else []
    close += difflib.get_close_matches(column, names, n=3)
    hint = f"did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}? " if close else ""
    listed = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
    return f"column not found; {hint}columns: {listed or '(none)'}"


# ----------------------------------------------------------------------------- values


def lookup(row: dict, path: str, text_cells: bool):
    """``row[path]``, or for a dotted path the value inside nested objects; ``MISSING`` if absent."""
    if path in row:
        return row[path]
    value = row
    for part in path.split("."):
        if text_cells and isinstance(value, str):  # CSV: a nested object arrives as JSON text
            try:
                value = json.loads(value)
            except ValueError:
                return MISSING
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def present(value) -> bool:
    """A value to read: not missing, not null, not blank text (those count as no value)."""
    return value is not MISSING and value is not None and not (isinstance(value, str) and not value.strip())


def check_prompt(value, text_cells: bool) -> str | list[dict]:
    """A prompt: text, or a non-empty list of chat messages with string role and content."""
    value = _chat_from_cell(value) if text_cells else value
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadValue(
            f"expected a string or a list of chat messages, got {type(value).__name__} {short(value)}"
        )
    if not value:
        raise BadValue("empty list of chat messages")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise BadValue(f"message {i} must be an object with string 'role' and 'content', got {short(m)}")
    if not any(m["content"].strip() for m in value):
        raise BadValue("every chat message is empty")
    return value


def _chat_from_cell(value):
    """CSV: chat messages arrive as JSON text; text that merely looks like it stays text."""
    if not (isinstance(value, str) and value.lstrip().startswith("[{")):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, list) and all(isinstance(m, dict) for m in decoded) else value


def check_teacher(value, text_cells: bool) -> list[str]:
    """Teacher completions: a list of strings (in CSV, a JSON array in the cell)."""
    if text_cells and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadValue(
                'a CSV cell holding a list must be a JSON array of strings, e.g. ["a", "b"]'
            ) from None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadValue(f"expected a list of strings, got {short(value)}")
    return value


# ----------------------------------------------------------------------------- rows


class _RowReader:
    """Reads the fields of one row, collecting a (column, message) per problem instead of
    stopping at the first, so one DataError can name every bad cell."""

    def __init__(self, row: dict, rules: RowRules):
        self.row, self.rules = row, rules
        self.issues: list[tuple[str, str]] = []

    def read(self, column: str, reader: Callable, required: bool, what: str):
        value = lookup(self.row, column, self.rules.text_cells)
        if not present(value):
            if required and column not in self.rules.absent:  # an absent column is reported once, not per row
                self.issues.append((column, f"no {what} (missing, null or empty)"))
            return None
        try:
            return reader(value)
        except BadValue as exc:
            self.issues.append((column, str(exc)))
            return None


def row_fields(row: dict, rules: RowRules) -> tuple[dict, list[tuple[str, str]]]:
    """The Example fields of one row, and a (column, message) per problem found in it."""
    layout, text_cells, wanted = rules.layout, rules.text_cells, rules.layout.fields
    reader = _RowReader(row, rules)
    read_prompt = layout.read_prompt or partial(check_prompt, text_cells=text_cells)
    fields = {  # read in this order: a row's problems are listed in it
        "prompt": reader.read(layout.prompt, read_prompt, True, "prompt"),
        "answer": _read_gold(reader, "answer" in wanted),
        "completion": None,
    }
    if layout.demo:
        fields["completion"] = reader.read(*layout.demo, "completion" in wanted, "demonstration")
    read_teachers = partial(check_teacher, text_cells=text_cells)
    teachers = reader.read(
        layout.teacher, read_teachers, "teacher_completions" in wanted, "teacher completions"
    )
    fields["teacher_completions"] = teachers or []
    reader.issues += _too_few_teachers(fields["teacher_completions"], layout.teacher, rules.min_teachers)
    return fields, list(dict.fromkeys(reader.issues))  # gsm8k reads gold and demonstration from one cell


def _read_gold(reader: _RowReader, required: bool) -> str | None:
    """The gold answer from the first gold column the row has a value in; None for a layout without one."""
    layout, row, text_cells = reader.rules.layout, reader.row, reader.rules.text_cells
    if not layout.gold:
        return None
    column, gold_reader = next(((c, r) for c, r in layout.gold if present(lookup(row, c, text_cells))), layout.gold[-1])
    read = partial(_judgeable_gold, reader=gold_reader, checks=reader.rules.gold_checks)
    return reader.read(column, read, required, "gold answer")


def _judgeable_gold(value, reader: Callable, checks: Sequence[Callable[[str], str | None]]) -> str:
    """The preset's reading of a gold answer, then what the verifiers can judge."""
    gold = reader(value)
    for check in checks:
        if message := check(gold):
            raise BadValue(message)
    return gold


def _too_few_teachers(teachers: list[str], column: str, min_teachers: int) -> list[tuple[str, str]]:
    """Some teacher completions, but fewer than the method's off-policy members need; none at
    all is already reported as a missing value."""
    if not 0 < len(teachers) < min_teachers:
        return []
    message = f"{len(teachers)} teacher completions; the method's off-policy members need {min_teachers}"
    return [(column, message + " (method.num_off_policy)")]

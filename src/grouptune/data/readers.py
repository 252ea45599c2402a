"""Reading a data source into a ``Table`` of raw rows: local files by suffix, anything else
through Hugging Face ``datasets``.

Readers do not stop at a bad row: a row that cannot be read becomes None in ``Table.rows``
and a ``Problem`` in ``Table.problems``, so the rest of the file is still checked. Only a
source that cannot be read at all raises ``DataError`` here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grouptune.config import NotUTF8, decode_utf8
from grouptune.data.problems import BadValue, Problem, source_error

LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class Table:
    name: str  # file path or hub name, for messages
    rows: Sequence  # dicts; None where the row could not be read (see problems)
    columns: set[str]  # every column, nested ones dotted
    lines: list[int] | None = None  # line of each row (JSON Lines, CSV)
    text_cells: bool = False  # CSV: every cell is a string, lists JSON-encoded
    problems: list[Problem] = field(default_factory=list)

    def line(self, index: int) -> int | None:
        """The file line of row ``index``, for messages; None where rows have no lines."""
        return self.lines[index] if self.lines else None


def read_source(source: str, split: str) -> Table:
    """Local file by suffix, an existing directory or a hub name through ``datasets``."""
    if not source:
        raise source_error("<no source>", "no data source given (data.train / data.eval)")
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        if path.is_file():
            raise source_error(source, f"unsupported file type {suffix!r}; use one of {LOCAL_FORMATS}")
        return _read_hub(str(path) if path.is_dir() else source, split)
    if not path.is_file():
        raise source_error(str(path), f"file not found: {path.resolve()}")
    if suffix == ".parquet":
        return _read_parquet(path)
    try:
        text = decode_utf8(path.read_bytes())
    except NotUTF8 as exc:  # names the line and column, not a byte offset
        raise source_error(str(path), str(exc)) from None
    except OSError as exc:
        raise source_error(str(path), f"cannot read file: {exc.strerror or exc}") from exc
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}[suffix]
    return reader(str(path), text)


# ----------------------------------------------------------------------------- text files


def _read_jsonl(name: str, text: str) -> Table:
    table = Table(name, [], set(), lines=[])
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row, message = _json_object(line)
        if message is not None:
            table.problems.append(Problem(name, len(table.rows), None, message, lineno))
        table.rows.append(row)
        table.lines.append(lineno)
    table.columns = _columns_of(table.rows)
    return table


def _json_object(line: str) -> tuple[dict | None, str | None]:
    """One JSON Lines row, or None and why it is not a JSON object (the rest of the file still counts)."""
    try:
        row = json.loads(line)
        if not isinstance(row, dict):
            raise BadValue(f"expected a JSON object, got {type(row).__name__}")
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (character {exc.colno})"
    except (ValueError, BadValue) as exc:
        return None, str(exc)
    return row, None


def _read_json(name: str, text: str) -> Table:
    if not text.lstrip().startswith("["):
        return _read_jsonl(name, text)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, character {exc.colno}: {exc.msg}"
        raise source_error(name, message) from None
    table = Table(name, [], set())
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            message = f"expected a JSON object, got {type(item).__name__}"
            table.problems.append(Problem(name, index, None, message))
            item = None
        table.rows.append(item)
    table.columns = _columns_of(table.rows)
    return table


def _read_csv(name: str, text: str) -> Table:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    table = Table(name, [], set(), lines=[], text_cells=True)
    try:
        header = reader.fieldnames or []
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise source_error(name, f"header repeats column(s) {duplicated}")
        for row in reader:
            table.lines.append(reader.line_num)
            table.rows.append(_csv_row(table, row, len(header), reader.line_num))
    except csv.Error as exc:
        raise source_error(name, f"unreadable CSV near line {reader.line_num}: {exc}") from None
    table.columns = set(header)
    return table


def _csv_row(table: Table, row: dict, n_header: int, line: int) -> dict | None:
    """A CSV row with empty cells as None; None (and a Problem) if it has more cells than the header."""
    if None in row:
        message = f"{n_header + len(row[None])} cells for {n_header} header columns"
        table.problems.append(Problem(table.name, len(table.rows), None, message, line))
        return None
    return {k: (None if v is None or v == "" else v) for k, v in row.items()}


def _columns_of(rows: Iterable) -> set[str]:
    """Every column of JSON rows, nested objects' keys dotted (``reward_model.ground_truth``)."""
    out: set[str] = set()
    for row in rows:
        if row is not None:
            out |= _nested_columns(row, "")
    return out


def _nested_columns(value, prefix: str, depth: int = 3) -> set[str]:
    if not isinstance(value, dict) or depth == 0:
        return set()
    out = set()
    for key, sub in value.items():
        out |= {f"{prefix}{key}"} | _nested_columns(sub, f"{prefix}{key}.", depth - 1)
    return out


# ----------------------------------------------------------------------------- through datasets


def _read_parquet(path: Path) -> Table:
    import datasets

    try:
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as exc:
        raise source_error(str(path), f"unreadable parquet file: {type(exc).__name__}: {exc}") from exc
    return _dataset_table(str(path), ds)


def _read_hub(source: str, split: str) -> Table:
    import datasets

    name, _, config = source.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:
        message = f"cannot load data set (split {split!r}): {type(exc).__name__}: {exc}"
        raise source_error(source, message) from exc
    return _dataset_table(source, ds)


def _dataset_table(name: str, ds) -> Table:
    """A ``datasets.Dataset`` as a Table: its rows as they are, columns from its features."""
    columns: set[str] = set()
    _feature_columns(ds.features, "", columns)
    return Table(name, ds, columns)


def _feature_columns(features, prefix: str, columns: set[str]) -> None:
    for key, feat in features.items():
        columns.add(prefix + key)
        if isinstance(feat, dict):
            _feature_columns(feat, f"{prefix}{key}.", columns)

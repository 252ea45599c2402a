"""Training and evaluation data (SPEC 4): prompts, gold answers, demonstrations, teacher responses.

``load_examples(cfg, source, tokenizer)`` reads a data set, checks every row, renders each
prompt the way the model will see it and returns ``Example``s in source order (no
shuffling: the trainer owns data order).

Sources
    ``.jsonl``   one JSON object per line (blank lines skipped).
    ``.json``    an array of objects (a ``.json`` file that is not an array is read as JSON Lines).
    ``.parquet`` read with ``datasets``; list and struct columns as stored.
    ``.csv``     a header row, every cell text; an empty cell is a missing value. Cells of
                 list-valued columns hold JSON: ``teacher_completions`` as ``["a", "b"]``, a
                 chat prompt as ``[{"role": "user", "content": "..."}]``.
    otherwise    a Hugging Face data set: ``datasets.load_dataset(name, split=split)``;
                 ``name:config`` selects a configuration (``openai/gsm8k:main``).

Columns come from ``DataConfig`` (``prompt_column`` ...), or from ``cfg.preset``:
    gsm8k      ``question``; gold = the number after ``####`` in ``answer``; demonstration =
               ``answer`` without the ``<<48/2=24>>`` calculator notes, ending ``#### n``.
    math, math500  ``problem``; gold = ``answer`` if present, else the last ``\\boxed{}`` of
               ``solution``; demonstration = ``solution``.
    numina     ``problem``; gold = the last ``\\boxed{}`` of ``solution``; demonstration = ``solution``.
    dapo_math  ``prompt`` (chat messages); gold = ``reward_model.ground_truth``; no demonstration.
A dotted column name (``reward_model.ground_truth``) reads inside nested objects.
``teacher_column`` applies with every preset.

Prompts: a message list goes through the tokenizer's chat template (``add_generation_prompt``);
a string does too when ``cfg.chat_template`` is on and the tokenizer has a template (as one
user message), else it is used as is. ``prompt_suffix`` is appended to the (last) user
message, joined by a space. Token ids are taken without extra special tokens (as TRL does):
the template supplies them. Prompts longer than ``max_prompt_length`` tokens are dropped,
truncated (their end is kept, so the generation prompt survives) or an error
(``long_prompts``); the counts are in ``ExampleList.report``.

Validation happens before any training and reports every problem at once in one
``DataError``, each with file, row and column: missing or misnamed columns (with close
names suggested), wrong types, empty prompts, gold answers a preset cannot read.
Columns the config names explicitly (a non-default name), and fields listed in
``require``, must be present; default-named optional columns may be absent.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grouptune.answers import gsm8k_final_answer, last_boxed
from grouptune.config import ConfigError, DataConfig

logger = logging.getLogger(__name__)

LONG_PROMPT_POLICIES = ("drop", "truncate", "error")
LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")
REQUIRABLE = ("answer", "completion", "teacher_completions")
MAX_LISTED_PROBLEMS = 20
_MISSING = object()


# ============================================================================ public types


@dataclass
class Example:
    prompt: str | list[dict]  # as in the source: text or chat messages [{"role", "content"}, ...]
    prompt_text: str  # what the model sees: chat template and suffix applied
    prompt_ids: list[int]  # tokens of prompt_text
    answer: str | None  # the verifier's gold answer
    completion: str | None  # expert demonstration
    teacher_completions: list[str] = field(default_factory=list)
    row: dict = field(default_factory=dict)  # every raw column, for user reward functions
    index: int = 0  # row number in the source (from 0)


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


@dataclass
class LoadReport:
    source: str
    n_rows: int = 0  # rows in the source
    n_loaded: int = 0  # examples returned
    n_dropped: int = 0  # prompts over max_prompt_length, dropped
    n_truncated: int = 0  # prompts over max_prompt_length, cut to their last tokens
    max_prompt_tokens: int = 0  # longest prompt returned

    def __str__(self) -> str:
        text = f"{self.source}: {self.n_rows} rows -> {self.n_loaded} examples"
        extra = [f"{n} long prompts {what}" for n, what in
                 ((self.n_dropped, "dropped"), (self.n_truncated, "truncated")) if n]  # fmt: skip
        return text + (f" ({', '.join(extra)})" if extra else "") + f", longest prompt {self.max_prompt_tokens} tokens"


class ExampleList(list):
    """The loaded ``Example``s (a plain list) with the ``LoadReport`` of how they were read."""

    def __init__(self, examples: Iterable[Example], report: LoadReport):
        super().__init__(examples)
        self.report = report


# ============================================================================ reading sources


class _Bad(Exception):
    """A value that fails validation; the message says why."""


@dataclass
class _Table:
    name: str  # file path or hub name, for messages
    rows: Sequence  # dicts; None where the row could not be read (see problems)
    columns: set[str]  # every column, nested ones dotted
    lines: list[int] | None = None  # line of each row (JSON Lines, CSV)
    text_cells: bool = False  # CSV: every cell is a string, lists JSON-encoded
    problems: list[Problem] = field(default_factory=list)


def _nested_columns(value, prefix: str, depth: int = 3) -> set[str]:
    if not isinstance(value, dict) or depth == 0:
        return set()
    out = set()
    for key, sub in value.items():
        out |= {f"{prefix}{key}"} | _nested_columns(sub, f"{prefix}{key}.", depth - 1)
    return out


def _columns_of(rows: Iterable) -> set[str]:
    out: set[str] = set()
    for row in rows:
        if row is not None:
            out |= _nested_columns(row, "")
    return out


def _read_jsonl(name: str, text: str) -> _Table:
    table = _Table(name, [], set(), lines=[])
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        index, row = len(table.rows), None
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise _Bad(f"expected a JSON object, got {type(row).__name__}")
        except (ValueError, _Bad) as exc:
            msg = f"invalid JSON: {exc.msg} (character {exc.colno})" if isinstance(exc, json.JSONDecodeError) else str(exc)
            table.problems.append(Problem(name, index, None, msg, lineno))
            row = None
        table.rows.append(row)
        table.lines.append(lineno)
    table.columns = _columns_of(table.rows)
    return table


def _read_json(name: str, text: str) -> _Table:
    if not text.lstrip().startswith("["):
        return _read_jsonl(name, text)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError([Problem(name, None, None, f"invalid JSON at line {exc.lineno}, character {exc.colno}: {exc.msg}")]) from None
    table = _Table(name, [], set())
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            table.problems.append(Problem(name, index, None, f"expected a JSON object, got {type(item).__name__}"))
            item = None
        table.rows.append(item)
    table.columns = _columns_of(table.rows)
    return table


def _read_csv(name: str, text: str) -> _Table:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    table = _Table(name, [], set(), lines=[], text_cells=True)
    try:
        header = reader.fieldnames or []
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise DataError([Problem(name, None, None, f"header repeats column(s) {duplicated}")])
        for row in reader:
            index = len(table.rows)
            table.lines.append(reader.line_num)
            if None in row:
                table.problems.append(Problem(name, index, None, f"{len(header) + len(row[None])} cells for {len(header)} header columns", reader.line_num))
                row = None
            else:
                row = {k: (None if v is None or v == "" else v) for k, v in row.items()}
            table.rows.append(row)
    except csv.Error as exc:
        raise DataError([Problem(name, None, None, f"unreadable CSV near line {reader.line_num}: {exc}")]) from None
    table.columns = set(header)
    return table


def _dataset_table(name: str, ds) -> _Table:
    columns: set[str] = set()

    def walk(features, prefix):
        for key, feat in features.items():
            columns.add(prefix + key)
            if isinstance(feat, dict):
                walk(feat, f"{prefix}{key}.")

    walk(ds.features, "")
    return _Table(name, ds, columns)


def _read_parquet(path: Path) -> _Table:
    import datasets

    try:
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as exc:
        raise DataError([Problem(str(path), None, None, f"unreadable parquet file: {type(exc).__name__}: {exc}")]) from exc
    return _dataset_table(str(path), ds)


def _read_hub(source: str, split: str) -> _Table:
    import datasets

    name, _, config = source.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as exc:
        msg = f"cannot load data set (split {split!r}): {type(exc).__name__}: {exc}"
        raise DataError([Problem(source, None, None, msg)]) from exc
    return _dataset_table(source, ds)


def _read_source(source: str, split: str) -> _Table:
    """Local file by suffix, an existing directory or a hub name through ``datasets``."""
    if not source:
        raise DataError([Problem("<no source>", None, None, "no data source given (data.train / data.eval)")])
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        if path.is_file():
            raise DataError([Problem(source, None, None, f"unsupported file type {suffix!r}; use one of {LOCAL_FORMATS}")])
        return _read_hub(str(path) if path.is_dir() else source, split)
    if not path.is_file():
        raise DataError([Problem(str(path), None, None, f"file not found: {path.resolve()}")])
    if suffix == ".parquet":
        return _read_parquet(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError([Problem(str(path), None, None, f"cannot read file as UTF-8 text: {exc}")]) from exc
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}[suffix]
    return reader(str(path), text)


# ============================================================================ column layout


def _as_text(value) -> str:
    """A gold answer or demonstration: a string, or a number written as one."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise _Bad(f"expected a string, got {type(value).__name__} {_short(value)}")


def _boxed_gold(solution) -> str:
    gold = last_boxed(_as_text(solution))
    if gold is None or not gold.strip():
        raise _Bad("no \\boxed{...} answer in the solution")
    return gold


def _gsm8k_gold(answer) -> str:
    gold = gsm8k_final_answer(_as_text(answer))
    if gold is None:
        raise _Bad("no '#### <number>' final answer (GSM8K format)")
    return gold


def _gsm8k_demo(answer) -> str:
    """The GSM8K solution as a demonstration: ``<<48/2=24>>`` notes removed, last line ``#### n``."""
    gold = _gsm8k_gold(answer)
    body = re.sub(r"<<[^<>]*>>", "", answer).rsplit("####", 1)[0].rstrip()
    return f"{body}\n#### {gold}" if body else f"#### {gold}"


@dataclass(frozen=True)
class _Layout:
    """Where each Example field comes from: column names and how a value is read."""

    prompt: str
    gold: tuple[tuple[str, Callable], ...]  # (column, reader); the first column present in a row wins
    demo: tuple[str, Callable] | None  # (column, reader); None: the source has no demonstrations
    teacher: str
    columns: frozenset[str]  # must exist in the source
    fields: frozenset[str]  # Example fields every row must have: answer, completion, teacher_completions


# preset -> (prompt column, gold readers, demonstration reader)
_PRESETS: dict[str, tuple] = {
    "gsm8k": ("question", (("answer", _gsm8k_gold),), ("answer", _gsm8k_demo)),
    "math": ("problem", (("answer", _as_text), ("solution", _boxed_gold)), ("solution", _as_text)),
    "math500": ("problem", (("answer", _as_text), ("solution", _boxed_gold)), ("solution", _as_text)),
    "numina": ("problem", (("solution", _boxed_gold),), ("solution", _as_text)),
    "dapo_math": ("prompt", (("reward_model.ground_truth", _as_text),), None),
}
PRESETS = tuple(_PRESETS)


def _layout(cfg: DataConfig, require: Iterable[str]) -> _Layout:
    require = frozenset(require)
    if not require <= set(REQUIRABLE):
        raise ValueError(f"require: unknown field(s) {sorted(require - set(REQUIRABLE))}; choose from {REQUIRABLE}")
    teacher = {cfg.teacher_column} if "teacher_completions" in require or _explicit(cfg, "teacher_column") else set()
    if cfg.preset:
        overridden = [f"data.{f}" for f in ("prompt_column", "answer_column", "completion_column") if _explicit(cfg, f)]
        if overridden:
            logger.warning("data.preset=%s sets the columns itself; ignoring %s", cfg.preset, ", ".join(overridden))
        prompt, gold, demo = _PRESETS[cfg.preset]
        columns = {prompt, gold[-1][0]} | ({demo[0]} if demo else set()) | teacher
        return _Layout(prompt, gold, demo, cfg.teacher_column, frozenset(columns), require | {"answer"})
    named = {"answer": cfg.answer_column, "completion": cfg.completion_column}
    columns = {cfg.prompt_column} | teacher | {named[f] for f in require & named.keys()}
    columns |= {col for f, col in named.items() if _explicit(cfg, f"{f}_column")}
    gold, demo = ((cfg.answer_column, _as_text),), (cfg.completion_column, _as_text)
    return _Layout(cfg.prompt_column, gold, demo, cfg.teacher_column, frozenset(columns), require)


def _explicit(cfg: DataConfig, name: str) -> bool:
    """Was this column name set by the user (differs from the default)?"""
    return getattr(cfg, name) != DataConfig.__dataclass_fields__[name].default


def _check_config(cfg: DataConfig) -> None:
    if cfg.preset and cfg.preset not in PRESETS:
        hint = difflib.get_close_matches(cfg.preset, PRESETS, n=1)
        raise ConfigError(f"data.preset: unknown preset {cfg.preset!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; valid: {', '.join(PRESETS)} or empty")  # fmt: skip
    if cfg.long_prompts not in LONG_PROMPT_POLICIES:
        raise ConfigError(f"data.long_prompts must be one of {LONG_PROMPT_POLICIES}, got {cfg.long_prompts!r}")
    if cfg.max_prompt_length <= 0:
        raise ConfigError(f"data.max_prompt_length must be positive, got {cfg.max_prompt_length}")


# ============================================================================ rows


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _lookup(row: dict, path: str, text_cells: bool):
    """``row[path]``, or for a dotted path the value inside nested objects; ``_MISSING`` if absent."""
    if path in row:
        return row[path]
    value = row
    for part in path.split("."):
        if text_cells and isinstance(value, str):  # CSV: a nested object arrives as JSON text
            try:
                value = json.loads(value)
            except ValueError:
                return _MISSING
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _present(value) -> bool:
    return value is not _MISSING and value is not None and not (isinstance(value, str) and not value.strip())


def _check_prompt(value, text_cells: bool) -> str | list[dict]:
    if text_cells and isinstance(value, str) and value.lstrip().startswith("[{"):
        try:  # CSV: chat messages as JSON; text that merely looks like it stays text
            decoded = json.loads(value)
            value = decoded if isinstance(decoded, list) and all(isinstance(m, dict) for m in decoded) else value
        except ValueError:
            pass
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _Bad(f"expected a string or a list of chat messages, got {type(value).__name__} {_short(value)}")
    if not value:
        raise _Bad("empty list of chat messages")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise _Bad(f"message {i} must be an object with string 'role' and 'content', got {_short(m)}")
    if not any(m["content"].strip() for m in value):
        raise _Bad("every chat message is empty")
    return value


def _check_teacher(value, text_cells: bool) -> list[str]:
    if text_cells and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _Bad('a CSV cell holding a list must be a JSON array of strings, e.g. ["a", "b"]') from None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _Bad(f"expected a list of strings, got {_short(value)}")
    return value


def _row_fields(
    row: dict, layout: _Layout, text_cells: bool, absent: set[str], gold_checks: Sequence[Callable] = (),
    min_teachers: int = 0,
) -> tuple[dict, list]:
    """The Example fields of one row, and a (column, message) per problem found in it."""
    issues: list[tuple[str, str]] = []

    def read(column: str, reader: Callable, required: bool, what: str):
        value = _lookup(row, column, text_cells)
        if not _present(value):
            if required and column not in absent:  # an absent column is reported once, not per row
                issues.append((column, f"no {what} (missing, null or empty)"))
            return None
        try:
            return reader(value)
        except _Bad as exc:
            issues.append((column, str(exc)))
            return None

    gold_column, gold_reader = next(
        ((c, r) for c, r in layout.gold if _present(_lookup(row, c, text_cells))), layout.gold[-1]
    )

    def read_gold(value) -> str:  # the preset's reading, then what the verifiers can judge
        gold = gold_reader(value)
        for check in gold_checks:
            if message := check(gold):
                raise _Bad(message)
        return gold

    fields_ = {
        "prompt": read(layout.prompt, lambda v: _check_prompt(v, text_cells), True, "prompt"),
        "answer": read(gold_column, read_gold, "answer" in layout.fields, "gold answer"),
        "completion": read(*layout.demo, "completion" in layout.fields, "demonstration") if layout.demo else None,
        "teacher_completions": read(layout.teacher, lambda v: _check_teacher(v, text_cells),
                                    "teacher_completions" in layout.fields, "teacher completions") or [],
    }  # fmt: skip
    if 0 < len(fields_["teacher_completions"]) < min_teachers:  # none at all: reported above
        issues.append((layout.teacher, f"{len(fields_['teacher_completions'])} teacher completions; the method's "
                                       f"off-policy members need {min_teachers} (method.num_off_policy)"))  # fmt: skip
    return fields_, list(dict.fromkeys(issues))  # gsm8k reads gold and demonstration from one cell


def _missing_columns(table: _Table, layout: _Layout) -> tuple[set[str], list[Problem]]:
    """Columns the layout reads that the source lacks; a Problem for each required one."""
    wanted = {layout.prompt, layout.teacher, *(c for c, _ in layout.gold)} | ({layout.demo[0]} if layout.demo else set())
    absent = {c for c in wanted if not _has_column(table, c)}
    problems = [Problem(table.name, None, c, _not_found(c, table.columns)) for c in sorted(absent & layout.columns)]
    return absent, problems


def _has_column(table: _Table, column: str) -> bool:
    if column in table.columns:
        return True
    return table.text_cells and any(r is not None and _lookup(r, column, True) is not _MISSING for r in table.rows)


def _not_found(column: str, columns: set[str]) -> str:
    names = sorted(columns)
    lower = {c.lower(): c for c in names}
    close = ([lower[column.lower()]] if column.lower() in lower else []) + difflib.get_close_matches(column, names, n=3)
    hint = f"did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}? " if close else ""
    listed = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
    return f"column not found; {hint}columns: {listed or '(none)'}"


# ============================================================================ prompts


def _join(text: str, suffix: str) -> str:
    if not suffix:
        return text
    sep = "" if not text or text[-1].isspace() or suffix[0].isspace() else " "
    return text + sep + suffix


def _with_suffix(messages: list[dict], suffix: str) -> list[dict]:
    if not suffix:
        return messages
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise _Bad("no user message to append data.prompt_suffix to")
    return [{**m, "content": _join(m["content"], suffix)} if i == users[-1] else m for i, m in enumerate(messages)]


def _render_prompt(prompt: str | list[dict], cfg: DataConfig, tokenizer) -> str:
    """The text the model sees: suffix appended, chat template applied (see module docstring)."""
    use_template = cfg.chat_template and bool(getattr(tokenizer, "chat_template", None))
    if isinstance(prompt, str):
        if not use_template:
            return _join(prompt, cfg.prompt_suffix)
        messages = [{"role": "user", "content": _join(prompt, cfg.prompt_suffix)}]
    elif not use_template:
        why = "data.chat_template is false" if not cfg.chat_template else "the tokenizer has no chat template"
        raise _Bad(f"prompt is a list of chat messages, but {why}")
    else:
        messages = _with_suffix(prompt, cfg.prompt_suffix)
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:
        raise _Bad(f"chat template failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(text, str):
        raise _Bad(f"chat template returned {type(text).__name__}, expected text")
    return text


def _token_ids(texts: list[str], tokenizer) -> list[list[int] | str]:
    """Token ids of each text (one batched call); an error message for a text that fails."""
    if not texts:
        return []
    try:
        return list(tokenizer(texts, add_special_tokens=False)["input_ids"])
    except Exception:  # find the culprits one by one
        out: list[list[int] | str] = []
        for text in texts:
            try:
                out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
            except Exception as exc:
                out.append(f"tokenizer failed: {type(exc).__name__}: {exc}")
        return out


# ============================================================================ loading


def load_examples(
    cfg: DataConfig,
    source: str,
    tokenizer,
    *,
    split: str = "train",
    require: Iterable[str] = (),
    gold_checks: Sequence[Callable[[str], str | None]] = (),
    min_teachers: int = 0,
) -> ExampleList:
    """Read, check and tokenize a data set (see the module docstring); raise one ``DataError``
    listing every problem.

    ``require`` names Example fields every row must have (``answer``, ``completion``,
    ``teacher_completions``), e.g. ``("answer",)`` when a verifier needs gold answers.
    ``gold_checks`` say why a gold answer cannot be judged (a message) or return None; each
    message is a problem of the row (e.g. ``GSM8KReward.gold_problem``). A row with fewer than
    ``min_teachers`` teacher completions is a problem of the row.
    ``split`` applies to hub data sets only. ``ConfigError`` for invalid settings.
    """
    _check_config(cfg)
    layout = _layout(cfg, require)
    table = _read_source(source, split)
    absent, problems = _missing_columns(table, layout)
    problems = table.problems + problems
    if "completion" in layout.fields and layout.demo is None:
        problems.append(Problem(table.name, None, None, f"preset {cfg.preset!r} has no demonstrations"))
    drafts = []  # (index, raw row, fields) of rows without problems
    for index, row in enumerate(table.rows):
        if row is None:
            continue
        fields_, issues = _row_fields(row, layout, table.text_cells, absent, gold_checks, min_teachers)
        if fields_["prompt"] is not None:
            try:
                fields_["prompt_text"] = _render_prompt(fields_["prompt"], cfg, tokenizer)
            except _Bad as exc:
                issues.append((layout.prompt, str(exc)))
        line = table.lines[index] if table.lines else None
        problems += [Problem(table.name, index, column, msg, line) for column, msg in issues]
        if not issues and fields_["prompt"] is not None:  # None: the prompt column is absent
            drafts.append((index, row, fields_))
    report = LoadReport(table.name, n_rows=len(table.rows))
    examples = _fit_prompts(drafts, cfg, tokenizer, table, problems, report)
    if not table.rows:
        problems.append(Problem(table.name, None, None, "no rows"))
    elif not problems and not examples:
        problems.append(Problem(table.name, None, None, f"every prompt is longer than {cfg.max_prompt_length} tokens"))
    if problems:
        raise DataError(sorted(problems, key=lambda p: -1 if p.row is None else p.row))
    report.n_loaded = len(examples)
    report.max_prompt_tokens = max(len(ex.prompt_ids) for ex in examples)
    (logger.warning if report.n_dropped or report.n_truncated else logger.info)("loaded %s", report)
    return ExampleList(examples, report)


def _fit_prompts(drafts, cfg: DataConfig, tokenizer, table: _Table, problems: list, report: LoadReport) -> list[Example]:
    """Tokenize the prompts and apply ``long_prompts``; problems are appended to ``problems``."""
    examples = []
    all_ids = _token_ids([f["prompt_text"] for _, _, f in drafts], tokenizer)
    for (index, row, f), ids in zip(drafts, all_ids):
        line = table.lines[index] if table.lines else None
        if isinstance(ids, str):
            problems.append(Problem(table.name, index, None, ids, line))
            continue
        text = f["prompt_text"]
        if len(ids) > cfg.max_prompt_length:
            if cfg.long_prompts == "error":
                msg = f"prompt has {len(ids)} tokens, more than data.max_prompt_length={cfg.max_prompt_length}"
                problems.append(Problem(table.name, index, None, msg, line))
                continue
            if cfg.long_prompts == "drop":
                report.n_dropped += 1
                continue
            ids = ids[-cfg.max_prompt_length :]
            text = tokenizer.decode(ids, skip_special_tokens=False)
            report.n_truncated += 1
        examples.append(Example(
            prompt=f["prompt"], prompt_text=text, prompt_ids=ids, answer=f["answer"], completion=f["completion"],
            teacher_completions=f["teacher_completions"], row=dict(row), index=index,
        ))  # fmt: skip
    return examples


def reward_columns(examples: Sequence[Example], repeat: int = 1) -> dict[str, list]:
    """Columns for ``compute_rewards``: ``answer`` (the gold answer) and every raw column, each
    value repeated ``repeat`` times (group-contiguous). Raw columns named ``answer``,
    ``prompts`` or ``completions`` are left out: they would shadow the gold answer or the
    reward function's own arguments."""
    columns: dict[str, list] = {"answer": [ex.answer for ex in examples for _ in range(repeat)]}
    keys = dict.fromkeys(k for ex in examples for k in ex.row)
    for key in keys:
        if key not in ("answer", "prompts", "completions"):
            columns[key] = [ex.row.get(key) for ex in examples for _ in range(repeat)]
    return columns

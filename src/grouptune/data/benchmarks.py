"""Benchmark presets: each benchmark's public format read as its official evaluation reads it.

The GFT paper evaluates with the Qwen2.5-Math harness (QwenLM/Qwen2.5-Math, ``evaluation/``,
commit a45202bd16f1ec06f433442dc1152d0074773465), whose ``data/<name>/test.jsonl`` files are
the benchmarks' public copies; the GFT code ships the same files under
``verl/utils/reward_score/math_evaluation/data/``. For every row this module builds two
columns the way that harness's ``parser.py`` does (re-implemented, no code copied):

- ``_question`` (``parse_question``): the question text; for multiple choice the options
  appended as ``Answer Choices: (A) ... (B) ...``; for TabMWP the table; " (Yes or No)" or
  " (True or False)" appended when that is the gold answer.
- ``_gold`` (``parse_ground_truth``): the gold answer, before the answer normalisation of the
  verifier (``grouptune.harness``).

| preset          | question                                   | gold                                     |
|-----------------|--------------------------------------------|------------------------------------------|
| ``minerva_math``| ``problem``                                | last ``\\boxed{}`` of ``solution``          |
| ``olympiadbench``| ``question``                              | ``final_answer[0]`` without ``$``         |
| ``amc23``, ``aime24``, ``aime25`` | ``question`` or ``problem`` | ``answer`` (``27.0`` is read as ``27``)   |
| ``college_math``, ``gaokao2023en`` | ``question``               | ``answer`` without ``$``                  |
| ``tabmwp``      | table title, table, ``question``, ``choices``| ``answer``; numbers: ``1,000`` -> 1000, ``3/4`` -> 0.75, ``25%`` -> 0.25 |
| ``mmlu_stem``   | ``question`` + ``choices`` (four)          | ``"ABCD"[answer]``; hub rows outside the 18 STEM subjects are skipped |
| ``sat_math``    | ``question`` + ``options`` (``A) .. B) ..``)| ``Answer``                               |

A row the preset cannot read is a problem of that row; a column the source lacks is reported
once. Rows are read in source order; none is dropped silently except MMLU's non-STEM rows
(counted in the log).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from grouptune.answers import last_boxed
from grouptune.data.problems import BadValue, Problem
from grouptune.data.readers import Table
from grouptune.harness import normalize

logger = logging.getLogger("grouptune.data")

QUESTION_COLUMNS = ("question", "problem", "Question", "input")  # the harness's order
# MMLU's STEM subjects, as the harness selects them from hails/mmlu_no_train (data_loader.py)
MMLU_STEM = frozenset(
    "abstract_algebra astronomy college_biology college_chemistry college_computer_science college_mathematics "
    "college_physics computer_security conceptual_physics electrical_engineering elementary_mathematics "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_mathematics "
    "high_school_physics high_school_statistics machine_learning".split()
)


# ----------------------------------------------------------------------------- reading cells


def _cell(row: dict, names: tuple[str, ...]):
    """The first of ``names`` the row has a value for; BadValue naming them if none."""
    for name in names:
        value = row.get(name)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    raise BadValue(f"no value in {' or '.join(repr(n) for n in names)}")


def _text(value) -> str:
    if isinstance(value, bool):
        raise BadValue(f"expected text or a number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # amc23 stores 27.0; the harness's normalisation reads it as 27
    if isinstance(value, (str, int, float)):
        return str(value)
    raise BadValue(f"expected text or a number, got {type(value).__name__}")


def _list(value) -> list:
    """A list cell; in CSV a JSON array in the cell."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadValue("expected a list (in CSV: a JSON array)") from None
    if not isinstance(value, (list, tuple)):
        raise BadValue(f"expected a list, got {type(value).__name__}")
    return list(value)


def _number_text(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


# ----------------------------------------------------------------------------- questions


def _plain_question(row: dict) -> str:
    return _text(_cell(row, QUESTION_COLUMNS)).strip()


def _mmlu_question(row: dict) -> str:
    choices = _list(_cell(row, ("choices",)))
    if len(choices) != 4:
        raise BadValue(f"MMLU has four choices, this row has {len(choices)}")
    options = " ".join(f"({label}) {str(c).strip()}" for label, c in zip("ABCD", choices))
    return f"{_text(_cell(row, ('question',))).strip()}\nAnswer Choices: {options}"


def _sat_question(row: dict) -> str:
    options = _text(_cell(row, ("options",))).strip()
    if not options.startswith("A"):
        raise BadValue(f"SAT-Math options start with 'A) ...', got {options[:20]!r}")
    options = "(" + options
    for letter in "BCD":
        options = options.replace(f" {letter}) ", f" ({letter}) ")
    return f"{_text(_cell(row, ('question',))).strip()}\nAnswer Choices: {options}"


def _tabmwp_question(row: dict) -> str:
    title = row.get("table_title")
    about = f'regarding "{title}" ' if title else ""
    text = f"Read the following table {about}and answer a question:\n"
    text += f"{_text(_cell(row, ('table',)))}\n{_text(_cell(row, ('question',)))}"
    if row.get("choices"):
        text += f" Please select from the following options: {_list(row['choices'])}"
    return text


# ----------------------------------------------------------------------------- gold answers


def _boxed_solution(row: dict) -> str:
    gold = last_boxed(_text(_cell(row, ("solution",))))
    if not gold or not gold.strip():
        raise BadValue("no \\boxed{...} answer in the solution")
    return gold


def _answer(row: dict) -> str:
    return _text(_cell(row, ("answer",))).strip()


def _answer_no_dollars(row: dict) -> str:
    return _answer(row).replace("$", "").strip()


def _olympiad_gold(row: dict) -> str:
    answers = _list(_cell(row, ("final_answer",)))
    if not answers:
        raise BadValue("empty final_answer list")
    return _text(answers[0]).strip("$")


def _tabmwp_gold(row: dict) -> str:
    gold = _answer(row)
    if row.get("ans_type") not in ("integer_number", "decimal_number"):
        return gold
    try:
        if "/" in gold:
            top, bottom = gold.split("/")
            return _number_text(int(top) / int(bottom))
        if "%" in gold:
            return _number_text(float(gold.split("%")[0]) / 100)
        return _number_text(float(gold.replace(",", "")))
    except (ValueError, ZeroDivisionError):
        raise BadValue(f"answer {gold!r} is not a number, but ans_type is {row.get('ans_type')}") from None


def _mmlu_gold(row: dict) -> str:
    answer = _cell(row, ("answer",))
    if isinstance(answer, str) and answer.strip() in ("A", "B", "C", "D"):
        return answer.strip()
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer)
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < 4:
        raise BadValue(f"expected the index 0-3 of the right choice, got {answer!r}")
    return "ABCD"[answer]


def _sat_gold(row: dict) -> str:
    gold = _text(_cell(row, ("Answer", "answer"))).strip()
    if gold not in ("A", "B", "C", "D"):
        raise BadValue(f"expected an option letter A-D, got {gold!r}")
    return gold


# ----------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark's rows become a ``_question`` and a ``_gold`` column."""

    question: Callable[[dict], str]
    gold: Callable[[dict], str]
    needs: tuple[tuple[str, ...], ...]  # source columns: one of each tuple must exist
    keep: Callable[[dict], bool] | None = None  # rows to evaluate on (MMLU: STEM subjects)

    def __call__(self, table: Table) -> Table:
        """The table with the two columns added to every row it can read."""
        missing = [names for names in self.needs if not any(n in table.columns for n in names)]
        if missing:
            problems = [Problem(table.name, None, names[0], _not_found(names, table.columns)) for names in missing]
            rows, columns = [None] * len(table.rows), table.columns | {"_question", "_gold"}
            return replace(table, rows=rows, columns=columns, problems=table.problems + problems)
        rows, problems, skipped = [], list(table.problems), 0
        for index, row in enumerate(table.rows):
            if row is not None and self.keep is not None and not self.keep(row):
                row, skipped = None, skipped + 1
            elif row is not None:
                try:
                    row = self._derive(row)
                except BadValue as exc:
                    problems.append(Problem(table.name, index, None, str(exc), table.line(index)))
                    row = None
            rows.append(row)
        if skipped:
            logger.info("%s: %d of %d rows skipped (not a STEM subject)", table.name, skipped, len(rows))
        return replace(table, rows=rows, columns=table.columns | {"_question", "_gold"}, problems=problems)

    def _derive(self, row: dict) -> dict:
        gold = self.gold(row)
        question = self.question(row)
        word = normalize(gold).lower()  # as the harness: the normalised gold, so \text{Yes} counts
        if word in ("true", "false"):
            question += " (True or False)"
        elif word in ("yes", "no"):
            question += " (Yes or No)"
        return {**row, "_question": question.strip(), "_gold": gold}


def _not_found(names: tuple[str, ...], columns: set[str]) -> str:
    close = difflib.get_close_matches(names[0], sorted(columns), n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    listed = ", ".join(sorted(columns)[:30]) or "(none)"
    return f"column {' or '.join(repr(n) for n in names)} not found; {hint}columns: {listed}"


def _stem(row: dict) -> bool:
    subject = row.get("subject")
    return subject is None or subject in MMLU_STEM  # the harness's own file has "type" instead


BENCHMARKS: dict[str, Benchmark] = {
    "minerva_math": Benchmark(_plain_question, _boxed_solution, (QUESTION_COLUMNS, ("solution",))),
    "olympiadbench": Benchmark(_plain_question, _olympiad_gold, (QUESTION_COLUMNS, ("final_answer",))),
    "amc23": Benchmark(_plain_question, _answer, (QUESTION_COLUMNS, ("answer",))),
    "aime24": Benchmark(_plain_question, _answer, (QUESTION_COLUMNS, ("answer",))),
    "aime25": Benchmark(_plain_question, _answer, (QUESTION_COLUMNS, ("answer",))),
    "college_math": Benchmark(_plain_question, _answer_no_dollars, (QUESTION_COLUMNS, ("answer",))),
    "gaokao2023en": Benchmark(_plain_question, _answer_no_dollars, (QUESTION_COLUMNS, ("answer",))),
    "tabmwp": Benchmark(_tabmwp_question, _tabmwp_gold, (("table",), ("question",), ("answer",))),
    "mmlu_stem": Benchmark(_mmlu_question, _mmlu_gold, (("question",), ("choices",), ("answer",)), _stem),
    "sat_math": Benchmark(_sat_question, _sat_gold, (("question",), ("options",), ("Answer", "answer"))),
}
MULTIPLE_CHOICE = frozenset({"mmlu_stem", "sat_math"})

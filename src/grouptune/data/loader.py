"""``load_examples``: read a source, check every row, render and tokenize the prompts, and
either return every ``Example`` or raise one ``DataError`` listing every problem."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from grouptune.config import DataConfig, TrainConfig
from grouptune.data.checks import RowRules, missing_columns, row_fields
from grouptune.data.example import Example, ExampleList, LoadReport
from grouptune.data.presets import check_config, layout_for
from grouptune.data.problems import BadValue, DataError, Problem
from grouptune.data.prompts import fit_prompts, render_prompt
from grouptune.data.readers import Table, read_source

logger = logging.getLogger("grouptune.data")  # the package's one logger, as before it was split


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
    """Read, check and tokenize a data set (see the package docstring); raise one ``DataError``
    listing every problem.

    ``require`` names Example fields every row must have (``answer``, ``completion``,
    ``teacher_completions``), e.g. ``("answer",)`` when a verifier needs gold answers.
    ``gold_checks`` say why a gold answer cannot be judged (a message) or return None; each
    message is a problem of the row (e.g. ``GSM8KReward.gold_problem``). A row with fewer than
    ``min_teachers`` teacher completions is a problem of the row.
    ``split`` applies to hub data sets only. ``ConfigError`` for invalid settings.
    """
    table, rules, problems = _read(cfg, source, split, require, gold_checks, min_teachers)
    drafts = _check_rows(table, rules, cfg, tokenizer, problems)
    report = LoadReport(table.name, n_rows=len(table.rows))
    examples = fit_prompts(drafts, cfg, tokenizer, table, problems, report)
    _raise_problems(table, cfg, examples, problems)
    report.n_loaded = len(examples)
    report.max_prompt_tokens = max(len(ex.prompt_ids) for ex in examples)
    (logger.warning if report.n_dropped or report.n_truncated else logger.info)("loaded %s", report)
    return ExampleList(examples, report)


def check_rows(cfg: DataConfig, source: str, *, split: str = "train", require: Iterable[str] = ()) -> None:
    """The checks of ``load_examples`` that need no tokenizer (columns, every row's values), for a
    start-up check before any model loads: one ``DataError`` names file, row and column of each problem."""
    table, rules, problems = _read(cfg, source, split, require)
    for index, row in enumerate(table.rows):
        if row is not None:  # None: unreadable, the reader reported it
            issues = row_fields(row, rules)[1]
            problems += [Problem(table.name, index, column, msg, table.line(index)) for column, msg in issues]
    if not table.rows:
        problems.append(Problem(table.name, None, None, "no rows"))
    if problems:
        raise DataError(sorted(problems, key=lambda p: -1 if p.row is None else p.row))


def _read(
    cfg: DataConfig, source: str, split: str, require: Iterable[str],
    gold_checks: Sequence[Callable[[str], str | None]] = (), min_teachers: int = 0,
) -> tuple[Table, RowRules, list[Problem]]:
    """The source read through its layout, the rules its rows are checked by, and the problems of
    the whole source (unreadable rows, missing columns, a preset without demonstrations)."""
    check_config(cfg)
    layout = layout_for(cfg, require)
    table = read_source(source, split)
    if layout.derive is not None:  # a benchmark preset: question and gold from several columns
        table = layout.derive(table)
    absent, problems = missing_columns(table, layout)
    problems = table.problems + problems
    if "completion" in layout.fields and layout.demo is None:
        problems.append(Problem(table.name, None, None, f"preset {cfg.preset!r} has no demonstrations"))
    if "answer" in layout.fields and not layout.gold:
        message = (f"preset {cfg.preset!r} has no gold answers for a verifier to judge: score it with a reward "
                   "model (rm:PATH) or a user function")  # fmt: skip
        problems.append(Problem(table.name, None, None, message))
    return table, RowRules(layout, table.text_cells, absent, gold_checks, min_teachers), problems


def _check_rows(table: Table, rules: RowRules, cfg: DataConfig, tokenizer, problems: list[Problem]) -> list:
    """(index, raw row, fields) of each row without problems, prompt rendered; the problems of
    the other rows are appended to ``problems``, in row order."""
    drafts = []
    for index, row in enumerate(table.rows):
        if row is None:  # unreadable: the reader reported it
            continue
        fields, issues = row_fields(row, rules)
        if fields["prompt"] is not None:
            try:
                fields["prompt_text"] = render_prompt(fields["prompt"], cfg, tokenizer)
            except BadValue as exc:
                issues.append((rules.layout.prompt, str(exc)))
        problems += [Problem(table.name, index, column, msg, table.line(index)) for column, msg in issues]
        if not issues and fields["prompt"] is not None:  # None: the prompt column is absent
            drafts.append((index, row, fields))
    return drafts


def _raise_problems(table: Table, cfg: DataConfig, examples: list[Example], problems: list[Problem]) -> None:
    """One ``DataError`` with every problem, whole-source problems first, then by row; also
    when nothing is left to train on."""
    if not table.rows:
        problems.append(Problem(table.name, None, None, "no rows"))
    elif not problems and not examples:
        problems.append(
            Problem(table.name, None, None, f"every prompt is longer than {cfg.max_prompt_length} tokens")
        )
    if problems:
        raise DataError(sorted(problems, key=lambda p: -1 if p.row is None else p.row))


VERIFIERS = ("math", "gsm8k", "exact_match", "qwen_math", "choice")  # reward functions that need gold answers


def load_run_data(
    cfg: TrainConfig, tokenizer, off_policy: int, reward_fns: list, eval_fns: list | None = None
) -> tuple[list[Example], dict[str, list[Example]], list[Example] | None]:
    """Training, evaluation and expert examples (``data.expert``, None when unset); one
    ``DataError`` lists the problems of every source.

    Rows need a gold answer when a verifier scores them (one it can judge, for verifiers that
    say so: ``gold_problem``), and the training rows the demonstration (and teacher responses)
    that fill the method's ``off_policy`` members: the demonstration and K - 1 teacher responses.
    The held-out sets are checked against ``eval_fns`` (``reward.eval_functions``; default the
    training functions). Expert rows (CHORD's separate SFT set, read with the training split)
    need a demonstration.
    """
    d = cfg.data
    eval_fns = reward_fns if eval_fns is None else eval_fns
    demos = ("completion",) * (off_policy > 0) + ("teacher_completions",) * (off_policy > 1)
    teachers = max(off_policy - 1, 0)
    sources = [(d.train, d.train_split, _gold(reward_fns) + demos, teachers, _checks(reward_fns))]
    sources += [(src, d.eval_split, _gold(eval_fns), 0, _checks(eval_fns)) for src in d.eval]
    sources += [(d.expert, d.train_split, ("completion",), 0, [])] if d.expert else []  # expert rows are not scored
    loaded, problems = [], []
    for src, split, require, min_teachers, gold_checks in sources:
        try:
            loaded.append(load_examples(d, src, tokenizer, split=split, require=require, gold_checks=gold_checks,
                                        min_teachers=min_teachers))  # fmt: skip
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    expert = loaded.pop() if d.expert else None
    return loaded[0], dict(zip(d.eval, loaded[1:])), expert


def _gold(fns: list) -> tuple[str, ...]:
    """``("answer",)`` when a verifier among ``fns`` needs each row's gold answer."""
    return ("answer",) if any(rf.name in VERIFIERS for rf in fns) else ()


def _checks(fns: list) -> list:
    return [rf.fn.gold_problem for rf in fns if hasattr(rf.fn, "gold_problem")]

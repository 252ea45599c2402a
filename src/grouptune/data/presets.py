"""Where each ``Example`` field comes from: the column presets of well-known data sets, the
columns named in ``DataConfig``, and how a preset reads a gold answer or a demonstration.

``layout_for`` turns the config (and the fields a caller requires) into a ``Layout``; the
row checks read every row through it.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from grouptune.answers import gsm8k_final_answer, last_boxed
from grouptune.config import ConfigError, DataConfig
from grouptune.data.benchmarks import BENCHMARKS
from grouptune.data.preferences import chosen_response, hh_prompt, hh_response
from grouptune.data.problems import BadValue, short
from grouptune.data.templates import TEMPLATES

logger = logging.getLogger("grouptune.data")  # the package's one logger, as before it was split

LONG_PROMPT_POLICIES = ("drop", "truncate", "error")
REQUIRABLE = ("answer", "completion", "teacher_completions")


# ----------------------------------------------------------------------------- value readers


def as_text(value) -> str:
    """A gold answer or demonstration: a string, or a number written as one."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise BadValue(f"expected a string, got {type(value).__name__} {short(value)}")


def _boxed_gold(solution) -> str:
    gold = last_boxed(as_text(solution))
    if gold is None or not gold.strip():
        raise BadValue("no \\boxed{...} answer in the solution")
    return gold


def _gsm8k_gold(answer) -> str:
    gold = gsm8k_final_answer(as_text(answer))
    if gold is None:
        raise BadValue("no '#### <number>' final answer (GSM8K format)")
    return gold


def _gsm8k_demo(answer) -> str:
    """The GSM8K solution as a demonstration: ``<<48/2=24>>`` notes removed, last line ``#### n``."""
    gold = _gsm8k_gold(answer)
    body = re.sub(r"<<[^<>]*>>", "", answer).rsplit("####", 1)[0].rstrip()
    return f"{body}\n#### {gold}" if body else f"#### {gold}"


# ----------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """Where each Example field comes from: column names and how a value is read."""

    prompt: str
    gold: tuple[tuple[str, Callable], ...]  # (column, reader); the first column present in a row wins; () none
    demo: tuple[str, Callable] | None  # (column, reader); None: the source has no demonstrations
    teacher: str
    columns: frozenset[str]  # must exist in the source
    fields: frozenset[str]  # Example fields every row must have: answer, completion, teacher_completions
    derive: Callable | None = None  # Table -> Table with derived columns (benchmark presets, ``benchmarks``)
    read_prompt: Callable | None = None  # reads the prompt column (``preferences``); None: text or chat messages

    def read_columns(self) -> set[str]:
        """Every column this layout may read, required or not."""
        demo = {self.demo[0]} if self.demo else set()
        return {self.prompt, self.teacher, *(c for c, _ in self.gold)} | demo


_MATH_GOLD = (("answer", as_text), ("solution", _boxed_gold))

# preset -> (prompt column or (column, reader), gold readers, demonstration reader)
_PRESETS: dict[str, tuple] = {
    "gsm8k": ("question", (("answer", _gsm8k_gold),), ("answer", _gsm8k_demo)),
    "math": ("problem", _MATH_GOLD, ("solution", as_text)),
    "math500": ("problem", _MATH_GOLD, ("solution", as_text)),
    "numina": ("problem", (("solution", _boxed_gold),), ("solution", as_text)),
    "dapo_math": ("prompt", (("reward_model.ground_truth", as_text),), None),
    # preference data of RLHF (``preferences``): no gold answer, the chosen response as the demonstration
    "ultrafeedback": ("prompt", (), ("chosen", chosen_response)),
    "hh_rlhf": (("chosen", hh_prompt), (), ("chosen", hh_response)),
    # benchmark presets (``benchmarks``): question and gold built from several columns, no demonstrations
    **{name: ("_question", (("_gold", as_text),), None) for name in BENCHMARKS},
}
PRESETS = tuple(_PRESETS)


def layout_for(cfg: DataConfig, require: Iterable[str]) -> Layout:
    """The layout of ``cfg`` (its preset, else its column names); ``require``: fields every row must have."""
    require = frozenset(require)
    if not require <= set(REQUIRABLE):
        unknown = sorted(require - set(REQUIRABLE))
        raise ValueError(f"require: unknown field(s) {unknown}; choose from {REQUIRABLE}")
    wants_teacher = "teacher_completions" in require or _explicit(cfg, "teacher_column")
    teacher = {cfg.teacher_column} if wants_teacher else set()
    if cfg.preset:
        return _preset_layout(cfg, require, teacher)
    named = {"answer": cfg.answer_column, "completion": cfg.completion_column}
    columns = {cfg.prompt_column} | teacher | {named[f] for f in require & named.keys()}
    columns |= {col for f, col in named.items() if _explicit(cfg, f"{f}_column")}
    gold, demo = ((cfg.answer_column, as_text),), (cfg.completion_column, as_text)
    return Layout(cfg.prompt_column, gold, demo, cfg.teacher_column, frozenset(columns), require)


def _preset_layout(cfg: DataConfig, require: frozenset[str], teacher: set[str]) -> Layout:
    """A preset names its own columns (a warning lists the config's column names it overrides);
    its rows always need a gold answer, if it reads one."""
    overridden = [
        f"data.{f}" for f in ("prompt_column", "answer_column", "completion_column") if _explicit(cfg, f)
    ]
    if overridden:
        logger.warning(
            "data.preset=%s sets the columns itself; ignoring %s", cfg.preset, ", ".join(overridden)
        )
    prompt, gold, demo = _PRESETS[cfg.preset]
    prompt, read_prompt = (prompt, None) if isinstance(prompt, str) else prompt
    columns = {prompt} | {c for c, _ in gold[-1:]} | ({demo[0]} if demo else set()) | teacher
    fields = require | ({"answer"} if gold else set())
    derive = BENCHMARKS.get(cfg.preset)
    return Layout(prompt, gold, demo, cfg.teacher_column, frozenset(columns), fields, derive, read_prompt)


def _explicit(cfg: DataConfig, name: str) -> bool:
    """Was this column name set by the user (differs from the default)?"""
    return getattr(cfg, name) != DataConfig.__dataclass_fields__[name].default


def check_config(cfg: DataConfig) -> None:
    """``ConfigError`` for data settings no data set could satisfy, before any file is read."""
    if cfg.preset and cfg.preset not in PRESETS:
        hint = difflib.get_close_matches(cfg.preset, PRESETS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        valid = f"; valid: {', '.join(PRESETS)} or empty"
        raise ConfigError(f"data.preset: unknown preset {cfg.preset!r}" + did_you_mean + valid)
    if cfg.prompt_template and cfg.prompt_template not in TEMPLATES:
        raise ConfigError(
            f"data.prompt_template: unknown template {cfg.prompt_template!r}; valid: {', '.join(TEMPLATES)} or empty"
        )
    if cfg.long_prompts not in LONG_PROMPT_POLICIES:
        raise ConfigError(
            f"data.long_prompts must be one of {LONG_PROMPT_POLICIES}, got {cfg.long_prompts!r}"
        )
    if cfg.max_prompt_length <= 0:
        raise ConfigError(f"data.max_prompt_length must be positive, got {cfg.max_prompt_length}")

"""Explicit rewards (docs/methods.md#explicit-rewards): verifiers, reward models, user functions, scoring.

Every reward function has TRL's call shape::

    f(prompts: list[str], completions: list[str], **columns) -> list[float | None]

``columns`` are lists aligned with ``completions``: ``answer`` (the parsed gold answer) and
every raw column of the data set row. ``None`` means *unjudged* (the function could not
judge that completion, e.g. the gold answer does not parse or math-verify ran out of time).

Built-ins (``reward.functions``):
    ``math``          math-verify on the last ``\\boxed{}`` of the completion, gold first; 1.0/0.0.
    ``gsm8k``         ``#### n`` gold vs ``#### n`` (strict) or the last number (flexible).
    ``qwen_math``     ``math`` plus the answer rules of the Qwen2.5-Math evaluation harness
                      (``grouptune.harness``): what the GFT paper's numbers are scored with.
    ``choice``        multiple choice: the option letter the completion names equals the gold letter.
    ``exact_match``   completion == answer after stripping whitespace.
    ``rm:PATH``       a sequence-classification reward model (num_labels=1) scoring prompt+completion.
    ``pkg.mod:fn``    a user function by import path, or ``path/to/file.py:fn``.

How a batch is scored (``compute_rewards``):
    total = sum_j weight_j * reward_j over the functions with a non-zero weight (a weight of
    0 means "logged only"). A row is *unjudged* (NaN in ``total``) when any weighted function
    returned None for it: a sum with a missing term cannot be compared fairly with complete
    ones. ``per_function`` keeps every function's scores (NaN where it returned None).
    A function that returns the wrong number of values, a NaN/inf or a non-number is a
    ``RewardError`` naming the function and the row. So is one that raises (``on_error="raise"``,
    default), unless ``on_error="unjudged"``: then a warning with the traceback is logged and
    the rows it raises on (it is called again one row at a time) count as unjudged for that
    function. Never a silent zero.

Time limits: every call of a reward function or reward model (one batch) runs under
``reward.timeout`` seconds (``RewardFunction.timeout``; ``grouptune.time_limits.run_with_time_limit``);
one that does not return in time is a ``RewardTimeout`` naming the function and the rows,
whatever ``on_error`` says (a hanging function is not a judgement). For ``math``, each
answer also has its own limit: ``grouptune.time_limits.judge_math``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from grouptune.answers import (
    gsm8k_final_answer,
    last_boxed,
    last_number,
    parse_number,
    strict_gsm8k_number,
)
from grouptune.config import ConfigError, RewardConfig
from grouptune.harness import LETTERS, choice_letter, extract, harness_equal
from grouptune.time_limits import TimeLimitExceeded, judge_math, run_with_time_limit

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "unjudged")
_SET_BUILDER = re.compile(r"\\\{[^{}]*\|")  # \{x | ...\}
GSM8K_MODES = ("strict", "flexible")


class RewardError(RuntimeError):
    """A reward function failed; the message names the function and the row."""


class RewardTimeout(RewardError):
    """A reward function did not return within ``reward.timeout``; the message names it and the rows."""


@dataclass
class RewardFunction:
    name: str  # as written in ``reward.functions``; the key of ``RewardResult.per_function``
    fn: Callable[..., Sequence[float | None]]
    weight: float = 1.0
    timeout: float = 0.0  # seconds one call may take (0 = no limit)


@dataclass
class RewardResult:
    total: torch.Tensor  # (N,) float32 weighted sum, NaN = unjudged
    per_function: dict[str, torch.Tensor]  # name -> (N,) float32, NaN where it returned None
    failures: dict[str, str] = field(default_factory=dict)  # name -> message, on_error="unjudged" only

    @property
    def unjudged(self) -> torch.Tensor:
        return torch.isnan(self.total)  # (N,) bool


# ============================================================================ built-in rewards


class MathReward:
    """``math``: 1.0 if the last ``\\boxed{}`` of the completion equals the gold answer (math-verify).

    No box -> 0.0. Gold missing or unparsable, or out of time -> None (unjudged).
    """

    __name__ = "math"

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, gold in zip(completions, answer):
            boxed = last_boxed(completion)
            if gold is None or not str(gold).strip():
                rewards.append(None)
            elif boxed is None:
                rewards.append(0.0)
            else:
                same = judge_math(str(gold), boxed, self.timeout)
                rewards.append(None if same is None else float(same))
        return rewards


class GSM8KReward:
    """``gsm8k``: gold ``... #### n`` or a bare number; ``strict`` reads ``#### n`` in the
    completion, ``flexible`` its last number. Commas and ``$`` stripped, exact numeric compare.
    Gold that is not a number -> None (unjudged); no number in the completion -> 0.0.
    """

    __name__ = "gsm8k"

    def __init__(self, mode: str = "strict"):
        self.read = strict_gsm8k_number if mode == "strict" else last_number

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, gold in zip(completions, answer):
            target = self._target(gold)
            rewards.append(None if target is None else float(self.read(completion) == target))
        return rewards

    @staticmethod
    def _target(gold) -> Fraction | None:
        gold_text = "" if gold is None else str(gold)
        return parse_number(gsm8k_final_answer(gold_text) or gold_text)

    def gold_problem(self, gold) -> str | None:
        """Why a gold answer cannot be judged (checked before training), or None."""
        if self._target(gold) is None:
            return f"gold answer {gold!r} is neither a number nor '... #### n' (reward gsm8k)"
        return None


class QwenMathReward:
    """``qwen_math``: correct when math-verify or the Qwen2.5-Math harness's rules say so (1.0/0.0).

    The answer is read as the harness reads it (``grouptune.harness.extract``): the last
    ``\\boxed{}``, else the text after "the answer is", else the last number. A gold option letter
    is compared with the letter the answer names. Scored as the harness scores: an answer
    math-verify cannot judge (or not in time) is wrong unless the harness's rules accept it.
    Gold missing -> None (unjudged). The cases where the two checkers disagree are listed in
    docs/evaluation.md#answer-checking.
    """

    __name__ = "qwen_math"

    def __init__(self, timeout: float = 5.0, units: bool = True):
        self.timeout = timeout
        self.units = units  # False: unit words are kept, as the harness does for Minerva Math

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        return [self.judge(c, None if gold is None else str(gold)) for c, gold in zip(completions, answer)]

    def judge(self, completion: str, gold: str | None) -> float | None:
        if gold is None or not gold.strip():
            return None
        answer = extract(completion)
        if not answer:
            return 0.0
        if harness_equal(gold, answer, self.units):
            return 1.0
        if len(gold.strip()) == 1 and gold.strip() in LETTERS:
            return 0.0  # a letter: harness_equal compared the letter the answer names
        if _SET_BUILDER.search(gold):
            return 0.0  # math-verify reads every set-builder set {x | ...} as 1: all would be equal
        return 1.0 if judge_math(gold, answer, self.timeout) else 0.0


class ChoiceReward:
    """``choice``: 1.0 if the option letter the completion names (``grouptune.harness.choice_letter``:
    the last ``\\boxed{}``, then "the answer is (X)", then the last stand-alone capital A-E) is the
    gold letter, else 0.0. Gold that is not one letter A-E -> None (unjudged)."""

    __name__ = "choice"

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, gold in zip(completions, answer):
            target = self._target(gold)
            rewards.append(None if target is None else float(choice_letter(completion) == target))
        return rewards

    @staticmethod
    def _target(gold) -> str | None:
        text = "" if gold is None else str(gold).strip().strip("()").upper()
        return text if len(text) == 1 and text in LETTERS else None

    def gold_problem(self, gold) -> str | None:
        """Why a gold answer cannot be judged (checked before training), or None."""
        if self._target(gold) is None:
            return f"gold answer {gold!r} is not an option letter A-E (reward choice)"
        return None


def exact_match_reward(prompts, completions, answer, **_) -> list[float | None]:
    """1.0 if the completion equals the answer after stripping surrounding whitespace."""
    return [None if gold is None else float(c.strip() == str(gold).strip()) for c, gold in zip(completions, answer)]


class RewardModel:
    """``rm:PATH``: ``AutoModelForSequenceClassification`` (one logit) on ``prompt + completion``."""

    def __init__(self, path: str, *, device=None, trust_remote_code: bool = False, batch_size: int = 8):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=trust_remote_code, use_safetensors=True
        )
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # finds each row's last token
        self.model.eval().requires_grad_(False).to(device or "cpu")
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts, completions, **_) -> list[float]:
        texts = [p + c for p, c in zip(prompts, completions)]
        scores: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size], padding=True, truncation=True, return_tensors="pt"
            ).to(self.model.device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores


# ============================================================================ building


def _load_user_function(spec: str, where: str) -> Callable:
    """``pkg.mod:fn`` (importable) or ``path/to/file.py:fn`` (loaded from that file only)."""
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise ConfigError(f"{where}: file not found: {path}")
            name = f"grouptune_user_reward_{path.stem}_{abs(hash(str(path.resolve())))}"
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module  # dataclasses and pickle look the module up by name
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import {target!r}: {type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
            hint = difflib.get_close_matches(part, names, n=3)
            raise ConfigError(
                f"{where}: {target!r} has no attribute {part!r}"
                + (f"; did you mean {', '.join(hint)}?" if hint else f"; callables: {', '.join(names[:20])}")
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where}: {spec!r} is not callable")
    return obj


def _make_function(spec: str, cfg: RewardConfig, where: str, **rm_kwargs) -> Callable:
    builtins = {
        "math": lambda: MathReward(cfg.math_timeout),
        "gsm8k": lambda: GSM8KReward(cfg.gsm8k_mode),
        "exact_match": lambda: exact_match_reward,
        "qwen_math": lambda: QwenMathReward(cfg.math_timeout),
        "choice": lambda: ChoiceReward(),
    }
    if spec in builtins:
        return builtins[spec]()
    if spec.startswith("rm:"):
        try:
            return RewardModel(spec[3:], **rm_kwargs)
        except Exception as exc:
            raise ConfigError(f"{where}: cannot load reward model {spec[3:]!r}: {exc}") from exc
    if ":" in spec:
        return _load_user_function(spec, where)
    raise unknown_reward(spec, where)


BUILTIN_REWARDS = ("math", "gsm8k", "exact_match", "qwen_math", "choice")


def unknown_reward(spec: str, where: str) -> ConfigError:
    """The error for a reward function name that is neither built in nor a path."""
    hint = difflib.get_close_matches(spec, BUILTIN_REWARDS, n=1)
    return ConfigError(
        f"{where}: unknown reward function {spec!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; valid: {', '.join(BUILTIN_REWARDS)}, rm:PATH, pkg.mod:fn or file.py:fn"
    )


def _check_reward_config(cfg: RewardConfig) -> list[float]:
    if cfg.on_error not in ON_ERROR_CHOICES:
        raise ConfigError(f"reward.on_error must be one of {ON_ERROR_CHOICES}, got {cfg.on_error!r}")
    if cfg.gsm8k_mode not in GSM8K_MODES:
        raise ConfigError(f"reward.gsm8k_mode must be one of {GSM8K_MODES}, got {cfg.gsm8k_mode!r}")
    if not cfg.math_timeout > 0:
        raise ConfigError(f"reward.math_timeout must be > 0 seconds, got {cfg.math_timeout!r}")
    names = list(cfg.functions)
    if len(set(names)) != len(names):
        raise ConfigError(f"reward.functions lists a function twice: {names}")
    weights = list(cfg.weights) or [1.0] * len(names)
    if len(weights) != len(names):
        raise ConfigError(
            f"reward.weights has {len(weights)} values for {len(names)} reward functions ({', '.join(names)})"
        )
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ConfigError(f"reward.weights[{i}] must be a finite number, got {w!r}")
    if names and not any(weights):
        raise ConfigError("reward.weights are all zero: no reward function counts towards the total")
    return [float(w) for w in weights]


def build_reward_functions(
    cfg: RewardConfig, *, device=None, trust_remote_code: bool = False
) -> list[RewardFunction]:
    """The configured reward functions with their weights; ``ConfigError`` names the bad entry.

    ``device`` and ``trust_remote_code`` apply to reward models (``rm:PATH``) only.
    """
    weights = _check_reward_config(cfg)
    rm_kwargs = {"device": device, "trust_remote_code": trust_remote_code}
    return [
        RewardFunction(name, _make_function(name, cfg, f"reward.functions[{i}]", **rm_kwargs), weight, cfg.timeout)
        for i, (name, weight) in enumerate(zip(cfg.functions, weights))
    ]


# ============================================================================ scoring a batch


def _row_label(i: int, row_ids) -> str:
    return f"row {row_ids[i]} (batch index {i})" if row_ids is not None else f"batch index {i}"


def _find_failing_row(rf: RewardFunction, prompts, completions, columns) -> tuple[int, Exception] | None:
    """Call the function one row at a time to single out a row it raises on (failure path only)."""
    for i in range(len(completions)):
        try:
            run_with_time_limit(lambda i=i: rf.fn(prompts[i : i + 1], completions[i : i + 1],
                                                  **{k: v[i : i + 1] for k, v in columns.items()}), rf.timeout)
        except Exception as exc:
            return i, exc
    return None


def _located_error(rf, exc, prompts, completions, columns, row_ids) -> tuple[RewardError, Exception]:
    """The RewardError for a function that raised on a batch, and the exception to chain."""
    found = _find_failing_row(rf, prompts, completions, columns)
    if found is None:
        where, cause = f"a batch of {len(completions)} rows (no single row fails alone)", exc
    else:
        i, cause = found
        where = f"{_row_label(i, row_ids)}, completion {completions[i][:80]!r}"
    return RewardError(f"reward function {rf.name!r} raised {type(cause).__name__}: {cause} on {where}"), cause


def _as_floats(rf: RewardFunction, out, n: int, row_ids) -> list[float]:
    """The function's output as N floats (NaN for None); RewardError for anything else."""
    if isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
        raise RewardError(f"reward function {rf.name!r} returned {type(out).__name__}, expected a list of {n} floats")
    if len(out) != n:
        raise RewardError(f"reward function {rf.name!r} returned {len(out)} values for {n} completions")
    values = []
    for i, v in enumerate(out):
        if v is None:
            values.append(math.nan)
            continue
        try:
            if isinstance(v, (str, bytes)):
                raise TypeError
            x = float(v)
        except (TypeError, ValueError):
            raise RewardError(
                f"reward function {rf.name!r} returned {v!r} ({type(v).__name__}) for {_row_label(i, row_ids)}"
            ) from None
        if not math.isfinite(x):
            raise RewardError(
                f"reward function {rf.name!r} returned {x} for {_row_label(i, row_ids)}; "
                "return None to mark a completion as unjudged"
            )
        values.append(x)
    return values


def _rows(row_ids, n: int) -> str:
    if row_ids is None:
        return f"a batch of {n} completions"
    rows = list(dict.fromkeys(row_ids))
    listed = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
    return f"a batch of {n} completions of data rows {listed}"


def _score(rf, prompts, completions, columns, row_ids) -> list[float]:
    def call():
        return rf.fn(list(prompts), list(completions), **{k: list(v) for k, v in columns.items()})

    try:
        out = run_with_time_limit(call, rf.timeout)
    except TimeLimitExceeded as exc:
        raise RewardTimeout(
            f"reward function {rf.name!r} did not return within reward.timeout = {rf.timeout:g} s on "
            f"{_rows(row_ids, len(completions))}; it may hang (raise reward.timeout if it is only slow)"
        ) from (exc.__cause__ or exc)
    except Exception as exc:
        error, cause = _located_error(rf, exc, prompts, completions, columns, row_ids)
        raise error from cause
    return _as_floats(rf, out, len(completions), row_ids)


def _score_rows(rf, prompts, completions, columns, row_ids) -> list[float]:
    """One row at a time after a failure (``on_error="unjudged"``): NaN for the rows that fail."""
    values = []
    for i in range(len(completions)):
        rows = slice(i, i + 1)
        try:
            ids = row_ids[rows] if row_ids is not None else None
            values += _score(rf, prompts[rows], completions[rows], {k: v[rows] for k, v in columns.items()}, ids)
        except RewardError as err:
            if err.__cause__ is None or isinstance(err, RewardTimeout):  # an error even here
                raise
            values.append(math.nan)
    return values


def _check_batch(prompts, completions, columns, row_ids) -> None:
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"compute_rewards: {len(prompts)} prompts for {n} completions")
    if row_ids is not None and len(row_ids) != n:
        raise ValueError(f"compute_rewards: {len(row_ids)} row_ids for {n} completions")
    for key, values in columns.items():
        if key in ("prompts", "completions"):
            raise ValueError(f"compute_rewards: column {key!r} would shadow the argument of the same name")
        if len(values) != n:
            raise ValueError(f"compute_rewards: column {key!r} has {len(values)} values for {n} completions")


def compute_rewards(
    reward_fns: Sequence[RewardFunction],
    prompts: Sequence[str],
    completions: Sequence[str],
    columns: dict[str, Sequence],
    *,
    on_error: str = "raise",
    row_ids: Sequence | None = None,
) -> RewardResult:
    """Score a batch with every function and combine them (rules in the module docstring).

    ``row_ids[i]`` (e.g. the data set row of completion ``i``) is used in error messages.
    """
    if not reward_fns:
        raise ValueError("compute_rewards: no reward functions")
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    _check_batch(prompts, completions, columns, row_ids)
    n = len(completions)
    per_function: dict[str, torch.Tensor] = {}
    failures: dict[str, str] = {}
    for rf in reward_fns:
        try:
            values = _score(rf, prompts, completions, columns, row_ids)
        except RewardError as err:
            if on_error == "raise" or err.__cause__ is None or isinstance(err, RewardTimeout):
                raise  # no cause: it returned something invalid; a timeout is no judgement either
            values = _score_rows(rf, prompts, completions, columns, row_ids)
            bad = sum(math.isnan(v) for v in values)
            logger.warning("%s; %d of %d rows count as unjudged", err, bad, n, exc_info=err)
            failures[rf.name] = str(err)
        per_function[rf.name] = torch.tensor(values, dtype=torch.float32)  # (N,)
    total = torch.zeros(n, dtype=torch.float32)
    for rf in reward_fns:
        if rf.weight != 0:
            total = total + rf.weight * per_function[rf.name]  # NaN (unjudged) propagates
    return RewardResult(total=total, per_function=per_function, failures=failures)

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
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from grouptune.config import ConfigError, RewardConfig
from grouptune.time_limits import TimeLimitExceeded, run_with_time_limit
from grouptune.verifiers import (  # noqa: F401  (the built-ins are part of this module's interface)
    ChoiceReward,
    GSM8KReward,
    MathReward,
    QwenMathReward,
    RewardModel,
    exact_match_reward,
)

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "unjudged")
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
    cfg: RewardConfig, *, device=None, trust_remote_code: bool = False, setting: str = "reward.functions"
) -> list[RewardFunction]:
    """The configured reward functions with their weights; ``ConfigError`` names the bad entry.

    ``device`` and ``trust_remote_code`` apply to reward models (``rm:PATH``) only.
    """
    weights = _check_reward_config(cfg)
    rm_kwargs = {"device": device, "trust_remote_code": trust_remote_code}
    return [
        RewardFunction(name, _make_function(name, cfg, f"{setting}[{i}]", **rm_kwargs), weight, cfg.timeout)
        for i, (name, weight) in enumerate(zip(cfg.functions, weights))
    ]


def build_eval_functions(cfg: RewardConfig, **kwargs) -> list[RewardFunction]:
    """The held-out evaluation's functions: ``reward.eval_functions``, or the training ones."""
    if not cfg.eval_functions:
        return build_reward_functions(cfg, **kwargs)
    only = replace(cfg, functions=list(cfg.eval_functions), weights=[])
    return build_reward_functions(only, setting="reward.eval_functions", **kwargs)


def score_name(spec: str) -> str:
    """A reward function's short name in metric keys: ``rm`` for ``rm:PATH``, else the part after ``:``."""
    return "rm" if spec.startswith("rm:") else spec.rpartition(":")[2]


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

"""Metric arithmetic: the statistics of a rollout batch, and evaluation's greedy accuracy,
avg@k and unbiased pass@k, plus a Markdown table.

Pure functions of tensors and correctness flags; generating and judging the samples is the
trainer's and the evaluator's job.

- greedy: fraction of problems whose greedy (temperature 0) answer is correct.
- avg@k: mean accuracy of one sample, averaged over problems (the papers' "mean accuracy
  over k samples"). With ``n >= k`` samples per problem we average all ``n`` of them: that
  is an unbiased estimate of the same quantity with less variance.
- pass@k: probability that at least one of ``k`` samples is correct, estimated without bias
  from ``n >= k`` samples of which ``c`` are correct (Chen et al. 2021, "Evaluating Large
  Language Models Trained on Code", eq. 1): ``1 - C(n-c, k) / C(n, k)``.

Accuracies are fractions in [0, 1]; ``format_table`` shows them as percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from grouptune.advantages import group_has_spread


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` (the Codex paper's numerically stable
    form): binomials of a few hundred samples overflow floats, the product does not.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every choice of k samples contains a correct one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def summarize_eval(
    correct: list[list[bool]], greedy_correct: list[bool] | None, k: int, pass_at: tuple[int, ...] | list = ()
) -> dict:
    """Summarise one data set: ``{"n_problems", "greedy", "avg@k", "pass@k"}`` (keys spelled with k).

    ``correct[p]`` holds the flags of the sampled answers to problem ``p`` (at least ``k`` of
    them; problems may have different counts). ``greedy_correct[p]`` is the flag of its greedy
    answer; pass None when greedy decoding was not run and the key is left out. ``pass_at``:
    more ``j`` (each in 1..k) whose ``pass@j`` is reported too, from the same samples (a curve
    of pass@k over k, as the GFT paper's Figure 4).
    """
    if not correct:
        raise ValueError("summarize_eval needs at least one problem")
    bad = [j for j in pass_at if not (isinstance(j, int) and 1 <= j <= k)]
    if bad:
        raise ValueError(f"pass_at: each k must be an integer in 1..{k} (the samples per problem), got {bad}")
    too_few = [p for p, flags in enumerate(correct) if len(flags) < k]
    if too_few:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem; problems {too_few[:10]} have fewer")
    summary: dict = {"n_problems": len(correct)}
    if greedy_correct is not None:
        if len(greedy_correct) != len(correct):
            raise ValueError(
                f"greedy_correct has {len(greedy_correct)} entries for {len(correct)} problems"
            )
        summary["greedy"] = sum(map(bool, greedy_correct)) / len(greedy_correct)
    summary[f"avg@{k}"] = sum(sum(map(bool, f)) / len(f) for f in correct) / len(correct)
    for j in sorted({*pass_at, k}):
        summary[f"pass@{j}"] = sum(pass_at_k(len(f), sum(map(bool, f)), j) for f in correct) / len(correct)
    return summary


def _is_accuracy(key: str) -> bool:
    return key == "greedy" or key.startswith(("avg@", "pass@"))


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if _is_accuracy(key):
        return f"{100.0 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(results: dict[str, dict]) -> str:
    """A Markdown table, one row per data set, one column per metric (accuracies in percent).

    Columns are the union of the metrics in first-seen order; a data set without a metric
    shows ``-``.
    """
    columns: list[str] = []
    for metrics in results.values():
        columns += [key for key in metrics if key not in columns]
    header = ["dataset"] + [f"{c} (%)" if _is_accuracy(c) else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for name, metrics in results.items():
        cells = [name] + [_cell(c, metrics.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rollout_metrics(
    rewards: torch.Tensor,
    on_policy: torch.Tensor,
    lengths: torch.Tensor,
    truncated: torch.Tensor,
    group_size: int,
    adv: torch.Tensor | None,
    reward_parts: dict[str, torch.Tensor],
) -> dict[str, float]:
    """What the rollout batch looked like (all (N,) over every process's rows).

    ``reward/*`` and ``completions/*`` describe the on-policy members (all members for methods
    without rollouts); ``groups/zero_spread_frac`` counts the groups that carry no signal;
    ``adv/*`` compares off- and on-policy members' advantages (GFT).
    """
    ok = ~torch.isnan(rewards)
    on = on_policy.bool()
    out = {
        "reward/mean": nanmean(rewards[on]) if on.any() else nanmean(rewards),
        "reward/std": _nanstd(rewards[on & ok]),
        "reward/unjudged_frac": float((~ok).float().mean()),
        "groups/zero_spread_frac": float((~group_has_spread(rewards, group_size)).float().mean()),
        "completions/mean_length": float(lengths[on].mean()) if on.any() else float(lengths.mean()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(truncated[on].mean()) if on.any() else 0.0,
    }
    for name, values in reward_parts.items():
        out[f"reward/{name}/mean"], out[f"reward/{name}/std"] = nanmean(values), _nanstd(values)
    if adv is not None and (~on).any() and on.any():
        out["adv/off_policy_mean"], out["adv/on_policy_mean"] = float(adv[~on].mean()), float(adv[on].mean())
    return out


def nanmean(t: torch.Tensor) -> float:
    """The mean over the non-NaN entries (NaN = unjudged); NaN if there are none."""
    t = t.float()
    ok = ~torch.isnan(t)
    return float(t[ok].mean()) if ok.any() else float("nan")


def _nanstd(t: torch.Tensor) -> float:
    """Unbiased std of the non-NaN values; 0 for fewer than two."""
    t = t[~torch.isnan(t)]
    return float(t.std()) if len(t) > 1 else 0.0


@dataclass
class EngineMismatch:
    """How the rollout engine's sampling log-probs differ from the trainer's, on one micro-batch."""

    weights: torch.Tensor | None  # (N, T) truncated importance weights, None = not asked for
    metrics: dict[str, float]


def engine_mismatch(
    old_logp: torch.Tensor, engine_logp: torch.Tensor | None, mask: torch.Tensor, cap: float
) -> EngineMismatch:
    """The trainer's log-probs of the sampling policy (``old_logp``) against the rollout engine's
    (vLLM computes them with other kernels, possibly another precision).

    With ``delta = old_logp - engine_logp`` on the sampled tokens: ``rollout/engine_logp_abs_diff``
    is ``mean |delta|`` and ``rollout/engine_kl`` the k3 estimate of KL(engine || trainer),
    ``mean(exp(delta) - delta - 1)`` (samples come from the engine). With ``cap > 0``, truncated
    importance sampling (verl's TIS, TRL's ``vllm_importance_sampling_correction``): each sampled
    token's loss is weighted by ``min(exp(delta), cap)``, detached; data-set members weigh 1.
    """
    if engine_logp is None:
        return EngineMismatch(None, {})
    engine_logp = engine_logp.to(old_logp.device)
    sampled = mask.bool() & ~torch.isnan(engine_logp)  # (N, T)
    delta = torch.where(sampled, old_logp.detach().float() - engine_logp, 0.0)  # log(pi_train / pi_engine)
    n = sampled.sum().clamp(min=1)
    metrics = {}
    if sampled.any():
        metrics["rollout/engine_logp_abs_diff"] = float(delta.abs().sum() / n)
        metrics["rollout/engine_kl"] = float((delta.exp() - delta - 1.0).sum() / n)
    weights = None
    if cap > 0:
        weights = torch.where(sampled, delta.exp().clamp(max=cap), 1.0)  # (N, T)
        if sampled.any():
            metrics["rollout/is_weight_mean"] = float(weights[sampled].mean())
            metrics["rollout/is_capped_frac"] = float((delta.exp() > cap)[sampled].float().mean())
    return EngineMismatch(weights, metrics)

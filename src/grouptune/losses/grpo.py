"""The GRPO family: GRPO, DAPO, Dr. GRPO, BNPO aggregation and GSPO's sequence-level ratio."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from grouptune.losses.aggregation import aggregate, masked_float

__all__ = ["LOSS_TYPES", "IMPORTANCE_SAMPLING_LEVELS", "grpo_loss"]

IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
Count = float | Tensor | None


def _agg_grpo(loss_t: Tensor, mask: Tensor, n_tok: Count, n_seq: Count, max_len: int | None) -> Tensor:
    # mean per sequence, then over the sequences of the optimizer step
    return aggregate(loss_t, mask, mode="sequence", normalizer=n_seq)


def _agg_dapo(loss_t: Tensor, mask: Tensor, n_tok: Count, n_seq: Count, max_len: int | None) -> Tensor:
    return aggregate(loss_t, mask, mode="token", normalizer=n_tok)  # sum / tokens of the optimizer step


def _agg_dr_grpo(loss_t: Tensor, mask: Tensor, n_tok: Count, n_seq: Count, max_len: int | None) -> Tensor:
    if max_len is None:
        raise ValueError(
            "loss_type 'dr_grpo' needs max_completion_length (it divides by N * max_completion_length)"
        )
    n = mask.shape[0] if n_seq is None else n_seq
    return aggregate(loss_t, mask, mode="constant", normalizer=n * max_len)


def _agg_bnpo(loss_t: Tensor, mask: Tensor, n_tok: Count, n_seq: Count, max_len: int | None) -> Tensor:
    local = aggregate(loss_t, mask, mode="token")  # token mean of this micro-batch only
    return local if n_seq is None else local * (mask.shape[0] / n_seq)  # TRL: / grad-accum steps


LOSS_TYPES: dict[str, Callable[..., Tensor]] = {
    "grpo": _agg_grpo,
    "dapo": _agg_dapo,
    "dr_grpo": _agg_dr_grpo,
    "bnpo": _agg_bnpo,
}


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    mask: Tensor,
    advantages: Tensor,
    *,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "dapo",
    importance_sampling_level: str = "token",
    max_completion_length: int | None = None,
    token_normalizer: float | Tensor | None = None,
    sequence_normalizer: float | Tensor | None = None,
    token_weights: Tensor | None = None,
    dual_clip: float | None = None,
    log_ratio_clip: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped policy-gradient loss of GRPO (arXiv 2402.03300) and its variants::

        ratio  = exp(logp - old_logp)                       token level
               = exp(mean_t (logp - old_logp))              sequence level (GSPO, arXiv 2507.18071)
        loss_t = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * KL_t
        KL_t   = exp(ref - logp) - (ref - logp) - 1         (k3 estimator, always per token)

    ``loss_type`` only changes the aggregation (see :func:`aggregate` for the length bias):

    ========  ==========================================  =================================
    type      loss                                        normaliser it uses (None = local)
    ========  ==========================================  =================================
    grpo      mean over sequences of per-sequence means   ``sequence_normalizer`` (N)
    dapo      sum / tokens (DAPO, arXiv 2503.14476)       ``token_normalizer`` (mask.sum())
    dr_grpo   sum / (N * max_completion_length)           ``sequence_normalizer`` (N)
              (Dr. GRPO, arXiv 2503.20783)
    bnpo      token mean of this call only, times         ``sequence_normalizer`` (N)
              N / sequence_normalizer
    ========  ==========================================  =================================

    Two switches of verl's ``compute_policy_loss_vanilla`` (``verl/trainer/ppo/core_algos.py``),
    both off by default (TRL has neither):

    - ``dual_clip = c`` (verl's ``clip_ratio_c``, dual-clip PPO, arXiv 1912.09729; must be > 1): for
      ``A < 0``, ``loss_t = min(loss_t, -A * c)``, applied before the KL term is added; a
      ratio far above ``1 + eps_high`` then cannot make the loss of a bad token unbounded.
    - ``log_ratio_clip = b``: ``logp - old_logp`` is clamped to ``[-b, b]`` before ``exp``
      (verl and Trinity-RFT use 20); outside that range the ratio gets no gradient.

    With the counts of the whole optimizer step passed in, the micro-batch losses add up to
    TRL's loss of the step (TRL divides ``grpo``/``dr_grpo``/``bnpo`` by the number of
    accumulation steps, which equals ``sequence_normalizer / N`` for equal micro-batches).

    Args:
        logprobs: (N, T) log-probs of the response tokens under the current policy.
        old_logprobs: (N, T) under the policy that sampled them; None = ``logprobs.detach()``.
        mask: (N, T) 1 on response tokens.
        advantages: (N,) (or (N, T)) advantages; no gradient flows into them.
        ref_logprobs: (N, T) under the reference model; needed when ``beta != 0``.
        token_weights: (N, T) detached weights of the clipped term (truncated importance
            sampling against a rollout engine: ``min(exp(old_logp - engine_logp), C)``, applied
            before the KL term is added, as TRL does); None = 1.

    Metrics: ``loss``; ``clip_ratio/low`` (ratio < 1 - eps_low with A < 0), ``clip_ratio/high``
    (ratio > 1 + eps_high with A > 0), ``clip_ratio/region`` (either) -- fractions of tokens,
    or of sequences at sequence level, as TRL logs them; with ``dual_clip``,
    ``clip_ratio/dual`` (A < 0 and the dual bound ``-A * c`` replaced the loss; verl's
    ``pg_clipfrac_lower``); ``kl`` (token mean of ``KL_t``) when
    ``ref_logprobs`` is given. Numerically equal to TRL's ``GRPOTrainer._compute_loss``
    (``tests/test_trl_parity.py``).
    """
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"unknown importance_sampling_level {importance_sampling_level!r}; valid: token, sequence"
        )
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} needs ref_logprobs for the KL term")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be greater than 1 (verl's clip_ratio_c), got {dual_clip}")
    logp = masked_float(logprobs, mask)  # (N, T)
    old_logp = logp.detach() if old_logprobs is None else masked_float(old_logprobs, mask).detach()
    adv = advantages.detach().float()
    adv = adv.unsqueeze(-1) if adv.dim() == 1 else adv  # (N, 1) or (N, T)

    log_ratio = logp - old_logp  # (N, T)
    if importance_sampling_level == "sequence":
        m = mask.float()
        log_ratio = (log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)  # (N, 1)
    if log_ratio_clip is not None:
        log_ratio = log_ratio.clamp(-log_ratio_clip, log_ratio_clip)
    ratio = log_ratio.exp()
    clipped = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
    loss_t = -torch.min(ratio * adv, clipped * adv)  # (N, T) or (N, 1)
    dual = None
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual = (adv < 0) & (loss_t > bound)
        loss_t = torch.where(adv < 0, torch.minimum(loss_t, bound), loss_t)
    if token_weights is not None:  # after the dual clip, as verl applies its rollout weights
        loss_t = loss_t * token_weights.detach().float()  # (N, T)
    kl = None
    if ref_logprobs is not None:
        ref_logp = masked_float(ref_logprobs, mask).detach()
        kl = (ref_logp - logp).exp() - (ref_logp - logp) - 1.0  # (N, T)
        loss_t = loss_t + beta * kl if beta != 0.0 else loss_t
    loss = LOSS_TYPES[loss_type](loss_t, mask, token_normalizer, sequence_normalizer, max_completion_length)
    metrics = _metrics(loss, ratio, adv, mask, kl, epsilon_low, epsilon_high, importance_sampling_level, dual)
    return loss, metrics


@torch.no_grad()
def _metrics(loss, ratio, adv, mask, kl, eps_low, eps_high, level, dual=None) -> dict[str, float]:
    low = (ratio < 1.0 - eps_low) & (adv < 0)
    high = (ratio > 1.0 + eps_high) & (adv > 0)
    mode = "token" if level == "token" else "sequence"  # sequence level: fraction of sequences
    stats = {"loss": loss.detach()}
    for name, flag in (("clip_ratio/low", low), ("clip_ratio/high", high), ("clip_ratio/region", low | high)):
        stats[name] = aggregate(flag.float().expand_as(mask), mask, mode=mode)
    if dual is not None:
        stats["clip_ratio/dual"] = aggregate(dual.float().expand_as(mask), mask, mode=mode)
    if kl is not None:
        stats["kl"] = aggregate(kl, mask, mode="token")
    return dict(zip(stats, torch.stack(list(stats.values())).tolist()))

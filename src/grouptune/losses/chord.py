"""CHORD: GRPO on rollouts plus a scheduled SFT loss on a separate stream of expert demonstrations."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from grouptune.losses.aggregation import aggregate, masked_float
from grouptune.losses.grpo import grpo_loss

__all__ = ["chord_loss", "chord_mu"]


def chord_mu(step: int, warmup: int, decay: int, peak: float, valley: float) -> float:
    """CHORD's ``mu`` at optimizer step ``step`` (1-based): a linear warm-up from 0 to ``peak``
    over ``warmup`` steps, then a cosine decay to ``valley`` over ``decay`` steps, then ``valley``::

        step < warmup:              peak * step / warmup
        step >= warmup + decay:     valley
        otherwise:                  valley + (peak - valley) * (1 + cos(pi * (step - warmup) / decay)) / 2

    With ``warmup = decay = 0``, ``mu`` is the valley at every step. The same function as
    Trinity-RFT's ``mu_schedule_function`` (``tests/losses/test_official_parity.py``).
    """
    if step < warmup:
        return step / warmup * peak
    if step >= warmup + decay:
        return valley
    return (peak - valley) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay)) + valley


def chord_loss(
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    mask: Tensor,
    advantages: Tensor,
    expert_logprobs: Tensor,
    expert_mask: Tensor,
    *,
    mu: float,
    phi: bool,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    dual_clip: float | None = 3.0,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
    token_normalizer: float | Tensor | None = None,
    sequence_normalizer: float | Tensor | None = None,
    expert_token_normalizer: float | Tensor | None = None,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """CHORD (arXiv 2508.11408), ``L = (1 - mu) * L_rl + mu * L_sft``::

        L_rl  = grpo_loss(rollouts; clip 0.2, dual clip c = 3, token mean, log-ratio clamped to ±20)
        L_sft = sum_{e,t} m_e * (-w_t * logp_t) / expert_token_normalizer      (expert rows only)
        w_t   = sg(p_t * (1 - p_t))   CHORD-phi                 w_t = 1   CHORD-mu

    The rollouts' advantages come from their own group (no demonstration in it). The expert
    rows are demonstrations of other prompts, a stream of their own. ``phi`` weighs down
    tokens the policy already knows (``p ~ 1``) and tokens far from it (``p ~ 0``); ``mu`` comes
    from :func:`chord_mu` at the optimizer step.

    Args:
        logprobs, old_logprobs, mask, advantages: of the rollouts, as :func:`grpo_loss`.
        expert_logprobs: (E, T') log-probs of the expert demonstrations' tokens (untempered).
        expert_mask: (E, T') 1 on their tokens.
        mu: the weight of the SFT part; phi: the ``p (1 - p)`` weighting (CHORD-phi).
        expert_token_normalizer: expert tokens of the optimizer step; None = ``expert_mask.sum()``.

    The other arguments (``epsilon_low``, ``epsilon_high``, ``dual_clip``, ``loss_type``,
    ``max_completion_length``, ``token_normalizer``, ``sequence_normalizer``, ``token_weights``)
    are the GRPO part's, as :func:`grpo_loss`.

    Metrics: ``loss``; ``mu``; ``rl_loss`` and ``sft_loss`` (before the ``mu`` weighting); the
    GRPO part's clip fractions (``clip_ratio/...``, with ``clip_ratio/dual``); ``phi_mean``
    (mean ``w_t`` over expert tokens, CHORD-phi).

    Versus the official code (modelscope/Trinity-RFT, ``trinity/algorithm/policy_loss_fn/
    chord_policy_loss.py``, ``MIXCHORDPolicyLossFn`` with ``PPOPolicyLossFn`` and ``SFTPhiLossFn`` /
    ``SFTLossFn``): the same per-token losses and ``mu``; there each part is a token mean per
    micro-batch rescaled by its share of rows, here a token mean over the optimizer step of
    each stream (checked on one micro-batch in ``tests/losses/test_official_parity.py``).
    """
    rl_loss, rl_stats = grpo_loss(
        logprobs, old_logprobs, mask, advantages, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
        loss_type=loss_type, max_completion_length=max_completion_length, token_normalizer=token_normalizer,
        sequence_normalizer=sequence_normalizer, dual_clip=dual_clip, log_ratio_clip=20.0,
        token_weights=token_weights,
    )  # fmt: skip
    e_logp = masked_float(expert_logprobs, expert_mask)
    p = e_logp.detach().exp()
    weight = p * (1.0 - p) if phi else torch.ones_like(p)
    sft_loss = aggregate(-weight * e_logp, expert_mask, mode="token", normalizer=expert_token_normalizer)
    loss = (1.0 - mu) * rl_loss + mu * sft_loss
    stats = {"loss": loss.detach(), "rl_loss": rl_loss.detach(), "sft_loss": sft_loss.detach()}
    if phi:
        stats["phi_mean"] = aggregate(weight, expert_mask, mode="token")
    metrics = dict(zip(stats, torch.stack(list(stats.values())).tolist()))
    metrics.update({k: v for k, v in rl_stats.items() if k.startswith("clip_ratio/")}, mu=float(mu))
    return loss, metrics

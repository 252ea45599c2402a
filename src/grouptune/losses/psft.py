"""PSFT: Proximal SFT -- the demonstration trained with PPO's clipped ratio and advantage 1."""

from __future__ import annotations

import torch
from torch import Tensor

from grouptune.losses.grpo import grpo_loss

__all__ = ["psft_loss"]


def psft_loss(
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    mask: Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    token_normalizer: float | Tensor | None = None,
    sequence_normalizer: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PSFT (Proximal SFT, arXiv 2508.17784): a trust region on SFT::

        rho_t  = exp(clamp(logp_t - old_logp_t, -20, 20))
        loss_t = -min(rho_t, clip(rho_t, 1 - eps_low, 1 + eps_high))       (A = 1 on every token)

    i.e. :func:`grpo_loss` with every advantage 1, no KL, and ``loss_type`` ``grpo`` by default
    (token mean per demonstration, then the mean over demonstrations). ``old_logp`` is the
    policy that started the rollout batch; with several optimizer steps per batch a token whose
    ratio passed ``1 + eps_high`` stops pulling (its gradient is 0), so the policy cannot run
    away from where the batch started. In the first step the ratio is 1 and the gradient is
    SFT's ``-grad logp``.

    Args:
        logprobs: (N, T) log-probs of the demonstration tokens under the current policy.
        old_logprobs: (N, T) under the policy that started the batch; None = ``logprobs.detach()``.
        mask: (N, T) 1 on demonstration tokens.
        epsilon_low, epsilon_high: the official 0.2 / 0.28.
        loss_type, max_completion_length, token_normalizer, sequence_normalizer: as
            :func:`grpo_loss`.

    Metrics: those of :func:`grpo_loss` (``clip_ratio/high``: fraction of tokens whose ratio
    passed ``1 + eps_high``; ``clip_ratio/low`` is always 0 since ``A > 0``).

    Versus the official code (zwhong714/PSFT, verl recipe ``psft``): advantages are 1 on every
    response token (``compute_advantage``, ``AdvantageEstimator.PSFT``), the loss is verl's
    ``compute_policy_loss_vanilla`` with ``clip_ratio_low 0.2``, ``clip_ratio_high 0.28`` (its
    ``clip_ratio_c = 10`` dual clip never acts with ``A > 0``), the same ±20 clamp; checked in
    ``tests/losses/test_official_parity.py``. The official run takes a token mean per
    micro-batch of one sequence, which is the ``grpo`` aggregation here.
    """
    ones = torch.ones(logprobs.shape[0], dtype=torch.float32, device=logprobs.device)
    return grpo_loss(
        logprobs, old_logprobs, mask, ones, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
        loss_type=loss_type, max_completion_length=max_completion_length, token_normalizer=token_normalizer,
        sequence_normalizer=sequence_normalizer, log_ratio_clip=20.0,
    )  # fmt: skip

"""LUFFY: off-policy demonstrations in the group, with policy shaping on their tokens."""

from __future__ import annotations

import torch
from torch import Tensor

from grouptune.losses.aggregation import aggregate, masked_float

__all__ = ["luffy_loss"]


def luffy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    mask: Tensor,
    advantages: Tensor,
    on_policy: Tensor,
    *,
    normalizer: float | Tensor,
    shaping: float = 0.1,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.001,
    token_normalizer: float | Tensor | None = None,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """LUFFY (arXiv 2504.14945) with its released settings::

        on-policy rows:   loss_t = -A_i * rho_t,       rho_t = exp(logp_t - old_logp_t)   (no clip)
        off-policy rows:  loss_t = -A_i * f(p_t),      f(p) = p / (p + shaping)          (grad through p)
        loss = sum_{i,t} m * loss_t / normalizer  -  entropy_coef * sum_{i,t} m * H_t / token_normalizer

    ``A_i = R_i - mean_g(R)`` over the whole group, demonstration included, without a std
    (``adv_scale: none``). The policy shaping ``f`` replaces the importance ratio of the
    demonstration (whose behaviour policy is unknown): its gradient ``0.1 / (p + 0.1)^2 * grad p``
    weighs unlikely tokens up. ``normalizer`` is a constant (the official run: the padded
    response width 8192 times 8 GPUs), so the loss is a sum that does not depend on the lengths
    in the batch. The entropy bonus ``H_t`` (full-vocabulary entropy, with its gradient) is a
    token mean over every response token, demonstrations included.

    Args:
        logprobs: (N, T) current policy, at the sampling temperature.
        old_logprobs: (N, T) sampling policy; None = ``logprobs.detach()`` (ratio 1).
        mask: (N, T) 1 on response tokens.
        advantages: (N,) group advantages (no gradient).
        on_policy: (N,) bool, False for the demonstration.
        normalizer: the constant the summed token losses are divided by (per process).
        entropy: (N, T) per-token entropy with its gradient; None = no bonus.
        token_normalizer: tokens of the optimizer step for the entropy mean; None = ``mask.sum()``.
        token_weights: (N, T) detached weights of the policy-gradient term (truncated importance
            sampling against a rollout engine; 1 on the demonstration); None = 1.

    Metrics: ``loss``; ``pg_loss`` (the policy-gradient part); ``off_policy_prob`` (mean ``p`` on
    demonstration tokens) and ``off_ratio_mean`` (mean ``f(p)`` there), both left out without a
    demonstration in the call; ``entropy_bonus`` (the token-mean entropy the bonus uses).

    Versus the official code (ElliottYan/LUFFY, ``luffy/verl/verl/mix_src/mix_core_alg.py``,
    ``compute_token_on_off_policy_loss`` with ``off_policy_reshape="p_div_p_0.1"``,
    ``loss_remove_clip=True``, ``loss_remove_token_mean=True`` as in ``exp_scripts/train.sh``): the
    same per-token loss and sum, checked in ``tests/losses/test_official_parity.py``; there the sum
    is divided by the padded width of each micro-batch and averaged over GPUs, here by one
    constant for the optimizer step.
    """
    logp = masked_float(logprobs, mask)  # (N, T)
    old_logp = logp.detach() if old_logprobs is None else masked_float(old_logprobs, mask).detach()
    adv = advantages.detach().float().view(-1, 1)  # (N, 1)
    off = (~on_policy.bool()).to(logp.device).view(-1, 1)  # (N, 1)
    p = logp.exp()
    shaped = p / (p + shaping)
    ratio = (logp - old_logp).exp()
    loss_t = -adv * torch.where(off, shaped, ratio)
    if token_weights is not None:
        loss_t = loss_t * token_weights.detach().float()
    pg_loss = aggregate(loss_t, mask, mode="constant", normalizer=normalizer)
    loss = pg_loss
    stats = {"pg_loss": pg_loss.detach()}
    if entropy is not None:
        mean_entropy = aggregate(masked_float(entropy, mask), mask, mode="token", normalizer=token_normalizer)
        loss = loss - entropy_coef * mean_entropy
        stats["entropy_bonus"] = aggregate(masked_float(entropy, mask).detach(), mask, mode="token")
    stats["loss"] = loss.detach()
    off_mask = mask.float() * off
    if off_mask.sum() > 0:
        stats["off_policy_prob"] = aggregate(p.detach(), off_mask, mode="token")
        stats["off_ratio_mean"] = aggregate(shaped.detach(), off_mask, mode="token")
    return loss, dict(zip(stats, torch.stack(list(stats.values())).tolist()))

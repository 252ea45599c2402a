"""GFT: Group Fine-Tuning (arXiv 2604.14258)."""

from __future__ import annotations

import torch
from torch import Tensor

from grouptune.losses.aggregation import aggregate, masked_float

__all__ = ["gft_loss"]


def gft_loss(
    logprobs: Tensor,
    mask: Tensor,
    advantages: Tensor,
    *,
    tau: float = 0.5,
    token_normalizer: float | Tensor | None = None,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GFT with Dynamic Coefficient Rectification, token mean::

        loss = sum_{i,t} m * (-A_i * sg(w_t) * logp_t) / token_normalizer
        w_t  = 1    if p_t > tau
               p_t  otherwise                     (p_t = exp(logp_t), untempered)

    Read as a policy gradient on ``p``: the coefficient of ``grad p_t`` is ``A_i * w_t / p_t``,
    i.e. SFT's inverse-probability weight ``1/p_t`` on confident tokens (at most ``1/tau``)
    and exactly 1 (DFT's weight) on unlikely ones, where ``1/p`` would explode. ``tau = 1``
    is DFT weighted by ``A``, ``tau = 0`` is SFT weighted by ``A``. ``A`` comes from
    :func:`grouptune.advantages.group_advantages` over hybrid groups (demonstrations, teacher
    responses and rollouts, all scored by the verifier); no ratio, clipping or KL.

    Args:
        logprobs: (N, T) log-probs of the response tokens under the current policy.
        mask: (N, T) 1 on response tokens.
        advantages: (N,) (or (N, T)) group advantages; no gradient flows into them.
        tau: rectification threshold (official: 0.1 for the 1.5B model, 0.5 for 7B).
        token_normalizer: response tokens of the whole optimizer step; None = ``mask.sum()``.
        token_weights: (N, T) detached per-token weights (truncated importance sampling against
            a rollout engine's log-probs); None = 1.

    Metrics: ``loss``; ``rectified_frac`` (fraction of this call's tokens with ``p_t <= tau``,
    whose weight was replaced by ``p_t``); ``weight_mean`` (mean ``w_t``).

    Versus the official code (a verl fork, not vendored here): the same per-token loss; the
    token mean runs over the whole optimizer step when the trainer passes ``token_normalizer``.
    """
    logp = masked_float(logprobs, mask)  # (N, T)
    adv = advantages.detach().float()
    adv = adv.unsqueeze(-1) if adv.dim() == 1 else adv  # (N, 1) or (N, T)
    p = logp.detach().exp()
    rectified = p <= tau
    weight = torch.where(rectified, p, 1.0)  # sg(w_t)
    if token_weights is not None:
        weight = weight * token_weights.detach().float()
    loss = aggregate(-adv * weight * logp, mask, mode="token", normalizer=token_normalizer)
    stats = [
        loss.detach(),
        aggregate(rectified.float(), mask, mode="token"),
        aggregate(weight, mask, mode="token"),
    ]
    loss_f, rectified_f, weight_f = torch.stack(stats).tolist()
    return loss, {"loss": loss_f, "rectified_frac": rectified_f, "weight_mean": weight_f}

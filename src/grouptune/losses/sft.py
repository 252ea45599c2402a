"""Imitation losses: SFT (negative log-likelihood) and DFT (probability-weighted NLL)."""

from __future__ import annotations

import torch
from torch import Tensor

from grouptune.losses.aggregation import aggregate, masked_float

__all__ = ["sft_loss", "dft_loss"]


def sft_loss(
    logprobs: Tensor, mask: Tensor, *, token_normalizer: float | Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """SFT: ``loss = sum_{i,t} m * (-logp_{i,t}) / token_normalizer``.

    Args:
        logprobs: (N, T) log-probs of the demonstration tokens under the policy.
        mask: (N, T) 1 on response tokens.
        token_normalizer: tokens of the whole optimizer step; None = ``mask.sum()``.

    Metrics: ``loss``.
    SFT(mix) is the same loss over expert demonstrations and teacher responses.
    """
    logp = masked_float(logprobs, mask)  # (N, T)
    loss = aggregate(-logp, mask, mode="token", normalizer=token_normalizer)
    return loss, {"loss": loss.item()}


def dft_loss(
    logprobs: Tensor, mask: Tensor, *, token_normalizer: float | Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """DFT, Dynamic Fine-Tuning (arXiv 2508.05629): ``loss_t = -sg(p_t) * logp_t``, token mean.

    ``p_t = exp(logp_t)``, ``sg`` = stop-gradient: the gradient is ``-grad p_t`` instead of SFT's
    ``-grad p_t / p_t``, i.e. SFT without the inverse-probability weight. Same aggregation as
    TRL's ``SFTTrainer(loss_type="dft")`` (sum over tokens / number of tokens), checked against
    it in ``tests/test_trl_parity.py``.

    Metrics: ``loss``; ``weight_mean`` (mean ``p_t`` over the tokens of this call).
    """
    logp = masked_float(logprobs, mask)  # (N, T)
    weight = logp.detach().exp()  # sg(p_t)
    loss = aggregate(-weight * logp, mask, mode="token", normalizer=token_normalizer)
    weight_mean = aggregate(weight, mask, mode="token")
    loss_f, weight_f = torch.stack([loss.detach(), weight_mean]).tolist()
    return loss, {"loss": loss_f, "weight_mean": weight_f}

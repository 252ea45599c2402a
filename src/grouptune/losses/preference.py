"""Offline ancestors of GIFT: DPO (pairwise) and UNA (score form)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from grouptune.losses.aggregation import aggregate

__all__ = ["dpo_loss", "una_loss"]


def _mean(per_row: Tensor, normalizer: float | Tensor | None) -> Tensor:
    """Mean over rows (P,), or sum / ``normalizer`` (rows of the whole optimizer step)."""
    return aggregate(per_row.view(-1, 1), None, mode="sequence", normalizer=normalizer)


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    sequence_normalizer: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """DPO (arXiv 2305.18290), sigmoid loss, mean over pairs::

        loss = mean_pairs -log sigmoid(beta * ((lc - rc) - (lr - rr)))

    All inputs are (P,) log-probs summed over each response's tokens (policy: ``lc``, ``lr``;
    reference: ``rc``, ``rr``, no gradient). ``sequence_normalizer``: pairs of the whole
    optimizer step (None = P). Same value as TRL's ``DPOTrainer`` with ``loss_type="sigmoid"``
    (``tests/test_trl_parity.py``).

    Metrics: ``loss``; ``reward_chosen`` / ``reward_rejected`` (mean ``beta * (l - r)``),
    ``reward_margin`` (their mean difference), ``reward_accuracy`` (fraction of pairs whose
    chosen implicit reward is higher).
    """
    chosen = beta * (chosen_logps.float() - ref_chosen_logps.float().detach())  # (P,)
    rejected = beta * (rejected_logps.float() - ref_rejected_logps.float().detach())  # (P,)
    loss = _mean(-F.logsigmoid(chosen - rejected), sequence_normalizer)
    c, r = chosen.detach(), rejected.detach()
    stats = torch.stack([loss.detach(), c.mean(), r.mean(), (c - r).mean(), (c > r).float().mean()]).tolist()
    return loss, dict(
        zip(("loss", "reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy"), stats)
    )


def una_loss(
    logps: Tensor,
    ref_logps: Tensor,
    scores: Tensor | Sequence[float],
    *,
    beta: float = 0.1,
    sequence_normalizer: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """UNA, score form (arXiv 2408.15339), mean over responses::

        loss = mean_i (sigmoid(beta * (logp_i - ref_logp_i)) - s_i)^2

    ``logps``/``ref_logps``: (N,) log-probs summed over each response's tokens; ``scores``:
    (N,) labels or scores in [0, 1] (1 = desirable). ``sequence_normalizer``: responses of the
    whole optimizer step (None = N). GIFT replaces the sigmoid squashing and the absolute
    score by group normalisation of both rewards.

    Metrics: ``loss``; ``implicit_reward_mean`` (mean ``beta * (logp - ref_logp)``);
    ``score_mean``.
    """
    s = torch.as_tensor(scores, dtype=torch.float32, device=logps.device)  # (N,)
    implicit = beta * (logps.float() - ref_logps.float().detach())  # (N,)
    loss = _mean((torch.sigmoid(implicit) - s).square(), sequence_normalizer)
    stats = torch.stack([loss.detach(), implicit.detach().mean(), s.mean()]).tolist()
    return loss, dict(zip(("loss", "implicit_reward_mean", "score_mean"), stats))

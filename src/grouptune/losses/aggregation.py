"""How per-token losses become one number: the single aggregation helper of grouptune."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MODES", "aggregate", "masked_float"]

MODES = ("token", "sequence", "constant")


def aggregate(
    values: Tensor, mask: Tensor | None, *, mode: str, normalizer: float | Tensor | None = None
) -> Tensor:
    """Reduce per-token ``values`` (N, T) over the tokens where ``mask`` (N, T) is 1, in float32.

    - ``token``:    ``sum_{i,t} m*v / normalizer``; default ``mask.sum()`` (token mean).
    - ``sequence``: ``sum_i (sum_t m*v / sum_t m) / normalizer``; default ``N`` (mean of the
      per-sequence means).
    - ``constant``: ``sum_{i,t} m*v / normalizer``; the normalizer is required (e.g.
      ``N * max_completion_length``).

    **Length bias.** With ``sequence`` every response weighs the same, so each token of a long
    response weighs less than a token of a short one: a long wrong answer is penalised less per
    token than a short one (the bias Dr. GRPO, arXiv 2503.20783, points out in GRPO). ``token``
    weighs every token the same, so long responses weigh more in total (DAPO's choice, arXiv
    2503.14476). ``constant`` divides by a number that does not depend on the batch's lengths,
    so neither the per-token nor the per-response weight moves with the lengths in the batch.

    **Micro-batches.** Pass the count of the whole optimizer step (global token count for
    ``token``, global number of sequences for ``sequence``) and the losses of the micro-batches
    add up to the loss of the full batch; the default normalises by this call only.

    Normalisers are counts and are clamped to at least 1, so an all-masked call gives 0, not
    NaN. ``values`` must be finite where the mask is 0 (the losses zero their padded inputs),
    and may be (N, 1) to broadcast one value per sequence over its tokens. ``mask=None`` counts
    every entry: ``aggregate(per_seq.view(-1, 1), None, mode="sequence")`` is the mean of
    per-sequence losses (GIFT, DPO, UNA).
    """
    if mode not in MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; valid: {', '.join(MODES)}")
    m = torch.ones_like(values, dtype=torch.float32) if mask is None else mask.to(torch.float32)
    masked = values.float() * m  # (N, T)
    if mode == "sequence":
        per_seq = masked.sum(-1) / m.sum(-1).clamp(min=1.0)  # (N,)
        default = per_seq.numel()
        total = per_seq.sum()
    else:
        if mode == "constant" and normalizer is None:
            raise ValueError(
                "aggregation mode 'constant' needs a normalizer (e.g. N * max_completion_length)"
            )
        default = m.sum()
        total = masked.sum()
    denom = default if normalizer is None else normalizer
    return total / torch.as_tensor(denom, dtype=torch.float32, device=total.device).clamp(min=1.0)


def masked_float(x: Tensor, mask: Tensor) -> Tensor:
    """float32 version of ``x`` (N, T) with the positions where ``mask`` is 0 set to 0.

    Every loss starts with this: padding may hold anything (``-inf``, NaN, bf16 values) and must
    reach neither the loss nor the gradient (``torch.where`` sends zero gradient there).
    """
    return torch.where(mask.bool(), x.float(), 0.0)

"""ASFT: Anchored SFT -- DFT plus a full-vocabulary KL to the frozen reference at every demo token.

The KL needs the reference's whole next-token distribution at each position, not just the
log-prob of the demonstrated token. ``vocab_kl`` computes it from the two models' logits in row
chunks (float32 per chunk only) with a custom backward, the way :mod:`grouptune.logprobs` does
the log-probs: neither model's logits are ever copied to float32 ``[N, T, V]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from grouptune.logprobs import CHUNK_ELEMENTS
from grouptune.losses.aggregation import aggregate, masked_float

__all__ = ["asft_loss", "vocab_kl"]


def _paired_rows(
    a: Tensor, b: Tensor, chunk: int, offset: int = 0
) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """``(start, stop, a_rows, b_rows)``: the same consecutive rows of ``a`` and ``b`` (..., V), as
    2-D views. Tensors that cannot be viewed as (rows, V) without a copy (``logits[:, :-1]``) are
    walked one leading index at a time; ``start``/``stop`` count rows in row-major order."""
    V = a.shape[-1]
    try:
        fa, fb = a.view(-1, V), b.view(-1, V)
    except RuntimeError:
        per = a[0].numel() // V if a.shape[0] else 0
        for i in range(a.shape[0]):
            yield from _paired_rows(a[i], b[i], chunk, offset + i * per)
        return
    for s in range(0, fa.shape[0], chunk):
        stop = min(s + chunk, fa.shape[0])
        yield offset + s, offset + stop, fa[s:stop], fb[s:stop]


class _VocabKL(torch.autograd.Function):
    """(logits, ref_logits) (..., V) -> KL(softmax(ref) || softmax(logits)) per row, (R,) float32.

    Saves both inputs (no copies); backward recomputes each chunk's two softmaxes:
    ``d KL / d logits = softmax(logits) - softmax(ref_logits)``. No gradient for the reference.
    """

    @staticmethod
    def forward(ctx, logits, ref_logits, chunk_size):
        rows = logits.numel() // logits.shape[-1]
        kl = torch.empty(rows, dtype=torch.float32, device=logits.device)
        for start, stop, x, r in _paired_rows(logits, ref_logits, chunk_size):
            log_q = torch.log_softmax(r, dim=-1, dtype=torch.float32)  # (c, V)
            q = log_q.exp()
            terms = log_q.sub_(torch.log_softmax(x, dim=-1, dtype=torch.float32)).mul_(q)  # q (log q - log p)
            kl[start:stop] = terms.masked_fill_(q == 0, 0.0).sum(-1)  # 0 log 0 = 0, as F.kl_div
        ctx.save_for_backward(logits, ref_logits)
        ctx.chunk_size = chunk_size
        return kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_kl):
        logits, ref_logits = ctx.saved_tensors
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_rows = grad.view(-1, logits.shape[-1])
        for start, stop, x, r in _paired_rows(logits, ref_logits, ctx.chunk_size):
            g = torch.softmax(x, dim=-1, dtype=torch.float32).sub_(
                torch.softmax(r, dim=-1, dtype=torch.float32)
            )
            grad_rows[start:stop] = g.mul_(grad_kl[start:stop, None])
        return grad, None, None


def vocab_kl(logits: Tensor, ref_logits: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Per-position ``KL(pi_ref || pi_theta) = sum_v q_v (log q_v - log p_v)`` over the vocabulary.

    ``p = softmax(logits)``, ``q = softmax(ref_logits)``; the same number as
    ``F.kl_div(F.log_softmax(logits), F.softmax(ref_logits), reduction="none").sum(-1)``
    (ASFT's ``train_v2.py``), without its float32 ``[..., V]`` copies.

    Args:
        logits: (..., V) policy logits, any floating dtype (each chunk is upcast to float32).
        ref_logits: (..., V) reference logits, same shape; treated as a constant.
        chunk_size: rows per float32 chunk; None = about 24 MiB of float32 per buffer.

    Returns:
        (...) float32, differentiable with respect to ``logits`` (not twice).
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} differ in shape"
        )
    if logits.dim() < 2:
        raise ValueError("logits must have a vocabulary dimension and at least one leading dimension")
    rows = max(1, CHUNK_ELEMENTS // logits.shape[-1]) if chunk_size is None else int(chunk_size)
    return _VocabKL.apply(logits, ref_logits.detach(), rows).view(logits.shape[:-1])


def asft_loss(
    logprobs: Tensor,
    mask: Tensor,
    kl: Tensor,
    *,
    kl_coef: float = 0.1,
    token_normalizer: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """ASFT (Anchored SFT, arXiv 2509.23753), token mean over the demonstration tokens::

        loss = sum_{i,t} m * (-sg(p_t) * logp_t + lambda * KL_t) / token_normalizer
        KL_t = KL(pi_ref(.|ctx_t) || pi_theta(.|ctx_t))       full vocabulary (``vocab_kl``)

    DFT's probability-weighted NLL (``dft_loss``) anchored to the reference by a forward KL at
    every position; its gradient on the policy logits is ``lambda * (softmax(policy) -
    softmax(ref))``. ``lambda = 0.1`` (the official default ``kl_weight``).

    Args:
        logprobs: (N, T) log-probs of the demonstration tokens under the policy (untempered).
        mask: (N, T) 1 on demonstration tokens.
        kl: (N, T) per-position KL from :func:`vocab_kl`, with its gradient.
        token_normalizer: tokens of the whole optimizer step; None = ``mask.sum()``.

    Metrics: ``loss``; ``kl`` (token mean of ``KL_t``); ``weight_mean`` (mean ``p_t``).

    Versus the official code (zhuchichi56/ASFT ``train_v2.py``, ``EnhancedTrainer.compute_loss``
    with ``mode="asft"``): the same per-token loss, checked on random logits in
    ``tests/losses/test_official_parity.py``; the reference there is the frozen initial model or,
    with LoRA, the base model with the adapter disabled, as here. The official code takes the
    token mean per micro-batch (``loss_normalizer: micro_batch``), grouptune over the step.
    """
    logp = masked_float(logprobs, mask)  # (N, T)
    kl = masked_float(kl, mask)
    weight = logp.detach().exp()  # sg(p_t)
    loss = aggregate(-weight * logp + kl_coef * kl, mask, mode="token", normalizer=token_normalizer)
    stats = torch.stack(
        [loss.detach(), aggregate(kl.detach(), mask, mode="token"), aggregate(weight, mask, mode="token")]
    )
    return loss, dict(zip(("loss", "kl", "weight_mean"), stats.tolist()))

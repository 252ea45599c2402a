"""Per-token log-probabilities and entropies from logits, without a float32 copy of the logits.

The naive equivalent, which holds a float32 copy of the logits (B, T, V) and, for backward,
its full log-softmax as well::

    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)   # (B, T, V) float32
    logp = logp_all.gather(-1, index.unsqueeze(-1)).squeeze(-1)         # (B, T)
    entropy = -(logp_all.exp() * logp_all).sum(-1)                      # (B, T)

Here the rows are processed in chunks of ``chunk_size`` (float32 per chunk only) by a custom
autograd function that saves just the input logits (no copy) and one float32 log-normaliser
per row; the backward pass recomputes the softmax chunk by chunk. Peak extra memory is a few
``chunk_size x V`` float32 buffers (plus, in backward, the gradient of the logits, which any
method must produce). ``benchmarks/bench_logprobs.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["logprobs_and_entropy", "selective_log_softmax"]

DEFAULT_CHUNK_SIZE = 64  # rows; 64 x 151,936 x 4 bytes = 39 MB per float32 buffer


def _row_blocks(x: Tensor, chunk_size: int) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, block)``: consecutive rows of ``x`` (..., V) flattened, as 2-D views.

    A sliced tensor such as ``logits[:, :-1]`` cannot be viewed as (rows, V) without a copy, so
    then the leading dimension is walked one index at a time (each is a view).
    """
    if x.dim() == 1:
        raise ValueError("logits must have a vocabulary dimension and at least one leading dimension")
    try:
        flat = x.view(-1, x.shape[-1])
    except RuntimeError:
        rows_per_item = x[0].numel() // x.shape[-1] if x.shape[0] else 0
        for i in range(x.shape[0]):
            for start, stop, block in _row_blocks(x[i], chunk_size):
                yield i * rows_per_item + start, i * rows_per_item + stop, block
        return
    for start in range(0, flat.shape[0], chunk_size):
        yield start, min(start + chunk_size, flat.shape[0]), flat[start : start + chunk_size]


class _LogProbEntropy(torch.autograd.Function):
    """(logits (..., V), index (...)) -> (logp (R,), entropy (R,)) float32, R = rows."""

    @staticmethod
    def forward(ctx, logits, index, temperature, chunk_size, with_entropy):
        rows = index.numel()
        idx = index.reshape(-1, 1).long()  # (R, 1)
        logp = torch.empty(rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp) if with_entropy else torch.empty(0, device=logits.device)
        for start, stop, block in _row_blocks(logits, chunk_size):
            x = block.float()  # (c, V) float32; new buffers only, the input is never modified
            x = x / temperature if temperature != 1.0 else x
            lse[start:stop] = torch.logsumexp(x, dim=-1)
            logp[start:stop] = x.gather(-1, idx[start:stop]).squeeze(-1) - lse[start:stop]
            if with_entropy:
                logp_all = x - lse[start:stop, None]  # (c, V) log-softmax
                entropy[start:stop] = -(logp_all.exp() * logp_all).sum(-1)
        ctx.save_for_backward(logits, idx, lse, entropy)
        ctx.temperature, ctx.chunk_size, ctx.with_entropy = temperature, chunk_size, with_entropy
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp, grad_entropy):
        logits, idx, lse, entropy = ctx.saved_tensors
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None, None
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_rows = grad.view(-1, logits.shape[-1])  # (R, V), contiguous
        for start, stop, block in _row_blocks(logits, ctx.chunk_size):
            x = block.float()
            x = x / ctx.temperature if ctx.temperature != 1.0 else x
            logp_all = x - lse[start:stop, None]  # (c, V), a new buffer we may modify in place
            p = logp_all.exp()
            # d logp_i / dx = onehot_i - p ;  d H / dx = -p * (logp_all + H)
            coef = torch.zeros_like(lse[start:stop]) if grad_logp is None else grad_logp[start:stop]
            if grad_entropy is not None:
                g_h = grad_entropy[start:stop, None]
                g_x = logp_all.add_(entropy[start:stop, None]).mul_(g_h).add_(coef[:, None]).mul_(p).neg_()
            else:
                g_x = p.mul_(-coef[:, None])
            g_x.scatter_add_(-1, idx[start:stop], coef[:, None])
            grad_rows[start:stop] = g_x.div_(ctx.temperature) if ctx.temperature != 1.0 else g_x
        return grad, None, None, None, None


def logprobs_and_entropy(
    logits: Tensor,
    index: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of ``index`` and the entropy of each row of ``logits / temperature``, one pass.

    Args:
        logits: (..., V) finite values, any floating dtype (bf16 is fine: each chunk is upcast
            to float32).
        index: (...) token ids, valid for every row (mask padding afterwards, don't use -100).
        temperature: divides the logits (the input tensor is not modified).
        with_entropy: False skips the entropy and returns None for it.
        chunk_size: rows per float32 chunk; lower = less memory, more Python overhead.

    Returns:
        ``(logp, entropy)``, each (...) float32; differentiable with respect to ``logits``
        (the entropy too, so it can serve as a bonus). Not twice differentiable.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if logits.shape[:-1] != index.shape:
        raise ValueError(
            f"index shape {tuple(index.shape)} must equal logits shape without the vocabulary {tuple(logits.shape[:-1])}"
        )
    logp, entropy = _LogProbEntropy.apply(logits, index, float(temperature), int(chunk_size), with_entropy)
    return logp.view(index.shape), entropy.view(index.shape) if with_entropy else None


def selective_log_softmax(
    logits: Tensor, index: Tensor, *, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Tensor:
    """(...) float32 ``log_softmax(logits / temperature)`` gathered at ``index``; see the module docstring."""
    return logprobs_and_entropy(
        logits, index, temperature=temperature, with_entropy=False, chunk_size=chunk_size
    )[0]

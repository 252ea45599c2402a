"""Per-token log-probabilities and entropies from logits, without a float32 copy of the logits.

The naive equivalent, which holds a float32 copy of the logits (B, T, V) and, for backward,
its full log-softmax as well::

    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)   # (B, T, V) float32
    logp = logp_all.gather(-1, index.unsqueeze(-1)).squeeze(-1)         # (B, T)
    entropy = -(logp_all.exp() * logp_all).sum(-1)                      # (B, T)

Here the rows are processed in chunks of ``chunk_size`` (float32 per chunk only) by a custom
autograd function that saves just the input logits (no copy), the index and the entropy; the
backward pass recomputes the softmax chunk by chunk. Peak extra memory is a few
``chunk_size x V`` float32 buffers (plus, in backward, the gradient of the logits, which any
method must produce). ``benchmarks/bench_logprobs.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["logprobs_and_entropy", "selective_log_softmax"]

# Default chunk: about 24 MiB of float32 per buffer (41 rows at vocabulary 151,936). Measured on
# CPU: larger chunks exceed glibc's 32 MiB mmap ceiling, so every chunk's buffers are fresh pages
# (page faults cost as much as the softmax); much smaller ones multiply per-op overhead.
CHUNK_ELEMENTS = 6 * 2**20


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


def _softmax_f32(block: Tensor, temperature: float, *, log: bool) -> Tensor:
    """(c, V) float32 (log-)softmax of ``block / temperature``, a new buffer.

    The fused kernels upcast internally (``dtype=``); with a temperature the division happens
    on a float32 copy, never on ``block`` (which may be the caller's float32 tensor).
    """
    fn = torch.log_softmax if log else torch.softmax
    if temperature == 1.0:
        return fn(block, dim=-1, dtype=torch.float32)
    return fn(block.to(torch.float32, copy=True).div_(temperature), dim=-1)


class _LogProbEntropy(torch.autograd.Function):
    """(logits (..., V), index (...)) -> (logp (R,), entropy (R,)) float32, R = rows.

    Saves the logits (no copy), the index and the entropy; backward recomputes each chunk's
    softmax instead of keeping a (R, V) float32 log-softmax alive between the passes.
    """

    @staticmethod
    def forward(ctx, logits, index, temperature, chunk_size, with_entropy):
        idx = index.reshape(-1, 1).long()  # (R, 1)
        logp = torch.empty(idx.shape[0], dtype=torch.float32, device=logits.device)
        entropy = torch.empty_like(logp) if with_entropy else torch.empty(0, device=logits.device)
        for start, stop, block in _row_blocks(logits, chunk_size):
            logp_all = _softmax_f32(block, temperature, log=True)  # (c, V)
            logp[start:stop] = logp_all.gather(-1, idx[start:stop]).squeeze(-1)
            if with_entropy:
                entropy[start:stop] = -logp_all.exp().mul_(logp_all).sum(-1)
        ctx.save_for_backward(logits, idx, entropy)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp, grad_entropy):
        logits, idx, entropy = ctx.saved_tensors
        if grad_logp is None and grad_entropy is None:
            return None, None, None, None, None
        temperature = ctx.temperature
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_rows = grad.view(-1, logits.shape[-1])  # (R, V), contiguous
        for start, stop, block in _row_blocks(logits, ctx.chunk_size):
            g_logp = (
                torch.zeros(stop - start, 1, device=grad.device)
                if grad_logp is None
                else grad_logp[start:stop, None]
            )
            # x = logits / temperature:  d logp_i / dx = onehot_i - p ;  d H / dx = -p * (log p + H)
            if grad_entropy is None:
                g_x = _softmax_f32(block, temperature, log=False).mul_(-g_logp)  # (c, V)
            else:
                logp_all = _softmax_f32(block, temperature, log=True)
                p = logp_all.exp()
                g_x = logp_all.add_(entropy[start:stop, None]).mul_(grad_entropy[start:stop, None])
                g_x = g_x.add_(g_logp).mul_(p).neg_()
            g_x.scatter_add_(-1, idx[start:stop], g_logp)
            grad_rows[start:stop] = g_x.div_(temperature) if temperature != 1.0 else g_x
        return grad, None, None, None, None


def logprobs_and_entropy(
    logits: Tensor,
    index: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of ``index`` and the entropy of each row of ``logits / temperature``, one pass.

    Args:
        logits: (..., V) finite values, any floating dtype (bf16 is fine: each chunk is upcast
            to float32).
        index: (...) token ids, valid for every row (mask padding afterwards, don't use -100).
        temperature: divides the logits (the input tensor is not modified).
        with_entropy: False skips the entropy and returns None for it.
        chunk_size: rows per float32 chunk; None = about 24 MiB of float32 per chunk.

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
    rows = max(1, CHUNK_ELEMENTS // logits.shape[-1]) if chunk_size is None else int(chunk_size)
    logp, entropy = _LogProbEntropy.apply(logits, index, float(temperature), rows, with_entropy)
    return logp.view(index.shape), entropy.view(index.shape) if with_entropy else None


def selective_log_softmax(
    logits: Tensor, index: Tensor, *, temperature: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """(...) float32 ``log_softmax(logits / temperature)`` gathered at ``index``; see the module docstring."""
    return logprobs_and_entropy(
        logits, index, temperature=temperature, with_entropy=False, chunk_size=chunk_size
    )[0]

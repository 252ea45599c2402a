"""GIFT: Group-relative Implicit Fine-Tuning (arXiv 2510.23868)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from grouptune.advantages import group_advantages, group_reward_std, reward_tensor
from grouptune.losses.aggregation import aggregate, masked_float

__all__ = ["gift_loss"]


def gift_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    rewards: Tensor | Sequence[float | None],
    group_size: int,
    *,
    beta: float = 1.0,
    eps: float = 1e-6,
    std_floor: float = 0.0,
    sequence_normalizer: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GIFT: match group-normalised implicit and explicit rewards, mean over sequences::

        k_i  = sum_t m * (logp - ref_logp)                          implicit reward (not length-normalised)
        a_i  = (R_i - mean_g R) / (std_g R + eps)                   no grad; unjudged R -> a_i = 0
        z_i  = (k_i - sg(mean_g k)) / (max(sg(std_g k), std_floor) + eps)
        loss = sum_i (a_i - beta * z_i)^2 / sequence_normalizer

    Stds are unbiased; ``a`` is :func:`group_advantages` with its defaults. The gradient flows
    through ``k_i`` only, the group statistics of ``k`` are detached. Unjudged members stay in
    the statistics of ``k`` and in the loss with target ``a_i = 0``.

    Known degeneracy (kept on purpose, ``std_floor = 0``): when all ``k`` of a group are equal
    (every first step with the ``old`` reference), ``z = 0`` but its gradient is scaled by
    ``1/eps``; after grad-norm clipping the step is a normalised REINFORCE step with weights
    ``a_i``. ``std_floor > 0`` bounds that scale by ``1/std_floor``.

    Args:
        logprobs, ref_logprobs: (N, T) log-probs of the response tokens under the policy and the
            reference (``old`` sampling policy or the ``initial`` model); ref gets no gradient.
        mask: (N, T) 1 on response tokens.
        rewards: (N,) explicit rewards, group-contiguous; ``None``/NaN = unjudged.
        group_size: ``G >= 2``; ``N`` must be a multiple of it.
        sequence_normalizer: sequences of the whole optimizer step; None = ``N`` (this call).

    Metrics: ``loss``; ``mse`` (mean squared error of this call); ``implicit_reward_mean``
    (mean ``k``); ``implicit_reward_std`` (mean over groups of ``std_g k``);
    ``k_degenerate_frac`` (fraction of groups whose ``k`` are all equal); and, over groups where
    both ``R`` and ``k`` have spread (left out when there is none): ``corr_a_k`` (mean Pearson
    correlation of ``a`` and ``k``) and ``beta_x_median`` (median, the lower middle value for an
    even count, of ``std_g R / std_g k``: the per-prompt ``beta(x)`` of the optimum
    ``pi ∝ pi_ref * exp(R / beta(x))``).

    Versus the official code (the author's verl pull request; docs/methods.md#gift): same loss and
    default degeneracy; ``std_floor`` and ``sequence_normalizer`` are additions.
    """
    n, n_rewards = logprobs.shape[0], reward_tensor(rewards).numel()
    if n_rewards != n:
        raise ValueError(f"got {n_rewards} rewards for {n} responses")
    logp = masked_float(logprobs, mask)  # (N, T)
    ref_logp = masked_float(ref_logprobs, mask).detach()
    k = ((logp - ref_logp) * mask.float()).sum(-1)  # (N,)
    a = group_advantages(rewards, group_size, eps=eps).to(device=k.device, dtype=torch.float32)  # (N,)

    k_g = k.view(-1, group_size)  # (B, G)
    k_mean = k_g.detach().mean(-1, keepdim=True)
    k_std = k_g.detach().std(-1, keepdim=True)  # unbiased
    z = (k_g - k_mean) / (k_std.clamp(min=std_floor) + eps)  # (B, G)
    sq_err = (a.view(-1, group_size) - beta * z).square()  # (B, G)
    loss = aggregate(sq_err.view(-1, 1), None, mode="sequence", normalizer=sequence_normalizer)
    return loss, _metrics(loss, sq_err, k_g, a.view(-1, group_size), rewards, group_size)


@torch.no_grad()
def _metrics(
    loss: Tensor, sq_err: Tensor, k: Tensor, a: Tensor, rewards, group_size: int
) -> dict[str, float]:
    k = k.detach()  # (B, G)
    k_std = k.std(-1)  # (B,)
    r_std = group_reward_std(rewards, group_size).to(k.device, torch.float32)  # (B,)
    degenerate = (k.amax(-1) == k.amin(-1)).float()
    stats = {
        "loss": loss.detach(),
        "mse": sq_err.detach().mean(),
        "implicit_reward_mean": k.mean(),
        "implicit_reward_std": k_std.mean(),
        "k_degenerate_frac": degenerate.mean(),
    }
    both = (r_std > 0) & (degenerate == 0)  # groups with spread in R and in k
    if both.any():
        a_c, k_c = a[both] - a[both].mean(-1, keepdim=True), k[both] - k[both].mean(-1, keepdim=True)
        corr = (a_c * k_c).sum(-1) / (a_c.square().sum(-1) * k_c.square().sum(-1)).sqrt()
        stats["corr_a_k"] = corr.mean()
        stats["beta_x_median"] = (r_std[both] / k_std[both]).median()
    return dict(zip(stats, torch.stack(list(stats.values())).tolist()))

"""Group-relative advantages (docs/methods.md#group-advantages): ``A_i = (R_i - b_i) / (s + eps)``.

Rewards arrive group-contiguous: rows ``g*G ... g*G+G-1`` are the ``G`` responses to prompt
``g``. A reward that is ``None`` (in a list) or NaN (in a tensor) means the reward function
could not judge the response: it is left out of every statistic and its member gets ``A = 0``.

Baselines and scales are small registered functions, looked up by name (verl's
``core_algos`` style); an unknown name is an error that lists the valid ones::

    baseline        b_i                                            used by
    mean            mean of the group (off-policy members too)     GRPO, GFT, GIFT (default)
    leave_one_out   mean of the other members of the group         RLOO
    on_policy_mean  mean of the group's on-policy members          (an option)

    scale           denominator
    group           unbiased (N-1) std of the group + eps          GRPO (default)
    batch           unbiased std of all judged rewards + eps       TRL's scale_rewards="batch"
    none            1 exactly (no eps)                             Dr. GRPO
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["BASELINES", "SCALES", "check_groups", "group_advantages", "group_has_spread", "group_reward_std", "reward_tensor"]

# Both kinds of function see the rewards as (B, G) with unjudged entries zeroed and `valid`
# (B, G) bool, and return a tensor broadcastable to (B, G). A baseline also gets the on-policy
# mask (B, G) or None; a scale gets `eps` and returns the whole denominator.
Baseline = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]
Scale = Callable[[Tensor, Tensor, float], Tensor]
BASELINES: dict[str, Baseline] = {}
SCALES: dict[str, Scale] = {}


def _register(table: dict, name: str) -> Callable:
    def add(fn: Callable) -> Callable:
        table[name] = fn
        return fn

    return add


def _lookup(table: dict, kind: str, name: str) -> Callable:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def _mean(r: Tensor, valid: Tensor) -> Tensor:
    """Mean over the valid entries of each row of (B, G); 0 for a row without any."""
    return r.sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp(min=1)


def _unbiased_std(r: Tensor, valid: Tensor) -> Tensor:
    """Unbiased std over the valid entries of each row; 0 for a row with fewer than 2."""
    n = valid.sum(-1, keepdim=True)
    sq = torch.where(valid, r - _mean(r, valid), 0.0).square().sum(-1, keepdim=True)
    return (sq / (n - 1).clamp(min=1)).sqrt()


@_register(BASELINES, "mean")
def _baseline_mean(r: Tensor, valid: Tensor, on_policy: Tensor | None) -> Tensor:
    return _mean(r, valid)  # (B, 1)


@_register(BASELINES, "leave_one_out")
def _baseline_leave_one_out(r: Tensor, valid: Tensor, on_policy: Tensor | None) -> Tensor:
    n = valid.sum(-1, keepdim=True)
    others = (r.sum(-1, keepdim=True) - r) / (n - 1).clamp(min=1)  # (B, G)
    return torch.where(n > 1, others, r)  # a lone judged member has nobody to compare with: A = 0


@_register(BASELINES, "on_policy_mean")
def _baseline_on_policy_mean(r: Tensor, valid: Tensor, on_policy: Tensor | None) -> Tensor:
    if on_policy is None:
        raise ValueError("baseline 'on_policy_mean' needs on_policy_mask (True on on-policy members)")
    both = valid & on_policy
    # A group without a judged on-policy member has no baseline: its members get A = 0.
    return torch.where(both.any(-1, keepdim=True), _mean(torch.where(both, r, 0.0), both), r)


@_register(SCALES, "group")
def _scale_group(r: Tensor, valid: Tensor, eps: float) -> Tensor:
    return _unbiased_std(r, valid) + eps  # (B, 1)


@_register(SCALES, "batch")
def _scale_batch(r: Tensor, valid: Tensor, eps: float) -> Tensor:
    return _unbiased_std(r.reshape(1, -1), valid.reshape(1, -1)) + eps  # (1, 1)


@_register(SCALES, "none")
def _scale_none(r: Tensor, valid: Tensor, eps: float) -> Tensor:
    return torch.ones((), dtype=r.dtype, device=r.device)


def reward_tensor(
    rewards: Tensor | Sequence[float | None], device: torch.device | str | None = None
) -> Tensor:
    """Rewards as a 1-D floating tensor with NaN where a reward is ``None`` (unjudged).

    A floating tensor keeps its dtype; a list or an integer tensor becomes float32.
    """
    if isinstance(rewards, Tensor):
        r = rewards.detach()
        r = r if r.is_floating_point() else r.float()
    else:
        r = torch.tensor([float("nan") if v is None else float(v) for v in rewards], dtype=torch.float32)
    if r.dim() != 1:
        raise ValueError(f"rewards must be 1-D (one per response), got shape {tuple(r.shape)}")
    return r if device is None else r.to(device)


def check_groups(n: int, group_size: int) -> None:
    """Refuse a group size below 2 or a batch that is not a whole number of groups."""
    if group_size < 2:
        raise ValueError(
            f"group methods need group_size >= 2 (a lone response has no group baseline), got {group_size}"
        )
    if n % group_size != 0:
        raise ValueError(f"batch of {n} responses is not a whole number of groups of {group_size}")


@torch.no_grad()
def group_advantages(
    rewards: Tensor | Sequence[float | None],
    group_size: int,
    *,
    baseline: str = "mean",
    scale: str = "group",
    eps: float = 1e-6,
    on_policy_mask: Tensor | Sequence[bool] | None = None,
) -> Tensor:
    """Group-relative advantages ``A_i = (R_i - b_i) / (s + eps)``, one per response, no grad.

    Args:
        rewards: (N,) rewards, group-contiguous; ``None``/NaN = unjudged (excluded, ``A = 0``).
        group_size: ``G``, at least 2; ``N`` must be a multiple of it.
        baseline: ``mean`` | ``leave_one_out`` | ``on_policy_mean`` (see the module docstring).
        scale: ``group`` | ``batch`` | ``none``.
        eps: added to the std of the ``group`` and ``batch`` scales.
        on_policy_mask: (N,) True on responses sampled from the current policy; needed by
            ``on_policy_mean``, ignored otherwise.

    Returns:
        (N,) advantages in the rewards' floating dtype (float32 for lists). A group whose judged
        rewards are all equal gets exactly 0 (not rounding noise divided by ``eps``).
    """
    base_fn, scale_fn = _lookup(BASELINES, "baseline", baseline), _lookup(SCALES, "scale", scale)
    r = reward_tensor(rewards)
    check_groups(r.numel(), group_size)
    valid = ~r.isnan()
    on_policy = None
    if on_policy_mask is not None:
        on_policy = torch.as_tensor(on_policy_mask, device=r.device).bool()
        if on_policy.shape != r.shape:
            raise ValueError(f"on_policy_mask has shape {tuple(on_policy.shape)}, rewards {tuple(r.shape)}")
        on_policy = on_policy.view(-1, group_size)
    r, valid = torch.where(valid, r, 0.0).view(-1, group_size), valid.view(-1, group_size)  # (B, G)

    adv = (r - base_fn(r, valid, on_policy)) / scale_fn(r, valid, eps)
    informative = valid & _has_spread(r, valid)  # judged member of a group with spread
    return torch.where(informative, adv, 0.0).view(-1)  # (N,)


@torch.no_grad()
def group_reward_std(rewards: Tensor | Sequence[float | None], group_size: int) -> Tensor:
    """(N / G,) unbiased std of the judged rewards of each group; exactly 0 for a zero-spread group.

    ``(group_reward_std(r, G) == 0).float().mean()`` is the fraction of zero-spread groups
    (groups that carry no signal for a group-relative method).
    """
    r = reward_tensor(rewards)
    check_groups(r.numel(), group_size)
    valid = ~r.isnan()
    r, valid = torch.where(valid, r, 0.0).view(-1, group_size), valid.view(-1, group_size)
    return torch.where(_has_spread(r, valid), _unbiased_std(r, valid), 0.0).view(-1)


@torch.no_grad()
def group_has_spread(rewards: Tensor | Sequence[float | None], group_size: int) -> Tensor:
    """(N / G,) bool: True where a group's judged rewards are not all equal.

    Only such groups carry a signal for a group-relative method (a flat group's advantages
    are 0); dynamic sampling keeps them and ``groups/zero_spread_frac`` counts the others.
    A "group" of one (SFT's lone demonstration) has no spread.
    """
    r = reward_tensor(rewards)
    valid = ~r.isnan()
    return _has_spread(torch.where(valid, r, 0.0).view(-1, group_size), valid.view(-1, group_size)).view(-1)


def _has_spread(r: Tensor, valid: Tensor) -> Tensor:
    """(B, 1) True where a group's judged rewards are not all equal (compared exactly, not via a std)."""
    lo = torch.where(valid, r, float("inf")).amin(-1, keepdim=True)
    hi = torch.where(valid, r, float("-inf")).amax(-1, keepdim=True)
    return hi > lo

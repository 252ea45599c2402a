"""How a rollout batch is laid out: over processes, optimizer steps and micro-batches, which
data rows it draws, and the seeds of its rollouts.

Every process draws its groups from the same global window of the data stream, laid out
step-major (optimizer step ``s`` of all processes together sees the groups one process sees
in its step ``s``), and every rollout's seed depends on its global position: so a run with N
processes trains on exactly what a run with one process does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from grouptune.config import ConfigError, TrainConfig
from grouptune.methods import Method, group_plan


@dataclass
class Plan:
    """The batch arithmetic of a run, per process, checked once up front."""

    world: int
    groups: int  # groups per rollout batch on this process
    group_size: int  # G
    off_policy: int  # K: data-set members per group
    on_policy: int  # M: rollouts per group
    groups_per_step: int  # groups per optimizer step on this process
    groups_per_micro: int  # groups per forward/backward pass


def make_plan(cfg: TrainConfig, method: Method, world: int) -> Plan:
    r, o = cfg.rollout, cfg.optim
    K, M = group_plan(method, cfg.method, r)
    P = r.prompts_per_batch
    if P < 1 or P % world:
        raise ConfigError(
            f"rollout.prompts_per_batch ({P}) must be a positive multiple of the number of processes ({world})"
        )
    groups = P // world
    if o.steps_per_rollout < 1 or groups % o.steps_per_rollout:
        raise ConfigError(
            f"{groups} groups per process per rollout batch cannot be split into optim.steps_per_rollout "
            f"({o.steps_per_rollout}) equal optimizer steps: make rollout.prompts_per_batch a multiple of "
            f"{o.steps_per_rollout * world}"
        )
    per_step = groups // o.steps_per_rollout
    micro = o.micro_batch_groups or per_step
    if per_step % micro:
        raise ConfigError(
            f"optim.micro_batch_groups ({micro}) must divide the {per_step} groups of an optimizer step per process"
        )
    if o.total_batches < 1:
        raise ConfigError(f"optim.total_batches must be >= 1, got {o.total_batches}")
    return Plan(world, groups, K + M, K, M, per_step, micro)


def seed_for(*parts: int) -> int:
    """A stable 63-bit seed from integers (rollout chunks get distinct, reproducible seeds)."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class DataOrder:
    """Which training row sits at each position of the (endless) data stream: a seeded
    permutation of the rows per epoch."""

    def __init__(self, rows: int, seed: int):
        self.rows, self.seed = rows, seed
        self._epoch, self._perm = -1, []

    def __call__(self, position: int) -> int:
        epoch, i = divmod(position, self.rows)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(seed_for(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.rows, generator=g).tolist()
        return self._perm[i]


def global_groups(n: int, steps: int, world: int, rank: int) -> list[int]:
    """Positions in the global window of process ``rank``'s ``n`` groups, used in ``steps`` optimizer steps.

    The window is laid out step-major: optimizer step ``s`` of all processes together sees the
    groups a single process sees in its step ``s``, so the number of processes does not
    change the training trajectory.
    """
    per = n // steps
    return [(s * world + rank) * per + j for s in range(steps) for j in range(per)]

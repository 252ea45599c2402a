"""The method registry: what each method puts in a group and which loss it calls.

Every method runs through the same loop (``grouptune.trainer``). A method differs from
another only by the entries of its ``Method`` record, looked up by name:

- which members a group holds: the expert demonstration, teacher responses, on-policy
  rollouts (``group_plan``);
- which log-probabilities the loss needs besides the current ones: the sampling policy's
  ("old") or a frozen reference's;
- the loss itself: a thin call into ``grouptune.losses`` with the method's settings.

Adding a method is adding one ``@register`` function here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from grouptune import losses
from grouptune.config import ConfigError, MethodConfig, RolloutConfig


@dataclass
class LossInputs:
    """What a method's loss receives for one micro-batch of whole groups (shapes: N rows, T tokens)."""

    logp: torch.Tensor  # (N, T) current policy, with grad
    mask: torch.Tensor  # (N, T) 1 = the token counts in the loss
    adv: torch.Tensor  # (N,) group advantages (no grad)
    rewards: torch.Tensor  # (N,) explicit rewards, NaN = unjudged
    old_logp: torch.Tensor | None  # (N, T) policy that sampled the batch
    ref_logp: torch.Tensor | None  # (N, T) reference policy
    group_size: int
    max_completion_length: int
    tokens: float  # loss normaliser: response tokens of the optimizer step, per process
    sequences: float  # loss normaliser: sequences of the optimizer step, per process


LossFn = Callable[[LossInputs, MethodConfig], tuple[torch.Tensor, dict]]


@dataclass(frozen=True)
class Method:
    name: str
    loss: LossFn
    off_policy: str  # "none", "demo" or "demo+teacher": which data-set members join each group
    on_policy: bool  # the group holds rollouts of the current policy
    uses_advantages: bool
    tempered: bool  # the loss scores tokens under the sampling temperature (RL methods), else untempered
    needs_old: Callable[[MethodConfig], bool] = lambda m: False
    needs_ref_model: Callable[[MethodConfig], bool] = lambda m: False


METHODS: dict[str, Method] = {}


def register(name: str, **kw) -> Callable[[LossFn], LossFn]:
    def deco(fn: LossFn) -> LossFn:
        METHODS[name] = Method(name=name, loss=fn, **kw)
        return fn

    return deco


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method '{name}'; valid: {', '.join(METHODS)}")
    return METHODS[name]


# ----------------------------------------------------------------------------- imitation


@register("sft", off_policy="demo", on_policy=False, uses_advantages=False, tempered=False)
def _sft(x: LossInputs, m: MethodConfig):
    return losses.sft_loss(x.logp, x.mask, token_normalizer=x.tokens)


@register("sft_mix", off_policy="demo+teacher", on_policy=False, uses_advantages=False, tempered=False)
def _sft_mix(x: LossInputs, m: MethodConfig):
    return losses.sft_loss(x.logp, x.mask, token_normalizer=x.tokens)


@register("dft", off_policy="demo", on_policy=False, uses_advantages=False, tempered=False)
def _dft(x: LossInputs, m: MethodConfig):
    return losses.dft_loss(x.logp, x.mask, token_normalizer=x.tokens)


# ----------------------------------------------------------------------------- GFT


@register("gft", off_policy="demo+teacher", on_policy=True, uses_advantages=True, tempered=False)
def _gft(x: LossInputs, m: MethodConfig):
    return losses.gft_loss(x.logp, x.mask, x.adv, tau=m.tau, token_normalizer=x.tokens)


@register("gft_nomix", off_policy="demo", on_policy=True, uses_advantages=True, tempered=False)
def _gft_nomix(x: LossInputs, m: MethodConfig):
    return losses.gft_loss(x.logp, x.mask, x.adv, tau=m.tau, token_normalizer=x.tokens)


# ----------------------------------------------------------------------------- GRPO family

# Per-method defaults, used where the MethodConfig field is left at its "method default" value.
GRPO_DEFAULTS = {
    "grpo": dict(loss_type="dapo", epsilon_low=0.2, epsilon_high=0.2, level="token"),
    "dapo": dict(loss_type="dapo", epsilon_low=0.2, epsilon_high=0.28, level="token"),
    "gspo": dict(loss_type="grpo", epsilon_low=3e-4, epsilon_high=4e-4, level="sequence"),
}


def grpo_settings(name: str, m: MethodConfig) -> dict:
    """The GRPO-family settings of method ``name`` with the user's overrides applied."""
    d = dict(GRPO_DEFAULTS[name])
    if m.loss_type:
        d["loss_type"] = m.loss_type
    if m.epsilon_low >= 0:
        d["epsilon_low"] = m.epsilon_low
    if m.epsilon_high >= 0:
        d["epsilon_high"] = m.epsilon_high
    return d


def _grpo_family(name: str) -> LossFn:
    def loss(x: LossInputs, m: MethodConfig):
        s = grpo_settings(name, m)
        return losses.grpo_loss(
            x.logp, x.old_logp, x.mask, x.adv,
            ref_logprobs=x.ref_logp, beta=m.kl_beta,
            epsilon_low=s["epsilon_low"], epsilon_high=s["epsilon_high"],
            loss_type=s["loss_type"], importance_sampling_level=s["level"],
            max_completion_length=x.max_completion_length,
            token_normalizer=x.tokens, sequence_normalizer=x.sequences,
        )  # fmt: skip

    return loss


for _name in GRPO_DEFAULTS:
    register(
        _name, off_policy="none", on_policy=True, uses_advantages=True, tempered=True,
        needs_old=lambda m: True, needs_ref_model=lambda m: m.kl_beta > 0,
    )(_grpo_family(_name))  # fmt: skip


# ----------------------------------------------------------------------------- GIFT


@register(
    "gift", off_policy="none", on_policy=True, uses_advantages=False, tempered=True,
    needs_old=lambda m: m.gift_reference == "old",
    needs_ref_model=lambda m: m.gift_reference == "initial",
)  # fmt: skip
def _gift(x: LossInputs, m: MethodConfig):
    return losses.gift_loss(
        x.logp, x.ref_logp, x.mask, x.rewards, x.group_size,
        beta=m.gift_beta, std_floor=m.gift_std_floor, sequence_normalizer=x.sequences,
    )  # fmt: skip


# ----------------------------------------------------------------------------- groups


def group_plan(method: Method, m: MethodConfig, r: RolloutConfig) -> tuple[int, int]:
    """``(K, M)``: off-policy members (demonstration first, then teachers) and rollouts per group."""
    if method.off_policy == "none":
        if r.group_size < 2:
            raise ConfigError(f"rollout.group_size: {method.name} needs groups of at least 2, got {r.group_size}")
        return 0, r.group_size
    if not method.on_policy:
        return (1 if method.off_policy == "demo" else m.num_off_policy), 0
    k = 1 if method.off_policy == "demo" else m.num_off_policy
    if r.group_size <= k:
        raise ConfigError(
            f"rollout.group_size ({r.group_size}) must exceed the off-policy members per group ({k}) "
            f"for {method.name}: raise rollout.group_size or lower method.num_off_policy"
        )
    return k, r.group_size - k


def check_method_config(m: MethodConfig) -> None:
    """Refuse settings that cannot mean anything, naming the setting."""
    get_method(m.name)
    if m.gift_reference not in ("old", "initial"):
        raise ConfigError(f"method.gift_reference: expected old or initial, got '{m.gift_reference}'")
    if m.loss_type and m.loss_type not in ("grpo", "dapo", "dr_grpo", "bnpo"):
        raise ConfigError(f"method.loss_type: expected grpo, dapo, dr_grpo or bnpo, got '{m.loss_type}'")
    if not 0.0 <= m.tau <= 1.0:
        raise ConfigError(f"method.tau must lie in [0, 1], got {m.tau}")
    if m.num_off_policy < 1:
        raise ConfigError(f"method.num_off_policy must be >= 1, got {m.num_off_policy}")


def dynamic_sampling(m: MethodConfig) -> bool:
    """DAPO drops zero-spread groups and draws more prompts; other methods when asked."""
    return m.dynamic_sampling or m.name == "dapo"


def overlong_buffer(m: MethodConfig, r: RolloutConfig) -> int:
    """Length of DAPO's soft over-long penalty ramp (0 = no penalty)."""
    if m.overlong_buffer > 0:
        return m.overlong_buffer
    return r.max_new_tokens // 4 if m.name == "dapo" else 0


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO's soft over-long punishment (arXiv 2503.14476, eq. 13), added to the reward.

    ``0`` up to ``max_len - buffer`` tokens, then a linear ramp down to ``-1`` at ``max_len``.
    """
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    start = max_len - buffer
    return (-(lengths.float() - start) / buffer).clamp(min=-1.0, max=0.0)

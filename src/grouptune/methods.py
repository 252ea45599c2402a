"""The method registry: everything that makes one method differ from another, in one record.

Every method runs through the same loop (``grouptune.trainer``). A method differs from
another only by its ``Method`` record, looked up by name:

- which members a group holds: the expert demonstration, teacher responses, on-policy
  rollouts (``off_policy``, ``on_policy``; see ``group_plan``);
- which log-probabilities the loss needs besides the current ones: the sampling policy's
  ("old") or a frozen reference's, or the reference's whole next-token distribution
  (``needs_ref_kl``, ASFT); whether each optimizer step also sees a stream of expert
  demonstrations of other prompts (``expert_stream``, CHORD);
- its defaults: the ``MethodConfig`` values it runs with where the user left a setting at
  ``None`` (clip range, aggregation, importance-sampling level, dynamic sampling, over-long
  buffer, ...), resolved once when the run starts (``resolve_method``);
- the loss itself: a thin call into ``grouptune.losses`` with the method's settings.

Adding a method is one ``@register`` here (plus its loss in ``grouptune.losses`` and tests).
Variants that share a loss (SFT and SFT(mix), GFT and GFT no-mix, GRPO / DAPO / GSPO, CHORD-mu and
CHORD-phi) register the same function twice with different records. What the trainer hands a loss
(``LossInputs``) is built by ``grouptune.loss_inputs``. The math of each method, with its paper and
the official code it was checked against, is in ``docs/methods.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from grouptune import losses
from grouptune.advantages import SCALES
from grouptune.config import ConfigError, MethodConfig, RolloutConfig, TrainConfig


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
    token_weights: torch.Tensor | None = None  # (N, T) truncated importance weights vs the rollout engine
    entropy: torch.Tensor | None = None  # (N, T) per-token entropy of the policy, with grad
    on_policy: torch.Tensor | None = None  # (N,) bool: sampled from the policy (False: data-set member)
    ref_kl: torch.Tensor | None = None  # (N, T) KL(pi_ref || pi) over the vocabulary, with grad (needs_ref_kl)
    expert_logp: torch.Tensor | None = None  # (E, T') expert demonstrations of the step (expert_stream), with grad
    expert_mask: torch.Tensor | None = None  # (E, T')
    expert_tokens: float = 0.0  # loss normaliser: expert tokens of the optimizer step, per process
    step: int = 1  # the optimizer step being taken, 1-based
    processes: int = 1  # DDP averages gradients over this many processes


LossFn = Callable[[LossInputs, MethodConfig], tuple[torch.Tensor, dict]]
Default = Any  # a value, or a function of the whole TrainConfig (e.g. a length from the rollout settings)

# The value of every method-dependent MethodConfig setting for a method that does not say otherwise.
BASE_DEFAULTS: dict[str, Default] = {
    "loss_type": "dapo",
    "epsilon_low": 0.2,
    "epsilon_high": 0.2,
    "importance_sampling_level": "token",
    "dynamic_sampling": False,
    "overlong_buffer": 0,
    "adv_scale": "group",
    "dual_clip": 0.0,
    "luffy_normalizer": 0.0,
    "chord_mu_warmup": 0,
    "chord_mu_decay": 0,
    "chord_mu_peak": 0.0,
    "chord_mu_valley": 0.0,
}


@dataclass(frozen=True)
class Method:
    name: str
    loss: LossFn
    summary: str  # one line for --help and docs
    off_policy: str  # "none", "demo" or "demo+teacher": which data-set members join each group
    on_policy: bool  # the group holds rollouts of the current policy
    uses_advantages: bool
    tempered: bool  # the loss scores tokens under the sampling temperature (RL methods), else untempered
    per_token: bool = True  # the loss is a sum over tokens (a rollout engine's importance weights apply)
    needs_old: Callable[[MethodConfig], bool] = lambda m: False
    needs_ref_model: Callable[[MethodConfig], bool] = lambda m: False
    defaults: Mapping[str, Default] = field(default_factory=dict)  # over BASE_DEFAULTS
    needs_ref_kl: bool = False  # the loss gets KL(pi_ref || pi) over the vocabulary at every position (ASFT)
    expert_stream: bool = False  # each optimizer step also sees expert demonstrations of other prompts (CHORD)


METHODS: dict[str, Method] = {}


def register(name: str, **record: Any) -> Callable[[LossFn], LossFn]:
    """Register ``fn`` as the loss of method ``name``; ``record`` holds the other ``Method`` fields."""

    def deco(fn: LossFn) -> LossFn:
        unknown = set(record.get("defaults", {})) - set(BASE_DEFAULTS)
        if unknown:
            raise ValueError(f"method {name}: defaults for settings without a base default: {sorted(unknown)}")
        METHODS[name] = Method(name=name, loss=fn, **record)
        return fn

    return deco


def method_names() -> str:
    return ", ".join(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method '{name}'; valid: {method_names()}")
    return METHODS[name]


def resolve_method(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` whose method settings left at ``None`` hold the method's defaults.

    Checked once when a run starts; the resolved config is what ``config.yaml`` records.
    """
    method = get_method(cfg.method.name)
    values = {}
    for key, default in {**BASE_DEFAULTS, **method.defaults}.items():
        if getattr(cfg.method, key) is None:
            values[key] = default(cfg) if callable(default) else default
    resolved = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, **values))
    check_method_config(resolved.method)
    return resolved


# ----------------------------------------------------------------------------- imitation

IMITATION = dict(on_policy=False, uses_advantages=False, tempered=False)


def _sft(x: LossInputs, m: MethodConfig):
    return losses.sft_loss(x.logp, x.mask, token_normalizer=x.tokens)


def _dft(x: LossInputs, m: MethodConfig):
    return losses.dft_loss(x.logp, x.mask, token_normalizer=x.tokens)


register("sft", summary="token-mean -log p of the expert demonstration", off_policy="demo", **IMITATION)(_sft)
register("sft_mix", summary="SFT over the demonstration and teacher responses", off_policy="demo+teacher",
         **IMITATION)(_sft)  # fmt: skip
register("dft", summary="-sg(p) log p on the demonstration", off_policy="demo", **IMITATION)(_dft)


# ----------------------------------------------------------------------------- GFT

HYBRID = dict(on_policy=True, uses_advantages=True, tempered=False)


def _gft(x: LossInputs, m: MethodConfig):
    return losses.gft_loss(x.logp, x.mask, x.adv, tau=m.tau, token_normalizer=x.tokens, token_weights=x.token_weights)


register("gft", summary="demonstration, teacher responses and rollouts in one group; 1/p weight bounded by tau",
         off_policy="demo+teacher", **HYBRID)(_gft)  # fmt: skip
register("gft_nomix", summary="GFT with the demonstration as the only off-policy member", off_policy="demo",
         **HYBRID)(_gft)  # fmt: skip


# ----------------------------------------------------------------------------- GRPO family

RL = dict(off_policy="none", on_policy=True, uses_advantages=True, tempered=True, needs_old=lambda m: True,
          needs_ref_model=lambda m: m.kl_beta > 0)  # fmt: skip


def _grpo(x: LossInputs, m: MethodConfig):
    return losses.grpo_loss(
        x.logp, x.old_logp, x.mask, x.adv,
        ref_logprobs=x.ref_logp, beta=m.kl_beta,
        epsilon_low=m.epsilon_low, epsilon_high=m.epsilon_high,
        loss_type=m.loss_type, importance_sampling_level=m.importance_sampling_level,
        max_completion_length=x.max_completion_length,
        token_normalizer=x.tokens, sequence_normalizer=x.sequences, token_weights=x.token_weights,
        dual_clip=m.dual_clip or None,
    )  # fmt: skip


register("grpo", summary="clipped token ratio times group advantage (+ optional k3 KL)", **RL)(_grpo)
register(
    "dapo", summary="GRPO with clip-higher, dynamic sampling and a soft over-long penalty", **RL,
    defaults=dict(epsilon_high=0.28, dynamic_sampling=True, overlong_buffer=lambda c: c.rollout.max_new_tokens // 4),
)(_grpo)  # fmt: skip
register(
    "gspo", summary="sequence-level ratio with a small clip range", **RL,
    defaults=dict(loss_type="grpo", epsilon_low=3e-4, epsilon_high=4e-4, importance_sampling_level="sequence"),
)(_grpo)  # fmt: skip


# ----------------------------------------------------------------------------- GIFT


@register(
    "gift", summary="MSE between z-scored implicit (log pi/pi_ref) and explicit rewards",
    off_policy="none", on_policy=True, uses_advantages=False, tempered=True, per_token=False,
    needs_old=lambda m: m.gift_reference == "old",
    needs_ref_model=lambda m: m.gift_reference == "initial",
)  # fmt: skip
def _gift(x: LossInputs, m: MethodConfig):
    return losses.gift_loss(
        x.logp, x.ref_logp, x.mask, x.rewards, x.group_size,
        beta=m.gift_beta, std_floor=m.gift_std_floor, sequence_normalizer=x.sequences,
    )  # fmt: skip


# ----------------------------------------------------------------------------- the GFT paper's other baselines


@register("asft", summary="DFT plus lambda * full-vocabulary KL(pi_ref || pi) at each demonstration token",
          off_policy="demo", **IMITATION, needs_ref_kl=True)  # fmt: skip
def _asft(x: LossInputs, m: MethodConfig):
    return losses.asft_loss(x.logp, x.mask, x.ref_kl, kl_coef=m.asft_kl_coef, token_normalizer=x.tokens)


@register("psft", summary="the demonstration alone, PPO-clipped ratio to the policy that started the batch, A = 1",
          off_policy="demo", **IMITATION, needs_old=lambda m: True, defaults=dict(loss_type="grpo", epsilon_high=0.28))  # fmt: skip
def _psft(x: LossInputs, m: MethodConfig):
    return losses.psft_loss(
        x.logp, x.old_logp, x.mask, epsilon_low=m.epsilon_low, epsilon_high=m.epsilon_high, loss_type=m.loss_type,
        max_completion_length=x.max_completion_length, token_normalizer=x.tokens, sequence_normalizer=x.sequences,
    )  # fmt: skip


@register(
    "luffy", summary="demonstration + rollouts, A = R - mean; unclipped ratio on rollouts, p/(p+0.1) on the demonstration",
    off_policy="demo", on_policy=True, uses_advantages=True, tempered=True, needs_old=lambda m: True,
    defaults=dict(adv_scale="none", luffy_normalizer=lambda c: float(c.rollout.max_new_tokens * 8)),
)  # fmt: skip
def _luffy(x: LossInputs, m: MethodConfig):
    return losses.luffy_loss(
        x.logp, x.old_logp, x.mask, x.adv, x.on_policy, normalizer=m.luffy_normalizer / x.processes,
        shaping=m.luffy_shaping, entropy=x.entropy, entropy_coef=m.luffy_entropy_coef, token_normalizer=x.tokens,
        token_weights=x.token_weights,
    )  # fmt: skip


def _chord(phi: bool) -> LossFn:
    def loss(x: LossInputs, m: MethodConfig):
        mu = losses.chord_mu(x.step, m.chord_mu_warmup, m.chord_mu_decay, m.chord_mu_peak, m.chord_mu_valley)
        return losses.chord_loss(
            x.logp, x.old_logp, x.mask, x.adv, x.expert_logp, x.expert_mask, mu=mu, phi=phi,
            epsilon_low=m.epsilon_low, epsilon_high=m.epsilon_high, dual_clip=m.dual_clip or None,
            loss_type=m.loss_type, max_completion_length=x.max_completion_length, token_normalizer=x.tokens,
            sequence_normalizer=x.sequences, expert_token_normalizer=x.expert_tokens, token_weights=x.token_weights,
        )  # fmt: skip

    return loss


CHORD = dict(off_policy="none", on_policy=True, uses_advantages=True, tempered=True, needs_old=lambda m: True,
             expert_stream=True)  # fmt: skip
register("chord_mu", summary="(1 - mu) GRPO on rollouts + mu SFT on a stream of demonstrations; mu 0.9 -> 0.05", **CHORD,
         defaults=dict(dual_clip=3.0, chord_mu_decay=200, chord_mu_peak=0.9, chord_mu_valley=0.05))(_chord(phi=False))  # fmt: skip
register("chord_phi", summary="CHORD with SFT tokens weighted by sg(p (1 - p)); mu = 0.1", **CHORD,
         defaults=dict(dual_clip=3.0, chord_mu_peak=0.1, chord_mu_valley=0.1))(_chord(phi=True))  # fmt: skip


# ----------------------------------------------------------------------------- groups


def group_plan(method: Method, m: MethodConfig, r: RolloutConfig) -> tuple[int, int]:
    """``(K, M)``: off-policy members (demonstration first, then teachers) and rollouts per group."""
    if method.off_policy == "none":
        if r.group_size < 2:
            raise ConfigError(f"rollout.group_size: {method.name} needs groups of at least 2, got {r.group_size}")
        return 0, r.group_size
    k = 1 if method.off_policy == "demo" else m.num_off_policy
    if not method.on_policy:
        return k, 0
    if r.group_size <= k:
        raise ConfigError(
            f"rollout.group_size ({r.group_size}) must exceed the off-policy members per group ({k}) "
            f"for {method.name}: raise rollout.group_size or lower method.num_off_policy"
        )
    return k, r.group_size - k


CHOICES = {
    "gift_reference": ("old", "initial"),
    "adv_scale": tuple(SCALES),
    "loss_normalizer": ("step", "micro_batch"),
    "loss_type": tuple(losses.grpo.LOSS_TYPES),
    "importance_sampling_level": losses.grpo.IMPORTANCE_SAMPLING_LEVELS,
}


def check_method_config(m: MethodConfig) -> None:
    """Refuse settings that cannot mean anything, naming the setting."""
    get_method(m.name)
    for key, allowed in CHOICES.items():
        value = getattr(m, key)
        if value is not None and value not in allowed:
            raise ConfigError(f"method.{key}: expected {' or '.join(allowed)}, got '{value}'")
    if not 0.0 <= m.tau <= 1.0:
        raise ConfigError(f"method.tau must lie in [0, 1], got {m.tau}")
    if m.num_off_policy < 1:
        raise ConfigError(f"method.num_off_policy must be >= 1, got {m.num_off_policy}")
    _check_baseline_settings(m)


def _check_baseline_settings(m: MethodConfig) -> None:
    """The settings of dual clip, ASFT, LUFFY and CHORD (None: not resolved yet)."""
    if m.dual_clip is not None and m.dual_clip != 0 and m.dual_clip <= 1:
        raise ConfigError(f"method.dual_clip must be 0 (off) or greater than 1, got {m.dual_clip}")
    if m.name == "luffy" and m.luffy_normalizer is not None and m.luffy_normalizer <= 0:
        raise ConfigError(f"method.luffy_normalizer must be positive, got {m.luffy_normalizer}")
    counts = {"chord_mu_warmup": m.chord_mu_warmup, "chord_mu_decay": m.chord_mu_decay,
              "chord_expert_per_group": m.chord_expert_per_group - 1, "asft_kl_coef": m.asft_kl_coef}  # fmt: skip
    for key, value in counts.items():
        if value is not None and value < 0:
            raise ConfigError(f"method.{key} must be >= {1 if key == 'chord_expert_per_group' else 0}, got {getattr(m, key)}")


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO's soft over-long punishment (arXiv 2503.14476, eq. 13), added to the reward.

    ``0`` up to ``max_len - buffer`` tokens, then a linear ramp down to ``-1`` at ``max_len``.
    """
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    start = max_len - buffer
    return (-(lengths.float() - start) / buffer).clamp(min=-1.0, max=0.0)

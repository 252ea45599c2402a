"""``GIFTConfig`` and ``GFTConfig``: TRL's ``GRPOConfig`` plus each method's settings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields

from trl import GRPOConfig

from grouptune.advantages import BASELINES, SCALES

# Fields of the clipped-ratio GRPO loss and its add-ons, which GIFT and GFT do not have.
_RATIO_LOSS_FIELDS = (
    "loss_type", "epsilon", "epsilon_high", "delta", "importance_sampling_level", "top_entropy_quantile",
    "off_policy_mask_threshold", "use_bias_correction_kl", "entropy_coef", "use_adaptive_entropy",
    "multi_objective_aggregation",
)  # fmt: skip
def _warn_ignored(config: GRPOConfig, names: tuple[str, ...], method: str) -> None:
    """Warn about GRPO settings the method ignores, so a converted GRPO script does not mislead."""
    defaults = {f.name: f.default for f in fields(GRPOConfig)}
    changed = [f"{n}={getattr(config, n)!r}" for n in names if getattr(config, n) != defaults[n]]
    if changed:
        warnings.warn(
            f"{method} ignores these GRPO settings, which belong to the clipped-ratio loss or to TRL's advantages "
            f"(the rewards are summed with reward_weights, then normalised by grouptune): {', '.join(changed)}",
            stacklevel=4,  # the user's config construction
        )


def _eval_on(config: GRPOConfig) -> bool:
    return config.do_eval and config.eval_strategy != "no"


@dataclass
class GIFTConfig(GRPOConfig):
    """``GRPOConfig`` plus GIFT's settings (docs/methods.md#gift).

    GIFT normalises the implicit reward within each group at the current parameters, so every
    micro-batch holds whole groups: ``per_device_train_batch_size`` must be a multiple of
    ``num_generations``. TRL's ``beta`` is its KL coefficient and must stay 0 (GIFT has no KL
    term); GIFT's own coefficient is ``gift_beta``. The log-probs are TRL's, scored at the
    sampling ``temperature`` as verl (which the official code extends) does.
    """

    gift_beta: float = field(
        default=1.0, metadata={"help": "GIFT's beta: the loss is mean_i (a_i - gift_beta * z_i)^2."}
    )
    gift_reference: str = field(
        default="old",
        metadata={
            "help": "Reference of the implicit reward k_i = sum_t (logp - ref_logp): 'old', the policy that "
            "sampled the batch (the official code), or 'initial', the frozen starting model (the paper's "
            "theory; TRL's reference model, or the base model without the adapter under PEFT)."
        },
    )
    gift_eps: float = field(default=1e-6, metadata={"help": "Added to the group stds of rewards and of k."})
    gift_std_floor: float = field(
        default=0.0,
        metadata={
            "help": "Lower bound on the detached std of k (0 = the official behaviour, where equal k_i give a "
            "gradient scaled by 1/gift_eps that grad-norm clipping turns into a normalised REINFORCE step)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.gift_reference not in ("old", "initial"):
            raise ValueError(f"gift_reference must be 'old' or 'initial', got {self.gift_reference!r}")
        if self.beta != 0.0:
            raise ValueError(
                f"GIFT has no KL term: TRL's KL coefficient `beta` must be 0, got {self.beta}. GIFT's own "
                "coefficient is `gift_beta`; for a reference model use gift_reference='initial'."
            )
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"GIFT needs whole groups in every micro-batch: per_device_train_batch_size "
                f"({self.per_device_train_batch_size}) must be a multiple of num_generations ({self.num_generations})"
            )
        g_eval = self.num_generations_eval or self.num_generations
        if _eval_on(self) and self.per_device_eval_batch_size % g_eval:
            raise ValueError(
                f"GIFT needs whole groups in every eval batch: per_device_eval_batch_size "
                f"({self.per_device_eval_batch_size}) must be a multiple of the eval group size ({g_eval})"
            )
        if self.sync_ref_model and self.gift_reference != "initial":
            raise ValueError(
                "sync_ref_model moves TRL's reference model, which GIFT uses only with gift_reference='initial'"
            )
        _warn_ignored(self, (*_RATIO_LOSS_FIELDS, "scale_rewards"), "GIFT")


@dataclass
class GFTConfig(GRPOConfig):
    """``GRPOConfig`` plus GFT's settings (docs/methods.md#gft).

    ``num_generations`` is the size of the hybrid group: ``num_off_policy`` members from the data
    set (the expert demonstration first, then teacher responses) plus ``num_generations -
    num_off_policy`` sampled ones. The paper's setting is 4 + 4 (three teacher responses per row);
    ``num_off_policy=1`` is GFT (no mix). Advantages use TRL's ``scale_rewards`` as the scale of
    the group advantage (docs/methods.md#group-advantages) and ``gft_baseline`` as the baseline.
    Sampling must be at temperature 1: GFT's rectification reads the untempered probabilities,
    and TRL scores tokens at the sampling temperature. TRL's ``beta`` (KL) must stay 0.
    """

    num_off_policy: int = field(
        default=1,
        metadata={
            "help": "K: off-policy members per group, the expert demonstration then K-1 teacher responses."
        },
    )
    demonstration_column: str = field(
        default="completion", metadata={"help": "Data set column holding the expert demonstration."}
    )
    teacher_column: str = field(
        default="teacher_completions",
        metadata={
            "help": "Data set column holding the teacher responses: a list, of which the first K-1 are used."
        },
    )
    gft_tau: float = field(
        default=0.5,
        metadata={
            "help": "Rectification threshold: tokens with p <= tau get weight p (gradient coefficient 1)."
        },
    )
    gft_baseline: str = field(
        default="mean",
        metadata={"help": "Advantage baseline: 'mean' (whole group), 'leave_one_out' or 'on_policy_mean'."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.num_off_policy < self.num_generations:
            raise ValueError(
                f"num_off_policy ({self.num_off_policy}) must be at least 1 and below num_generations "
                f"({self.num_generations}), the hybrid group size, so that every group has a sampled member"
            )
        if not 0.0 <= self.gft_tau <= 1.0:
            raise ValueError(f"gft_tau must lie in [0, 1], got {self.gft_tau}")
        if self.gft_baseline not in BASELINES:
            raise ValueError(
                f"gft_baseline: unknown {self.gft_baseline!r}; valid: {', '.join(sorted(BASELINES))}"
            )
        if self.scale_rewards not in SCALES:
            raise ValueError(
                f"scale_rewards: unknown {self.scale_rewards!r}; valid: {', '.join(sorted(SCALES))}"
            )
        if self.beta != 0.0:
            raise ValueError(f"GFT has no KL term: TRL's KL coefficient `beta` must be 0, got {self.beta}")
        if self.temperature != 1.0:
            raise ValueError(
                f"GFT samples at temperature 1.0 and rectifies with untempered probabilities; TRL scores tokens at "
                f"the sampling temperature, so temperature must be 1.0, got {self.temperature}"
            )
        local = self.per_device_train_batch_size * self.steps_per_generation
        if local % self.num_generations:
            raise ValueError(
                f"GFT builds each group on one process: per_device_train_batch_size * steps_per_generation ({local}) "
                f"must be a multiple of num_generations ({self.num_generations})"
            )
        g_eval = self.num_generations_eval or self.num_generations
        if _eval_on(self) and (self.per_device_eval_batch_size % g_eval or g_eval <= self.num_off_policy):
            raise ValueError(
                f"GFT eval groups: per_device_eval_batch_size ({self.per_device_eval_batch_size}) must be a multiple "
                f"of the eval group size ({g_eval}), which must exceed num_off_policy ({self.num_off_policy})"
            )
        _warn_ignored(self, _RATIO_LOSS_FIELDS, "GFT")

"""GIFT and GFT as TRL trainers: a TRL user switches from GRPO by changing one import.

    from trl import GRPOConfig, GRPOTrainer                               # GRPO
    from grouptune.integrations.trl import GIFTConfig, GIFTTrainer        # GIFT
    from grouptune.integrations.trl import GFTConfig, GFTTrainer          # GFT

The trainers subclass TRL's ``GRPOTrainer`` (tested with ``trl>=1.16,<1.17``) and keep all of
it -- generation (transformers, continuous batching or vLLM), reward functions and reward
models, PEFT, DeepSpeed/FSDP, logging, checkpoints -- except the few methods below. The math
is ``grouptune.advantages`` and ``grouptune.losses``, the same functions the native loop calls.

GIFTTrainer (docs/methods.md#gift) overrides
    _compute_loss                    ``gift_loss`` instead of the clipped-ratio loss: no ratio,
                                     no clipping, no KL.
    _generate_and_score_completions  adds the explicit rewards to the batch (GIFT normalises the
                                     rewards itself; TRL only hands on advantages) and the
                                     sampling policy's log-probs for reference ``old`` (TRL
                                     skips them when it can prove it needs none).
    _prepare_inputs                  shuffles whole groups instead of rows before TRL splits the
                                     generation batch into micro-batches: z is normalised within
                                     a group at the current parameters, so a micro-batch must
                                     hold whole groups.
    __init__                         turns TRL's reference model on for reference ``initial``
                                     (TRL only builds one when its KL coefficient is non-zero).

GFTTrainer (docs/methods.md#gft) overrides
    _generate_single_turn            samples only the ``M`` on-policy members of each group; the
                                     first ``K`` members are the data set's expert demonstration
                                     and teacher responses, tokenized.
    _generate_and_score_completions  advantages over the whole hybrid group from the rewards
                                     TRL's reward functions gave every member
                                     (docs/methods.md#group-advantages).
    _compute_loss                    ``gft_loss``: rectified, advantage-weighted token-mean.

Both also extend ``_calculate_rewards`` to keep the summed, weighted rewards of the whole batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from importlib import metadata

import torch
from accelerate.utils import gather_object
from packaging.version import Version

from grouptune.advantages import BASELINES, SCALES, group_advantages
from grouptune.losses import gft_loss, gift_loss

TRL_REQUIREMENT = ">=1.16,<1.17"
_TRL_MIN, _TRL_MAX = Version("1.16"), Version("1.17")

try:
    from trl import GRPOConfig, GRPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid
except ImportError as err:
    try:
        _found = f"trl {metadata.version('trl')} is installed but could not be imported"
    except metadata.PackageNotFoundError:
        _found = "trl is not installed"
    raise ImportError(
        f"grouptune.integrations.trl needs TRL (trl{TRL_REQUIREMENT}); {_found}. "
        "Install it with: pip install grouptune[trl]"
    ) from err

if not _TRL_MIN <= Version(metadata.version("trl")) < _TRL_MAX:
    warnings.warn(
        f"grouptune.integrations.trl is tested with trl{TRL_REQUIREMENT}, found trl {metadata.version('trl')}: "
        "it overrides private GRPOTrainer methods that may have changed. Install a supported TRL with "
        "pip install grouptune[trl]",
        stacklevel=2,
    )

__all__ = ["GFTConfig", "GFTTrainer", "GIFTConfig", "GIFTTrainer", "TRL_REQUIREMENT"]

# Fields of the clipped-ratio GRPO loss and its add-ons, which GIFT and GFT do not have.
_RATIO_LOSS_FIELDS = (
    "loss_type", "epsilon", "epsilon_high", "delta", "importance_sampling_level", "top_entropy_quantile",
    "off_policy_mask_threshold", "use_bias_correction_kl", "entropy_coef", "use_adaptive_entropy",
    "multi_objective_aggregation",
)  # fmt: skip
# Extra tensors of a TRL batch that the model's forward needs (vision-language models).
_FORWARD_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
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


def _shuffle_groups(batch: dict, group_size: int) -> dict:
    """TRL's ``shuffle_sequence_dict`` with whole groups moved instead of rows."""
    n = batch["prompt_ids"].size(0)
    perm = (torch.randperm(n // group_size)[:, None] * group_size + torch.arange(group_size)).view(-1)  # (n,)

    def permute(v):
        if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
            return v
        return v[perm] if isinstance(v, torch.Tensor) else [v[i] for i in perm]

    return {k: permute(v) for k, v in batch.items()}


def _as_text(member, column: str) -> str:
    """A demonstration or teacher response as text: a string, or chat messages (the last one's content)."""
    if isinstance(member, list) and member and isinstance(member[-1], dict):
        member = member[-1].get("content")
    if not isinstance(member, str):
        raise ValueError(
            f"column '{column}' must hold a string or chat messages, got {type(member).__name__}"
        )
    return member


# ----------------------------------------------------------------------------- shared


class _GroupTrainer(GRPOTrainer):
    """What GIFT and GFT share: the explicit rewards of the batch, log-probs, metrics."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # (N_all, F): every process's rows, group-contiguous
        per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        rewards = (per_func * self.reward_weights.to(per_func.device)).nansum(dim=1)  # (N_all,)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan  # no function could judge it
        self._batch_rewards = rewards  # read right after by the scoring step
        return per_func

    def _group_size(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

    def _local(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """This process's ``n`` rows of a tensor gathered from all processes (TRL's layout)."""
        start = self.accelerator.process_index * n
        return x[start : start + n]

    def _logps(self, model, batch: dict, **kwargs):
        """``(logps (B, T), entropies, aux_loss)`` of the completions of a TRL batch."""
        prompt_ids, completion_ids = batch["prompt_ids"], batch["completion_ids"]
        return self._get_per_token_logps_and_entropies(
            model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
            completion_ids.size(1),
            **kwargs,
            **{k: batch.get(k) for k in _FORWARD_KEYS},
        )

    @staticmethod
    def _loss_mask(batch: dict) -> torch.Tensor:
        mask = batch["completion_mask"]  # (B, T)
        return mask * batch["tool_mask"] if "tool_mask" in batch else mask

    def _finish_loss(self, loss, metrics: dict, prefix: str, entropies, aux_loss, mask) -> torch.Tensor:
        """Add the MoE load-balancing loss as TRL does, and log entropy and the method's metrics."""
        mode = "train" if self.model.training else "eval"
        accumulated = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulated
            self._metrics[mode]["aux_loss"].append(
                self.accelerator.gather_for_metrics(aux_loss).mean().item()
            )
        sums = torch.stack([(entropies.float() * mask).sum(), mask.sum().float()])  # entropy, tokens
        totals = self.accelerator.reduce(sums, reduction="sum")
        self._metrics[mode]["entropy"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        # Mean over processes; a loss may leave a metric out where it is undefined (GIFT's corr_a_k).
        per_process = gather_object([metrics])
        for name in sorted({k for m in per_process for k in m}):
            values = [m[name] for m in per_process if name in m]
            self._metrics[mode][f"{prefix}/{name}"].append(sum(values) / len(values))
        return loss


# ----------------------------------------------------------------------------- GIFT


class GIFTTrainer(_GroupTrainer):
    """TRL's ``GRPOTrainer`` with GIFT's loss (docs/methods.md#gift).

    Takes a ``GIFTConfig``, else the same arguments.
    """

    _tag_names = ["trl", "grouptune", "gift"]
    _name = "GIFT"
    _paper = {
        "title": "GIFT: Group-Relative Implicit Fine-Tuning Integrates GRPO with DPO and UNA",
        "id": "2510.23868",
    }

    def __init__(self, model, reward_funcs=None, args: GIFTConfig | None = None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = GIFTConfig(f"{name.split('/')[-1]}-GIFT")
        if not isinstance(args, GIFTConfig):
            raise TypeError(f"GIFTTrainer needs a GIFTConfig, got {type(args).__name__}")
        # TRL builds its reference (a frozen model, the base model under a new adapter, or a "ref"
        # copy of a loaded adapter) and scores each batch with it only when its KL coefficient is
        # non-zero. GIFT has no KL (the loss is ours), so for reference "initial" TRL is built with
        # a placeholder beta that stays on `self.beta`, where only the scoring step reads it now.
        needs_reference = args.gift_reference == "initial"
        args.beta = 1.0 if needs_reference else 0.0
        try:
            super().__init__(model, reward_funcs, args, **kwargs)
        finally:
            args.beta = 0.0

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        batch["rewards"] = self._local(self._batch_rewards, len(inputs))  # (B,) NaN = unjudged
        if self.args.gift_reference == "old" and "old_per_token_logps" not in batch:
            # TRL skips these when every use of the batch falls within one optimizer step; GIFT
            # measures k against them, from a separate pass as in the official code.
            a = self.args
            size = a.per_device_train_batch_size if self.model.training else a.per_device_eval_batch_size
            with torch.no_grad(), disable_gradient_checkpointing(self.model, a.gradient_checkpointing_kwargs):
                batch["old_per_token_logps"] = self._logps(self.model, batch, batch_size=size)[0]
        return batch

    def _prepare_inputs(self, generation_batch):
        # TRL's train branch with whole groups shuffled instead of rows (see the module docstring).
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = split_pixel_values_by_grid(self._generate_and_score_completions(generation_batch))
            batch = _shuffle_groups(batch, self.num_generations)
            chunks = split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(chunk) for chunk in chunks]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _compute_loss(self, model, inputs):
        logps, entropies, aux_loss = self._logps(
            model, inputs, compute_entropy=True, compute_aux_loss=self.aux_loss_enabled
        )  # (B, T)
        mask = self._loss_mask(inputs)
        ref = inputs["old_per_token_logps" if self.args.gift_reference == "old" else "ref_per_token_logps"]
        # Mean over the sequences of the optimizer step: every micro-batch holds as many.
        sequences = logps.size(0) * (self.current_gradient_accumulation_steps if self.model.training else 1)
        a = self.args
        loss, metrics = gift_loss(
            logps, ref, mask, inputs["rewards"], self._group_size(),
            beta=a.gift_beta, eps=a.gift_eps, std_floor=a.gift_std_floor, sequence_normalizer=sequences,
        )  # fmt: skip
        return self._finish_loss(loss, metrics, "gift", entropies, aux_loss, mask)


# ----------------------------------------------------------------------------- GFT


class GFTTrainer(_GroupTrainer):
    """TRL's ``GRPOTrainer`` with GFT's hybrid groups and loss (docs/methods.md#gft); takes a ``GFTConfig``.

    Text prompts only, without ``tools``, ``environment_factory`` or ``rollout_func``: those
    change how completions are produced, and GFT's groups take theirs partly from the data set.
    """

    _tag_names = ["trl", "grouptune", "gft"]
    _name = "GFT"
    _paper = {
        "title": "GFT: From Imitation to Reward Fine-Tuning with Unbiased Group Advantages and Dynamic "
        "Coefficient Rectification",
        "id": "2604.14258",
    }

    def __init__(self, model, reward_funcs=None, args: GFTConfig | None = None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = GFTConfig(f"{name.split('/')[-1]}-GFT")
        if not isinstance(args, GFTConfig):
            raise TypeError(f"GFTTrainer needs a GFTConfig, got {type(args).__name__}")
        unsupported = [k for k in ("tools", "environment_factory", "rollout_func") if kwargs.get(k)]
        if unsupported:
            raise ValueError(f"GFTTrainer does not support {', '.join(unsupported)}")
        self._off_policy_ids = None
        super().__init__(model, reward_funcs, args, **kwargs)

    def _off_policy_member(self, row: dict, member: int) -> list[int] | None:
        """Token ids of group member ``member`` if it comes from the data set, else None (sampled)."""
        a = self.args
        if member >= a.num_off_policy:
            return None
        if member == 0:
            if a.demonstration_column not in row:
                raise ValueError(f"GFT: the data set has no demonstration column '{a.demonstration_column}'")
            text = _as_text(row[a.demonstration_column], a.demonstration_column)
        else:
            teachers = row.get(a.teacher_column) or []
            if len(teachers) < a.num_off_policy - 1:
                raise ValueError(
                    f"GFT with num_off_policy={a.num_off_policy} needs {a.num_off_policy - 1} teacher responses per "
                    f"row in column '{a.teacher_column}'; a row has {len(teachers)}"
                )
            text = _as_text(teachers[member - 1], a.teacher_column)
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"] + [self.eos_token_ids[0]]
        return ids[: self.max_completion_length]  # as long as a sampled completion may be

    def _generate_and_score_completions(self, inputs):
        G, K = self._group_size(), self.args.num_off_policy
        if len(inputs) % G:
            raise RuntimeError(f"GFT: a process received {len(inputs)} rows, not whole groups of {G}")
        if "image" in inputs[0] or "images" in inputs[0]:
            raise NotImplementedError("GFTTrainer supports text prompts only")
        # Rows arrive group-contiguous (TRL's RepeatSampler): row i is member i % G of its group.
        self._off_policy_ids = [self._off_policy_member(row, i % G) for i, row in enumerate(inputs)]
        try:
            batch = super()._generate_and_score_completions(inputs)
        finally:
            self._off_policy_ids = None
        rewards = self._batch_rewards  # (N_all,) every member scored by the same reward functions
        on_policy = torch.arange(rewards.numel(), device=rewards.device) % G >= K
        a = self.args
        adv = group_advantages(rewards, G, baseline=a.gft_baseline, scale=a.scale_rewards, on_policy_mask=on_policy)
        batch["advantages"] = self._local(adv, len(inputs))
        self._log_groups(rewards, adv, on_policy)
        return batch

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # Sample only the on-policy members; TRL's backends (vLLM server included) see M = G - K
        # consecutive rows per prompt and generate them as usual.
        off = self._off_policy_ids
        sampled_rows = [i for i, ids in enumerate(off) if ids is None]
        sampled_ids, sampled_logps = super()._generate_single_turn(
            [prompt_ids[i] for i in sampled_rows], images, multimodal_fields,
            num_generations - self.args.num_off_policy, has_tool_images,
        )  # fmt: skip
        completion_ids = list(off)
        # vLLM's sampling log-probs (TRL's importance-sampling diagnostics): NaN = not sampled
        logps = None if sampled_logps is None else [[float("nan")] * len(ids) for ids in off]
        for j, i in enumerate(sampled_rows):
            completion_ids[i] = sampled_ids[j]
            if logps is not None:
                logps[i] = sampled_logps[j]
        return completion_ids, logps

    def _log_groups(self, rewards, adv, on_policy) -> None:
        """Off- vs on-policy rewards and advantages; TRL's completions table gets GFT's advantages."""
        mode = "train" if self.model.training else "eval"
        for name, sel in (("off_policy", ~on_policy), ("on_policy", on_policy)):
            self._metrics[mode][f"gft/reward_{name}"].append(torch.nanmean(rewards[sel]).item())
            self._metrics[mode][f"gft/advantage_{name}"].append(adv[sel].mean().item())
        logged = self._logs["advantages"]  # TRL appended its own advantages of this batch
        for _ in range(min(len(logged), adv.numel())):
            logged.pop()
        logged.extend(adv.tolist())

    def _compute_loss(self, model, inputs):
        logps, entropies, aux_loss = self._logps(
            model, inputs, compute_entropy=True, compute_aux_loss=self.aux_loss_enabled
        )  # (B, T)
        mask = self._loss_mask(inputs)
        # Token-mean over the optimizer step, normalised as TRL's "dapo" loss: num_items_in_batch
        # counts the response tokens of the generation batch on all processes (DDP then averages).
        tokens = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if self.model.training:
            tokens = tokens * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss, metrics = gft_loss(
            logps, mask, inputs["advantages"], tau=self.args.gft_tau, token_normalizer=tokens
        )
        return self._finish_loss(loss, metrics, "gft", entropies, aux_loss, mask)

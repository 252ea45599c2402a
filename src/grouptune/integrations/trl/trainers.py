"""``GIFTTrainer`` and ``GFTTrainer``: TRL's ``GRPOTrainer`` with grouptune's groups and losses
(what each overrides is listed in the package docstring)."""

from __future__ import annotations

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid

from grouptune.advantages import group_advantages
from grouptune.integrations.trl.configs import GFTConfig, GIFTConfig
from grouptune.losses import gft_loss, gift_loss

# Extra tensors of a TRL batch that the model's forward needs (vision-language models).
_FORWARD_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)  # fmt: skip


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

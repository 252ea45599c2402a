"""The training loop: one loop for every method.

Per rollout batch, top to bottom:

    prompts  -> groups   expert demonstration / teacher responses (GFT, SFT) + rollouts
             -> rewards  every member scored by the same reward functions
             -> adv      group advantages (SPEC 2.1) over the whole batch of all processes
             -> logp     "old" (sampling policy) and reference log-probs, when the method needs them
             -> update   ``steps_per_rollout`` optimizer steps on mini-batches of whole groups,
                         each accumulated over micro-batches and normalised by the global
                         token / sequence count of the step
             -> log, evaluate, checkpoint

A method changes only what ``grouptune.methods`` says it changes (group members, which
log-probs, which loss). Distribution is accelerate's: groups are assigned whole to
processes, everything that needs the whole batch is reduced across them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.distributed.fsdp import register_fsdp_forward_method

from grouptune import checkpoint as ckpt
from grouptune.advantages import group_advantages
from grouptune.config import ConfigError, TrainConfig, config_to_dict, config_to_yaml
from grouptune.data import DataError, Example, load_examples, reward_columns
from grouptune.methods import (
    LossInputs,
    Method,
    check_method_config,
    dynamic_sampling,
    get_method,
    group_plan,
    overlong_buffer,
    overlong_penalty,
)
from grouptune.modeling import eos_ids, load_model_and_tokenizer
from grouptune.rewards import build_reward_functions, compute_rewards
from grouptune.rollout import Batch, completion_logprobs, pad, sample


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps); the last good checkpoint is intact."""


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
    G = K + M
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
    return Plan(world, groups, G, K, M, per_step, micro)


def _seed_for(*parts: int) -> int:
    """A stable 63-bit seed from integers (rollout chunks get distinct, reproducible seeds)."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        check_method_config(cfg.method)
        self.method = get_method(cfg.method.name)
        self.out = Path(cfg.log.output_dir)
        self.acc = _accelerator(cfg)
        self.plan = make_plan(cfg, self.method, self.acc.num_processes)
        _check_engine(self.acc, self.plan, cfg)
        torch.manual_seed(cfg.optim.seed)

        # --------------------------------------------------------------- model, reference, tokenizer
        m = cfg.model
        model, self.tokenizer = load_model_and_tokenizer(m)
        self.eos_ids = eos_ids(self.tokenizer, model)
        if m.gradient_checkpointing:  # before LoRA: peft then makes the checkpointed inputs require grad
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()  # (the name since transformers 5.x, the old one warns)
            model.config.use_cache = False
        self.ref_model = None
        if self.method.needs_ref_model(cfg.method) and m.lora_r == 0:
            self.ref_model = _reference_copy(model, m)
            self.ref_model.to("cpu" if m.ref_on_cpu else self.acc.device)
        if m.lora_r > 0:
            model = _add_lora(model, m)

        # --------------------------------------------------------------- data and rewards
        self.reward_fns = build_reward_functions(cfg.reward)
        # DataError before training
        self.train_data, self.eval_data = _load_data(cfg, self.tokenizer, self.plan, self.reward_fns)

        # --------------------------------------------------------------- optimisation
        o = cfg.optim
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), weight_decay=o.weight_decay
        )
        self.scheduler = _scheduler(self.optimizer, o.scheduler, o.warmup_steps, o.total_batches * o.steps_per_rollout)
        _deepspeed_batch_size(self.acc, self.plan)
        self.model, self.optimizer = self.acc.prepare(model, self.optimizer)
        # generate() is a forward pass too: under FSDP2 it must gather the root's parameters (with
        # LoRA, PeftModel.generate bypasses the root's forward). A no-op for other engines.
        register_fsdp_forward_method(self.acc.unwrap_model(self.model), "generate")
        if self.ref_model is not None and not m.ref_on_cpu:
            self.ref_model = _shard_reference(self.acc, self.ref_model)
        self.state = {"batch": 0, "cursor": 0, "optimizer_steps": 0, "bad_steps": 0}
        self.stop_signal: int | None = None  # set by SIGTERM / SIGINT during train()

    # ================================================================== the loop
    def train(self) -> dict:
        cfg = self.cfg
        if cfg.checkpoint.resume:
            self._resume()
        self._write_config()
        if cfg.log.report_to:
            self.acc.init_trackers("grouptune", config=_flat(config_to_dict(cfg)))
        progress = _progress(cfg, self.acc, self.state["batch"])
        last: dict = {}
        with _catch_signals(self):
            while self.state["batch"] < cfg.optim.total_batches:
                t0 = time.perf_counter()
                batch, metrics = self.make_batch()  # prompts -> groups -> rewards -> advantages
                t1 = time.perf_counter()
                self.add_fixed_logprobs(batch)  # old / reference log-probs
                metrics.update(self.update(batch))  # optimizer steps
                t2 = time.perf_counter()
                metrics.update({"time/rollout": t1 - t0, "time/update": t2 - t1})
                self.state["batch"] += 1
                b = self.state["batch"]
                if cfg.log.eval_every and b % cfg.log.eval_every == 0 and b < cfg.optim.total_batches:
                    metrics.update(self.evaluate())
                if b % cfg.log.log_every == 0 or b == cfg.optim.total_batches:
                    self._log(metrics, batch)
                last = metrics
                progress.update(1)
                progress.set_postfix(_postfix(metrics), refresh=False)
                stop = self._signalled()
                if stop or (cfg.checkpoint.save_every and b % cfg.checkpoint.save_every == 0):
                    self.save_checkpoint()
                if stop:
                    self.acc.print(f"stopped by signal {self.stop_signal} after rollout batch {b}; "
                                   "resume with --checkpoint.resume true")
                    progress.close()
                    self.acc.end_training()
                    return last
        progress.close()
        if self.eval_data:
            final_eval = self.evaluate()
            last.update(final_eval)
            self._write_metrics({"batch": self.state["batch"], **final_eval})
        if cfg.checkpoint.save_final:
            self.save_final()
        self.acc.end_training()
        return last

    def _signalled(self) -> bool:
        """Did any process get SIGTERM / SIGINT? Every process then stops after the same batch."""
        signum = self.stop_signal or 0
        if self.plan.world > 1:
            signum = int(self.acc.reduce(torch.tensor([signum], device=self.acc.device), reduction="max").item())
        self.stop_signal = signum or None
        return bool(signum)

    # ================================================================== groups, rewards, advantages
    def next_examples(self, n: int, steps: int = 1) -> list[Example]:
        """The next ``n`` prompts of this process; every process draws from the same global window."""
        start = self.state["cursor"]
        self.state["cursor"] += n * self.plan.world
        return [self.train_data[self._order(start + i)] for i in self._global_groups(n, steps)]

    def _global_groups(self, n: int, steps: int) -> list[int]:
        """Positions in the global window of this process's ``n`` groups, used in ``steps`` optimizer steps.

        The window is laid out step-major: optimizer step ``s`` of all processes together sees the
        groups a single process sees in its step ``s``, so the number of processes does not
        change the training trajectory.
        """
        W, r, per = self.plan.world, self.acc.process_index, n // steps
        return [(s * W + r) * per + j for s in range(steps) for j in range(per)]

    def _order(self, position: int) -> int:
        """Data order: a seeded permutation per epoch."""
        n = len(self.train_data)
        epoch, i = divmod(position, n)
        if getattr(self, "_perm_epoch", None) != epoch:
            g = torch.Generator().manual_seed(_seed_for(self.cfg.optim.seed, epoch))
            self._perm, self._perm_epoch = torch.randperm(n, generator=g).tolist(), epoch
        return self._perm[i]

    def make_batch(self) -> tuple[Batch, dict]:
        """Build, score and advantage this process's groups of one rollout batch."""
        plan, cfg = self.plan, self.cfg
        examples = self.next_examples(plan.groups, steps=cfg.optim.steps_per_rollout)
        batch = self.build_groups(examples, round_=0)
        rewards, per_fn, completions = self.score(batch, examples)
        stats = {"groups/resampled": 0.0}
        if dynamic_sampling(cfg.method):
            batch, rewards, per_fn, completions, stats = self._dynamic_sampling(
                batch, rewards, per_fn, completions, examples
            )
        batch.rewards = rewards
        self._last_completions = completions
        if self.method.uses_advantages:
            batch.adv = self.advantages(batch)
        return batch, {**self._rollout_metrics(batch, per_fn), **stats}

    def build_groups(self, examples: list[Example], round_: int) -> Batch:
        """Group-contiguous members: K data-set members (demonstration first), then M rollouts."""
        plan, tok = self.plan, self.tokenizer
        max_new = self.cfg.rollout.max_new_tokens
        prompts, completions, truncated, on_policy = [], [], [], []
        rollouts = self._rollouts(examples, round_)
        for g, ex in enumerate(examples):
            texts = ([ex.completion] + ex.teacher_completions)[: plan.off_policy]
            for text in texts:
                ids = tok(text, add_special_tokens=False).input_ids + [self.eos_ids[0]]
                prompts.append(ex.prompt_ids)
                completions.append(ids[:max_new])
                truncated.append(len(ids) > max_new)
                on_policy.append(False)
            for ids, cut in rollouts[g * plan.on_policy : (g + 1) * plan.on_policy]:
                prompts.append(ex.prompt_ids)
                completions.append(ids)
                truncated.append(cut)
                on_policy.append(True)
        pid = tok.pad_token_id
        prompt_ids, prompt_mask = pad(prompts, pid, left=True)
        completion_ids, completion_mask = pad(completions, pid, left=False)
        return Batch(
            prompt_ids, prompt_mask, completion_ids, completion_mask,
            on_policy=torch.tensor(on_policy), truncated=torch.tensor(truncated),
            example_index=torch.tensor([ex.index for ex in examples]).repeat_interleave(plan.group_size),
            group_size=plan.group_size,
        )  # fmt: skip

    def _rollouts(self, examples: list[Example], round_: int) -> list[tuple[list[int], bool]]:
        """M samples per prompt from the current policy, in chunks with their own seeds.

        A chunk's seed depends on (seed, batch, round, global position of the chunk), so
        processes sample differently, and one process running the whole batch in chunks of
        the same size samples exactly what several processes do (when a chunk holds at most
        the rollouts of one optimizer step of one process).
        """
        M = self.plan.on_policy
        if M == 0:
            return []
        r = self.cfg.rollout
        prompts = [ex.prompt_ids for ex in examples for _ in range(M)]
        chunk = r.generation_batch_size or len(prompts)
        steps = self.cfg.optim.steps_per_rollout if round_ == 0 else 1  # as next_examples laid them out
        where = self._global_groups(len(examples), steps)
        model = self.acc.unwrap_model(self.model)
        out: list[tuple[list[int], bool]] = []
        model.eval()
        for s in range(0, len(prompts), chunk):
            position = where[s // M] * M + s % M  # of the chunk's first rollout in the global batch
            torch.manual_seed(_seed_for(self.cfg.optim.seed, self.state["batch"], round_, position))
            ids, cut = sample(
                model, prompts[s : s + chunk], pad_id=self.tokenizer.pad_token_id, eos_ids=self.eos_ids,
                max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                synced_gpus=_sharded(self.acc),
            )  # fmt: skip
            out.extend(zip(ids, cut))
        model.train()
        return out

    def score(self, batch: Batch, examples: list[Example]) -> tuple[torch.Tensor, dict, list[str]]:
        """Explicit rewards of every member (NaN = unjudged), plus DAPO's over-long penalty."""
        G = self.plan.group_size
        tok = self.tokenizer
        completions = tok.batch_decode(
            [ids[m.bool()].tolist() for ids, m in zip(batch.completion_ids, batch.completion_mask)],
            skip_special_tokens=True,
        )
        prompts = [ex.prompt_text for ex in examples for _ in range(G)]
        result = compute_rewards(
            self.reward_fns, prompts, completions, reward_columns(examples, G),
            on_error=self.cfg.reward.on_error, row_ids=batch.example_index.tolist(),
        )  # fmt: skip
        rewards = result.total.clone()
        buffer = overlong_buffer(self.cfg.method, self.cfg.rollout)
        if buffer:
            lengths = batch.completion_mask.sum(1)
            rewards = rewards + overlong_penalty(lengths, self.cfg.rollout.max_new_tokens, buffer)
        return rewards, result.per_function, completions

    def advantages(self, batch: Batch) -> torch.Tensor:
        """SPEC 2.1 over the global batch (gathered), then this process's rows."""
        m = self.cfg.method
        rewards = self.acc.gather(batch.rewards.to(self.acc.device)).cpu()
        on_policy = self.acc.gather(batch.on_policy.to(self.acc.device)).cpu()
        adv = group_advantages(
            rewards, batch.group_size, baseline=m.adv_baseline, scale=m.adv_scale, on_policy_mask=on_policy
        )
        n = batch.rewards.shape[0]
        return adv[self.acc.process_index * n : (self.acc.process_index + 1) * n]

    def _dynamic_sampling(self, batch, rewards, per_fn, completions, examples):
        """DAPO: replace groups whose rewards have no spread by groups of fresh prompts."""
        G, need = self.plan.group_size, self.plan.groups

        def group(b, r, fns, texts, g):  # one group's slice of everything scored
            rows = slice(g * G, (g + 1) * G)
            return b.groups(g, g + 1), r[rows], {k: v[rows] for k, v in fns.items()}, texts[rows]

        spread = _group_spread(rewards, G)
        pool = [group(batch, rewards, per_fn, completions, g) for g in range(batch.num_groups) if spread[g]]
        dropped, rounds = batch.num_groups - len(pool), 0
        while rounds < self.cfg.method.max_resample_rounds:
            deficit = torch.tensor([max(need - len(pool), 0)], device=self.acc.device)
            deficit = int(self.acc.reduce(deficit, reduction="max").item())
            if deficit == 0:
                break
            rounds += 1
            extra = self.next_examples(deficit)
            b2 = self.build_groups(extra, round_=rounds)
            r2, f2, c2 = self.score(b2, extra)
            for g, ok in enumerate(_group_spread(r2, G)):
                if ok and len(pool) < need:
                    pool.append(group(b2, r2, f2, c2, g))
        # Still short after the last round: keep zero-spread groups (their advantages are 0).
        for g in range(batch.num_groups):
            if len(pool) < need and not spread[g]:
                pool.append(group(batch, rewards, per_fn, completions, g))
        merged = _concat([p[0] for p in pool], self.tokenizer.pad_token_id)
        per_fn = {k: torch.cat([p[2][k] for p in pool]) for k in per_fn}
        texts = [t for p in pool for t in p[3]]
        stats = {"groups/resampled": float(dropped), "groups/resample_rounds": float(rounds)}
        return merged, torch.cat([p[1] for p in pool]), per_fn, texts, stats

    # ================================================================== log-probs and updates
    @torch.no_grad()
    def add_fixed_logprobs(self, batch: Batch) -> None:
        """Old (sampling policy) and reference log-probs, computed once per rollout batch.

        "Old" log-probs are only computed where the policy has moved since sampling: for the
        mini-batches of the second and later optimizer steps of a rollout batch. In the first
        step they equal the current log-probs, which the loss then takes detached (as TRL does):
        the same numbers without a second forward pass.
        """
        m = self.cfg.method
        temp = self.cfg.rollout.temperature if self.method.tempered else 1.0
        micro = self.plan.groups_per_micro
        policy = self.acc.unwrap_model(self.model)
        if self.method.needs_old(m) and self.cfg.optim.steps_per_rollout > 1:
            with self.acc.autocast():  # the training forward's precision, so the first ratio is 1
                # skipping the first optimizer step's groups: update() uses the current log-probs there
                start = self.plan.groups_per_step
                batch.old_logp = self._logprobs_in_chunks(policy, batch, temp, micro, start=start)
        if self.method.needs_ref_model(m):
            if self.ref_model is not None:
                device = next(self.ref_model.parameters()).device
                batch.ref_logp = self._logprobs_in_chunks(self.ref_model, batch, temp, micro, device=device)
            else:  # LoRA: the reference is the base model, i.e. the policy with its adapter disabled
                with policy.disable_adapter(), self.acc.autocast():
                    batch.ref_logp = self._logprobs_in_chunks(policy, batch, temp, micro)

    def _logprobs_in_chunks(
        self, model, batch: Batch, temp: float, groups: int, device=None, start: int = 0
    ) -> torch.Tensor:
        """(N, T) log-probs of groups ``start ..`` in chunks of ``groups``; NaN for the groups before."""
        device = device or self.acc.device
        G = batch.group_size
        out = torch.zeros(batch.completion_ids.shape, dtype=torch.float32)
        out[: start * G] = float("nan")  # not computed: a NaN loss (a skipped step) if ever used
        was_training = model.training
        model.eval()
        for g in range(start, batch.num_groups, groups):
            part = batch.groups(g, g + groups).trimmed()
            logp, _ = completion_logprobs(model, part.to(device), temperature=temp)
            out[g * G : (g + groups) * G, : logp.shape[1]] = logp.float().cpu()
        model.train(was_training)
        return out

    def update(self, batch: Batch) -> dict:
        """``steps_per_rollout`` optimizer steps, each over a mini-batch of whole groups."""
        plan, o = self.plan, self.cfg.optim
        self.model.train()
        logs: list[dict] = []
        for s in range(o.steps_per_rollout):
            mini = batch.groups(s * plan.groups_per_step, (s + 1) * plan.groups_per_step)
            if s == 0:  # the policy has not moved yet: old log-probs = current ones, detached (as TRL)
                mini.old_logp = None
            logs.append(self.optimizer_step(mini))
        out = _mean_dicts(logs)
        out["skipped_steps"] = sum(x.get("skipped_steps", 0.0) for x in logs)  # a count, not a mean
        return self._mean_over_processes(out)

    def _mean_over_processes(self, metrics: dict) -> dict:
        """Per-process update metrics (loss, entropy, the method's) averaged over processes.

        A process's loss is its share of the step's loss times the number of processes (the
        normalisers are divided by it), so the mean is the loss of the whole step.
        """
        if self.plan.world == 1:
            return metrics
        from accelerate.utils import gather_object

        return _mean_dicts(gather_object([metrics]))

    def optimizer_step(self, mini: Batch) -> dict:
        """Accumulate the mini-batch's micro-batches, then clip, guard and step."""
        plan, m = self.plan, self.cfg.method
        mask = self._loss_mask(mini)
        # Normalisers of the whole optimizer step over all processes, divided by the number of
        # processes because DDP averages gradients: the result does not depend on how the
        # step is split into micro-batches or processes.
        totals = torch.tensor([mask.sum().item(), float(mask.shape[0])], device=self.acc.device)
        totals = self.acc.reduce(totals, reduction="sum").cpu() / plan.world
        temp = self.cfg.rollout.temperature if self.method.tempered else 1.0
        logs, n_micro = [], plan.groups_per_step // plan.groups_per_micro
        for i in range(n_micro):
            mb = mini.groups(i * plan.groups_per_micro, (i + 1) * plan.groups_per_micro).trimmed()
            sync = contextlib.nullcontext() if i == n_micro - 1 else self.acc.no_sync(self.model)
            with sync:
                mb = mb.to(self.acc.device)
                logp, entropy = completion_logprobs(self.model, mb, temperature=temp, with_entropy=True)
                mb_mask = self._loss_mask(mb).to(logp.device)
                old = mb.old_logp if mb.old_logp is not None else logp.detach()
                ref = mb.ref_logp if mb.ref_logp is not None else old
                inputs = LossInputs(
                    logp=logp, mask=mb_mask, adv=mb.adv if mb.adv is not None else torch.zeros(len(logp)),
                    rewards=mb.rewards, old_logp=old, ref_logp=ref, group_size=mb.group_size,
                    max_completion_length=self.cfg.rollout.max_new_tokens,
                    tokens=float(totals[0]), sequences=float(totals[1]),
                )  # fmt: skip
                loss, metrics = self.method.loss(inputs, m)
                self.acc.backward(loss)
            cmask = mb.completion_mask.float()
            metrics = {f"{m.name}/{k}": v for k, v in metrics.items()}
            metrics["loss"] = loss.item()
            metrics["entropy"] = float((entropy.detach() * cmask).sum() / cmask.sum().clamp(min=1))
            logs.append(metrics)
        out = _mean_dicts(logs)
        for key in ("loss", f"{m.name}/loss"):  # micro-batch losses add up to the step's loss
            out[key] = sum(x[key] for x in logs if key in x)
        out.update(self._apply_gradients(out["loss"]))
        return out

    def _apply_gradients(self, loss: float) -> dict:
        o = self.cfg.optim
        if o.max_grad_norm > 0:
            norm = self.acc.clip_grad_norm_(self.model.parameters(), o.max_grad_norm)
        else:
            self.acc.unscale_gradients()  # fp16: the norm of the true gradients (a no-op otherwise)
            norm = torch.norm(torch.stack([p.grad.norm() for p in self.model.parameters() if p.grad is not None]))
        norm = float(norm)
        bad = torch.tensor([float(not (math.isfinite(norm) and math.isfinite(loss)))], device=self.acc.device)
        if self.plan.world > 1:  # the loss is per process: every process must skip the same steps
            bad = self.acc.reduce(bad, reduction="max")
        if bad.item():
            if self.acc.scaler is not None and math.isfinite(loss):
                # fp16 loss scaling: the scale was too high. The scaler skips this step and lowers it.
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                return {"grad_norm": norm, "skipped_steps": 1.0, "lr": self.scheduler.get_last_lr()[0]}
            self.optimizer.zero_grad(set_to_none=True)
            self.state["bad_steps"] += 1
            self.acc.print(f"skipped optimizer step: non-finite loss {loss} or grad norm {norm}")
            if self.state["bad_steps"] >= o.max_bad_steps:
                last = ckpt.latest_checkpoint(self.out)
                raise TrainingError(
                    f"{self.state['bad_steps']} optimizer steps in a row had a non-finite loss or gradient "
                    f"(optim.max_bad_steps = {o.max_bad_steps}); last good checkpoint: {last or 'none'}"
                )
            return {"grad_norm": norm, "skipped_steps": 1.0, "lr": self.scheduler.get_last_lr()[0]}
        self.state["bad_steps"] = 0
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["optimizer_steps"] += 1
        return {"grad_norm": norm, "skipped_steps": 0.0, "lr": lr}

    def _loss_mask(self, b: Batch) -> torch.Tensor:
        mask = b.completion_mask.float()
        if self.cfg.rollout.mask_truncated:
            mask = mask * (~b.truncated).float().unsqueeze(1).to(mask.device)
        return mask

    # ================================================================== evaluation, logging, saving
    def evaluate(self) -> dict:
        from grouptune.evaluation import evaluate_examples

        lg, r = self.cfg.log, self.cfg.rollout
        model = self.acc.unwrap_model(self.model)
        out = {}
        for src, examples in self.eval_data.items():
            res = evaluate_examples(
                model, self.tokenizer, examples, self.reward_fns, k=lg.eval_samples,
                temperature=lg.eval_temperature, max_new_tokens=r.max_new_tokens, eos_ids=self.eos_ids,
                batch_size=r.generation_batch_size, seed=_seed_for(self.cfg.optim.seed, -1, self.state["batch"]),
                max_examples=self.cfg.data.max_eval_examples, accelerator=self.acc, synced_gpus=_sharded(self.acc),
            )  # fmt: skip
            name = Path(src).stem if Path(src).suffix else src
            out.update({f"eval/{name}/{k}": v for k, v in res.items()})
        model.train()
        return out

    def _rollout_metrics(self, batch: Batch, per_fn: dict) -> dict:
        gather = lambda t: self.acc.gather(t.to(self.acc.device)).cpu()  # noqa: E731
        rewards = gather(batch.rewards.float())
        on = gather(batch.on_policy)
        lengths = gather(batch.completion_mask.sum(1).float())
        trunc = gather(batch.truncated.float())
        ok = ~torch.isnan(rewards)
        out = {
            "reward/mean": _nanmean(rewards[on]) if on.any() else _nanmean(rewards),
            "reward/std": float(rewards[on & ok].std()) if (on & ok).sum() > 1 else 0.0,
            "reward/unjudged_frac": float((~ok).float().mean()),
            "groups/zero_spread_frac": float((~torch.tensor(_group_spread(rewards, batch.group_size))).float().mean()),
            "completions/mean_length": float(lengths[on].mean()) if on.any() else float(lengths.mean()),
            "completions/max_length": float(lengths.max()),
            "completions/clipped_ratio": float(trunc[on].mean()) if on.any() else 0.0,
        }
        for name, vals in per_fn.items():
            v = gather(vals.float())
            out[f"reward/{name}/mean"] = _nanmean(v)
            out[f"reward/{name}/std"] = float(v[~torch.isnan(v)].std()) if (~torch.isnan(v)).sum() > 1 else 0.0
        if batch.adv is not None and (~on).any() and on.any():
            adv = gather(batch.adv)
            out["adv/off_policy_mean"] = float(adv[~on].mean())
            out["adv/on_policy_mean"] = float(adv[on].mean())
        return out

    def _log(self, metrics: dict, batch: Batch) -> None:
        record = {"batch": self.state["batch"], "optimizer_steps": self.state["optimizer_steps"], **metrics}
        self._write_metrics(record)
        if self.cfg.log.report_to:
            self.acc.log(metrics, step=self.state["batch"])
        if self.acc.is_main_process and self.cfg.log.samples_per_log:
            n = min(self.cfg.log.samples_per_log, len(self._last_completions))
            with open(self.out / "samples.jsonl", "a") as f:
                for i in range(n):
                    f.write(json.dumps({
                        "batch": self.state["batch"], "example": int(batch.example_index[i]),
                        "on_policy": bool(batch.on_policy[i]), "completion": self._last_completions[i],
                        "reward": _float(batch.rewards[i]),
                        "advantage": _float(batch.adv[i]) if batch.adv is not None else None,
                    }) + "\n")  # fmt: skip

    def _write_metrics(self, record: dict) -> None:
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _write_config(self) -> None:
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(config_to_yaml(self.cfg))

    def save_checkpoint(self) -> None:
        """Every process takes part (FSDP / ZeRO partitions are gathered); the main process writes."""
        self.acc.wait_for_everyone()
        path = ckpt.checkpoint_dir(self.out, self.state["batch"])
        ckpt.save_checkpoint(
            path, self.acc.unwrap_model(self.model), self._bare_optimizer(), self.scheduler, self.state,
            keep_last=self.cfg.checkpoint.keep_last,
        )  # fmt: skip
        self.acc.wait_for_everyone()

    def _resume(self) -> None:
        path = ckpt.latest_checkpoint(self.out)
        if path is None:
            raise ConfigError(f"checkpoint.resume: no complete checkpoint under {self.out / 'checkpoints'}")
        model = self.acc.unwrap_model(self.model)
        self.state = ckpt.load_checkpoint(path, model, self._bare_optimizer(), self.scheduler)
        self._drop_logs_after(self.state["batch"])
        self.acc.print(f"resumed from {path} (rollout batch {self.state['batch']})")

    def _bare_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer inside accelerate's wrapper."""
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def _drop_logs_after(self, batch: int) -> None:
        """Drop log records of batches after the checkpoint (a crash came before the next one):
        the resumed run writes them again, identically, so each batch is logged once."""
        if not self.acc.is_main_process:
            return
        for path in (self.out / "metrics.jsonl", self.out / "samples.jsonl"):
            if path.is_file():
                keep = [line for line in path.read_text().splitlines(keepends=True) if _logged_batch(line) <= batch]
                path.with_suffix(".tmp").write_text("".join(keep))
                os.replace(path.with_suffix(".tmp"), path)

    def save_final(self) -> Path:
        path = self.out / "final"
        self.acc.wait_for_everyone()
        merge = self.cfg.model.lora_r > 0 and self.cfg.model.merge_lora_on_save
        # Every process takes part: FSDP and ZeRO-3 gather their shards into the full weights here.
        weights = self.acc.get_state_dict(self.model)
        if self.acc.is_main_process:
            model = self.acc.unwrap_model(self.model)
            if merge:  # a plain transformers model: loads without peft
                model, weights = _merged(model, weights, self.cfg.model, sharded=_sharded(self.acc)), None
            model.save_pretrained(path, state_dict=weights, safe_serialization=True)
            self.tokenizer.save_pretrained(path)
        self.acc.wait_for_everyone()
        return path


# ----------------------------------------------------------------------------- helpers


def _accelerator(cfg: TrainConfig) -> Accelerator:
    """accelerate's Accelerator, refusing to run launched processes as independent copies.

    On a host without an accelerator, accelerate treats ``torchrun`` processes as separate
    single-process runs unless told to use the CPU: we tell it, unless accelerate's state was
    already set up in this process (then it is used as it is). (On such a host start the
    processes with ``torchrun``: ``accelerate launch --cpu --num_processes N`` starts one
    process unless given an MPI hostfile.)
    """
    from accelerate.state import PartialState

    if cfg.model.mixed_precision not in ("", "no", "bf16", "fp16"):
        raise ConfigError(f"model.mixed_precision: expected bf16, fp16 or no, got '{cfg.model.mixed_precision}'")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = getattr(torch, "accelerator", None)  # torch >= 2.6
    no_accelerator = not (device.is_available() if device is not None else torch.cuda.is_available())
    set_up = bool(PartialState._shared_state)
    acc = Accelerator(
        cpu=world > 1 and no_accelerator and not set_up, mixed_precision=cfg.model.mixed_precision or None,
        log_with=cfg.log.report_to or None, project_dir=str(cfg.log.output_dir),
    )  # fmt: skip
    if world > 1 and acc.num_processes != world:
        raise ConfigError(f"launched as {world} processes but accelerate runs {acc.num_processes}: check the launcher")
    return acc


def _sharded(acc: Accelerator) -> bool:
    """Parameters sharded over processes (FSDP, ZeRO-3): every process must run every forward."""
    if acc.distributed_type == DistributedType.FSDP:
        return True
    return acc.distributed_type == DistributedType.DEEPSPEED and acc.state.deepspeed_plugin.zero_stage == 3


def _check_engine(acc: Accelerator, plan: Plan, cfg: TrainConfig) -> None:
    """What the distributed engine cannot do with these settings, refused before anything loads.

    FSDP means FSDP2 (``fully_shard``, which accelerate recommends): the reference model is
    sharded the same way. DeepSpeed steps its optimizer inside backward (accelerate's
    gradient_accumulation_steps = 1).
    """
    if acc.distributed_type == DistributedType.FSDP and acc.state.fsdp_plugin.fsdp_version != 2:
        raise ConfigError(
            "FSDP: set fsdp_version: 2 in the accelerate config (FSDP1 is not supported; "
            "see grouptune/configs/accelerate/fsdp.yaml)"
        )
    zero3 = _sharded(acc) and acc.distributed_type == DistributedType.DEEPSPEED
    if zero3 and cfg.model.ref_on_cpu:
        raise ConfigError("model.ref_on_cpu: under ZeRO-3 the reference model is sharded over the processes; "
                          "set it to false")
    if acc.distributed_type == DistributedType.DEEPSPEED and plan.groups_per_micro != plan.groups_per_step:
        raise ConfigError(
            "under DeepSpeed an optimizer step is one backward pass: set optim.micro_batch_groups to 0 "
            f"(the {plan.groups_per_step} groups of a step at once) or use the FSDP config"
        )


def _deepspeed_batch_size(acc: Accelerator, plan: Plan) -> None:
    """DeepSpeed wants its micro-batch size up front (accelerate reads it from a dataloader,
    which the trainer does not use): the sequences of one forward/backward pass per process."""
    if acc.distributed_type == DistributedType.DEEPSPEED:
        ds = acc.state.deepspeed_plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = plan.groups_per_micro * plan.group_size


def _reference_copy(model, m):
    """A frozen copy of the initial policy. Under ZeRO-3 transformers loads weights already
    partitioned over processes (``deepspeed.zero.Init``), which a copy would not own: load again."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    ref = load_model_and_tokenizer(m)[0] if is_deepspeed_zero3_enabled() else copy.deepcopy(model)
    return ref.eval().requires_grad_(False)


def _shard_reference(acc: Accelerator, ref_model):
    """Shard the frozen reference model as the policy is, under FSDP2 and ZeRO-3: each process
    holds 1/N of it, gathered layer by layer in the forward pass (as TRL does)."""
    if acc.distributed_type == DistributedType.FSDP:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(acc, ref_model).eval()
    if _sharded(acc):  # ZeRO-3: a DeepSpeed engine without optimizer, from the run's own config
        import deepspeed

        ds = copy.deepcopy(acc.state.deepspeed_plugin.deepspeed_config)
        for training_only in ("optimizer", "scheduler"):
            ds.pop(training_only, None)
        zero = ds["zero_optimization"]
        zero.pop("offload_optimizer", None)
        h = getattr(ref_model.config, "hidden_size", None)
        if h:  # TRL's sizes for a frozen model: gather per layer, keep only small tensors whole
            zero.update(reduce_bucket_size=h * h, stage3_param_persistence_threshold=10 * h,
                        stage3_prefetch_bucket_size=int(0.9 * h * h))  # fmt: skip
        engine, *_ = deepspeed.initialize(model=ref_model, config=ds)
        engine.eval()  # (returns None on a DeepSpeed engine)
        return engine
    return ref_model


def _merged(model, weights: dict, m, sharded: bool):
    """The policy with its LoRA adapter merged into the base weights (peft's merge_and_unload).

    With sharded weights (FSDP2, ZeRO-3) the main process rebuilds the model whole on CPU from
    the base weights and the gathered ``weights``, then merges: it needs the memory of a full copy.
    """
    if not sharded:
        return copy.deepcopy(model).merge_and_unload()
    from transformers.integrations import deepspeed as hf_deepspeed

    zero3 = hf_deepspeed._hf_deepspeed_config_weak_ref  # under ZeRO-3 transformers loads partitioned:
    hf_deepspeed.unset_hf_deepspeed_config()  # load this copy whole
    try:
        whole = _add_lora(load_model_and_tokenizer(m)[0], m)
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = zero3
    whole.load_state_dict({k: v.to(whole.dtype) for k, v in weights.items()})
    return whole.merge_and_unload()


def _add_lora(model, m):
    try:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    except ImportError as e:  # pragma: no cover - peft is a dependency of the lora extra
        raise ConfigError("model.lora_r > 0 needs peft: pip install 'grouptune[peft]'") from e
    if m.load_in_4bit:  # QLoRA: norms in float32, inputs that require grad for checkpointing
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=m.gradient_checkpointing)
    lora = LoraConfig(
        r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
        target_modules=list(m.lora_target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, lora)


VERIFIERS = ("math", "gsm8k", "exact_match")  # reward functions that need gold answers


def _load_data(
    cfg: TrainConfig, tokenizer, plan: Plan, reward_fns: list
) -> tuple[list[Example], dict[str, list[Example]]]:
    """Training and evaluation examples; one ``DataError`` lists the problems of every source.

    Rows need a gold answer when a verifier scores them (one it can judge, for verifiers that
    say so: ``gold_problem``), and the training rows the demonstration (and teacher responses)
    that fill the method's off-policy members: the demonstration and K - 1 teacher responses.
    """
    d = cfg.data
    gold = ("answer",) if any(f in VERIFIERS for f in cfg.reward.functions) else ()
    demos = ("completion",) * (plan.off_policy > 0) + ("teacher_completions",) * (plan.off_policy > 1)
    teachers = max(plan.off_policy - 1, 0)
    sources = [(d.train, d.train_split, gold + demos, teachers)] + [(src, d.eval_split, gold, 0) for src in d.eval]
    gold_checks = [rf.fn.gold_problem for rf in reward_fns if hasattr(rf.fn, "gold_problem")]
    loaded, problems = [], []
    for src, split, require, min_teachers in sources:
        try:
            loaded.append(load_examples(d, src, tokenizer, split=split, require=require, gold_checks=gold_checks,
                                        min_teachers=min_teachers))  # fmt: skip
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    return loaded[0], dict(zip(d.eval, loaded[1:]))


def _scheduler(optimizer, kind: str, warmup: int, total: int):
    from transformers import get_scheduler

    names = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
    if kind not in names:
        raise ConfigError(f"optim.scheduler: expected one of {', '.join(names)}, got '{kind}'")
    return get_scheduler(names[kind], optimizer, num_warmup_steps=warmup, num_training_steps=total)


def _group_spread(rewards: torch.Tensor, G: int) -> list[bool]:
    """Per group: do the judged (non-NaN) rewards differ? One pass over all groups, no Python loop."""
    r = rewards.view(-1, G)  # (B, G)
    judged = ~torch.isnan(r)
    hi = r.masked_fill(~judged, -math.inf).amax(1)  # (B,)
    lo = r.masked_fill(~judged, math.inf).amin(1)
    return ((judged.sum(1) > 1) & (hi - lo > 0)).tolist()


def _concat(batches: list[Batch], pad_id: int) -> Batch:
    """Concatenate single-group Batches, re-padding to common widths."""
    P = max(b.prompt_ids.shape[1] for b in batches)
    T = max(b.completion_ids.shape[1] for b in batches)

    def lpad(t, width, value):
        return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

    def rpad(t, width, value):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return Batch(
        prompt_ids=torch.cat([lpad(b.prompt_ids, P, pad_id) for b in batches]),
        prompt_mask=torch.cat([lpad(b.prompt_mask, P, 0) for b in batches]),
        completion_ids=torch.cat([rpad(b.completion_ids, T, pad_id) for b in batches]),
        completion_mask=torch.cat([rpad(b.completion_mask, T, 0) for b in batches]),
        on_policy=torch.cat([b.on_policy for b in batches]),
        truncated=torch.cat([b.truncated for b in batches]),
        example_index=torch.cat([b.example_index for b in batches]),
        group_size=batches[0].group_size,
    )


def _mean_dicts(dicts: list[dict]) -> dict:
    keys = {k for d in dicts for k in d}
    return {k: sum(d[k] for d in dicts if k in d) / sum(1 for d in dicts if k in d) for k in sorted(keys)}


def _nanmean(t: torch.Tensor) -> float:
    t = t.float()
    ok = ~torch.isnan(t)
    return float(t[ok].mean()) if ok.any() else float("nan")


def _logged_batch(line: str) -> float:
    """The batch of a JSON Lines log record; infinite for a line cut short by a crash."""
    try:
        return json.loads(line)["batch"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _float(x) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _postfix(metrics: dict) -> dict:
    keys = {"loss": "loss", "reward/mean": "reward", "entropy": "ent", "grad_norm": "gnorm"}
    return {short: f"{metrics[k]:.3g}" for k, short in keys.items() if k in metrics}


def _progress(cfg: TrainConfig, acc: Accelerator, start: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=cfg.optim.total_batches, initial=start, desc=f"{cfg.method.name}",
        disable=not (cfg.log.progress and acc.is_main_process), unit="batch", dynamic_ncols=True,
    )  # fmt: skip


@contextlib.contextmanager
def _catch_signals(trainer: Trainer):
    """SIGTERM / SIGINT: finish the current rollout batch, save a checkpoint, return.

    A second signal before then raises ``KeyboardInterrupt`` (stop now, no checkpoint).
    Handlers can only be installed from the main thread; elsewhere signals keep their handlers.
    """

    def handler(signum, frame):
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt(f"signal {signum} received twice: stopping without a checkpoint")
        trainer.stop_signal = signum  # no printing here: the signal may arrive in the middle of a print

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

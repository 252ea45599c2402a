"""The training loop: one loop for every method, read top to bottom in ``Trainer.train``.

Per rollout batch:

    prompts  -> groups   K data-set members (expert demonstration, teacher responses) + M rollouts
             -> rewards  every member scored by the same reward functions
             -> adv      group advantages over the whole batch of all processes
             -> logp     "old" (sampling policy) and reference log-probs, when the method needs them
             -> update   ``steps_per_rollout`` optimizer steps on mini-batches of whole groups,
                         each accumulated over micro-batches and normalised by the global
                         token / sequence count of the step
             -> log, evaluate, checkpoint

A method changes only what its record in ``grouptune.methods`` says (group members, which
log-probs, which loss, its defaults); the math is in ``docs/methods.md``. Model set-up lives
in ``grouptune.policy``, what a run writes about itself in ``grouptune.runlog``.
Distribution is accelerate's: groups are assigned whole to processes; everything that needs
the whole batch (advantages, normalisers, metrics) is reduced across them.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from grouptune import checkpoint as ckpt
from grouptune import resume
from grouptune.advantages import group_advantages, group_has_spread
from grouptune.config import TrainConfig, config_to_dict
from grouptune.data import Example, load_run_data, reward_columns
from grouptune.engines import check_engine_settings, make_engine
from grouptune.evaluation import check_pass_at
from grouptune.layout import DataOrder, global_groups, make_plan, seed_for
from grouptune.loss_inputs import LossFeeder
from grouptune.methods import LossInputs, get_method, overlong_penalty, resolve_method
from grouptune.metrics import rollout_metrics
from grouptune.modeling import resolve_init_from
from grouptune.policy import build_policy, check_engine, make_accelerator, save_pretrained
from grouptune.preflight import check_run
from grouptune.rewards import build_eval_functions, build_reward_functions, compute_rewards
from grouptune.rollout import Batch, Generations, completion_logprobs, pad, pad_logprobs
from grouptune.rundir import claim, releasing
from grouptune.runlog import RunLog
from grouptune.signals import catch_signals
from grouptune.suites import load_run_suite, suite_metrics


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps); the last good checkpoint is intact."""


class Trainer:
    @releasing(always=False)  # a run that fails to start frees its output directory
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg = resolve_init_from(resolve_method(cfg))  # method defaults filled in, settings checked
        check_run(cfg)  # every setting and path, before anything loads (grouptune.preflight)
        self.method = get_method(cfg.method.name)
        self.out = Path(cfg.log.output_dir)
        self.acc = make_accelerator(cfg)
        self.plan = plan = make_plan(cfg, self.method, self.acc.num_processes)
        check_engine_settings(cfg, self.method)
        check_pass_at(cfg.log)
        check_engine(self.acc, cfg, one_pass_per_step=plan.groups_per_micro == plan.groups_per_step)
        self.run_dir = claim(cfg, self.acc)  # this run's output directory: locked, not a reused one
        self.resuming = resume.prepare(cfg, self.acc)  # (checkpoint, changed settings): checked before loading
        torch.manual_seed(cfg.optim.seed)
        needs_ref = self.method.needs_ref_model(cfg.method) or self.method.needs_ref_kl
        self.policy = build_policy(cfg, self.acc, plan.groups_per_micro * plan.group_size, needs_ref)
        self.model, self.optimizer, self.scheduler = self.policy.model, self.policy.optimizer, self.policy.scheduler
        self.tokenizer, self.eos_ids = self.policy.tokenizer, self.policy.eos_ids
        self.engine = make_engine(cfg, self.acc, self.acc.unwrap_model(self.model), self.tokenizer, self.eos_ids)
        self.reward_fns = build_reward_functions(cfg.reward)
        self.eval_fns = build_eval_functions(cfg.reward) if cfg.reward.eval_functions else self.reward_fns
        # CHORD's expert rows are demonstrations: of the training rows unless data.expert names a set of its own
        demos = max(plan.off_policy, int(self.method.expert_stream and not cfg.data.expert))
        self.train_data, self.eval_data, self.expert_data = load_run_data(
            cfg, self.tokenizer, demos, self.reward_fns, self.eval_fns
        )
        self.eval_suite = load_run_suite(cfg, self.tokenizer)  # log.eval_suite: a paper's benchmarks
        self.order = DataOrder(len(self.train_data), cfg.optim.seed)
        self.log = RunLog(cfg, self.acc)
        self.feeder = LossFeeder(self)  # what the loss receives: forward passes, normalisers, expert rows
        self.state = {"batch": 0, "cursor": 0, "optimizer_steps": 0, "bad_steps": 0}
        self.stop_signal: int | None = None  # set by SIGTERM / SIGINT during train()
        self.run_dir.start()  # log.overwrite: the earlier run is deleted now that everything has loaded

    # ================================================================== the loop
    @releasing(always=True)  # the output directory is free again when train() ends, however it ends
    def train(self) -> dict:
        cfg = self.cfg
        if cfg.checkpoint.resume:
            self._resume()
        self.log.start(self.state["batch"])
        metrics: dict = {}
        with catch_signals(self):
            while self.state["batch"] < cfg.optim.total_batches:
                t0 = time.perf_counter()
                batch, metrics = self.make_batch()  # prompts -> groups -> rewards -> advantages
                t1 = time.perf_counter()
                self.add_fixed_logprobs(batch)  # old / reference log-probs
                metrics.update(self.update(batch))  # optimizer steps
                metrics.update({"time/rollout": t1 - t0, "time/update": time.perf_counter() - t1})
                if self.end_of_batch(metrics, batch):  # log, evaluate, checkpoint; True: stop now
                    self.close()
                    return metrics
        if self.eval_data or self.eval_suite:
            final_eval = self.evaluate()
            metrics.update(final_eval)
            self.log.write({"batch": self.state["batch"], **final_eval})
        if cfg.checkpoint.save_final:
            self.save_final()
        self.close()
        return metrics

    def close(self) -> None:
        """Shut the rollout engine down, then the trackers and accelerate's process group."""
        self.engine.close()
        self.log.close()

    def end_of_batch(self, metrics: dict, batch: Batch) -> bool:
        """Count the batch; evaluate, log and checkpoint when due. True when a signal asks to stop."""
        cfg = self.cfg
        self.state["batch"] += 1
        b = self.state["batch"]
        if cfg.log.eval_every and b % cfg.log.eval_every == 0 and b < cfg.optim.total_batches:
            metrics.update(self.evaluate())
        self.log.batch_done(self.state, metrics, batch)
        stop = self._signalled()
        if stop or (cfg.checkpoint.save_every and b % cfg.checkpoint.save_every == 0):
            self.save_checkpoint()
        if stop:
            self.acc.print(f"stopped by signal {self.stop_signal} after rollout batch {b}; "
                           "resume with --checkpoint.resume true")  # fmt: skip
        return stop

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
        return [self.train_data[self.order(start + i)] for i in global_groups(n, steps, self.plan.world, self.acc.process_index)]

    def make_batch(self) -> tuple[Batch, dict]:
        """This process's groups of one rollout batch: built, scored, given advantages; its metrics."""
        examples = self.next_examples(self.plan.groups, steps=self.cfg.optim.steps_per_rollout)
        sync_seconds = self.engine.sync_weights(self.model)  # the engine samples with the current policy
        batch = self.score(self.build_groups(examples, round_=0), examples)
        resampling = {"groups/resampled": 0.0, "time/weight_sync": sync_seconds}
        if self.cfg.method.dynamic_sampling:
            batch, resampling = self.resample_flat_groups(batch)
        if self.method.uses_advantages:
            batch.adv = self.advantages(batch)
        self.engine.sleep()  # sleep mode: the engine's memory is the trainer's until the next sync
        return batch, {**self.rollout_metrics(batch), **resampling}

    def build_groups(self, examples: list[Example], round_: int) -> Batch:
        """Group-contiguous members: K data-set members (demonstration first), then M rollouts."""
        plan, tok = self.plan, self.tokenizer
        max_new = self.cfg.rollout.max_new_tokens
        prompts, completions, truncated, on_policy, engine_logp = [], [], [], [], []
        rollouts = self._rollouts(examples, round_)
        for g, ex in enumerate(examples):
            texts = ([ex.completion] + ex.teacher_completions)[: plan.off_policy]
            for text in texts:
                ids = tok(text, add_special_tokens=False).input_ids + [self.eos_ids[0]]
                prompts.append(ex.prompt_ids)
                completions.append(ids[:max_new])
                truncated.append(len(ids) > max_new)
                on_policy.append(False)
                engine_logp.append([])
            for i in range(g * plan.on_policy, (g + 1) * plan.on_policy):
                ids, cut = rollouts.token_ids[i], rollouts.truncated[i]
                prompts.append(ex.prompt_ids)
                completions.append(ids)
                truncated.append(cut)
                on_policy.append(True)
                engine_logp.append(rollouts.logprobs[i] if rollouts.logprobs is not None else [])
        pid = tok.pad_token_id
        prompt_ids, prompt_mask = pad(prompts, pid, left=True)
        completion_ids, completion_mask = pad(completions, pid, left=False)
        return Batch(
            prompt_ids, prompt_mask, completion_ids, completion_mask,
            on_policy=torch.tensor(on_policy), truncated=torch.tensor(truncated),
            example_index=torch.tensor([ex.index for ex in examples]).repeat_interleave(plan.group_size),
            group_size=plan.group_size, engine_logp=pad_logprobs(engine_logp, completion_ids.shape[1]),
        )  # fmt: skip

    def _rollouts(self, examples: list[Example], round_: int) -> Generations:
        """M samples per prompt from the current policy, each request with its own seed.

        A request's seed depends on (seed, batch, round, its global position in the batch), so
        processes sample differently and one process sampling the whole batch draws what several
        processes draw (with the transformers engine: when a chunk of ``generation_batch_size``
        holds at most the rollouts of one optimizer step of one process).
        """
        M, r = self.plan.on_policy, self.cfg.rollout
        if M == 0:
            return Generations([], [])
        steps = self.cfg.optim.steps_per_rollout if round_ == 0 else 1  # as next_examples laid them out
        where = global_groups(len(examples), steps, self.plan.world, self.acc.process_index)
        seeds = [seed_for(self.cfg.optim.seed, self.state["batch"], round_, where[i // M] * M + i % M)
                 for i in range(len(examples) * M)]  # fmt: skip
        prompts = [ex.prompt_ids for ex in examples for _ in range(M)]
        return self.engine.generate(
            prompts, seeds, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p
        )

    def score(self, batch: Batch, examples: list[Example]) -> Batch:
        """Explicit rewards of every member (NaN = unjudged), plus the soft over-long penalty."""
        G = self.plan.group_size
        batch.texts = self.tokenizer.batch_decode(
            [ids[m.bool()].tolist() for ids, m in zip(batch.completion_ids, batch.completion_mask)],
            skip_special_tokens=True,
        )
        result = compute_rewards(
            self.reward_fns, [ex.prompt_text for ex in examples for _ in range(G)], batch.texts,
            reward_columns(examples, G), on_error=self.cfg.reward.on_error, row_ids=batch.example_index.tolist(),
        )  # fmt: skip
        batch.rewards, batch.reward_parts = result.total.clone(), result.per_function
        if self.cfg.method.overlong_buffer:
            lengths = batch.completion_mask.sum(1)
            batch.rewards += overlong_penalty(lengths, self.cfg.rollout.max_new_tokens, self.cfg.method.overlong_buffer)
        return batch

    def advantages(self, batch: Batch) -> torch.Tensor:
        """Group advantages over the global batch (gathered), then this process's rows."""
        m = self.cfg.method
        rewards = self.acc.gather(batch.rewards.to(self.acc.device)).cpu()
        on_policy = self.acc.gather(batch.on_policy.to(self.acc.device)).cpu()
        adv = group_advantages(
            rewards, batch.group_size, baseline=m.adv_baseline, scale=m.adv_scale, on_policy_mask=on_policy
        )
        n = batch.rewards.shape[0]
        return adv[self.acc.process_index * n : (self.acc.process_index + 1) * n]

    def resample_flat_groups(self, batch: Batch) -> tuple[Batch, dict]:
        """Dynamic sampling (DAPO): replace groups whose rewards have no spread by groups of
        fresh prompts, for up to ``max_resample_rounds`` rounds; still short, keep flat groups."""
        need = self.plan.groups
        spread = group_has_spread(batch.rewards, batch.group_size).tolist()
        pool = [batch.groups(g, g + 1) for g in range(batch.num_groups) if spread[g]]
        rounds = 0
        while rounds < self.cfg.method.max_resample_rounds:
            deficit = torch.tensor([max(need - len(pool), 0)], device=self.acc.device)
            deficit = int(self.acc.reduce(deficit, reduction="max").item())
            if deficit == 0:
                break
            rounds += 1
            extra = self.next_examples(deficit)
            fresh = self.score(self.build_groups(extra, round_=rounds), extra)
            for g, ok in enumerate(group_has_spread(fresh.rewards, fresh.group_size).tolist()):
                if ok and len(pool) < need:
                    pool.append(fresh.groups(g, g + 1))
        flat = [batch.groups(g, g + 1) for g in range(batch.num_groups) if not spread[g]]
        merged = Batch.cat(pool + flat[: max(need - len(pool), 0)], self.tokenizer.pad_token_id)
        return merged, {"groups/resampled": float(len(flat)), "groups/resample_rounds": float(rounds)}

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
        needs_old = self.method.needs_old(m) or self.cfg.vllm.importance_sampling_cap > 0
        if needs_old and self.cfg.optim.steps_per_rollout > 1:
            with self.acc.autocast():  # the training forward's precision, so the first ratio is 1
                # skipping the first optimizer step's groups: update() uses the current log-probs there
                start = self.plan.groups_per_step
                batch.old_logp = self._logprobs_in_chunks(policy, batch, temp, micro, start=start)
        if self.method.needs_ref_model(m):
            ref = self.policy.reference
            if ref is not None:
                device = next(ref.parameters()).device
                batch.ref_logp = self._logprobs_in_chunks(ref, batch, temp, micro, device=device)
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
            logs.append(self.optimizer_step(mini, first=s == 0))
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

    def optimizer_step(self, mini: Batch, first: bool = True) -> dict:
        """Accumulate the mini-batch's micro-batches, then clip, guard and step. ``first``: the
        first step of the rollout batch (the policy is still the one that sampled it)."""
        plan = self.plan
        step = self.feeder.step(mini, first)  # normalisers of the whole step (all processes); CHORD's expert rows
        logs, n_micro = [], plan.groups_per_step // plan.groups_per_micro
        for i in range(n_micro):
            mb = mini.groups(i * plan.groups_per_micro, (i + 1) * plan.groups_per_micro).trimmed()
            sync = contextlib.nullcontext() if i == n_micro - 1 else self.acc.no_sync(self.model)
            with sync:
                mb = mb.to(self.acc.device)
                logs.append(self._micro_step(mb, *step.inputs(i, mb)))
        out = _mean_dicts(logs)
        # micro-batch losses add up to the step's loss, and so do its parts (CHORD's rl_loss and sft_loss, ...)
        for key in (k for k in out if k.endswith("loss")):
            out[key] = sum(x[key] for x in logs if key in x)
        out.update(self._apply_gradients(out["loss"]))
        return out

    def _micro_step(self, mb: Batch, inputs: LossInputs, engine_metrics: dict) -> dict:
        """The method's loss and backward for one micro-batch (its forward pass made ``inputs``); its metrics."""
        loss, metrics = self.method.loss(inputs, self.cfg.method)
        self.acc.backward(loss)
        cmask = mb.completion_mask.float()
        metrics = {f"{self.method.name}/{k}": v for k, v in metrics.items()} | engine_metrics
        metrics["loss"] = loss.item()
        metrics["entropy"] = float((inputs.entropy.detach() * cmask).sum() / cmask.sum().clamp(min=1))
        return metrics

    def _apply_gradients(self, loss: float) -> dict:
        """Clip; skip the step when the loss or gradient is not finite (on every process); step."""
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
        lr = self.scheduler.get_last_lr()[0]
        if bad.item():
            if self.acc.scaler is not None and math.isfinite(loss):
                # fp16 loss scaling: the scale was too high. The scaler skips this step and lowers it.
                self.optimizer.step()
            else:
                self._count_bad_step(loss, norm)
            self.optimizer.zero_grad(set_to_none=True)
            return {"grad_norm": norm, "skipped_steps": 1.0, "lr": lr}
        self.state["bad_steps"] = 0
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["optimizer_steps"] += 1
        return {"grad_norm": norm, "skipped_steps": 0.0, "lr": lr}

    def _count_bad_step(self, loss: float, norm: float) -> None:
        self.state["bad_steps"] += 1
        self.acc.print(f"skipped optimizer step: non-finite loss {loss} or grad norm {norm}")
        if self.state["bad_steps"] >= self.cfg.optim.max_bad_steps:
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(
                f"{self.state['bad_steps']} optimizer steps in a row had a non-finite loss or gradient "
                f"(optim.max_bad_steps = {self.cfg.optim.max_bad_steps}); "
                f"last good checkpoint: {ckpt.latest_checkpoint(self.out) or 'none'}"
            )

    def _loss_mask(self, b: Batch) -> torch.Tensor:
        mask = b.completion_mask.float()
        if self.cfg.rollout.mask_truncated:
            mask = mask * (~b.truncated).float().unsqueeze(1).to(mask.device)
        return mask

    # ================================================================== metrics, evaluation, saving
    def rollout_metrics(self, batch: Batch) -> dict:
        """Rewards, group spread, lengths and advantages of the whole rollout batch (all processes)."""

        def gather(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else self.acc.gather(t.to(self.acc.device)).cpu()

        return rollout_metrics(
            gather(batch.rewards.float()), gather(batch.on_policy), gather(batch.completion_mask.sum(1).float()),
            gather(batch.truncated.float()), batch.group_size, gather(batch.adv),
            {name: gather(v.float()) for name, v in batch.reward_parts.items()},
        )  # fmt: skip

    def evaluate(self) -> dict:
        from grouptune.evaluation import evaluate_examples

        lg = self.cfg.log
        self.engine.sync_weights(self.model)  # the rollout batch's optimizer steps moved the policy
        out = {}
        for src, examples in self.eval_data.items():
            res = evaluate_examples(
                self.engine, self.tokenizer, examples, self.eval_fns, k=lg.eval_samples,
                temperature=lg.eval_temperature, max_new_tokens=self.cfg.rollout.max_new_tokens,
                seed=seed_for(self.cfg.optim.seed, -1, self.state["batch"]),
                max_examples=self.cfg.data.max_eval_examples, accelerator=self.acc, pass_at=lg.eval_pass_at,
            )  # fmt: skip
            name = Path(src).stem if Path(src).suffix else src
            out.update({f"eval/{name}/{k}": v for k, v in res.items()})
        out.update(suite_metrics(self))  # log.eval_suite: eval/<benchmark>/<metric>
        self.engine.sleep()
        self.acc.unwrap_model(self.model).train()
        return out

    def save_checkpoint(self) -> None:
        """Every process takes part (FSDP / ZeRO partitions are gathered); the main process writes."""
        self.acc.wait_for_everyone()
        path = ckpt.checkpoint_dir(self.out, self.state["batch"])
        ckpt.save_checkpoint(
            path, self.acc.unwrap_model(self.model), self._bare_optimizer(), self.scheduler, self.state,
            keep_last=self.cfg.checkpoint.keep_last, config=config_to_dict(self.cfg),
        )  # fmt: skip
        self.acc.wait_for_everyone()

    def _resume(self) -> None:
        path, changed = self.resuming  # the newest checkpoint that verifies; settings it allows to change
        model = self.acc.unwrap_model(self.model)
        self.state = ckpt.load_checkpoint(path, model, self._bare_optimizer(), self.scheduler)
        resume.apply_changes(changed, self.scheduler, self.cfg)  # a new optim.lr goes into the optimizer
        self.log.drop_after(self.state["batch"])
        self.acc.print(f"resumed from {path} (rollout batch {self.state['batch']})")

    def _bare_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer inside accelerate's wrapper."""
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def save_final(self) -> Path:
        """The final model, written whole or not at all; if that fails, a checkpoint to finish from."""
        try:
            save_pretrained(self.acc, self.policy, self.cfg.model, self.out / "final")
        except ckpt.CheckpointWriteError as e:
            raise resume.final_save_failed(self, e) from None
        return self.out / "final"


# ----------------------------------------------------------------------------- helpers

def _mean_dicts(dicts: list[dict]) -> dict:
    keys = {k for d in dicts for k in d}
    return {k: sum(d[k] for d in dicts if k in d) / sum(1 for d in dicts if k in d) for k in sorted(keys)}

"""What a method's loss receives for one micro-batch (``LossInputs``), and the passes that make it.

For every optimizer step the trainer asks ``LossFeeder.step`` for a ``StepInputs``; it holds the
normalisers of the whole step (summed over processes) and, for a method with an
``expert_stream`` (CHORD), the step's expert rows. ``StepInputs.inputs`` then runs the forward
pass of one micro-batch and returns its ``LossInputs``:

- every method: the policy's log-probs and entropy (with grad), at the sampling temperature
  for the RL losses (``Method.tempered``), untempered otherwise;
- ``needs_ref_kl`` (ASFT): ``KL(pi_ref || pi)`` over the vocabulary at every position, from the
  policy's logits and the reference's (the frozen initial model, or under LoRA the policy with its
  adapter disabled) by :func:`grouptune.losses.vocab_kl`, never a float32 ``[N, T, V]`` copy;
- ``expert_stream`` (CHORD): the micro-batch's share of expert rows, scored in the same forward
  pass as its rollouts (one forward per backward, as DDP and DeepSpeed expect). The rows are the
  demonstrations of ``data.expert`` (a separate expert data set, as in the CHORD paper) or, when
  it is unset, of the training rows, in a seeded order of their own; each process takes its
  consecutive share of a step's rows, so N processes see the rows one process sees.

``method.loss_normalizer: micro_batch`` replaces the step's token counts by each micro-batch's
own count times the number of micro-batches (the official GFT code's and verl's token mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grouptune.data import Example
from grouptune.layout import DataOrder, seed_for
from grouptune.logprobs import logprobs_and_entropy
from grouptune.losses import vocab_kl
from grouptune.methods import LossInputs
from grouptune.metrics import engine_mismatch
from grouptune.rollout import Batch, completion_logits, completion_logprobs, pad


class LossFeeder:
    """Made once per run; hands out the ``StepInputs`` of each optimizer step."""

    def __init__(self, trainer):
        self.t = trainer
        self.expert_order = None
        # the expert rows: data.expert's, else the training rows' demonstrations
        self.expert_data = trainer.expert_data if trainer.expert_data is not None else trainer.train_data
        if trainer.method.expert_stream:  # the expert rows' own data order, seeded apart from the prompts'
            self.expert_order = DataOrder(len(self.expert_data), seed_for(trainer.cfg.optim.seed, -2))

    def step(self, mini: Batch, first: bool = True) -> StepInputs:
        """The inputs of an optimizer step over ``mini``; ``first``: the first step of its rollout
        batch (the policy is still the one that sampled it)."""
        expert = None
        if self.expert_order is not None:
            expert = self.expert_rows(self.t.plan.groups_per_step * self.t.cfg.method.chord_expert_per_group)
        return StepInputs(self.t, mini, expert, first)

    def expert_rows(self, n: int) -> Batch:
        """This process's next ``n`` expert rows: demonstrations, one row per prompt, drawn from the
        expert order at the cursor ``state["expert_cursor"]`` (checkpointed with the other counters)."""
        t = self.t
        start = t.state.get("expert_cursor", 0)
        t.state["expert_cursor"] = start + n * t.plan.world
        first = start + t.acc.process_index * n
        examples = [self.expert_data[self.expert_order(first + j)] for j in range(n)]
        return demonstration_rows(examples, t.tokenizer, t.eos_ids[0], t.cfg.rollout.max_new_tokens)


class StepInputs:
    """The ``LossInputs`` of one optimizer step's micro-batches."""

    def __init__(self, trainer, mini: Batch, expert: Batch | None, first: bool = True):
        self.t, self.expert, self.first = trainer, expert, first
        plan = trainer.plan
        self.n_micro = plan.groups_per_step // plan.groups_per_micro
        # Normalisers of the whole optimizer step over all processes, divided by the number of
        # processes because DDP averages gradients: the result does not depend on how the
        # step is split into micro-batches or processes.
        mask = trainer._loss_mask(mini)
        experts = float(trainer._loss_mask(expert).sum()) if expert is not None else 0.0
        totals = torch.tensor([mask.sum().item(), float(mask.shape[0]), experts], device=trainer.acc.device)
        totals = trainer.acc.reduce(totals, reduction="sum").cpu() / plan.world
        self.tokens, self.sequences, self.expert_tokens = totals.tolist()

    def inputs(self, i: int, mb: Batch) -> tuple[LossInputs, dict]:
        """Micro-batch ``i`` (``mb``, on the device): forward pass(es), what the loss receives, and the
        rollout engine's mismatch metrics (``grouptune.metrics.engine_mismatch``)."""
        t = self.t
        temp = t.cfg.rollout.temperature if t.method.tempered else 1.0
        experts = self._expert_share(i, mb.prompt_ids.device)
        logp, entropy, ref_kl, expert_logp = self._forward(mb, experts, temp)
        mask = t._loss_mask(mb).to(logp.device)
        old = mb.old_logp if mb.old_logp is not None else logp.detach()
        engine = engine_mismatch(old, mb.engine_logp, mask, t.cfg.vllm.importance_sampling_cap)
        if not (self.first or mb.old_logp is not None):  # old is not the sampling policy's here
            engine.metrics = {}
        expert_mask = None if experts is None else t._loss_mask(experts).to(logp.device)
        tokens, expert_tokens = self.tokens, self.expert_tokens
        if t.cfg.method.loss_normalizer == "micro_batch":
            tokens = float(mask.sum()) * self.n_micro
            expert_tokens = float(expert_mask.sum()) * self.n_micro if experts is not None else 0.0
        inputs = LossInputs(
            logp=logp, mask=mask, adv=mb.adv if mb.adv is not None else torch.zeros(len(logp)), rewards=mb.rewards,
            old_logp=old, ref_logp=mb.ref_logp if mb.ref_logp is not None else old, group_size=mb.group_size,
            max_completion_length=t.cfg.rollout.max_new_tokens, tokens=tokens, sequences=self.sequences,
            entropy=entropy, on_policy=mb.on_policy, ref_kl=ref_kl, expert_logp=expert_logp,
            expert_mask=expert_mask, expert_tokens=expert_tokens,
            step=t.state["optimizer_steps"] + 1, processes=t.plan.world, token_weights=engine.weights,
        )  # fmt: skip
        return inputs, engine.metrics

    def _expert_share(self, i: int, device) -> Batch | None:
        if self.expert is None:
            return None
        per = len(self.expert.prompt_ids) // self.n_micro
        return self.expert.groups(i * per, (i + 1) * per).trimmed().to(device)

    def _forward(self, mb: Batch, experts: Batch | None, temp: float):
        """``(logp, entropy, ref_kl, expert_logp)`` of a micro-batch; the last two None when unused."""
        t = self.t
        if experts is not None:  # one pass over the rollouts and the expert rows
            logp, entropy = completion_logprobs(t.model, stack_rows(mb, experts, t.tokenizer.pad_token_id),
                                                temperature=temp, with_entropy=True)  # fmt: skip
            n, width, e_width = len(mb.prompt_ids), mb.completion_ids.shape[1], experts.completion_ids.shape[1]
            return logp[:n, :width], entropy[:n, :width], None, logp[n:, :e_width]
        if t.method.needs_ref_kl:
            logits = completion_logits(t.model, mb)
            logp, entropy = logprobs_and_entropy(logits, mb.completion_ids, temperature=temp, with_entropy=True)
            return logp, entropy, vocab_kl(logits, reference_logits(t, mb)), None
        logp, entropy = completion_logprobs(t.model, mb, temperature=temp, with_entropy=True)
        return logp, entropy, None, None


@torch.no_grad()
def reference_logits(trainer, mb: Batch) -> torch.Tensor:
    """(N, T, V) logits of the reference (model dtype): the frozen initial model, or under LoRA
    the policy with its adapter disabled."""
    ref = trainer.policy.reference
    if ref is not None:
        device = next(ref.parameters()).device
        return completion_logits(ref, mb.to(device)).to(mb.completion_ids.device)
    policy = trainer.acc.unwrap_model(trainer.model)
    with policy.disable_adapter(), trainer.acc.autocast():
        return completion_logits(policy, mb)


def demonstration_rows(examples: list[Example], tokenizer, eos_id: int, max_new: int) -> Batch:
    """One row per example: its prompt and its demonstration (EOS appended, cut at ``max_new``)."""
    completions = [(tokenizer(ex.completion, add_special_tokens=False).input_ids + [eos_id]) for ex in examples]
    prompt_ids, prompt_mask = pad([ex.prompt_ids for ex in examples], tokenizer.pad_token_id, left=True)
    completion_ids, completion_mask = pad([c[:max_new] for c in completions], tokenizer.pad_token_id, left=False)
    n = len(examples)
    return Batch(
        prompt_ids, prompt_mask, completion_ids, completion_mask, on_policy=torch.zeros(n, dtype=torch.bool),
        truncated=torch.tensor([len(c) > max_new for c in completions]),
        example_index=torch.tensor([ex.index for ex in examples]), group_size=1,
    )  # fmt: skip


def stack_rows(a: Batch, b: Batch, pad_id: int) -> Batch:
    """The rows of ``a`` then those of ``b`` for one forward pass, padded to common widths."""
    P = max(a.prompt_ids.shape[1], b.prompt_ids.shape[1])
    T = max(a.completion_ids.shape[1], b.completion_ids.shape[1])

    def both(name: str, width: int, value: int, left: bool) -> torch.Tensor:
        x, y = getattr(a, name), getattr(b, name)
        return torch.cat([F.pad(t, (width - t.shape[1], 0) if left else (0, width - t.shape[1]), value=value)
                          for t in (x, y.to(x.device))])  # fmt: skip

    return Batch(
        both("prompt_ids", P, pad_id, True), both("prompt_mask", P, 0, True),
        both("completion_ids", T, pad_id, False), both("completion_mask", T, 0, False),
        on_policy=torch.cat([a.on_policy, b.on_policy.to(a.on_policy.device)]),
        truncated=torch.cat([a.truncated, b.truncated.to(a.truncated.device)]),
        example_index=torch.cat([a.example_index, b.example_index.to(a.example_index.device)]), group_size=1,
    )  # fmt: skip

"""Rollouts and the tensors of a batch: sampling with ``transformers`` generation, padding,
and per-token log-probabilities of completions under a model.

Layout: rows are group-contiguous (rows ``g*G .. g*G+G-1`` are the members of group ``g``; a
group is never split across micro-batches or processes); prompts are left-padded, completions
right-padded, so ``cat([prompt_ids, completion_ids], 1)`` is one causal sequence per row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from grouptune.logprobs import logprobs_and_entropy


@dataclass
class Batch:
    """One rollout batch (or a slice of whole groups of it). N rows, P prompt and T completion tokens."""

    prompt_ids: torch.Tensor  # (N, P) left-padded
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, T) right-padded, EOS included when sampled
    completion_mask: torch.Tensor  # (N, T) 1 on response tokens
    on_policy: torch.Tensor  # (N,) bool: sampled from the policy (False: demonstration / teacher)
    truncated: torch.Tensor  # (N,) bool: hit max_new_tokens without EOS
    example_index: torch.Tensor  # (N,) position of the prompt's example in the data set
    group_size: int
    texts: list[str] | None = None  # (N,) decoded completions, as the reward functions saw them
    reward_parts: dict[str, torch.Tensor] | None = None  # reward function -> (N,) its unweighted rewards
    rewards: torch.Tensor | None = None  # (N,) NaN = unjudged
    adv: torch.Tensor | None = None  # (N,)
    old_logp: torch.Tensor | None = None  # (N, T)
    ref_logp: torch.Tensor | None = None  # (N, T)
    engine_logp: torch.Tensor | None = None  # (N, T) the rollout engine's log-probs of sampled tokens; NaN elsewhere

    @property
    def num_groups(self) -> int:
        return self.prompt_ids.shape[0] // self.group_size

    def groups(self, start: int, stop: int) -> Batch:
        """Groups ``start .. stop-1`` as a Batch (groups are never split)."""
        rows = slice(start * self.group_size, stop * self.group_size)
        return Batch(**{f.name: _rows(getattr(self, f.name), rows) for f in fields(self)})

    @staticmethod
    def cat(batches: list[Batch], pad_id: int) -> Batch:
        """The rows of ``batches`` in order, re-padded to common prompt and completion widths."""
        P = max(b.prompt_ids.shape[1] for b in batches)
        T = max(b.completion_ids.shape[1] for b in batches)

        def widen(name: str, width: int, value: float, left: bool) -> torch.Tensor | None:
            parts = [getattr(b, name) for b in batches]
            if parts[0] is None:
                return None
            return torch.cat([F.pad(t, (width - t.shape[1], 0) if left else (0, width - t.shape[1]), value=value)
                              for t in parts])  # fmt: skip

        padded = {"prompt_ids": (P, pad_id, True), "prompt_mask": (P, 0, True), "completion_ids": (T, pad_id, False),
                  "completion_mask": (T, 0, False), "old_logp": (T, 0.0, False), "ref_logp": (T, 0.0, False),
                  "engine_logp": (T, float("nan"), False)}  # fmt: skip
        kw = {name: widen(name, *how) for name, how in padded.items()}
        kw.update({f.name: _cat([getattr(b, f.name) for b in batches]) for f in fields(Batch) if f.name not in padded})
        return Batch(**kw)

    def trimmed(self) -> Batch:
        """Drop padding columns no row uses (left of the prompts, right of the completions)."""
        keep_p = self.prompt_mask.any(0).nonzero()
        p0 = int(keep_p[0]) if len(keep_p) else self.prompt_mask.shape[1]
        keep_c = self.completion_mask.any(0).nonzero()
        t1 = int(keep_c[-1]) + 1 if len(keep_c) else 1
        out = Batch(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.prompt_ids, out.prompt_mask = self.prompt_ids[:, p0:], self.prompt_mask[:, p0:]
        for name in ("completion_ids", "completion_mask", "old_logp", "ref_logp", "engine_logp"):
            v = getattr(self, name)
            if v is not None:
                setattr(out, name, v[:, :t1])
        return out

    def to(self, device: torch.device | str) -> Batch:
        """The tensors of the batch on ``device`` (texts and per-function rewards stay where they are)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()})


@dataclass
class Generations:
    """One completion per prompt, in the order of the prompts."""

    token_ids: list[list[int]]  # cut after the first EOS, which is kept
    truncated: list[bool]  # reached max_new_tokens without an EOS
    # the engine's log-prob of each sampled token (vLLM), None if it gives none: under the distribution it
    # was drawn from, logits / temperature renormalised over the top-p nucleus (top_p = 1:
    # completion_logprobs(temperature=...)); greedy: the model's own distribution (temperature 1)
    logprobs: list[list[float]] | None = None


def _rows(value, rows: slice):
    """Rows ``rows`` of one Batch field (tensors, lists and per-function dicts are per row)."""
    if isinstance(value, dict):
        return {k: v[rows] for k, v in value.items()}
    return value[rows] if isinstance(value, (torch.Tensor, list)) else value


def _cat(values: list):
    """One Batch field of several batches, concatenated along the rows."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if isinstance(first, list):
        return [x for v in values for x in v]
    if isinstance(first, dict):
        return {k: torch.cat([v[k] for v in values]) for k in first}
    return first  # group_size, or None


def pad(seqs: list[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into ``(ids, mask)``, on the left (prompts) or right (completions)."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), max(width, 1)), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), max(width, 1)), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not s:
            continue
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, cols] = torch.tensor(s, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def pad_logprobs(rows: list[list[float]], width: int) -> torch.Tensor | None:
    """(N, width) per-token log-probs of completions (a rollout engine's), NaN where a row has
    none (data-set members) and on padding; None when no row has any."""
    if not any(rows):
        return None
    out = torch.full((len(rows), width), float("nan"))
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    *,
    pad_id: int,
    eos_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    batch_size: int = 0,
    synced_gpus: bool = False,
) -> tuple[list[list[int]], list[bool]]:
    """Sample one completion per prompt. Returns token lists (cut after the first EOS) and
    whether each hit ``max_new_tokens`` without an EOS (truncated). ``synced_gpus``: keep running
    forwards until every process is done (needed when the weights are sharded: FSDP, ZeRO-3)."""
    completions: list[list[int]] = []
    truncated: list[bool] = []
    step = batch_size or len(prompts)
    device = next(model.parameters()).device
    eos = set(eos_ids)
    for start in range(0, len(prompts), step):
        ids, mask = pad(prompts[start : start + step], pad_id, left=True)
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_p=None if greedy else top_p,
            top_k=None if greedy else 0,
            pad_token_id=pad_id,
            eos_token_id=eos_ids,
            synced_gpus=synced_gpus or None,  # None: transformers decides (ZeRO-3 / FSDP)
        )
        for row in out[:, ids.shape[1] :].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), None)
            completions.append(row[:cut] if cut else row[:max_new_tokens])
            truncated.append(cut is None)
    return completions, truncated


def completion_logprobs(
    model,
    batch: Batch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``(N, T)`` (and entropy) of the batch's completions under ``model``."""
    logits = completion_logits(model, batch)
    return logprobs_and_entropy(logits, batch.completion_ids, temperature=temperature, with_entropy=with_entropy)


def completion_logits(model, batch: Batch) -> torch.Tensor:
    """``(N, T, V)`` logits (the model's dtype) of the positions predicting each completion token.

    Only the ``T + 1`` last positions' logits are computed (``logits_to_keep``); position ids
    follow the attention mask, as in generation, so left padding does not shift positions.
    """
    input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)  # (N, P+T)
    # Padding after a completion is masked, but positions keep counting so no token sees a gap.
    attn = torch.cat([batch.prompt_mask, torch.ones_like(batch.completion_mask)], dim=1)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    T = batch.completion_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, logits_to_keep=T + 1, use_cache=False)
    return out.logits[:, :-1]  # (N, T, V): position t predicts completion token t

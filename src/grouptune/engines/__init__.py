"""Rollout engines: what samples completions for training and evaluation.

``rollout.engine`` picks one; both give the same interface, so the loop and the evaluator do not
know which runs:

- ``transformers`` (``engines.transformers``): ``model.generate`` on the training model itself.
  Nothing to copy or sync; the default, and what runs everywhere.
- ``vllm`` (``engines.vllm``): a vLLM engine colocated in each training process, its weights
  replaced in place by the policy's once per rollout batch. Much faster generation at scale.

An engine has ``sync_weights(model)`` (before sampling a rollout batch) and
``generate(prompts, seeds, ...) -> Generations``. With ``seeds``, a completion depends only on
its prompt, its seed and the weights, so N processes sample what one process samples.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Generations:
    """One completion per prompt, in the order of the prompts."""

    token_ids: list[list[int]]  # cut after the first EOS, which is kept
    truncated: list[bool]  # reached max_new_tokens without an EOS
    logprobs: list[list[float]] | None = None  # the engine's log-prob of each sampled token (vLLM), if any

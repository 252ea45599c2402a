"""Rollout engines: what samples completions for training and evaluation.

``rollout.engine`` picks one; both give the same interface, so the loop and the evaluator do not
know which runs:

- ``transformers`` (``engines.transformers``): ``model.generate`` on the training model itself.
  Nothing to copy or sync; the default, and what runs everywhere.
- ``vllm`` (``engines.vllm``): a vLLM engine colocated in each training process, its weights
  replaced in place by the policy's once per rollout batch. Much faster generation at scale.

An engine has ``sync_weights(model)`` (before sampling a rollout batch), ``generate(prompts,
seeds, ...) -> grouptune.rollout.Generations``, ``sleep()`` (after sampling: free what training
needs) and ``close()`` (at the end of the run). With ``seeds``, a completion depends only on its
prompt, its seed and the weights, so N processes sample what one process samples.
"""

from __future__ import annotations

from grouptune.config import ConfigError, TrainConfig

ENGINES = ("transformers", "vllm")


def make_engine(cfg: TrainConfig, acc, model, tokenizer, eos_ids: list[int]):
    """The rollout engine ``rollout.engine`` names, for the (unwrapped) policy ``model``."""
    from grouptune.policy import sharded

    if cfg.rollout.engine == "transformers":
        from grouptune.engines.transformers import TransformersEngine

        return TransformersEngine(
            model, pad_id=tokenizer.pad_token_id, eos_ids=eos_ids, batch_size=cfg.rollout.generation_batch_size,
            synced_gpus=acc is not None and sharded(acc),
        )  # fmt: skip
    if cfg.rollout.engine == "vllm":
        from grouptune.engines.vllm import ColocatedVLLM

        return ColocatedVLLM(cfg, acc, model, eos_ids)
    raise ConfigError(f"rollout.engine: expected {' or '.join(ENGINES)}, got '{cfg.rollout.engine}'")


def check_engine_settings(cfg: TrainConfig, method) -> None:
    """Settings of the rollout engine that cannot mean anything for this method, refused up front."""
    if cfg.rollout.engine not in ENGINES:
        raise ConfigError(f"rollout.engine: expected {' or '.join(ENGINES)}, got '{cfg.rollout.engine}'")
    if cfg.rollout.engine == "vllm":  # before the model loads: is vLLM there at all?
        from grouptune.engines.vllm import require_vllm

        require_vllm()
    if cfg.vllm.importance_sampling_cap <= 0:
        return
    if cfg.rollout.engine != "vllm":
        raise ConfigError("vllm.importance_sampling_cap corrects vLLM's sampling log-probs: set rollout.engine vllm")
    if method.on_policy and not method.per_token:
        raise ConfigError(
            f"vllm.importance_sampling_cap: {method.name}'s loss is not a sum over tokens (no per-token weight "
            "to apply); set it to 0"
        )
    if method.on_policy and not method.tempered and cfg.rollout.temperature != 1.0:
        raise ConfigError(
            f"vllm.importance_sampling_cap: {method.name} scores tokens untempered, vLLM at rollout.temperature "
            f"{cfg.rollout.temperature}; the two log-probs compare only at temperature 1"
        )


"""A tiny training run's configuration, shared by the trainer tests."""

from __future__ import annotations

from grouptune.config import load_config


def make_cfg(model_path, data, out, method="gft", **overrides):
    base = {
        "model.name_or_path": str(model_path),
        "data.train": str(data["train"]),
        "data.eval": [str(data["eval"])],
        "reward.functions": ["gsm8k"],
        "rollout.prompts_per_batch": 4,
        "rollout.group_size": 6,
        "rollout.max_new_tokens": 8,
        "method.name": method,
        "optim.lr": 1e-3,
        "optim.total_batches": 2,
        "optim.steps_per_rollout": 2,
        "log.output_dir": str(out),
        "log.eval_samples": 2,
        "log.progress": False,
    }
    base.update(overrides)
    return load_config(overrides=base)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

"""Pipelines: several training stages in one config, each starting from the previous stage's final model.

A run config with a top-level ``stages`` list is a pipeline; the other settings are shared by
every stage, and each stage's mapping (dotted keys, or nested sections) is applied on top::

    model: {name_or_path: Qwen/Qwen2.5-Math-1.5B}
    data: {train: train.jsonl, preset: math}
    log: {output_dir: runs/sft_gft_grpo}
    stages:
      - {method.name: sft, optim.total_batches: 50}
      - {method.name: gft}
      - {method.name: grpo, optim.lr: 1.0e-6}

``grouptune train --config pipeline.yaml`` runs stage ``i`` in ``<output_dir>/stage<i>-<method>``
with ``model.init_from`` the previous stage's directory (the first stage starts from the shared
``model`` settings); command-line options apply to every stage, last. A stage whose final model
is already saved is skipped, so running the command again after an interruption continues the
pipeline (add ``--checkpoint.resume true`` to resume the interrupted stage from its checkpoint).
"""

from __future__ import annotations

import copy
from pathlib import Path

from grouptune.config import ConfigError, TrainConfig, dotted_to_nested, read_yaml, update_config


def read_stages(path: str | Path | None) -> tuple[dict, list[dict]] | None:
    """``(shared settings, stages)`` of a pipeline config file, or None for a single run's config."""
    if not path or not Path(path).is_file():
        return None
    values = read_yaml(Path(path))  # YAML and decoding errors name the file, line and column
    if "stages" not in values:
        return None
    stages = values.pop("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise ConfigError(f"{path}: stages: expected a non-empty list of mappings of settings, got {stages!r}")
    return values, stages


def stage_configs(path: str | Path | None, overrides: dict | None = None) -> list[TrainConfig] | None:
    """One ``TrainConfig`` per stage of the pipeline in ``path``; None when it is not a pipeline."""
    found = read_stages(path)
    if found is None:
        return None
    shared, stages = found
    base = TrainConfig()
    try:
        update_config(base, shared)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    root, previous, configs = Path(base.log.output_dir), None, []
    for i, stage in enumerate(stages):
        cfg = copy.deepcopy(base)
        try:
            update_config(cfg, dotted_to_nested(stage))
            update_config(cfg, dotted_to_nested(overrides or {}))
        except ConfigError as e:
            raise ConfigError(f"{path}: stage {i}: {e}") from None
        if i < len(stages) - 1 and not cfg.checkpoint.save_final:
            raise ConfigError(f"{path}: stage {i}: checkpoint.save_final must stay true, the next stage starts "
                              "from its final model")  # fmt: skip
        cfg.log.output_dir = str(root / f"stage{i}-{cfg.method.name}")
        if previous is not None:
            cfg.model.init_from = previous
        previous = cfg.log.output_dir
        configs.append(cfg)
    return configs


def finished(cfg: TrainConfig) -> bool:
    """The stage saved its final model (its output directory has ``final/config.json`` or an adapter)."""
    final = Path(cfg.log.output_dir) / "final"
    return any((final / name).is_file() for name in ("config.json", "adapter_config.json"))

"""Start-up checks: what can be refused before a model or a data set loads.

``check_run`` is the first thing a ``Trainer`` does once the method's defaults are resolved
(``grouptune.methods.resolve_method``), so a setting that cannot run costs a second, not a
model load. A ``ConfigError`` names the setting, its value and what is allowed:

- every setting against the range or choices its field allows (``config.validate``; a
  config made with ``load_config`` has been checked already, one built in Python has not);
- settings that only make sense together (``log.overwrite`` with ``checkpoint.resume``,
  ``model.load_in_4bit`` without LoRA);
- names looked up in registries: advantage baselines and scales, data presets;
- ``data.expert`` (CHORD's separate expert data set) only for a method with an expert stream,
  and every one of its rows with a demonstration (``data.check_rows``, no tokenizer needed):
  a ``DataError`` naming file, row and column;
- paths: the model and reward models (``modeling.check_model_path``: a local path that does
  not exist is reported as missing, only names shaped like ``org/name`` go to the hub), the
  files of user reward functions, local data files, the output directory setting.

The batch arithmetic (``layout.make_plan``) and what the distributed engine cannot do
(``policy.check_engine``) are checked by the trainer right after, also before any loading.
"""

from __future__ import annotations

from pathlib import Path

from grouptune.config import ConfigError, TrainConfig, validate


def check_run(cfg: TrainConfig) -> None:
    """Refuse a training run's settings that cannot run; one ``ConfigError`` lists them all."""
    validate(cfg)
    problems = []
    for check in (_check_combinations, _check_registries, _check_paths, _check_rewards):
        try:
            check(cfg)
        except ConfigError as e:
            problems.append(str(e))
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems with the settings:\n  " + "\n  ".join(problems))
    if cfg.data.expert:  # the settings are sound: read the expert set's rows (a DataError lists every problem)
        from grouptune.data import check_rows

        check_rows(cfg.data, cfg.data.expert, split=cfg.data.train_split, require=("completion",))


def _check_combinations(cfg: TrainConfig) -> None:
    if cfg.checkpoint.resume and cfg.log.overwrite:
        raise ConfigError("checkpoint.resume and log.overwrite are both set: resume continues the run in "
                          "log.output_dir, overwrite deletes it; choose one")  # fmt: skip
    if cfg.model.load_in_4bit and cfg.model.lora_r <= 0:
        raise ConfigError("model.load_in_4bit trains LoRA adapters on 4-bit base weights (QLoRA): set model.lora_r > 0")
    if cfg.data.expert:
        from grouptune.methods import METHODS, get_method

        if not get_method(cfg.method.name).expert_stream:
            streams = ", ".join(name for name, m in METHODS.items() if m.expert_stream)
            raise ConfigError(f"data.expert = {cfg.data.expert!r}: method {cfg.method.name} has no expert stream to "
                              f"feed (only {streams}); unset data.expert")  # fmt: skip


def _check_registries(cfg: TrainConfig) -> None:
    from grouptune.advantages import BASELINES, SCALES
    from grouptune.data.presets import check_config

    m = cfg.method
    for key, table in (("adv_baseline", BASELINES), ("adv_scale", SCALES)):
        if getattr(m, key) not in table:
            raise ConfigError(f"method.{key} = {getattr(m, key)!r}: must be one of {', '.join(map(repr, table))}")
    check_config(cfg.data)


def _check_paths(cfg: TrainConfig) -> None:
    from grouptune.data import LOCAL_FORMATS
    from grouptune.modeling import check_model_path

    if not cfg.data.train:
        raise ConfigError("data.train is required: a local data file or a hub data set name")
    if not cfg.log.output_dir:
        raise ConfigError("log.output_dir is required: the directory the run writes to")
    check_model_path(cfg.model.name_or_path, "model.name_or_path")
    named = [("data.train", cfg.data.train)] + [(f"data.eval[{i}]", s) for i, s in enumerate(cfg.data.eval)]
    named += [("data.expert", cfg.data.expert)] if cfg.data.expert else []
    for setting, source in named:  # a local data file (by its suffix) that is not there
        path = Path(source).expanduser()
        if path.suffix.lower() in LOCAL_FORMATS and not path.is_file():
            raise ConfigError(f"{setting}: file not found: {path.resolve()}")


def _check_rewards(cfg: TrainConfig) -> None:
    """The reward settings and the paths they name (reward functions are built after the model)."""
    from grouptune.modeling import check_model_path
    from grouptune.rewards import BUILTIN_REWARDS, _check_reward_config, unknown_reward

    _check_reward_config(cfg.reward)
    if len(set(cfg.reward.eval_functions)) != len(cfg.reward.eval_functions):
        raise ConfigError(f"reward.eval_functions lists a function twice: {cfg.reward.eval_functions}")
    named = [(f"reward.functions[{i}]", s) for i, s in enumerate(cfg.reward.functions)]
    named += [(f"reward.eval_functions[{i}]", s) for i, s in enumerate(cfg.reward.eval_functions)]
    for where, spec in named:
        if ":" not in spec and spec not in BUILTIN_REWARDS:
            raise unknown_reward(spec, where)
        if spec.startswith("rm:"):
            check_model_path(spec[3:], where)
        elif ":" in spec and spec.rpartition(":")[0].endswith(".py"):
            path = Path(spec.rpartition(":")[0]).expanduser()
            if not path.is_file():
                raise ConfigError(f"{where}: file not found: {path}")

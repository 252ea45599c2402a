"""Reliability of the training loop, end to end on a tiny local model.

What each test shows (the unit tests of data validation and reward scoring live in
``test_data.py``, ``test_data_properties.py`` and ``test_rewards.py``):

- preemption: SIGTERM (a real signal from another process) and SIGINT save a checkpoint and
  exit with 128 + N; ``--checkpoint.resume true`` then ends with the same weights, bit for bit,
  as a run that was never interrupted;
- a checkpoint save that fails halfway leaves the previous checkpoint the latest, loadable,
  and resumable bit-exactly, and removes what it wrote; leftover ``*.tmp`` directories are
  ignored, then removed; log
  records of batches after the checkpoint are written once, by the resumed run;
- a non-finite loss or gradient skips the step (weights and optimizer untouched), is logged,
  and stops the run after ``optim.max_bad_steps`` in a row with the checkpoints intact;
- a reward function that raises, returns NaN or None, inside the trainer;
- nothing is unpickled or imported from a checkpoint or output directory, remote code is
  off unless asked for, weights load from safetensors only;
- a malformed data file stops ``Trainer(cfg)`` with every problem in one error, before
  anything in the output directory is touched.

The reference run (6 rollout batches, a checkpoint after each) is shared by the module: with
a constant learning rate, its checkpoint k holds the weights of any k-batch run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from conftest import arithmetic_rows, save_tiny_model, write_jsonl
from safetensors.torch import load_file

from grouptune import checkpoint as ckpt
from grouptune import cli
from grouptune.config import ModelConfig, load_config
from grouptune.data import DataError
from grouptune.methods import METHODS
from grouptune.modeling import load_model_and_tokenizer
from grouptune.rewards import RewardError
from grouptune.trainer import Trainer, TrainingError

BATCHES = 6

# Rewards with spread (the completion's length mod 3), so every batch moves the weights. The
# environment can slow each call down (so another process can signal mid-run), signal the
# process itself on a given call, or misbehave on the rows of one gold answer.
REWARD_SOURCE = '''
import math, os, signal, time

calls = 0


def reward(prompts, completions, answer, **columns):
    global calls
    calls += 1
    time.sleep(float(os.environ.get("GT_TEST_SLEEP", "0")))
    if calls == int(os.environ.get("GT_TEST_SIGNAL_AT", "0")):
        for _ in range(int(os.environ.get("GT_TEST_SIGNAL_TIMES", "1"))):
            os.kill(os.getpid(), int(os.environ["GT_TEST_SIGNAL"]))
    out = []
    for c, gold in zip(completions, answer):
        if gold == os.environ.get("GT_TEST_BAD_ANSWER"):
            mode = os.environ["GT_TEST_MODE"]
            if mode == "raise":
                raise ValueError(f"cannot judge gold {gold}")
            out.append(math.nan if mode == "nan" else None)
        else:
            out.append(float(len(c) % 3))
    return out
'''


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model is ~10x faster on one thread than on two threads of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reliability")
    reward = d / "length_reward.py"
    reward.write_text(REWARD_SOURCE)
    return {
        "model": save_tiny_model(d / "model"),
        "train": write_jsonl(d / "train.jsonl", arithmetic_rows(12)),
        "reward": reward,
    }


def settings(files, out: Path, **overrides) -> dict:
    base = {
        "model.name_or_path": str(files["model"]),
        "data.train": str(files["train"]),
        "reward.functions": [f"{files['reward']}:reward"],
        "rollout.prompts_per_batch": 2,
        "rollout.group_size": 4,
        "rollout.max_new_tokens": 6,
        "method.name": "grpo",
        "optim.lr": 1e-2,
        "optim.total_batches": BATCHES,
        "optim.steps_per_rollout": 2,  # old log-probs and two Adam steps per batch
        "log.output_dir": str(out),
        "log.progress": False,
        "log.samples_per_log": 0,
        "checkpoint.save_final": False,
    }
    base.update(overrides)
    return base


def make_trainer(files, out: Path, **overrides) -> Trainer:
    return Trainer(load_config(overrides=settings(files, out, **overrides)))


def cli_args(files, out: Path, **overrides) -> list[str]:
    args = ["train"]
    for key, value in settings(files, out, **overrides).items():
        text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
        args += [f"--{key}", text]
    return args


def ckpt_weights(out: Path, batch: int) -> dict[str, torch.Tensor]:
    return load_file(ckpt.checkpoint_dir(out, batch) / "model.safetensors")


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def model_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory) -> Path:
    """The uninterrupted run: a checkpoint after every batch and the final model."""
    out = tmp_path_factory.mktemp("reference")
    make_trainer(files, out, **{"checkpoint.save_every": 1, "checkpoint.keep_last": 0,
                                "checkpoint.save_final": True}).train()  # fmt: skip
    assert any(not torch.equal(v, ckpt_weights(out, 1)[k]) for k, v in final_weights(out).items())
    return out


@pytest.fixture
def clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("GT_TEST_")]:
        monkeypatch.delenv(key)
    return monkeypatch


# ============================================================================ preemption


def test_sigterm_mid_training_saves_exits_143_and_resumes_bit_exactly(files, reference, tmp_path, clean_env):
    out = tmp_path / "run"
    env = {**os.environ, "GT_TEST_SLEEP": "0.3", "OMP_NUM_THREADS": "1"}  # >= 0.3 s per batch
    proc = subprocess.Popen([sys.executable, "-m", "grouptune.cli", *cli_args(files, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and "\n" in metrics.read_text()):  # batch 1 logged: mid-training
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted by signal 15" in stderr and "--checkpoint.resume true" in stderr
    saved = ckpt.latest_checkpoint(out)
    state = json.loads((saved / "state.json").read_text())["trainer"]
    assert 1 <= state["batch"] < BATCHES and saved == ckpt.checkpoint_dir(out, state["batch"])
    assert not (out / "final").exists()
    assert_same(ckpt_weights(out, state["batch"]), ckpt_weights(reference, state["batch"]))

    assert cli.main(cli_args(files, out, **{"checkpoint.resume": True, "checkpoint.save_final": True})) == 0
    assert_same(final_weights(out), final_weights(reference))
    assert [r["batch"] for r in records(out)] == list(range(1, BATCHES + 1))  # nothing lost or repeated


def test_sigint_saves_exits_130_and_resumes_bit_exactly(files, reference, tmp_path, clean_env, capsys):
    out = tmp_path / "run"
    clean_env.setenv("GT_TEST_SIGNAL", str(int(signal.SIGINT)))
    clean_env.setenv("GT_TEST_SIGNAL_AT", "3")  # Ctrl-C while scoring batch 3
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(cli_args(files, out)) == 128 + signal.SIGINT
    assert "interrupted by signal 2 at rollout batch 3" in capsys.readouterr().err
    assert ckpt.latest_checkpoint(out) == ckpt.checkpoint_dir(out, 3)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored

    clean_env.delenv("GT_TEST_SIGNAL_AT")
    trainer = make_trainer(files, out, **{"checkpoint.resume": True})
    trainer.train()
    assert trainer.stop_signal is None and trainer.state["batch"] == BATCHES
    assert_same(model_weights(trainer), final_weights(reference))


def test_a_second_signal_stops_at_once_without_a_checkpoint(files, tmp_path, clean_env):
    clean_env.setenv("GT_TEST_SIGNAL", str(int(signal.SIGTERM)))
    clean_env.setenv("GT_TEST_SIGNAL_AT", "2")
    clean_env.setenv("GT_TEST_SIGNAL_TIMES", "2")
    trainer = make_trainer(files, tmp_path, **{"checkpoint.save_every": 1})
    with pytest.raises(KeyboardInterrupt, match="twice"):
        trainer.train()
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_dir(tmp_path, 1)


# ============================================================================ interrupted saves


def test_save_failing_halfway_keeps_the_previous_checkpoint(files, reference, tmp_path, clean_env):
    real_save = ckpt.save_file
    calls = []

    def flaky(tensors, path):  # checkpoint 2's second file: model.safetensors is already written
        calls.append(path)
        if len(calls) == 5:
            raise OSError("No space left on device")
        real_save(tensors, path)

    clean_env.setattr(ckpt, "save_file", flaky)
    with pytest.raises(OSError, match=r"No space left on device; the previous checkpoint .*checkpoint-0000001 is intact"):
        make_trainer(files, tmp_path, **{"checkpoint.save_every": 1}).train()
    clean_env.undo()

    half = tmp_path / "checkpoints" / "checkpoint-0000002.tmp"
    assert not half.exists()  # the failed save removed what it had written (a full disk gets its space back)
    stale = tmp_path / "checkpoints" / "checkpoint-0000009.tmp"  # a complete-looking leftover
    shutil.copytree(ckpt.checkpoint_dir(tmp_path, 1), stale)
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_dir(tmp_path, 1)
    assert [r["batch"] for r in records(tmp_path)] == [1, 2]  # batch 2 was logged before its save failed
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"batch": 3, "lo')  # and a record cut short by the crash

    trainer = make_trainer(files, tmp_path, **{"checkpoint.resume": True, "optim.total_batches": 3,
                                                "checkpoint.save_every": 1})  # fmt: skip
    trainer.train()  # resumes from batch 1, saves checkpoints 2 and 3
    assert_same(model_weights(trainer), ckpt_weights(reference, 3))
    assert [r["batch"] for r in records(tmp_path)] == [1, 2, 3]  # batch 2 logged once, by the resumed run
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint-0000002", "checkpoint-0000003"]  # leftovers removed, keep_last = 2
    trainer.save_checkpoint()  # the same batch again: replaced in place, nothing left over
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names
    assert_same(ckpt_weights(tmp_path, 3), ckpt_weights(reference, 3))


# ============================================================================ non-finite steps


def poisoned(method, bad: dict[int, str]):
    """``method`` whose loss is NaN / inf, or whose gradient is NaN, on the given calls (from 1)."""
    calls = []

    def loss(inputs, m):
        calls.append(1)
        kind = bad.get(len(calls))
        if kind == "nan_grad":  # a finite loss with a NaN gradient
            inputs.logp.register_hook(lambda g: g * float("nan"))
        value, metrics = method.loss(inputs, m)
        return {"nan": value * float("nan"), "inf": value + float("inf")}.get(kind, value), metrics

    return dataclasses.replace(method, loss=loss)


def test_non_finite_steps_are_skipped_then_stop_the_run(files, tmp_path, clean_env):
    trainer = make_trainer(files, tmp_path, **{
        "optim.steps_per_rollout": 1, "optim.max_bad_steps": 2,
        "checkpoint.save_every": 1, "checkpoint.keep_last": 0})  # fmt: skip
    # batch 2 bad, 3 good (resets the count), 4 and 5 bad: two in a row stop the run in batch 5
    trainer.method = poisoned(trainer.method, {2: "nan", 4: "nan_grad", 5: "inf"})
    with pytest.raises(TrainingError, match=r"2 optimizer steps in a row .*max_bad_steps = 2.*checkpoint-0000004"):
        trainer.train()

    logged = {r["batch"]: r for r in records(tmp_path)}
    assert sorted(logged) == [1, 2, 3, 4]  # batch 5 never completed
    assert [logged[b]["skipped_steps"] for b in (1, 2, 3, 4)] == [0, 1, 0, 1]
    assert [logged[b]["optimizer_steps"] for b in (1, 2, 3, 4)] == [1, 1, 2, 2]
    w = {b: ckpt_weights(tmp_path, b) for b in (1, 2, 3, 4)}
    assert_same(w[2], w[1])  # skipped: weights unchanged
    assert_same(w[4], w[3])
    assert any(not torch.equal(w[3][k], w[2][k]) for k in w[3])  # the good step in between moved them

    last = ckpt.latest_checkpoint(tmp_path)
    assert last == ckpt.checkpoint_dir(tmp_path, 4)
    assert all(torch.isfinite(v).all() for v in w[4].values())
    assert_same({k: v for k, v in model_weights(trainer).items() if k in w[4]}, w[4])
    fresh = make_trainer(files, tmp_path / "fresh")
    state = ckpt.load_checkpoint(last, fresh.model, fresh.optimizer.optimizer, fresh.scheduler)
    assert state["optimizer_steps"] == 2
    assert {int(s["step"]) for s in fresh.optimizer.optimizer.state.values()} == {2}  # Adam skipped too


def test_cli_exits_1_with_the_reason_when_steps_stay_non_finite(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(METHODS, "grpo", poisoned(METHODS["grpo"], {1: "nan", 2: "nan", 3: "nan", 4: "nan"}))
    assert cli.main(cli_args(files, tmp_path, **{"optim.max_bad_steps": 3})) == 1
    assert "grouptune: training stopped: 3 optimizer steps in a row" in capsys.readouterr().err
    assert [r["skipped_steps"] for r in records(tmp_path)] == [2]  # batch 1: both steps skipped


def test_fp16_loss_scaler_overflows_are_the_scalers_to_skip(files, tmp_path, fresh_accelerate):
    """With fp16 (a GPU run) accelerate scales the loss; an overflowing gradient then means
    "scale too high": the scaler skips that step and lowers the scale. The guard must let it
    (not count the step toward max_bad_steps, which would stop every fp16 run at its start).
    accelerate makes a scaler only for accelerators, so the test gives the trainer a CPU
    GradScaler whose first scale overflows, as accelerate would wire a CUDA one."""
    from accelerate.optimizer import AcceleratedOptimizer

    trainer = make_trainer(files, tmp_path, **{"optim.max_bad_steps": 1, "model.mixed_precision": "fp16"})
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-60)
    trainer.acc.scaler, trainer.acc.native_amp = scaler, True
    trainer.optimizer = AcceleratedOptimizer(trainer._bare_optimizer(), scaler=scaler)
    trainer.acc._optimizers = [trainer.optimizer]
    before = model_weights(trainer)
    unscaled = []
    real_unscale = trainer.acc.unscale_gradients
    trainer.acc.unscale_gradients = lambda *a, **k: unscaled.append(1) or real_unscale(*a, **k)
    trainer.train()  # max_bad_steps = 1: a counted overflow would raise TrainingError
    assert len(unscaled) == 2 * BATCHES  # the clipping norm is the true one, as accelerate does it

    logged = records(tmp_path)
    assert logged[0]["skipped_steps"] >= 1  # the first step overflowed and was skipped
    assert scaler.get_scale() < 2.0**127
    assert logged[-1]["optimizer_steps"] == 2 * BATCHES - sum(r["skipped_steps"] for r in logged)
    assert any(not torch.equal(before[k], v) for k, v in model_weights(trainer).items())


# ============================================================================ failing rewards


def bad_row_trainer(files, out: Path, env, mode: str, **overrides) -> tuple[Trainer, int]:
    """A trainer whose reward function misbehaves (``mode``) on the prompt drawn second in batch 2."""
    trainer = make_trainer(files, out, **{"optim.total_batches": 2, "checkpoint.save_every": 1, **overrides})
    row = trainer.order(3)  # batch 2 holds data positions 2 and 3
    env.setenv("GT_TEST_BAD_ANSWER", trainer.train_data[row].answer)
    env.setenv("GT_TEST_MODE", mode)
    return trainer, row


def test_raising_reward_stops_with_function_row_and_traceback(files, tmp_path, clean_env):
    trainer, row = bad_row_trainer(files, tmp_path, clean_env, "raise")
    with pytest.raises(RewardError) as err:
        trainer.train()
    message = str(err.value)
    assert f"reward function '{files['reward']}:reward' raised ValueError" in message
    assert f"row {row} (batch index 4)" in message  # the first member of the second group
    text = "".join(traceback.format_exception(err.value))
    assert "length_reward.py" in text and 'raise ValueError(f"cannot judge gold' in text
    assert [r["batch"] for r in records(tmp_path)] == [1]  # what was written stays
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_dir(tmp_path, 1)


def test_nan_reward_is_an_error_naming_the_function(files, tmp_path, clean_env):
    trainer, row = bad_row_trainer(files, tmp_path, clean_env, "nan", **{"reward.on_error": "unjudged"})
    with pytest.raises(RewardError, match=rf"length_reward.py:reward' returned nan for row {row} "):
        trainer.train()


@pytest.mark.parametrize("mode,on_error", [("raise", "unjudged"), ("none", "raise")])
def test_unjudged_rows_get_advantage_zero_and_are_logged(mode, on_error, files, tmp_path, clean_env):
    trainer, row = bad_row_trainer(files, tmp_path, clean_env, mode, **{
        "reward.on_error": on_error, "log.samples_per_log": 8})  # fmt: skip
    trainer.train()
    assert [r["reward/unjudged_frac"] for r in records(tmp_path)] == [0.0, 0.5]  # one group of two
    samples = [s for s in map(json.loads, (tmp_path / "samples.jsonl").open()) if s["batch"] == 2]
    assert len(samples) == 8
    assert all((s["reward"] is None) == (s["example"] == row) for s in samples)
    assert all(s["advantage"] == 0.0 for s in samples if s["example"] == row)


# ============================================================================ security


def test_remote_code_off_unless_asked_and_safetensors_only(files, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    assert ModelConfig().trust_remote_code is False
    seen = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: (seen.append(k), real(*a, **k))[1])
    load_model_and_tokenizer(ModelConfig(name_or_path=str(files["model"])))
    load_model_and_tokenizer(ModelConfig(name_or_path=str(files["model"]), trust_remote_code=True))
    assert [(k["trust_remote_code"], k["use_safetensors"]) for k in seen] == [(False, True), (True, True)]

    pickled = tmp_path / "pickled"  # the same model as a pickle (pytorch_model.bin) only
    shutil.copytree(files["model"], pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", unpickling_forbidden)
    with pytest.raises(OSError, match="safetensors"):
        load_model_and_tokenizer(ModelConfig(name_or_path=str(pickled)))


def unpickling_forbidden(*args, **kwargs):
    raise AssertionError("something tried to unpickle")


def test_resume_reads_only_safetensors_and_json(files, reference, tmp_path, clean_env):
    saved = ckpt.checkpoint_dir(tmp_path, 3)
    shutil.copytree(ckpt.checkpoint_dir(reference, 3), saved)
    marker = tmp_path / "imported"
    for name in ("pytorch_model.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.pkl"):
        (saved / name).write_bytes(pickle.dumps(ImportError("never unpickled")))
    for d in (saved, tmp_path):  # code planted where a run's files live is never imported
        (d / "length_reward.py").write_text(f"open({str(marker)!r}, 'w')\n")
        (d / "modeling_llama.py").write_text(f"open({str(marker)!r}, 'w')\n")
    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        clean_env.setattr(module, name, unpickling_forbidden)
    clean_env.chdir(tmp_path)

    trainer = make_trainer(files, tmp_path, **{"checkpoint.resume": True, "optim.total_batches": 4})
    trainer.train()
    assert_same(model_weights(trainer), ckpt_weights(reference, 4))
    assert not marker.exists()
    assert "length_reward" not in sys.modules  # the configured file is loaded under its own name


# ============================================================================ malformed data


def test_malformed_data_fails_before_training_listing_every_problem(files, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "checkpoint-0000004").mkdir(parents=True)
    earlier = {"metrics.jsonl": '{"batch": 4}\n', "config.yaml": "method: {name: grpo}\n",
               "checkpoints/checkpoint-0000004/state.json": "{}"}  # fmt: skip
    for name, text in earlier.items():
        (out / name).write_text(text)
    rows = arithmetic_rows(7, chat=False)
    del rows[1]["prompt"]
    rows[2]["prompt"] = 42
    rows[3]["prompt"] = "   "
    rows[4]["answer"] = None  # a verifier needs a gold answer
    rows[5]["teacher_completions"] = "not a list"
    rows[6]["answer"] = "about seven"  # the gsm8k verifier could never judge it
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    with (tmp_path / "bad.jsonl").open("a") as f:
        f.write("{not json\n")
    bad_eval = write_jsonl(tmp_path / "bad_eval.jsonl", [{"question": "1 + 1?", "answer": "2"}])

    overrides = {"data.train": str(bad), "data.eval": [str(bad_eval)], "reward.functions": ["gsm8k"], "method.name": "gft",
                 "method.num_off_policy": 2, "rollout.group_size": 4,
                 "log.overwrite": True}  # fmt: skip  (the earlier run is deleted only once the data has loaded)
    with pytest.raises(DataError) as err:
        make_trainer(files, out, **overrides)
    where = {(Path(p.source).name, p.row, p.column) for p in err.value.problems}
    assert where == {
        ("bad.jsonl", 1, "prompt"), ("bad.jsonl", 2, "prompt"), ("bad.jsonl", 3, "prompt"),
        ("bad.jsonl", 4, "answer"), ("bad.jsonl", 5, "teacher_completions"), ("bad.jsonl", 6, "answer"),
        ("bad.jsonl", 7, None),
        ("bad_eval.jsonl", None, "prompt"),
    }  # fmt: skip
    assert f"{bad}, row 7 (line 8): invalid JSON" in str(err.value)
    assert "'about seven' is neither a number nor" in str(err.value)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(earlier)
    assert all((out / name).read_text() == text for name, text in earlier.items())

    assert cli.main(cli_args(files, out, **overrides)) == 2
    stderr = capsys.readouterr().err
    assert "grouptune: data error: 8 problem(s) in the data:" in stderr and "bad_eval.jsonl" in stderr


def test_tied_embeddings_checkpoint_once_and_resume_bit_exactly(files, tiny_qwen2, tmp_path, clean_env):
    """Small Qwen2 models tie the LM head to the embedding: the state dict lists one tensor under
    two names, which safetensors refuses. The checkpoint holds it once; resuming ties it again
    and ends with the weights of the uninterrupted run."""
    model = {"model.name_or_path": str(tiny_qwen2), "checkpoint.save_every": 1, "checkpoint.keep_last": 0}
    whole = make_trainer(files, tmp_path / "whole", **model)
    whole.train()
    saved = ckpt_weights(tmp_path / "whole", 1)
    assert "lm_head.weight" not in saved and "model.embed_tokens.weight" in saved

    cut = make_trainer(files, tmp_path / "cut", **model, **{"optim.total_batches": 1})
    cut.train()
    resumed = make_trainer(files, tmp_path / "cut", **model, **{"checkpoint.resume": True})
    resumed.train()
    unwrap = resumed.acc.unwrap_model(resumed.model)
    assert unwrap.lm_head.weight is unwrap.model.embed_tokens.weight  # still tied after the load
    assert_same(model_weights(whole), model_weights(resumed))

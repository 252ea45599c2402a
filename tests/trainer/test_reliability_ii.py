"""Reliability, part two: what a user meets through ``grouptune train`` / ``grouptune eval``
when runs share a directory, resume with other settings, find a damaged checkpoint, call a
reward function that hangs, feed a huge prompt, mistype a setting, or die while saving.

What each test shows:

- an output directory belongs to one run: a second run (a real second process) is refused
  with the holder's PID and start time while the first finishes unharmed; a stale lock of a
  dead run is taken over, saying so; a directory holding a run is refused unless resumed or
  overwritten (and overwrite deletes it only once the new run has loaded);
- resume compares settings: a changed method or group size is refused with the differences
  listed; a changed ``optim.total_batches`` is honoured and a changed ``optim.lr`` applied
  to the optimizer for real;
- checkpoint integrity: a latest checkpoint with garbage of the same size, or truncated, or a
  garbled header, is reported with the failing file and the previous one is used, ending with
  the weights of an uninterrupted run; none intact is an error naming every file;
- a reward function that hangs is stopped by ``reward.timeout`` with its name and rows;
- a 10 MB prompt is dropped without being tokenized whole (``benchmarks/bench_long_prompt.py``
  measures the cost);
- bad settings are refused before the model loads, with exit status 2, one ``grouptune:``
  line and no traceback; a full disk while saving likewise, saying the last checkpoint is intact;
- ``final/`` is written whole or not at all: a kill during the final save, or a failing final
  save, leaves a checkpoint from which ``--checkpoint.resume true`` finishes the run.

Helpers and the reference run's settings are those of ``test_reliability.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import arithmetic_rows, save_tiny_model, write_jsonl
from safetensors import SafetensorError
from test_reliability import (
    BATCHES,
    REWARD_SOURCE,
    assert_same,
    ckpt_weights,
    cli_args,
    final_weights,
    records,
    settings,
)

from grouptune import checkpoint as ckpt
from grouptune import cli, manifest
from grouptune.config import load_config
from grouptune.data import load_examples
from grouptune.rewards import RewardFunction, RewardTimeout, compute_rewards
from grouptune.rundir import LOCK
from grouptune.time_limits import TimeLimitExceeded, judge_math, run_with_time_limit
from grouptune.trainer import Trainer

# The length reward, held at its first call while the file GT_TEST_HOLD exists (GT_TEST_HOLD.waiting
# says it is waiting): a run that stays mid-training until the test lets it go.
HELD_REWARD = REWARD_SOURCE + '''

def held(prompts, completions, answer, **columns):
    hold = os.environ.get("GT_TEST_HOLD")
    if hold and os.path.exists(hold):
        open(hold + ".waiting", "w").close()
        deadline = time.monotonic() + 120
        while os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.05)
    return reward(prompts, completions, answer, **columns)
'''

HANGING_REWARD = '''
import time


def reward(prompts, completions, **columns):
    time.sleep(600)  # a user function that never returns
    return [0.0] * len(completions)
'''


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reliability_ii")
    (d / "length_reward.py").write_text(REWARD_SOURCE)
    (d / "held_reward.py").write_text(HELD_REWARD)
    (d / "hanging_reward.py").write_text(HANGING_REWARD)
    return {
        "model": save_tiny_model(d / "model"),
        "train": write_jsonl(d / "train.jsonl", arithmetic_rows(12)),
        "reward": d / "length_reward.py",
        "hanging": d / "hanging_reward.py",
        "held": d / "held_reward.py",
    }


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory) -> Path:
    """The uninterrupted run: a checkpoint after every batch and the final model."""
    out = tmp_path_factory.mktemp("reference")
    cfg = load_config(overrides=settings(files, out, **{
        "checkpoint.save_every": 1, "checkpoint.keep_last": 0, "checkpoint.save_final": True}))  # fmt: skip
    Trainer(cfg).train()
    return out


@pytest.fixture
def clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("GT_TEST_")]:
        monkeypatch.delenv(key)
    return monkeypatch


def run(files, out: Path, capsys, **overrides) -> tuple[int, str]:
    """``grouptune train`` in this process: exit status and stderr."""
    status = cli.main(cli_args(files, out, **overrides))
    return status, capsys.readouterr().err


def assert_one_line_refusal(status: int, err: str, *expected: str) -> None:
    """Exit status 2, no traceback, a ``grouptune:`` message holding ``expected`` (after any
    loading progress bars on stderr)."""
    assert status == 2, err
    assert "Traceback" not in err and ("\n" + err).count("\ngrouptune: ") >= 1, err
    for text in expected:
        assert text in err, err


def copy_checkpoints(reference: Path, out: Path, batches) -> None:
    for b in batches:
        shutil.copytree(ckpt.checkpoint_dir(reference, b), ckpt.checkpoint_dir(out, b))


def python_cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grouptune.cli", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


# ============================================================================ one run per directory


def test_a_second_run_on_the_same_directory_is_refused_and_the_first_finishes_unharmed(files, reference, tmp_path):
    out, hold = tmp_path / "run", tmp_path / "hold"
    hold.touch()  # the first run waits in its first reward call until the second has been refused
    first = python_cli(*cli_args(files, out, **{"checkpoint.save_final": True, "reward.functions": [f"{files['held']}:held"]}),
                       env={"GT_TEST_HOLD": str(hold), "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{hold}.waiting").exists():  # mid-training: batch 1 is being scored
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        holder = json.loads((out / LOCK).read_text())
        second = python_cli(*cli_args(files, out), env={"OMP_NUM_THREADS": "1"})
        _, err = second.communicate(timeout=120)
        assert first.poll() is None, "the first run is still going while the second is refused"
        hold.unlink()
        stdout, first_err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert_one_line_refusal(second.returncode, err, f"{out} is in use by another run", f"PID {first.pid}",
                            f"started {holder['started']}")  # fmt: skip
    assert first.returncode == 0, first_err
    assert_same(final_weights(out), final_weights(reference))
    assert [r["batch"] for r in records(out)] == list(range(1, BATCHES + 1))  # nothing interleaved
    assert not (out / LOCK).exists()  # released when the run ended


def test_a_stale_lock_of_a_dead_run_is_taken_over_with_a_message(files, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "yesterday"}))
    status, err = run(files, out, capsys, **{"optim.total_batches": 1})
    assert status == 0, err
    assert f"took over {out / LOCK} from a run that is no longer running (PID {dead.pid}, started yesterday)" in err
    assert not (out / LOCK).exists()


def test_a_directory_holding_a_run_is_refused_unless_resumed_or_overwritten(files, reference, tmp_path, capsys):
    out = tmp_path / "run"
    copy_checkpoints(reference, out, [5, 6])
    shutil.copytree(reference / "final", out / "final")
    shutil.copy(reference / "metrics.jsonl", out / "metrics.jsonl")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    status, err = run(files, out, capsys, **{"optim.total_batches": 2, "checkpoint.save_final": True})
    assert_one_line_refusal(status, err, "already holds a run (2 checkpoint(s), the last checkpoint-0000006; "
                            "a final model (final/); metrics.jsonl)", "--checkpoint.resume true",
                            "--log.overwrite true (deletes its checkpoints/, final/, metrics.jsonl")  # fmt: skip
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched

    status, err = run(files, out, capsys, **{"optim.total_batches": 2, "checkpoint.save_final": True,
                                             "log.overwrite": True})  # fmt: skip
    assert status == 0, err
    assert "log.overwrite: deleted checkpoints, final, metrics.jsonl" in err
    assert [r["batch"] for r in records(out)] == [1, 2]  # only the new run's records
    assert not (out / "checkpoints").exists()  # save_every 0: the old checkpoints are gone, none new
    assert_same(final_weights(out), ckpt_weights(reference, 2))


# ============================================================================ resume compares settings


def test_resume_refuses_a_changed_method_and_honours_a_changed_total(files, reference, tmp_path, capsys):
    out = tmp_path / "run"
    status, err = run(files, out, capsys, **{"optim.total_batches": 3, "checkpoint.save_every": 1})
    assert status == 0, err

    status, err = run(files, out, capsys, **{"checkpoint.resume": True, "method.name": "gift",
                                             "rollout.group_size": 8})  # fmt: skip
    assert_one_line_refusal(status, err, "these settings differ from those of the run being resumed",
                            "method.name: 'grpo' -> 'gift'", "rollout.group_size: 4 -> 8")  # fmt: skip
    assert [r["batch"] for r in records(out)] == [1, 2, 3]  # nothing written

    status, err = run(files, out, capsys, **{"checkpoint.resume": True, "optim.total_batches": 5,
                                             "checkpoint.save_final": True})  # fmt: skip
    assert status == 0, err
    assert "resuming with changed settings, applied: optim.total_batches: 3 -> 5" in err
    assert [r["batch"] for r in records(out)] == [1, 2, 3, 4, 5]
    assert_same(final_weights(out), ckpt_weights(reference, 5))


def test_resume_applies_a_changed_learning_rate_to_the_optimizer(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(files, out, capsys, **{"optim.total_batches": 2, "checkpoint.save_every": 1})[0] == 0
    trainer = Trainer(load_config(overrides=settings(files, out, **{
        "checkpoint.resume": True, "optim.total_batches": 3, "optim.lr": 2e-2})))  # fmt: skip
    trainer.train()
    assert "optim.lr: 0.01 -> 0.02" in capsys.readouterr().err
    assert [r["lr"] for r in records(out)] == [1e-2, 1e-2, 2e-2]  # batch 3 trained with the new rate
    assert trainer.scheduler.base_lrs == [2e-2] and trainer._bare_optimizer().param_groups[0]["lr"] == 2e-2
    assert "lr: 0.02" in (out / "config.yaml").read_text()  # recorded, and applied


# ============================================================================ checkpoint integrity


def garbage_of_the_same_size(file: Path) -> None:
    """Overwrite every tensor byte of a safetensors file with finite random floats."""
    data = bytearray(file.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    n = (len(data) - start) // 4
    data[start : start + 4 * n] = torch.rand(n, generator=torch.Generator().manual_seed(0)).numpy().tobytes()
    file.write_bytes(bytes(data))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def garble_header(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[8:40] = b"#" * 32
    file.write_bytes(bytes(data))


DAMAGE = {
    "model.safetensors, garbage of the same size": ("model.safetensors", garbage_of_the_same_size, "sha256 mismatch"),
    "model.safetensors, truncated": ("model.safetensors", truncate, "truncated or overwritten"),
    "state.json, truncated": ("state.json", truncate, "truncated or overwritten"),
    "optimizer.safetensors, garbled header": ("optimizer.safetensors", garble_header, "sha256 mismatch"),
}


def test_a_corrupted_latest_checkpoint_is_detected_and_the_previous_one_used(files, reference, tmp_path, capsys):
    out = tmp_path / "run"
    copy_checkpoints(reference, out, [1, 2, 3])
    shutil.copy(reference / "metrics.jsonl", out / "metrics.jsonl")
    bad = ckpt.checkpoint_dir(out, 3) / "model.safetensors"
    garbage_of_the_same_size(bad)
    assert bad.stat().st_size == (ckpt.checkpoint_dir(reference, 3) / "model.safetensors").stat().st_size
    assert all(torch.isfinite(v).all() for v in ckpt._tensors(bad).values())  # it loads: only the checksum knows

    status, err = run(files, out, capsys, **{"checkpoint.resume": True, "checkpoint.save_final": True,
                                             "checkpoint.save_every": 1, "checkpoint.keep_last": 0})  # fmt: skip
    assert status == 0, err
    assert f"checkpoint failed its integrity check: {bad}: contents differ from manifest.json (sha256 mismatch" in err
    assert f"resuming from {ckpt.checkpoint_dir(out, 2)}, the newest checkpoint that passes" in err
    assert_same(final_weights(out), final_weights(reference))  # as if never interrupted
    assert_same(ckpt_weights(out, 3), ckpt_weights(reference, 3))  # the damaged one written again
    assert [r["batch"] for r in records(out)] == list(range(1, BATCHES + 1))


@pytest.mark.parametrize("damage", list(DAMAGE)[1:])
def test_every_kind_of_damage_names_the_file_and_falls_back(damage, files, reference, tmp_path, capsys):
    name, spoil, why = DAMAGE[damage]
    out = tmp_path / "run"
    copy_checkpoints(reference, out, [1, 2])
    spoil(ckpt.checkpoint_dir(out, 2) / name)
    status, err = run(files, out, capsys, **{"checkpoint.resume": True, "optim.total_batches": 2,
                                             "checkpoint.save_every": 1})  # fmt: skip
    assert status == 0, err
    assert f"{ckpt.checkpoint_dir(out, 2) / name}: " in err and why in err
    assert f"resuming from {ckpt.checkpoint_dir(out, 1)}" in err
    assert_same(ckpt_weights(out, 2), ckpt_weights(reference, 2))


def test_no_intact_checkpoint_is_an_error_naming_each_file(files, reference, tmp_path, capsys):
    out = tmp_path / "run"
    copy_checkpoints(reference, out, [1, 2])
    truncate(ckpt.checkpoint_dir(out, 1) / "rng.safetensors")
    (ckpt.checkpoint_dir(out, 2) / "manifest.json").write_text("{not json")
    status, err = run(files, out, capsys, **{"checkpoint.resume": True})
    assert_one_line_refusal(status, err, "no checkpoint under", "passes its integrity check",
                            str(ckpt.checkpoint_dir(out, 1) / "rng.safetensors"),
                            str(ckpt.checkpoint_dir(out, 2) / "manifest.json") + ": unreadable manifest")  # fmt: skip


def test_a_checkpoint_without_manifest_is_checked_for_readability(reference, tmp_path):
    """Checkpoints of an older grouptune have no manifest: their files must at least parse."""
    old = tmp_path / "checkpoint-0000001"
    shutil.copytree(ckpt.checkpoint_dir(reference, 1), old)
    (old / "manifest.json").unlink()
    assert manifest.verify(old) is None
    truncate(old / "state.json")
    assert manifest.verify(old).startswith(f"{old / 'state.json'}: unreadable (JSONDecodeError")
    with pytest.raises(ckpt.CheckpointError, match=f"{old / 'state.json'}: cannot read"):
        ckpt.read_state(old)


# ============================================================================ reward time limit


def test_a_hanging_reward_function_is_stopped_by_the_timeout(files, tmp_path, capsys):
    out = tmp_path / "run"
    t0 = time.monotonic()
    status, err = run(files, out, capsys, **{"reward.functions": [f"{files['hanging']}:reward"],
                                             "reward.timeout": 1, "reward.on_error": "unjudged"})  # fmt: skip
    assert time.monotonic() - t0 < 120
    assert status == 1, err
    assert (f"grouptune: reward error: reward function '{files['hanging']}:reward' did not return within "
            "reward.timeout = 1 s on a batch of 8 completions of data rows") in err  # fmt: skip
    assert "time.sleep(600)" in err  # the traceback shows where it hung


def test_reward_time_limit_off_the_main_thread_and_around_math_limits():
    def sleepy(prompts, completions, **_):
        time.sleep(30)

    fn = RewardFunction("sleepy", sleepy, timeout=0.5)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_raises(compute_rewards, [fn], ["p"], ["c"], {})))
    worker.start()
    worker.join(20)
    assert not worker.is_alive() and isinstance(errors[0], RewardTimeout) and "'sleepy'" in str(errors[0])

    def judges_then_hangs():  # a math judge's own limit inside a reward function's limit
        assert judge_math("1", "9^{9^{9^{9}}}", timeout=0.2) is None  # the inner limit: unjudged, no error
        time.sleep(30)

    with pytest.raises(TimeLimitExceeded):
        run_with_time_limit(judges_then_hangs, 3)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # nothing left armed


def _raises(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


# ============================================================================ a huge prompt


class CountingTokenizer:
    """A tokenizer that records the longest text it was asked to tokenize."""

    def __init__(self, tok):
        self.tok, self.longest = tok, 0

    def __call__(self, text, **kw):
        self.longest = max(self.longest, *(map(len, text if isinstance(text, list) else [text])))
        return self.tok(text, **kw)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_a_10mb_prompt_is_dropped_without_tokenizing_it_whole(files, tmp_path, capsys):
    from helpers_tokenizer import build_tokenizer

    rows = arithmetic_rows(12)
    rows[5]["prompt"] = [{"role": "user", "content": "What is 3 + 4? " * 700_000}]  # 10.5 MB
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    tok = CountingTokenizer(build_tokenizer())
    examples = load_examples(load_config().data, str(train), tok)
    assert examples.report.n_dropped == 1 and 5 not in [ex.index for ex in examples]
    assert tok.longest <= 4 * 32 * 1024  # a few windows of 32 characters per allowed token, not 10 MB

    status, err = run(files, tmp_path / "run", capsys, **{"data.train": str(train), "optim.total_batches": 1})
    assert status == 0, err


def test_long_prompts_truncated_or_refused_from_a_window(tmp_path):
    from helpers_tokenizer import build_tokenizer

    tok = build_tokenizer()
    text = " ".join(f"word{i % 97}" for i in range(60_000))  # ~400k characters, over 32 * 1000 of them
    src = write_jsonl(tmp_path / "long.jsonl", [{"prompt": text}, {"prompt": "short"}])
    cfg = load_config(overrides={"data.max_prompt_length": 1000, "data.long_prompts": "truncate"}).data
    examples = load_examples(cfg, str(src), tok)
    whole = tok(_rendered(tok, text), add_special_tokens=False)["input_ids"]
    assert len(whole) > 32 * 1000 and examples[0].prompt_ids == whole[-1000:]  # as from the whole text
    cfg.long_prompts = "error"
    with pytest.raises(Exception, match=r"row 0 \(line 1\): prompt has over \d+ tokens, more than data.max_prompt_length=1000"):
        load_examples(cfg, str(src), tok)


def _rendered(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


# ============================================================================ bad settings, early


@pytest.fixture
def no_model_loads(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", refuse)


BAD_SETTINGS = {
    "negative lr": ({"optim.lr": -1e-3}, "optim.lr = -0.001: must be > 0"),
    "zero temperature": ({"rollout.temperature": 0}, "rollout.temperature = 0.0: must be > 0"),
    "no new tokens": ({"rollout.max_new_tokens": 0}, "rollout.max_new_tokens = 0: must be >= 1"),
    "no steps per rollout": ({"optim.steps_per_rollout": 0}, "optim.steps_per_rollout = 0: must be >= 1"),
    "missing local model": ({"model.name_or_path": "runs/never/final"}, "model.name_or_path: runs/never/final does not exist"),
    "unknown choice": ({"optim.scheduler": "cosinus"}, "optim.scheduler = 'cosinus': must be one of 'constant', 'linear', 'cosine'"),
    "missing data file": ({"data.train": "data/trian.jsonl"}, "data.train: file not found: "),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_settings_are_refused_before_the_model_loads(case, files, tmp_path, capsys, no_model_loads):
    overrides, message = BAD_SETTINGS[case]
    status, err = run(files, tmp_path / "run", capsys, **overrides)
    assert_one_line_refusal(status, err, message)
    assert "multiple of 0" not in err
    assert not (tmp_path / "run").exists()


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("optim:\n  lr: 1e-3\n  total_batches: [4\nlog: {progress: false}\n")
    proc = python_cli("train", "--config", str(bad))
    _, err = proc.communicate(timeout=120)
    assert_one_line_refusal(proc.returncode, err, f"{bad}, line 4, column 4: not valid YAML", "flow sequence (from line 3")


def test_a_non_utf8_file_is_reported_by_line(files, tmp_path, capsys, no_model_loads):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"optim:\n  lr: 1e-3\n# caf\xe9\n")
    assert_one_line_refusal(cli.main(["train", "--config", str(config)]), capsys.readouterr().err,
                            f"{config}: not UTF-8 text: line 3, column 6: byte(s) e9")  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"prompt": "1 + 1?", "answer": "2"}\n{"prompt": "caf\xe9?", "answer": "3"}\n')
    with pytest.raises(Exception, match=r"train.jsonl: not UTF-8 text: line 2, column 16"):
        load_examples(load_config().data, str(data), None)


def test_eval_output_is_checked_before_evaluating(files, tmp_path, capsys, no_model_loads):
    status = cli.main(["eval", "--model.name_or_path", str(files["model"]), "--data.eval", str(files["train"]),
                       "--output", str(tmp_path / "no" / "such" / "dir" / "eval.json")])  # fmt: skip
    assert_one_line_refusal(status, capsys.readouterr().err, "--output", "does not exist")
    status = cli.main(["eval", "--model.name_or_path", str(files["model"]), "--data.eval", str(files["train"]),
                       "--output", str(tmp_path)])  # fmt: skip
    assert_one_line_refusal(status, capsys.readouterr().err, "is a directory")


def test_a_full_disk_while_saving_is_one_line_and_the_last_checkpoint_intact(files, reference, tmp_path, capsys,
                                                                               monkeypatch):  # fmt: skip
    real_save, calls = ckpt.save_file, []

    def disk_full(tensors, path):  # the second checkpoint's weights
        calls.append(path)
        if len(calls) == 4:
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')  # fmt: skip
        real_save(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    out = tmp_path / "run"
    status, err = run(files, out, capsys, **{"checkpoint.save_every": 1})
    assert_one_line_refusal(status, err, f"grouptune: could not write checkpoint {ckpt.checkpoint_dir(out, 2)}: "
                            f"No space left on device; the previous checkpoint {ckpt.checkpoint_dir(out, 1)} is intact")
    assert "is intact" in next(line for line in err.splitlines() if "could not write checkpoint" in line)  # one line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-0000001"]
    monkeypatch.undo()
    status, err = run(files, out, capsys, **{"checkpoint.resume": True, "optim.total_batches": 2})
    assert status == 0, err


# ============================================================================ the final save


KILL_DURING_FINAL_SAVE = textwrap.dedent('''
    import os, signal, sys
    from transformers import PreTrainedTokenizerBase
    from grouptune import cli

    def killed(*args, **kwargs):  # the weights of final/ are written, the tokenizer is next
        os.kill(os.getpid(), signal.SIGKILL)

    PreTrainedTokenizerBase.save_pretrained = killed
    sys.exit(cli.main(sys.argv[1:]))
''')


def test_a_kill_during_the_final_save_then_resume_finishes(files, reference, tmp_path, capsys):
    out = tmp_path / "run"
    args = cli_args(files, out, **{"checkpoint.save_every": 3, "checkpoint.save_final": True})
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_FINAL_SAVE, *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "final").exists()  # nothing that looks finished
    assert (out / "final.tmp" / "model.safetensors").is_file()

    status, err = run(files, out, capsys, **{"checkpoint.resume": True, "checkpoint.save_final": True})
    assert status == 0, err
    assert not (out / "final.tmp").exists()
    assert (out / "final" / "tokenizer.json").is_file() and manifest.verify(out / "final") is None
    assert_same(final_weights(out), final_weights(reference))


def test_a_failing_final_save_leaves_a_checkpoint_to_finish_from(files, reference, tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedModel

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    out = tmp_path / "run"
    evaluated = {"data.eval": [str(files["train"])], "log.eval_samples": 0, "checkpoint.save_final": True}
    status, err = run(files, out, capsys, **evaluated)  # checkpoint.save_every 0: no checkpoint until now
    last = ckpt.checkpoint_dir(out, BATCHES)
    assert_one_line_refusal(status, err, f"could not write the final model to {out / 'final'}: No space left on device",
                            f"A checkpoint of the last rollout batch is at {last}", "--checkpoint.resume true")
    assert not (out / "final").exists() and not (out / "final.tmp").exists()
    monkeypatch.undo()

    status, err = run(files, out, capsys, **evaluated, **{"checkpoint.resume": True})
    assert status == 0, err
    assert_same(final_weights(out), final_weights(reference))
    logged = records(out)
    assert [r["batch"] for r in logged] == [*range(1, BATCHES + 1), BATCHES]  # the final evaluation once
    assert "optimizer_steps" not in logged[-1] and "eval/train/greedy" in logged[-1]

"""Per-method sweeps of ``grouptune compare``: chosen on the validation split only, best per method,
the chosen setting run on every seed, the whole sweep in results.json."""

from __future__ import annotations

import json

import pytest

from grouptune.config import ConfigError
from grouptune.testbed import commands, sweep
from grouptune.testbed.report import write_report

TINY = {
    "optim.total_batches": 1, "optim.steps_per_rollout": 1, "rollout.prompts_per_batch": 2,
    "rollout.max_new_tokens": 12, "data.max_eval_examples": 3, "log.eval_samples": 2, "log.eval_every": 0,
}  # fmt: skip


def test_parse_sweep_and_grid():
    assert sweep.parse_sweep(["optim.lr=1e-5,3e-4", "method.tau=0.5"]) == {"optim.lr": [1e-5, 3e-4], "method.tau": [0.5]}
    assert sweep.grid({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"},
                                                           {"a": 2, "b": "y"}]  # fmt: skip
    assert sweep.grid({}) == [{}]
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        sweep.parse_sweep(["optim.lr"])


def test_choose_takes_the_best_mean_over_seeds_and_the_first_of_ties():
    t = [{"values": {"lr": 1}, "score": 0.5}, {"values": {"lr": 1}, "score": 0.1},  # mean 0.3
         {"values": {"lr": 2}, "score": 0.2}, {"values": {"lr": 2}, "score": 0.3},  # mean 0.25
         {"values": {"lr": 3}, "score": float("-inf")}]  # fmt: skip
    assert sweep.choose(t) == {"lr": 1}
    assert sweep.choose([{"values": {"lr": 2}, "score": 0.4}, {"values": {"lr": 1}, "score": 0.4}]) == {"lr": 2}


def test_selection_reads_the_validation_split_never_the_test_split(tmp_path, monkeypatch):
    """Fake runs whose validation accuracy peaks at one learning rate and test accuracy at another:
    each method gets its own validation-best rate; the other seeds then run at that rate only."""
    best_val = {"GFT": 1e-4, "GRPO": 3e-4}
    calls = []

    def fake_run(suite, run, seed, extra, run_dir):
        calls.append((run["label"], run.get("optim.lr"), seed, run_dir))
        lr = run.get("optim.lr")
        val = 1.0 if lr == best_val[run["label"]] else 0.2
        return {"final": {"eval/validation/greedy": val, "eval/test/greedy": 1.2 - val}, "curve": []}

    monkeypatch.setattr(commands, "_run_seed", fake_run)
    suite = {"name": "s", "seeds": [0, 1, 2], "sweep": {"optim.lr": [3e-5, 1e-4, 3e-4]},
             "runs": [{"label": "GFT", "method.name": "gft"}, {"label": "GRPO", "method.name": "grpo"}]}  # fmt: skip
    results, sweeps = commands.compare(suite, [0, 1, 2], tmp_path, {}, with_sweeps=True)
    assert {k: v["chosen"] for k, v in sweeps.items()} == {"GFT": {"optim.lr": 1e-4}, "GRPO": {"optim.lr": 3e-4}}
    for label, lr in best_val.items():
        assert [(c[1], c[2]) for c in calls if c[0] == label] == [(3e-5, 0), (1e-4, 0), (3e-4, 0), (lr, 1), (lr, 2)]
        assert all(results[label][s]["final"]["eval/validation/greedy"] == 1.0 for s in (0, 1, 2))
        assert len(sweeps[label]["trials"]) == 3
    train = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    val = (tmp_path / "data" / "validation.jsonl").read_text().splitlines()
    shipped = commands.testbed_config().data.train
    assert len(val) == sweep.DEFAULT_VALIDATION and train + val == open(shipped).read().splitlines()
    assert not {json.loads(r)["prompt"] for r in val} & {json.loads(r)["prompt"] for r in train}


def test_a_sweep_trains_tunes_and_reports_end_to_end(tmp_path):
    suite = {"name": "tiny_sweep", "seeds": [0, 1], "validation": 8, "sweep": {"optim.lr": [1e-6, 1e-3]},
             "runs": [{"label": "Base", "evaluate_only": True}, {"label": "GFT", "method.name": "gft"}]}  # fmt: skip
    results, sweeps = commands.compare(suite, [0, 1], tmp_path, TINY, with_sweeps=True)
    assert list(sweeps) == ["GFT"]
    trials = sweeps["GFT"]["trials"]
    assert [(t["values"]["optim.lr"], t["seed"]) for t in trials] == [(1e-6, 0), (1e-3, 0)]
    for t in trials:  # each trial's score is its final validation accuracy, read back from its own log
        run_dir = tmp_path / "runs" / "gft" / sweep.slug(t["values"]) / "seed0"
        last = json.loads((run_dir / "stage0" / "metrics.jsonl").read_text().splitlines()[-1])
        assert t["score"] == last["eval/validation/greedy"] and last["eval/validation/n_problems"] == 3
        assert "validation.jsonl" in (run_dir / "stage0" / "config.yaml").read_text()
    chosen = sweeps["GFT"]["chosen"]["optim.lr"]
    assert (tmp_path / "runs" / "gft" / f"optim.lr={chosen}" / "seed1" / "stage0" / "final").is_dir()
    assert "eval/validation/greedy" in results["Base"][0]["final"]
    write_report(suite, results, tmp_path, sweeps)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved) == {"runs", "sweeps"} and len(saved["sweeps"]["GFT"]["trials"]) == 2
    assert "## Sweep (validation split)" in (tmp_path / "report.md").read_text()


def test_a_sweep_refuses_pipelines_and_a_validation_split_as_large_as_the_data(tmp_path):
    pipe = {"name": "p", "sweep": {"optim.lr": [1e-4, 3e-4]}, "runs": [{"label": "A", "stages": [{}, {}]}]}
    with pytest.raises(ConfigError, match="stages"):
        commands.compare(pipe, [0], tmp_path, TINY)
    big = {"name": "b", "validation": 10**6, "sweep": {"optim.lr": [1e-4, 3e-4]}, "runs": [{"label": "A"}]}
    with pytest.raises(ConfigError, match="cannot be held out"):
        commands.compare(big, [0], tmp_path, TINY)


def test_reuse_keeps_finished_identical_runs_and_retrains_the_rest(tmp_path, monkeypatch):
    """--reuse: a second compare into the same directory keeps the runs whose settings are the same
    and whose final model verifies; a changed setting, a corrupted final model, or a stage after a
    retrained one trains again."""
    import grouptune.trainer

    suite = {"name": "r", "runs": [{"label": "GFT", "method.name": "gft"},
                                   {"label": "P", "stages": [{"method.name": "sft"}, {"method.name": "grpo"}]}]}  # fmt: skip
    first = commands.compare(suite, [0], tmp_path, TINY)
    trained = []
    real = grouptune.trainer.Trainer

    class Counting(real):
        def train(self):
            trained.append(str(self.out.relative_to(tmp_path)))
            return super().train()

    monkeypatch.setattr(grouptune.trainer, "Trainer", Counting)
    again = commands.compare({**suite, "reuse": True}, [0], tmp_path, TINY)
    assert trained == [] and again.keys() == first.keys()
    for label, seeds in first.items():  # the same curves, and every final metric of the training run
        assert again[label][0]["curve"] == seeds[0]["curve"]
        assert {k: again[label][0]["final"][k] for k in seeds[0]["final"]} == seeds[0]["final"]
    (tmp_path / "runs" / "p" / "seed0" / "stage0" / "final" / "model.safetensors").write_bytes(b"corrupt")
    commands.compare({**suite, "reuse": True}, [0], tmp_path, {**TINY, "optim.lr": 2e-4})
    assert trained == ["runs/gft/seed0/stage0", "runs/p/seed0/stage0", "runs/p/seed0/stage1"]
    trained.clear()
    commands.compare({**suite, "reuse": True}, [0], tmp_path, {**TINY, "optim.lr": 2e-4})
    assert trained == []
    (tmp_path / "runs" / "p" / "seed0" / "stage0" / "final" / "model.safetensors").write_bytes(b"corrupt")
    commands.compare({**suite, "reuse": True}, [0], tmp_path, {**TINY, "optim.lr": 2e-4})
    assert trained == ["runs/p/seed0/stage0", "runs/p/seed0/stage1"]  # stage 1 starts from a new stage 0

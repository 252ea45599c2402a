"""The demo's promise on the shipped base model: a few rollout batches of the demo's own
settings raise held-out accuracy (fixed seed), and ``grouptune demo`` prints before/after."""

from __future__ import annotations

import pytest

from grouptune.evaluation import evaluate_model
from grouptune.testbed import commands
from grouptune.testbed.paths import data_path
from grouptune.trainer import Trainer


def quick_config(method: str, out, batches: int):
    """The demo's config (``configs/testbed.yaml``), shortened: ``batches`` rollout batches and
    greedy accuracy on all 400 in-distribution held-out problems (greedy: no sampling noise)."""
    return commands.testbed_config({
        "method.name": method, "optim.total_batches": batches, "optim.seed": 0,
        "data.eval": [str(data_path("test"))], "data.max_eval_examples": 0,
        "log.eval_every": 0, "log.eval_samples": 0, "log.progress": False,
        "log.output_dir": str(out), "checkpoint.save_final": False,
    })  # fmt: skip


@pytest.mark.parametrize(("method", "gain"), [("gft", 0.03), ("gift", 0.005)])
def test_a_few_demo_batches_raise_held_out_accuracy(method, gain, tmp_path):
    """Ten rollout batches: GFT gains at least 12 of 400 held-out problems, GIFT at least 2
    (measured on this seed: GFT 0.5575 -> 0.6275, GIFT 0.5575 -> 0.5775)."""
    cfg = quick_config(method, tmp_path, batches=10)
    before = evaluate_model(cfg)["test"]["greedy"]
    after = Trainer(cfg).train()["eval/test/greedy"]
    assert 0.3 < before < 0.8, "the shipped base model should leave room to improve"
    assert after >= before + gain, f"{method}: held-out greedy accuracy {before:.4f} -> {after:.4f}"


def test_demo_command_prints_before_and_after(tmp_path, capsys):
    """``grouptune demo`` end to end on a tiny budget: a table with the base model and each method."""
    rows = commands.demo(["gft", "gift"], tmp_path, seed=0, overrides={
        "optim.total_batches": 1, "data.max_eval_examples": 16, "log.eval_samples": 2, "log.progress": False})  # fmt: skip
    assert set(rows) == {"gft", "gift"} and rows["gft"]["test"]["n_problems"] == 16
    out = capsys.readouterr().out
    table = out[out.index("before -> after") :]
    for row in ("| base |", "| gft |", "| gift |"):
        assert row in table
    assert (tmp_path / "gft" / "final" / "model.safetensors").is_file()

"""The ``rlhf`` suite: policies trained on the testbed reward model alone, watched on the proxy
(the reward model's score) and the gold (the verifier's accuracy); the over-optimisation table."""

from __future__ import annotations

import pytest

from grouptune.testbed import commands
from grouptune.testbed.overoptimization import proxy_gold_table, seed_summary
from grouptune.testbed.paths import reward_model_path
from grouptune.testbed.report import write_report


def _run(golds: list[float], proxies: list[float]) -> dict:
    curve = [{"batch": b + 1, "eval/test/greedy": g, "eval/test/score/rm": p} for b, (g, p) in enumerate(zip(golds, proxies))]
    return {"final": {"eval/test/greedy": golds[-1], "eval/test/score/rm": proxies[-1]}, "curve": curve}


def test_seed_summary_finds_the_peak_and_the_drop_by_hand():
    s = seed_summary(_run([0.5, 0.7, 0.6, 0.4], [-1.0, -0.5, 0.0, 0.5]), "test/score/rm", "test/greedy")
    assert s == {"proxy": 0.5, "gold": 0.4, "peak": 0.7, "peak_batch": 2, "drop": pytest.approx(0.3)}
    base = seed_summary({"final": {"eval/test/greedy": 0.55, "eval/test/score/rm": -0.2}, "curve": []},
                        "test/score/rm", "test/greedy")  # fmt: skip
    assert (base["peak"], base["drop"], base["peak_batch"]) == (0.55, 0.0, 0)
    table = proxy_gold_table({"A": {0: _run([0.5, 0.7], [0.0, 1.0]), 1: _run([0.5, 0.3], [0.0, 2.0])}},
                             "test/score/rm", "test/greedy")  # fmt: skip
    assert "| A | 1.500 ± 0.707 | 0.500 ± 0.283 | 0.600 ± 0.141 | 2, 1 | 0.100 ± 0.141 |" in table


def test_rlhf_suite_trains_on_the_reward_model_alone_and_reports_proxy_and_gold(tmp_path):
    suite = commands.load_suite("rlhf")
    assert [r["label"] for r in suite["runs"]] == ["Base", "GIFT", "GRPO", "DAPO", "GSPO"]
    cfg = commands.testbed_config({**suite["common"], "method.name": "grpo"})
    assert cfg.reward.functions == [f"rm:{reward_model_path()}"]  # no verifier in the training reward
    assert cfg.reward.eval_functions == ["gsm8k", f"rm:{reward_model_path()}"]
    tiny = {"optim.total_batches": 2, "optim.steps_per_rollout": 1, "rollout.prompts_per_batch": 2,
            "rollout.max_new_tokens": 12, "data.max_eval_examples": 3}  # fmt: skip
    small = {**suite, "runs": suite["runs"][:2], "sweep": {"optim.lr": [1e-4]}, "validation": 5}
    results, sweeps = commands.compare(small, [0], tmp_path, tiny, with_sweeps=True)
    curve = results["GIFT"][0]["curve"]
    assert [rec["batch"] for rec in curve if "eval/test/score/rm" in rec] == [1, 2]  # every batch (the last: the final)
    assert all("eval/validation/score/rm" in rec and "eval/test/greedy" in rec for rec in curve if "eval/test/n_problems" in rec)
    trained = [rec for rec in curve if "reward/mean" in rec]
    assert len(trained) == 2 and all(k.startswith("reward/rm:") for rec in trained for k in rec
                                     if k.startswith("reward/") and k.endswith("/mean") and k != "reward/mean")  # fmt: skip
    assert all(rec["reward/mean"] == pytest.approx(rec[f"reward/rm:{reward_model_path()}/mean"]) for rec in trained)
    write_report(small, results, tmp_path, sweeps)
    report = (tmp_path / "report.md").read_text()
    assert "## Proxy and gold" in report and "| GIFT |" in report and (tmp_path / "proxy_gold.png").is_file()

"""The suites of ``grouptune compare``: every one loads into valid run configurations, the GFT
table has the paper's eleven rows, and every row of it runs end to end on a tiny budget."""

from __future__ import annotations

import pytest

from grouptune.methods import METHODS, resolve_method
from grouptune.testbed import commands
from grouptune.testbed.report import write_report

SUITES = sorted(p.stem.removeprefix("compare_") for p in commands.CONFIGS.glob("compare_*.yaml"))
TINY = {
    "optim.total_batches": 1, "optim.steps_per_rollout": 1, "rollout.prompts_per_batch": 2,
    "rollout.max_new_tokens": 12, "data.max_eval_examples": 3, "log.eval_samples": 2, "log.eval_every": 0,
}  # fmt: skip


@pytest.mark.parametrize("name", SUITES)
def test_every_suite_loads_into_valid_run_configurations(name):
    suite = commands.load_suite(name)
    assert suite["name"] == name and suite["runs"] and suite["seeds"]
    labels = [run["label"] for run in suite["runs"]]
    assert len(set(labels)) == len(labels)
    for run in suite["runs"]:
        for stage in run.get("stages", [run]):
            cfg = commands.testbed_config({**suite.get("common", {}), **commands._settings(stage)})
            assert resolve_method(cfg).method.name in METHODS


def test_gft_table_has_the_papers_eleven_rows():
    runs = commands.load_suite("gft_table")["runs"]
    assert [r["label"] for r in runs] == ["Base", "SFT", "SFT(mix)", "GRPO", "ASFT", "PSFT", "DFT", "LUFFY", "CHORD",
                                          "GFT (no mix)", "GFT"]  # fmt: skip
    assert runs[0] == {"label": "Base", "evaluate_only": True}
    assert [r["method.name"] for r in runs[1:]] == ["sft", "sft_mix", "grpo", "asft", "psft", "dft", "luffy", "chord_phi",
                                                    "gft_nomix", "gft"]  # fmt: skip


def test_every_row_of_the_gft_table_runs_on_a_tiny_budget(tmp_path):
    suite = commands.load_suite("gft_table")
    results = commands.compare(suite, [0], tmp_path, TINY)
    assert list(results) == [r["label"] for r in suite["runs"]]
    for label, seeds in results.items():
        final = seeds[0]["final"]
        assert {"eval/test/greedy", "eval/test/avg@2", "eval/test/pass@2", "eval/test_hard/greedy"} <= set(final), label
        assert final["eval/test/n_problems"] == 3
        assert (seeds[0]["curve"] == []) == (label == "Base")
    trained = results["GFT"][0]["curve"]
    assert trained[0]["batch"] == 1 and "gft/loss" in trained[0]
    write_report(suite, results, tmp_path)
    report = (tmp_path / "report.md").read_text()
    for label in results:
        assert f"| {label} |" in report


def test_pipelines_suite_chains_three_stages_and_reports_pass_at_k(tmp_path):
    """SFT -> GFT -> GRPO among the pipelines; every run's last stage starts from the one before; the
    report has a pass@k table over k (the GFT paper's Figure 4) and its plot."""
    suite = commands.load_suite("pipelines")
    assert [r["label"] for r in suite["runs"]] == ["SFT -> GRPO", "GFT -> GRPO", "SFT -> GFT -> GRPO"]
    assert suite["common"]["log.eval_samples"] == 16 and suite["common"]["log.eval_pass_at"] == [1, 2, 4, 8, 16]
    small = {**TINY, "log.eval_samples": 4, "log.eval_pass_at": [1, 2]}
    results = commands.compare(suite, [0], tmp_path, small)
    final = results["SFT -> GFT -> GRPO"][0]["final"]
    assert {"eval/test/pass@1", "eval/test/pass@2", "eval/test/pass@4", "eval/test/avg@4"} <= set(final)
    assert final["eval/test/pass@1"] == pytest.approx(final["eval/test/avg@4"])  # unbiased pass@1 is avg@n
    assert final["eval/test/pass@1"] <= final["eval/test/pass@2"] <= final["eval/test/pass@4"]
    run_dir = tmp_path / "runs" / commands._slug("SFT -> GFT -> GRPO") / "seed0"
    assert str(run_dir / "stage1" / "final") in (run_dir / "stage2" / "config.yaml").read_text()
    write_report(suite, results, tmp_path)
    report = (tmp_path / "report.md").read_text()
    table = report[report.index("## pass@k") :]
    assert "| method | test pass@1 | test pass@2 | test pass@4 |" in table and table.count("| SFT -> GFT -> GRPO |") == 1
    assert (tmp_path / "pass_at_k.png").is_file()

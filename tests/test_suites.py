"""Evaluation suites: ``grouptune eval --suite`` end to end on tiny local copies of benchmarks (the
table in the paper's layout and the JSON of every score), the scores against a scripted engine,
where each benchmark's data comes from, and ``log.eval_suite`` during training."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from helpers_benchmarks import BENCHMARKS, write_benchmark
from helpers_runs import make_cfg
from helpers_tokenizer import build_tokenizer

from grouptune import cli
from grouptune.config import ConfigError, load_config
from grouptune.rollout import Generations
from grouptune.suites import (
    CATALOGUE,
    SUITES,
    evaluate_suite,
    format_suite_table,
    get_suite,
    load_suite,
    parse_sources,
    resolve_source,
    suite_report,
)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def test_eval_suite_end_to_end_prints_the_paper_table_and_writes_every_score(tiny_qwen2, tmp_path, fresh_accelerate):
    """GFT's Figure 4 suite (MMLU-STEM and SAT-Math, pass@16 at T = 1) on two-row local copies."""
    data = tmp_path / "benchmarks"
    for name in ("mmlu_stem", "sat_math"):
        write_benchmark(data, name)
    output = tmp_path / "fig4.json"
    argv = ["eval", "--model.name_or_path", str(tiny_qwen2), "--suite", "gft_fig4", "--suite-data", str(data),
            "--rollout.max_new_tokens", "4", "--data.max_prompt_length", "4096", "--output", str(output)]  # fmt: skip
    status, out, err = run_cli(argv)
    assert status == 0, err
    report = json.loads(output.read_text())
    assert report["suite"] == "gft_fig4" and list(report["benchmarks"]) == ["mmlu_stem", "sat_math"]
    for name, res in report["benchmarks"].items():
        assert res["source"] == str(data / name / "test.jsonl")
        assert (res["k"], res["temperature"], res["metric"], res["template"]) == (16, 1.0, "pass@16", "qwen25-math-cot")
        assert res["reward"] == "choice" and res["n_problems"] == res["n_rows"] == 2
        assert res["score"] == res["pass@16"] and 0.0 <= res["avg@16"] <= res["pass@16"] <= 1.0
        assert "greedy" not in res  # the paper reports sampled accuracy only; no greedy pass is run
    scores = [res["score"] for res in report["benchmarks"].values()]
    assert report["average"] == pytest.approx(sum(scores) / 2)
    lines = out.strip().splitlines()
    assert lines[0].startswith("GFT (arXiv 2604.14258), Figure 4") and "pass@16" in lines[0]
    assert lines[2] == "| Model | MMLU-STEM | SAT-Math | Avg. |"
    cells = [f"{100 * s:.1f}" for s in scores] + [f"{100 * report['average']:.1f}"]
    assert lines[4] == f"| {tiny_qwen2} | " + " | ".join(cells) + " |"


class ScriptedEngine:
    """Answers every prompt of a benchmark's first row rightly and every other prompt wrongly."""

    def __init__(self, tokenizer, answers: dict[str, str]):
        self.tokenizer, self.answers = tokenizer, answers  # prompt text -> completion

    def generate(self, prompts, seeds=None, greedy=False, temperature=1.0, max_new_tokens=8):
        texts = [self.answers[self.tokenizer.decode(p)] for p in prompts]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        return Generations(token_ids=ids, truncated=[False] * len(ids))


def test_gft_math_scores_are_the_verifiers_over_every_sample(tmp_path, fresh_accelerate):
    tok = build_tokenizer()
    suite = get_suite("gft_math")
    for name in suite.names:
        write_benchmark(tmp_path, name)
    cfg = load_config(overrides={"data.max_prompt_length": 4096})
    sets = load_suite(cfg, tok, suite, str(tmp_path))
    answers = {}
    for s in sets:
        for i, ex in enumerate(s.examples):
            case = BENCHMARKS[s.bench.name][i]
            answers[ex.prompt_text] = case.right[0] if i == 0 else case.wrong[0]
    results = evaluate_suite(ScriptedEngine(tok, answers), tok, sets, max_new_tokens=8)
    report = suite_report(suite, sets, results, "scripted")
    for s in sets:
        expected = 1 / len(BENCHMARKS[s.bench.name])
        assert results[s.bench.name]["avg@16"] == pytest.approx(expected), s.bench.name
        assert results[s.bench.name]["score"] == results[s.bench.name]["avg@16"]
    table = format_suite_table(report)
    header = "| Model | AMC23 | College Math | Gaokao2023En | MATH500 | Minerva Math | TabMWP | OlympiadBench | Avg. |"
    assert header in table and "mean accuracy over 16 samples at T = 1.0 (avg@16)" in table


def test_gift_math_mixes_greedy_and_sampled_benchmarks(tmp_path):
    tok = build_tokenizer()
    suite = get_suite("gift_math")
    for name in suite.names:
        write_benchmark(tmp_path, name)
    sets = load_suite(load_config(overrides={"data.max_prompt_length": 4096}), tok, suite, str(tmp_path))
    answers = {ex.prompt_text: BENCHMARKS[s.bench.name][i].right[0] for s in sets for i, ex in enumerate(s.examples)}
    results = evaluate_suite(ScriptedEngine(tok, answers), tok, sets, max_new_tokens=8)
    assert results["gsm8k"]["score"] == results["gsm8k"]["greedy"] == 1.0 and "avg@0" not in results["gsm8k"]
    assert results["aime24"]["score"] == results["aime24"]["avg@16"] == 1.0
    assert sets[0].examples[0].prompt_text.endswith("put your final answer within \\boxed{}.")  # plain template


def test_sources_come_from_the_override_the_data_directory_or_the_hub(tmp_path):
    math500, tabmwp = CATALOGUE["math500"], CATALOGUE["tabmwp"]
    assert resolve_source(math500, "", {}) == ("HuggingFaceH4/MATH-500", "test")
    assert resolve_source(math500, str(tmp_path), {}) == ("HuggingFaceH4/MATH-500", "test")  # no file: the hub
    path = write_benchmark(tmp_path, "math500")
    assert resolve_source(math500, str(tmp_path), {}) == (str(path), "test")
    assert resolve_source(math500, str(tmp_path), {"math500": "x.jsonl"}) == ("x.jsonl", "test")
    with pytest.raises(ConfigError, match="--suite-data DIR"):
        resolve_source(tabmwp, "", {})
    with pytest.raises(ConfigError, match="no file"):
        resolve_source(tabmwp, str(tmp_path), {})
    assert parse_sources(["amc23=a.jsonl", "aime24=HuggingFaceH4/aime_2024"])["aime24"] == "HuggingFaceH4/aime_2024"
    with pytest.raises(ConfigError, match="BENCHMARK=SOURCE"):
        parse_sources(["amc=a.jsonl"])
    with pytest.raises(ConfigError, match="gft_math"):
        get_suite("gft")


def test_every_suite_benchmark_has_a_preset_a_template_and_a_verifier():
    from grouptune.data import PRESETS
    from grouptune.data.templates import TEMPLATES

    for suite in SUITES.values():
        for b in suite.benchmarks:
            assert b.preset in PRESETS and b.template in TEMPLATES and b.reward in ("qwen_math", "choice")
            assert (b.metric == "greedy") == (b.k == 0)


def test_eval_suite_during_training(tiny_llama, tiny_data, tmp_path, fresh_accelerate):
    from grouptune.trainer import Trainer

    data = tmp_path / "benchmarks"
    for name in ("mmlu_stem", "sat_math"):
        write_benchmark(data, name)
    cfg = make_cfg(tiny_llama, tiny_data, tmp_path / "run", method="gift", **{
        "optim.total_batches": 1, "log.eval_suite": "gft_fig4", "log.eval_suite_data": str(data),
        "data.max_prompt_length": 4096, "checkpoint.save_final": False,
    })  # fmt: skip
    metrics = Trainer(cfg).train()
    assert {"eval/mmlu_stem/pass@16", "eval/sat_math/score", "eval/eval/avg@2"} <= set(metrics)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "eval/sat_math/pass@16" in logged[-1]

"""Evaluation suites: the benchmarks of a paper's table, each with its data, prompt, k and temperature.

``grouptune eval --suite gft_math`` (or ``log.eval_suite`` during training) evaluates on every
benchmark of the suite and prints the table in the paper's layout (one row per model, one
column per benchmark, then the average), plus a JSON of every score (``--output``).

A suite names, per benchmark: where its data is (a file under the suite data directory,
``<dir>/<benchmark>/test.jsonl`` as the Qwen2.5-Math harness lays out its ``data/``, else a
hub copy where there is one; ``--suite-source NAME=SOURCE`` overrides either), the preset that
reads it (``grouptune.data.benchmarks``), the prompt template (``grouptune.data.templates``;
``data.prompt_template`` overrides it), the verifier (``qwen_math`` or ``choice``), the number of
samples k, the temperature and the metric the paper reports (``avg@k``, ``pass@k`` or greedy
accuracy). Suites: ``SUITES``; docs/evaluation.md#suites has the tables and their sources.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from grouptune.config import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteBenchmark:
    name: str  # key in the JSON and in eval/<name>/... metrics
    title: str  # column header, as the paper writes it
    preset: str  # data.preset that reads its public format
    local: str  # file under the suite data directory
    hub: str = ""  # hub copy (name or name:config), "" if none is known
    split: str = "test"  # split of the hub copy
    reward: str = "qwen_math"  # verifier: qwen_math or choice
    units: bool = True  # qwen_math: strip unit words (the harness keeps them for Minerva Math)
    template: str = "qwen25-math-cot"
    k: int = 16  # samples per problem; 0 = greedy decoding only
    temperature: float = 1.0
    metric: str = "avg"  # avg (mean accuracy of the k samples), pass (pass@k) or greedy

    @property
    def score_key(self) -> str:
        return "greedy" if self.metric == "greedy" else f"{self.metric}@{self.k}"


def _b(name: str, title: str, preset: str = "", hub: str = "", split: str = "test", **kw) -> SuiteBenchmark:
    return SuiteBenchmark(name, title, preset or name, f"{name}/test.jsonl", hub, split, **kw)


# Each benchmark's public copy: the harness's evaluation/data/<name>/test.jsonl, or a hub data set.
CATALOGUE = {
    b.name: b
    for b in (
        _b("amc23", "AMC23"),
        _b("aime24", "AIME24", hub="HuggingFaceH4/aime_2024", split="train"),
        _b("aime25", "AIME25"),
        _b("college_math", "College Math"),
        _b("gaokao2023en", "Gaokao2023En"),
        _b("gsm8k", "GSM8K", hub="openai/gsm8k:main"),
        _b("math500", "MATH500", hub="HuggingFaceH4/MATH-500"),
        _b("minerva_math", "Minerva Math", units=False),
        _b("mmlu_stem", "MMLU-STEM", hub="hails/mmlu_no_train:all", reward="choice"),
        _b("olympiadbench", "OlympiadBench"),
        _b("sat_math", "SAT-Math", reward="choice"),
        _b("tabmwp", "TabMWP"),
    )
}


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    benchmarks: tuple[SuiteBenchmark, ...]
    note: str = ""

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.benchmarks]


def _pick(names: str, **kw) -> tuple[SuiteBenchmark, ...]:
    return tuple(replace(CATALOGUE[n], **kw) for n in names.split())


SUITES = {
    s.name: s
    for s in (
        Suite(
            "gft_math", "GFT (arXiv 2604.14258), main table: math reasoning",
            _pick("amc23 college_math gaokao2023en math500 minerva_math tabmwp olympiadbench"),
            "mean accuracy over 16 samples at T = 1.0 (avg@16)",
        ),
        Suite(
            "gft_fig4", "GFT (arXiv 2604.14258), Figure 4: multiple choice",
            _pick("mmlu_stem sat_math", metric="pass"), "pass@16 from 16 samples at T = 1.0",
        ),
        Suite(
            "gift_math", "GIFT (arXiv 2510.23868): math reasoning",
            _pick("gsm8k math500", template="plain", k=0, temperature=0.0, metric="greedy")
            + _pick("aime24 aime25", template="plain"),
            "greedy accuracy (GSM8K, MATH500); avg@16 at T = 1.0 (AIME)",
        ),
    )  # fmt: skip
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"unknown evaluation suite {name!r}; valid: {', '.join(SUITES)}")
    return SUITES[name]


def parse_sources(items: list[str]) -> dict[str, str]:
    """``["amc23=path/amc.jsonl", ...]`` -> ``{"amc23": "path/amc.jsonl"}``."""
    out = {}
    for item in items:
        name, sep, source = item.partition("=")
        if not sep or name not in CATALOGUE or not source:
            raise ConfigError(f"--suite-source {item!r}: expected BENCHMARK=SOURCE, BENCHMARK one of {', '.join(CATALOGUE)}")
        out[name] = source
    return out


def resolve_source(bench: SuiteBenchmark, data_dir: str, sources: dict[str, str]) -> tuple[str, str]:
    """(source, split) of a benchmark: the override, the file under ``data_dir``, or its hub copy."""
    if bench.name in sources:
        return sources[bench.name], bench.split
    if data_dir:
        path = Path(data_dir).expanduser() / bench.local
        if path.is_file():
            return str(path), bench.split
        if not bench.hub:
            raise ConfigError(f"{bench.name}: no file {path} (the suite data directory holds <benchmark>/test.jsonl)")
        logger.warning("%s: no file %s; reading the hub copy %s", bench.name, path, bench.hub)
    if bench.hub:
        return bench.hub, bench.split
    raise ConfigError(
        f"{bench.name}: no hub copy is known; download its test.jsonl (docs/evaluation.md#suites) and pass "
        f"--suite-data DIR (DIR/{bench.local}) or --suite-source {bench.name}=PATH"
    )


# ----------------------------------------------------------------------------- loading and running


@dataclass
class SuiteSet:
    bench: SuiteBenchmark
    source: str
    template: str
    examples: list
    reward_fns: list
    n_rows: int = 0
    extra: dict = field(default_factory=dict)


def _reward(bench: SuiteBenchmark, timeout: float) -> list:
    from grouptune.rewards import ChoiceReward, QwenMathReward, RewardFunction

    fn = ChoiceReward() if bench.reward == "choice" else QwenMathReward(timeout, units=bench.units)
    return [RewardFunction(bench.reward, fn)]


def load_suite(cfg, tokenizer, suite: Suite, data_dir: str = "", sources: dict | None = None) -> list[SuiteSet]:
    """Every benchmark of ``suite`` read, checked and rendered; one ``DataError`` for all problems."""
    from grouptune.data import DataError, load_examples

    sets, problems = [], []
    for bench in suite.benchmarks:
        source, split = resolve_source(bench, data_dir, sources or {})
        template = cfg.data.prompt_template or bench.template
        data_cfg = replace(cfg.data, preset=bench.preset, prompt_template=template)
        reward_fns = _reward(bench, cfg.reward.math_timeout)
        checks = [rf.fn.gold_problem for rf in reward_fns if hasattr(rf.fn, "gold_problem")]
        try:
            examples = load_examples(data_cfg, source, tokenizer, split=split, require=("answer",), gold_checks=checks)
        except DataError as e:
            problems += e.problems
            continue
        sets.append(SuiteSet(bench, source, template, examples, reward_fns, examples.report.n_rows))
    if problems:
        raise DataError(problems)
    return sets


def evaluate_suite(engine, tokenizer, sets: list[SuiteSet], *, max_new_tokens: int, seed: int = 0,
                   max_examples: int = 0, accelerator=None) -> dict[str, dict]:  # fmt: skip
    """Each benchmark's metrics (``evaluate_examples``) plus ``score``: the one the paper reports."""
    from grouptune.evaluation import evaluate_examples

    results = {}
    for s in sets:
        b = s.bench
        res = evaluate_examples(
            engine, tokenizer, s.examples, s.reward_fns, k=b.k, temperature=b.temperature,
            max_new_tokens=max_new_tokens, seed=seed, max_examples=max_examples, accelerator=accelerator,
            greedy=b.metric == "greedy",
        )  # fmt: skip
        results[b.name] = {"score": res[b.score_key], **res}
    return results


def suite_report(suite: Suite, sets: list[SuiteSet], results: dict[str, dict], model: str) -> dict:
    """The JSON of a suite run: every benchmark's settings and scores, and the average score."""
    benchmarks = {}
    for s in sets:
        b = s.bench
        settings = {"title": b.title, "source": s.source, "preset": b.preset, "template": s.template,
                    "reward": b.reward, "k": b.k, "temperature": b.temperature, "metric": b.score_key}  # fmt: skip
        benchmarks[b.name] = {**settings, "n_rows": s.n_rows, **results[b.name]}
    scores = [r["score"] for r in results.values()]
    return {
        "suite": suite.name, "title": suite.title, "model": model, "note": suite.note,
        "average": sum(scores) / len(scores) if scores else None, "benchmarks": benchmarks,
    }  # fmt: skip


def format_suite_table(report: dict) -> str:
    """The paper's layout: one row for the model, a column per benchmark and the average, in %."""
    benches = report["benchmarks"]
    header = ["Model"] + [b["title"] for b in benches.values()] + ["Avg."]
    cells = [report["model"]] + [f"{100 * b['score']:.1f}" for b in benches.values()]
    cells.append("-" if report["average"] is None else f"{100 * report['average']:.1f}")
    lines = [
        f"{report['title']} — {report['note']} (%)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
        "| " + " | ".join(cells) + " |",
    ]
    return "\n".join(lines)


def run_suite(cfg, name: str, data_dir: str = "", sources: dict | None = None) -> dict:
    """``grouptune eval --suite``: load the model and engine, evaluate every benchmark, return the report."""
    from grouptune.evaluation import load_engine

    suite = get_suite(name)
    for bench in suite.benchmarks:  # every source known before the model loads
        resolve_source(bench, data_dir, sources or {})
    engine, tokenizer = load_engine(cfg)
    sets = load_suite(cfg, tokenizer, suite, data_dir, sources)
    results = evaluate_suite(
        engine, tokenizer, sets, max_new_tokens=cfg.rollout.max_new_tokens, seed=cfg.optim.seed,
        max_examples=cfg.data.max_eval_examples,
    )  # fmt: skip
    engine.close()
    return suite_report(suite, sets, results, cfg.model.name_or_path)


def load_run_suite(cfg, tokenizer) -> list[SuiteSet]:
    """Training (``log.eval_suite``): the suite's benchmarks, evaluated with the ``data.eval`` sets."""
    if not cfg.log.eval_suite:
        return []
    return load_suite(cfg, tokenizer, get_suite(cfg.log.eval_suite), cfg.log.eval_suite_data)


def suite_metrics(trainer) -> dict[str, float]:
    """A ``Trainer``'s evaluation on its ``log.eval_suite`` (none: ``{}``) as ``eval/<benchmark>/<metric>``."""
    if not trainer.eval_suite:
        return {}
    from grouptune.layout import seed_for

    cfg = trainer.cfg
    results = evaluate_suite(
        trainer.engine, trainer.tokenizer, trainer.eval_suite, max_new_tokens=cfg.rollout.max_new_tokens,
        seed=seed_for(cfg.optim.seed, -1, trainer.state["batch"]), max_examples=cfg.data.max_eval_examples,
        accelerator=trainer.acc,
    )  # fmt: skip
    return {f"eval/{name}/{key}": value for name, res in results.items() for key, value in res.items()}

"""``grouptune demo`` and ``grouptune compare``: the embedded testbed from the command line.

Both run the ordinary trainer on the shipped base model and arithmetic data; the suites
of ``compare`` are YAML files in ``grouptune/configs`` (``compare_*.yaml``), each a list
of runs that share data, seeds and budget and differ in a few settings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from grouptune.config import TrainConfig, load_config
from grouptune.testbed.paths import EVAL_SPLITS, base_model_path, data_path, reward_model_path
from grouptune.testbed.report import write_report

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TESTBED_RM = f"rm:{reward_model_path()}"


def testbed_config(overrides: dict | None = None) -> TrainConfig:
    """``configs/testbed.yaml`` with the shipped model and data filled in, then ``overrides``;
    ``rm:testbed`` among the reward functions names the shipped reward model."""
    base = {
        "model.name_or_path": str(base_model_path()),
        "data.train": str(data_path("train")),
        "data.eval": [str(data_path(s)) for s in EVAL_SPLITS],
    }
    merged = {**base, **(overrides or {})}
    for key in ("reward.functions", "reward.eval_functions"):
        if key in merged:
            merged[key] = [TESTBED_RM if f == "rm:testbed" else f for f in merged[key]]
    return load_config(CONFIGS / "testbed.yaml", merged)


def add_subcommands(sub, formatter) -> None:
    demo = sub.add_parser(
        "demo", formatter_class=formatter,
        help="Post-train the shipped tiny model with GFT and GIFT and print held-out accuracy before/after.",
    )  # fmt: skip
    demo.add_argument("--methods", default="gft,gift", help="Comma-separated methods (default: 'gft,gift').")
    demo.add_argument(
        "--batches", type=int, default=0, help="Rollout batches per method (default: 0 = the config's)."
    )
    demo.add_argument(
        "--output-dir", default="runs/demo", help="Where runs are written (default: 'runs/demo')."
    )
    demo.add_argument("--seed", type=int, default=0, help="Seed (default: 0).")
    demo.set_defaults(run=run_demo)

    cmp = sub.add_parser(
        "compare", formatter_class=formatter,
        help="Run several methods on identical data, seeds and budget; write a report directory.",
    )  # fmt: skip
    suites = sorted(p.stem.removeprefix("compare_") for p in CONFIGS.glob("compare_*.yaml"))
    cmp.add_argument(
        "--suite", required=True, help=f"One of: {', '.join(suites)}; or a path to a suite YAML."
    )
    cmp.add_argument("--seeds", default="", help="Comma-separated seeds (default: '' = the suite's).")
    cmp.add_argument("--output-dir", default="", help="Report directory (default: '' = reports/<suite>).")
    cmp.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="Dotted overrides applied to every run, e.g. optim.total_batches=4 (default: none).",
    )
    cmp.add_argument(
        "--sweep",
        nargs="*",
        default=[],
        metavar="KEY=V1,V2",
        help="Train each method at every value and keep its best on a validation split carved from the "
        "training data, e.g. optim.lr=3e-5,1e-4,3e-4 (default: none = the suite's sweep, if any).",
    )
    cmp.add_argument(
        "--reuse",
        action="store_true",
        help="Keep each run of an earlier compare into the same --output-dir whose resolved settings are "
        "identical, that ran to the end and whose final model verifies, instead of training it again: an "
        "interrupted suite continues. Runs are matched by settings, not by grouptune's version (default: off).",
    )
    cmp.set_defaults(run=run_compare)


# ----------------------------------------------------------------------------- demo


def run_demo(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    overrides = {"optim.total_batches": args.batches} if args.batches else {}
    demo(methods, Path(args.output_dir), args.seed, overrides)
    return 0


def demo(methods: list[str], out: Path, seed: int = 0, overrides: dict | None = None) -> dict:
    """Evaluate the shipped base model, post-train it with each method, print before -> after."""
    from transformers.utils import logging as hf_logging

    from grouptune.evaluation import evaluate_model
    from grouptune.metrics import format_table
    from grouptune.trainer import Trainer

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the tables
    common = {"optim.seed": seed, **(overrides or {})}
    t0 = time.perf_counter()
    before = evaluate_model(testbed_config(common))
    print("held-out accuracy of the shipped base model:\n" + format_table(before))
    rows = {}
    for method in methods:
        cfg = testbed_config({**common, "method.name": method, "log.output_dir": str(out / method),
                              "log.overwrite": True})  # a demo run again replaces its earlier runs
        print(f"\n{method}: settings in {out / method / 'config.yaml'}", flush=True)
        final = Trainer(cfg).train()
        rows[method] = {s: _split_result(final, s) for s in EVAL_SPLITS}
    print(f"\nheld-out accuracy before -> after post-training ({time.perf_counter() - t0:.0f} s in all):")
    print(_before_after_table(before, rows))
    return rows


def _split_result(metrics: dict, split: str) -> dict:
    prefix = f"eval/{split}/"
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}


def _before_after_table(before: dict, after: dict) -> str:
    keys = [k for k in before[EVAL_SPLITS[0]] if k != "n_problems"]
    head = "| method | " + " | ".join(f"{s} {k}" for s in EVAL_SPLITS for k in keys) + " |"
    lines = [head, "|" + "---|" * (1 + len(keys) * len(EVAL_SPLITS))]
    lines.append("| base | " + " | ".join(f"{before[s][k]:.3f}" for s in EVAL_SPLITS for k in keys) + " |")
    for method, res in after.items():
        cells = [f"{res[s].get(k, float('nan')):.3f}" for s in EVAL_SPLITS for k in keys]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- compare


def load_suite(name: str) -> dict:
    path = Path(name) if name.endswith(".yaml") else CONFIGS / f"compare_{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no comparison suite {name!r} (looked for {path})")
    return yaml.safe_load(path.read_text())


def run_compare(args: argparse.Namespace) -> int:
    from grouptune.config import parse_cli_value
    from grouptune.testbed.sweep import parse_sweep

    suite = load_suite(args.suite)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else suite["seeds"]
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = parse_cli_value(value)
    if args.sweep:
        suite = {**suite, "sweep": parse_sweep(args.sweep)}
    if args.reuse:
        suite = {**suite, "reuse": True}
    out = Path(args.output_dir or f"reports/{suite['name']}")
    results, sweeps = compare(suite, seeds, out, extra, with_sweeps=True)
    write_report(suite, results, out, sweeps)
    print((out / "report.md").read_text())
    return 0


def compare(suite: dict, seeds: list[int], out: Path, extra: dict, *, with_sweeps: bool = False):
    """Run every (run, seed) of a suite; return ``{label: {seed: {"final": ..., "curve": [...]}}}``
    (and with ``with_sweeps`` the sweeps: ``{label: {"chosen": settings, "trials": [...]}}``).

    A run is one training run, a list of ``stages`` (each starts from the previous stage's final
    model), or ``evaluate_only: true`` (the base model evaluated with the suite's settings: the
    papers' "Base" row). A suite or run with a ``sweep`` is tuned on a validation split
    (``grouptune.testbed.sweep``).
    """
    from grouptune.testbed import sweep as sw
    from grouptune.testbed.suite_check import check_suite

    check_suite(suite, seeds, lambda stage, values, seed: _checked(suite, {**stage, **values}, seed, extra, out))
    if any(run.get("sweep", suite.get("sweep")) for run in suite["runs"]):
        train = testbed_config({**suite.get("common", {}), **extra}).data.train
        held = sw.split_validation(train, suite.get("validation", sw.DEFAULT_VALIDATION), out / "data")
        evals = [str(data_path(s)) for s in EVAL_SPLITS] + [held["validation_file"]]
        extra = {"data.train": held["data.train"], "data.eval": evals, **extra}
    results, sweeps = {}, {}
    for run in suite["runs"]:
        label, settings = run["label"], sw.grid(run.get("sweep", suite.get("sweep", {})))
        if run.get("evaluate_only") or len(settings) == 1:
            chosen, done = (settings[0] if not run.get("evaluate_only") else {}), {}
        else:
            trials = _sweep_trials(suite, run, seeds[: suite.get("sweep_seeds", 1)], extra, out, settings)
            chosen = sw.choose(trials)
            sweeps[label] = {"chosen": chosen, "select": suite.get("select", sw.DEFAULT_SELECT), "trials": trials}
            done = {t["seed"]: t["result"] for t in trials if t["values"] == chosen}
        results[label] = {seed: done.get(seed) or _run_seed(suite, {**run, **chosen}, seed, extra, _run_dir(out, label, chosen, seed))
                          for seed in seeds}  # fmt: skip
    return (results, sweeps) if with_sweeps else results


def _checked(suite: dict, stage: dict, seed: int, extra: dict, out: Path) -> TrainConfig:
    """One stage's settings resolved and checked as the trainer will (nothing loads)."""
    from grouptune.methods import resolve_method
    from grouptune.modeling import resolve_init_from
    from grouptune.preflight import check_run

    cfg = testbed_config({**_overrides(suite, stage, seed, extra), "log.output_dir": str(out / "runs")})
    cfg = resolve_init_from(resolve_method(cfg))
    check_run(cfg)
    return cfg


def _run_dir(out: Path, label: str, values: dict, seed: int) -> Path:
    from grouptune.testbed.sweep import slug

    base = out / "runs" / _slug(label)
    return (base / slug(values) if values else base) / f"seed{seed}"


def _sweep_trials(suite: dict, run: dict, seeds: list[int], extra: dict, out: Path, settings: list[dict]) -> list:
    from grouptune.testbed.sweep import DEFAULT_SELECT, score

    trials = []
    for values in settings:
        for seed in seeds:
            result = _run_seed(suite, {**run, **values}, seed, extra, _run_dir(out, run["label"], values, seed))
            value = score(result["final"], suite.get("select", DEFAULT_SELECT))
            trials.append({"values": values, "seed": seed, "score": value, "result": result})
    return trials


def _run_seed(suite: dict, run: dict, seed: int, extra: dict, run_dir: Path) -> dict:
    """One (run, seed): its stages trained one after the other, or the base model evaluated."""
    if run.get("evaluate_only"):
        return _evaluate_base(suite, run, seed, extra)
    model_path, final = None, {}
    for i, stage in enumerate(run.get("stages", [run])):
        name = f"{run['label']} seed {seed} stage {i}"
        final, reused = _train_stage(suite, stage, seed, extra, run_dir / f"stage{i}", model_path, name)
        suite = suite if reused else {**suite, "reuse": False}  # a stage after a retrained one starts anew
        model_path = str(run_dir / f"stage{i}" / "final")
    curve = [json.loads(line) for line in (Path(model_path).parent / "metrics.jsonl").read_text().splitlines()]
    return {"final": final, "curve": curve}


def _overrides(suite: dict, run: dict, seed: int, extra: dict) -> dict:
    return {**suite.get("common", {}), **_settings(run), **extra, "optim.seed": seed, "log.progress": False,
            "log.overwrite": True}  # a suite run again replaces its runs (their curves are read back)


def _train_stage(suite: dict, stage: dict, seed: int, extra: dict, stage_dir: Path, model_path, name: str):
    """Train one stage (or with ``--reuse`` keep an earlier identical one): its final metrics, and whether reused."""
    from grouptune.trainer import Trainer

    overrides = {**_overrides(suite, stage, seed, extra), "log.output_dir": str(stage_dir)}
    if model_path:
        overrides["model.name_or_path"] = model_path
    cfg = testbed_config(overrides)
    earlier = _finished(cfg, stage_dir) if suite.get("reuse") else None
    if earlier is not None:
        print(f"[compare] {name}: reused (the same settings, final model verified)", flush=True)
        return earlier, True
    t0 = time.perf_counter()
    final = Trainer(cfg).train()
    print(f"[compare] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return final, False


def _finished(cfg: TrainConfig, stage_dir: Path) -> dict | None:
    """``--reuse``: the final metrics of an earlier run in ``stage_dir`` with exactly these resolved
    settings (its ``config.yaml``), that ran to the end and whose final model verifies; else None."""
    from grouptune.config import config_to_yaml
    from grouptune.manifest import verify
    from grouptune.methods import resolve_method
    from grouptune.modeling import resolve_init_from

    written, log = stage_dir / "config.yaml", stage_dir / "metrics.jsonl"
    if not (written.is_file() and log.is_file() and (stage_dir / "final").is_dir()) or verify(stage_dir / "final"):
        return None
    if written.read_text() != config_to_yaml(resolve_init_from(resolve_method(cfg))):
        return None
    records = [json.loads(line) for line in log.read_text().splitlines()]
    if not records or records[-1]["batch"] != cfg.optim.total_batches:
        return None
    return {k: v for rec in records if rec["batch"] == cfg.optim.total_batches for k, v in rec.items()}


def _evaluate_base(suite: dict, run: dict, seed: int, extra: dict) -> dict:
    """The base model's held-out results, keyed as a training run's final metrics; no curve."""
    from grouptune.evaluation import evaluate_model

    results = evaluate_model(testbed_config(_overrides(suite, run, seed, extra)))
    return {"final": {f"eval/{split}/{k}": v for split, res in results.items() for k, v in res.items()}, "curve": []}


def _settings(stage: dict) -> dict:
    return {k: v for k, v in stage.items() if k not in ("label", "stages", "evaluate_only", "sweep")}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()

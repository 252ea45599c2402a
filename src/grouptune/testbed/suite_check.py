"""Checking a ``grouptune compare`` suite whole, before its first run trains.

A suite is dozens of runs; a typo in its last run's settings would otherwise stop it after an
hour. ``check_suite`` reads every key of the suite and of each run, then builds and checks the
settings of every run, stage and sweep value as the trainer will (``grouptune.preflight``), and
raises one ``ConfigError`` naming the suite, the run and the setting.
"""

from __future__ import annotations

from collections.abc import Callable

from grouptune.config import ConfigError

SUITE_KEYS = {
    "name": "the suite's name (the report's title and default directory)",
    "description": "what the suite measures (the report's first paragraph)",
    "seeds": "the seeds every run trains with",
    "common": "settings every run shares",
    "runs": "the rows: each a label and its settings, stages or evaluate_only",
    "sweep": "settings to tune per run on a validation split",
    "sweep_seeds": "how many of the seeds the sweep trains",
    "validation": "rows of the training file held out to choose the sweep's setting",
    "select": "the validation metric the sweep maximises",
    "reference": "the run every other is compared with seed by seed (paired differences)",
    "target_accuracy": "the held-out accuracy whose batches-to-reach the report gives",
    "overoptimization": "the proxy and gold metrics of the over-optimisation table",
    "reuse": "keep identical finished runs of an earlier compare (set by --reuse)",
}
RUN_KEYS = ("label", "evaluate_only", "stages", "sweep")


def check_suite(suite: dict, seeds: list[int], build: Callable[[dict, dict, int], object]) -> None:
    """Raise a ``ConfigError`` for the first problem of ``suite``. ``build(stage, values, seed)``
    resolves and checks the settings of one stage (a single-stage run is its own stage) at one
    sweep value, raising on a bad setting; it is called for every stage of every run at every
    value the sweep will train, with the first seed."""
    name = suite.get("name", "<unnamed>")
    try:
        labels = _check_keys(suite, seeds)
        for run in suite["runs"]:
            _check_run(suite, run, seeds, build)
    except ConfigError as e:
        raise ConfigError(f"compare suite {name!r}: {e}") from e
    reference = suite.get("reference")
    if reference is not None and reference not in labels:
        raise ConfigError(f"compare suite {name!r}: reference {reference!r} is not the label of a run "
                          f"(labels: {', '.join(map(repr, labels))})")  # fmt: skip


def _check_keys(suite: dict, seeds: list[int]) -> list[str]:
    unknown = [k for k in suite if k not in SUITE_KEYS]
    if unknown:
        known = "\n  ".join(f"{k}: {v}" for k, v in SUITE_KEYS.items())
        raise ConfigError(f"unknown key {unknown[0]!r}; a suite's keys are:\n  {known}")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    runs = suite.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise ConfigError("runs must be a non-empty list of mappings, each with a label")
    labels = [run.get("label") for run in runs]
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise ConfigError(f"runs[{i}] has no label")
        if labels.index(label) != i:
            raise ConfigError(f"two runs are labelled {label!r}: labels name the report's rows")
    return labels


def _check_run(suite: dict, run: dict, seeds: list[int], build) -> None:
    from grouptune.testbed.sweep import grid

    label = run["label"]
    for key in run:
        if key not in RUN_KEYS and "." not in key:
            raise ConfigError(f"run {label!r}: unknown key {key!r}; a run holds {', '.join(RUN_KEYS)} and "
                              "settings as section.key (e.g. method.name)")  # fmt: skip
    stages = run.get("stages", [run])
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise ConfigError(f"run {label!r}: stages must be a non-empty list of mappings of settings")
    values = [{}] if run.get("evaluate_only") else grid(run.get("sweep", suite.get("sweep", {})))
    if len(values) > 1 and "stages" in run:
        raise ConfigError(f"run {label!r} has stages; a sweep tunes single-stage runs only")
    for i, stage in enumerate(stages):
        where = f"run {label!r}" + (f", stage {i}" if "stages" in run else "")
        for value in values:
            try:
                build(stage, value, seeds[0])
            except (ConfigError, ValueError, TypeError) as e:
                raise ConfigError(f"{where}: {e}") from e

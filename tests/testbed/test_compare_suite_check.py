"""A compare suite is checked whole before its first run trains: unknown keys, labels, the
reference, and every run's, stage's and sweep value's settings, each error naming where it is."""

from __future__ import annotations

import pytest

from grouptune.config import ConfigError
from grouptune.testbed import commands

BASE = {"name": "t", "seeds": [0], "runs": [{"label": "A", "method.name": "sft"}]}


def _compare(suite: dict, out):
    return commands.compare(suite, suite["seeds"], out, {})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"runz": []}, "compare suite 't': unknown key 'runz'"),
        ({"seeds": []}, "seeds must be a non-empty list of integers"),
        ({"runs": [{"label": "A"}, {"label": "A"}]}, "two runs are labelled 'A'"),
        ({"runs": [{"method.name": "sft"}]}, "runs[0] has no label"),
        ({"runs": [{"label": "A"}, {"label": "B", "method.nmae": "gft"}]}, "run 'B': unknown setting 'method.nmae'"),
        ({"runs": [{"label": "A", "evaluate_onyl": True}]}, "run 'A': unknown key 'evaluate_onyl'"),
        ({"sweep": {"optim.lr": [1e-4, -1.0]}}, "run 'A': optim.lr = -1.0: must be > 0"),
        ({"reference": "Z"}, "reference 'Z' is not the label of a run"),
        ({"runs": [{"label": "P", "stages": [{"method.name": "sft"}, {"method.name": "grpoo"}]}]},
         "run 'P', stage 1: method.name: unknown method 'grpoo'"),
        ({"runs": [{"label": "P", "stages": [{}, {}]}], "sweep": {"optim.lr": [1e-4, 3e-4]}},
         "run 'P' has stages; a sweep tunes single-stage runs only"),
        ({"runs": [{"label": "A", "data.train": "/no/such/file.jsonl"}]}, "run 'A': data.train: file not found"),
    ],
)  # fmt: skip
def test_a_bad_suite_stops_before_any_run_with_the_place_named(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        _compare({**BASE, **change}, tmp_path / "out")
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing trained, no validation split written


def test_the_last_runs_typo_stops_the_suite_before_the_first_run_trains(tmp_path):
    suite = {**BASE, "runs": [{"label": f"R{i}", "method.name": "sft"} for i in range(5)]}
    suite["runs"][-1]["optim.lrr"] = 1e-4
    with pytest.raises(ConfigError, match="run 'R4': unknown setting 'optim.lrr'"):
        _compare(suite, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(p.stem.removeprefix("compare_") for p in commands.CONFIGS.glob("compare_*.yaml")))
def test_every_shipped_suite_passes_the_check(name, tmp_path):
    from grouptune.testbed.suite_check import check_suite
    from grouptune.testbed.sweep import grid

    suite = commands.load_suite(name)
    built = []

    def build(stage, values, seed):
        built.append((stage.get("method.name"), tuple(values.items())))
        return commands._checked(suite, {**stage, **values}, seed, {}, tmp_path)

    check_suite(suite, suite["seeds"], build)
    values = {run["label"]: 1 if run.get("evaluate_only") else len(grid(run.get("sweep", suite.get("sweep", {}))))
              for run in suite["runs"]}  # fmt: skip
    assert len(built) == sum(len(run.get("stages", [run])) * values[run["label"]] for run in suite["runs"])
    assert suite.get("reference") in [run["label"] for run in suite["runs"]]

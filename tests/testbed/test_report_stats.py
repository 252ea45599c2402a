"""The report helpers: mean ± std over seeds, paired differences against a reference run,
per-batch mean curves, figures saved to a file."""

import math

from grouptune.testbed.report import paired_table, write_report
from grouptune.testbed.stats import figure, mean_curve, mean_std, paired, pm


def test_mean_std_leaves_out_nan_and_a_single_seed_has_std_zero():
    m, sd = mean_std([0.5, float("nan"), 0.7])
    assert math.isclose(m, 0.6) and math.isclose(sd, math.sqrt(0.02))
    assert mean_std([0.25]) == (0.25, 0.0)
    m, sd = mean_std([float("nan")])
    assert m != m and sd != sd


def test_pm_formats_three_decimals_and_a_dash_without_values():
    assert pm([0.5, 0.7]) == "0.600 ± 0.141"
    assert pm([]) == "-"
    assert pm([float("nan")]) == "-"


def test_mean_curve_averages_each_batch_over_the_runs_that_logged_it():
    runs = [
        {"curve": [{"batch": 1, "k": 1.0}, {"batch": 2, "k": 3.0}, {"batch": 3, "other": 9.0}]},
        {"curve": [{"batch": 2, "k": 5.0}, {"batch": 1, "k": float("nan")}]},
    ]
    assert mean_curve(runs, "k") == ([1, 2], [1.0, 4.0])
    assert mean_curve(runs, "missing") == ([], [])


def test_figure_saves_the_grid_and_closes_it(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "f.png"
    with figure(path, 2, 3, (6, 4)) as (fig, axes):
        assert len(axes) == 6
        axes[0].plot([0, 1], [0, 1])
    assert path.read_bytes().startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)


def test_paired_differences_by_hand():
    # seeds 0..3; seed 4 only in a (left out); a NaN at seed 3 in b (left out)
    a = {0: 0.60, 1: 0.70, 2: 0.50, 3: 0.9, 4: 0.1}
    b = {0: 0.55, 1: 0.60, 2: 0.50, 3: float("nan")}
    m, se, above, below, n = paired(a, b)
    diffs = [0.05, 0.10, 0.0]  # mean 0.05, sample sd 0.05, se 0.05 / sqrt(3)
    assert n == 3 and above == 2 and below == 0
    assert math.isclose(m, sum(diffs) / 3) and math.isclose(se, 0.05 / math.sqrt(3))
    assert paired({0: 1.0}, {1: 1.0})[4] == 0


def test_paired_table_pairs_each_row_with_the_reference_seed_by_seed(tmp_path):
    def run(test, hard):
        return {"final": {"eval/test/greedy": test, "eval/test_hard/greedy": hard}, "curve": []}

    results = {
        "REF": {0: run(0.50, 0.10), 1: run(0.60, 0.10)},
        "X": {0: run(0.55, 0.10), 1: run(0.70, 0.05)},
    }
    table = paired_table(results, "REF")
    # X - REF on test: 0.05 and 0.10 -> mean 0.075, se = sd(0.05, 0.10) / sqrt(2) = 0.025
    # on test_hard: 0.0 and -0.05 -> mean -0.025, se 0.025; above 0, below 1
    assert "| X | +0.075 ± 0.025 | 2 / 0 of 2 | -0.025 ± 0.025 | 0 / 1 of 2 |" in table
    assert "| REF |" not in table
    write_report({"name": "t", "reference": "REF"}, results, tmp_path)
    assert "## Paired with REF" in (tmp_path / "report.md").read_text()
    write_report({"name": "t"}, results, tmp_path)
    assert "Paired with" not in (tmp_path / "report.md").read_text()

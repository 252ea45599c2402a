"""The report helpers: mean ± std over seeds, per-batch mean curves, figures saved to a file."""

import math

from grouptune.testbed.stats import figure, mean_curve, mean_std, pm


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

"""Numbers and figures of the ``grouptune compare`` reports: mean ± std over seeds, paired
differences, a run's series of one metric and per-batch mean curves, and the one way every
report figure is drawn and saved."""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Iterable, Iterator
from pathlib import Path


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard deviation over seeds; NaN values (a metric a run did not log) are left out."""
    vals = [v for v in values if v == v]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def pm(values: Iterable[float]) -> str:
    """``mean ± std`` to three decimals, ``-`` when there is no value."""
    m, sd = mean_std(values)
    return "-" if m != m else f"{m:.3f} ± {sd:.3f}"


def paired(a: dict, b: dict) -> tuple[float, float, int, int, int]:
    """``a`` against ``b`` seed by seed (both ``{seed: value}``): the mean of ``a - b`` over the
    seeds both have (NaN left out), its standard error, the seeds where ``a > b``, where ``a < b``,
    and the number of seeds.
    Pairing removes what a seed does to both (its data order, its samples), so a difference smaller
    than the spread over seeds can still be told from noise."""
    diffs = [a[s] - b[s] for s in a if s in b and a[s] == a[s] and b[s] == b[s]]
    m, sd = mean_std(diffs)
    se = sd / math.sqrt(len(diffs)) if diffs else float("nan")
    return m, se, sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), len(diffs)


def series(curve: list[dict], key: str) -> list[tuple[int, float]]:
    """``(batch, value)`` of every record of a run's curve (its ``metrics.jsonl``) that holds ``key``."""
    return [(rec["batch"], rec[key]) for rec in curve if key in rec]


def mean_curve(runs: Iterable[dict], key: str) -> tuple[list[int], list[float]]:
    """``(batches, means)``: the mean over ``runs`` of the ``key`` each logged at each rollout batch
    (NaN left out)."""
    by_batch: dict[int, list[float]] = {}
    for run in runs:
        for batch, value in series(run["curve"], key):
            if value == value:
                by_batch.setdefault(batch, []).append(value)
    xs = sorted(by_batch)
    return xs, [statistics.fmean(by_batch[x]) for x in xs]


@contextlib.contextmanager
def figure(path: Path, rows: int, cols: int, size: tuple[float, float]) -> Iterator:
    """Yields ``(fig, axes)``: a ``rows`` x ``cols`` grid of matplotlib axes as a flat list; the
    figure is saved to ``path`` on a normal exit and closed in any case."""
    import matplotlib

    matplotlib.use("Agg")  # no display: reports are files
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    try:
        yield fig, list(axes.flat)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)

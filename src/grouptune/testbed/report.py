"""The report of ``grouptune compare``: a Markdown table, learning-curve plots, raw JSON.

Every number in it comes from the runs' own ``metrics.jsonl``; accuracies are reported as
mean ± standard deviation over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

from grouptune.testbed.overoptimization import plot_proxy_gold, proxy_gold_table
from grouptune.testbed.paths import EVAL_SPLITS
from grouptune.testbed.stats import figure, mean_curve, mean_std, paired, pm, series
from grouptune.testbed.sweep import sweep_table

CURVES = [
    ("reward/mean", "training reward (rollouts; methods without: their data-set members)"),
    ("eval/test/greedy", "held-out accuracy (greedy)"),
    ("entropy", "entropy"),
    ("grad_norm", "grad norm (before clipping)"),
]


def _final_eval(final: dict, split: str, key: str) -> float:
    return final.get(f"eval/{split}/{key}", float("nan"))


def _eval_keys(results: dict) -> list[str]:
    """The held-out metrics the runs report, greedy first, then avg@k and pass@k by k."""
    some = next(iter(next(iter(results.values())).values()))["final"]
    keys = {k.removeprefix("eval/test/") for k in some if k.startswith("eval/test/") and not k.endswith("n_problems")}
    order = {"greedy": 0, "avg": 1, "pass": 2}
    return sorted(keys, key=lambda k: (order.get(k.split("@")[0], 3), int(k.split("@")[1]) if "@" in k else 0, k))


def _pass_ks(results: dict) -> list[int]:
    return [int(k.split("@")[1]) for k in _eval_keys(results) if k.startswith("pass@")]


def accuracy_table(results: dict) -> str:
    """Rows: methods; columns: greedy / avg@k / pass@k (the largest k) on each split (mean ± std)."""
    top = f"pass@{max(_pass_ks(results), default=0)}"
    keys = [k for k in _eval_keys(results) if not k.startswith("pass@") or k == top]
    head = "| method | " + " | ".join(f"{s} {k}" for s in EVAL_SPLITS for k in keys) + " |"
    lines = [head, "|" + "---|" * (1 + len(keys) * len(EVAL_SPLITS))]
    for label, seeds in results.items():
        cells = []
        for s in EVAL_SPLITS:
            for k in keys:
                m, sd = mean_std([_final_eval(r["final"], s, k) for r in seeds.values()])
                cells.append(f"{m:.3f} ± {sd:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pass_at_table(results: dict) -> str:
    """Rows: methods; columns: pass@k for every reported k on each split (mean ± std): the data of a
    pass@k-over-k plot (the GFT paper's Figure 4)."""
    keys = [f"pass@{k}" for k in _pass_ks(results)]
    head = "| method | " + " | ".join(f"{s} {k}" for s in EVAL_SPLITS for k in keys) + " |"
    lines = [head, "|" + "---|" * (1 + len(keys) * len(EVAL_SPLITS))]
    for label, seeds in results.items():
        cells = [pm([_final_eval(r["final"], s, k) for r in seeds.values()]) for s in EVAL_SPLITS for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(results: dict, reference: str) -> str:
    """Every run against ``reference`` seed by seed: greedy accuracy minus the reference's on each
    split (mean ± standard error of the per-seed differences) and the seeds where it is higher or lower."""
    head = "| method | " + " | ".join(f"{s} greedy − {reference} | seeds above / below" for s in EVAL_SPLITS) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(EVAL_SPLITS))]
    for label in (x for x in results if x != reference):
        cells = []
        for split in EVAL_SPLITS:
            greedy = [{s: _final_eval(r["final"], split, "greedy") for s, r in results[x].items()} for x in (label, reference)]
            m, se, above, below, n = paired(*greedy)
            cells += [f"{m:+.3f} ± {se:.3f}", f"{above} / {below} of {n}"] if n else ["-", "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_pass_at(results: dict, path: Path) -> None:
    ks = _pass_ks(results)
    with figure(path, 1, len(EVAL_SPLITS), (5.5 * len(EVAL_SPLITS), 3.8)) as (_, axes):
        for ax, split in zip(axes, EVAL_SPLITS):
            for label, seeds in results.items():
                means = [mean_std([_final_eval(r["final"], split, f"pass@{k}") for r in seeds.values()])[0] for k in ks]
                ax.plot(ks, means, marker="o", label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.set_title(f"{split}: pass@k")
            ax.set_xlabel("k")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)


def convergence_table(results: dict, target: float) -> str:
    """GIFT's claims: batches to reach a held-out accuracy, and train reward minus held-out accuracy."""
    lines = [
        f"| method | batches to greedy ≥ {target:.2f} (reached / seeds) | final train reward | "
        "final held-out avg@k | gap (train − held-out) |",
        "|---|---|---|---|---|",
    ]
    for label, seeds in results.items():
        reach, rewards, held, gaps = [], [], [], []
        for r in seeds.values():
            hit = next((b for b, acc in series(r["curve"], "eval/test/greedy") if acc >= target), None)
            if hit is not None:
                reach.append(hit)
            train = [v for _, v in series(r["curve"], "reward/mean")]
            avg_key = next((k for k in r["final"] if k.startswith("eval/test/avg@")), None)
            if train and avg_key:
                rewards.append(train[-1])
                held.append(r["final"][avg_key])
                gaps.append(train[-1] - r["final"][avg_key])
        m_reach = f"{mean_std(reach)[0]:.1f}" if reach else "not reached"
        lines.append(
            f"| {label} | {m_reach} ({len(reach)}/{len(seeds)}) | {pm(rewards)} | {pm(held)} | {pm(gaps)} |"
        )
    return "\n".join(lines)


def plot_curves(results: dict, path: Path) -> None:
    with figure(path, 2, 2, (11, 7)) as (fig, axes):
        for ax, (key, title) in zip(axes, CURVES):
            for label, seeds in results.items():
                xs, ys = mean_curve(seeds.values(), key)
                if xs:
                    ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
            single = ax.lines and all(len(line.get_xdata()) == 1 for line in ax.lines)
            ax.set_title(f"{title}, after the last batch only" if single else title)
            if key == "grad_norm" and any(v > 0 for line in ax.lines for v in line.get_ydata()):
                ax.set_yscale("log")  # GIFT's degenerate first steps reach ~1/eps before clipping
            ax.set_xlabel("rollout batch")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle("mean over seeds")


def write_report(suite: dict, results: dict, out: Path, sweeps: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"runs": {str(k): v for k, v in results.items()}, "sweeps": sweeps or {}}, indent=1, default=str)
    )
    plot_curves(results, out / "curves.png")
    seeds = sorted({s for r in results.values() for s in r})
    parts = [
        f"# {suite['name']}\n",
        suite.get("description", "").strip() + "\n",
        f"Seeds: {', '.join(map(str, seeds))}. Held-out accuracy after training, mean ± std over seeds.\n",
        accuracy_table(results) + "\n",
    ]
    if sweeps:
        select = next(iter(sweeps.values()))["select"]
        parts += ["## Sweep (validation split)\n", sweep_table(sweeps, select) + "\n"]
    if suite.get("reference") in results:
        parts += [f"## Paired with {suite['reference']}\n",
                  "Each seed's greedy accuracy minus the reference's at the same seed (same data order and "
                  "evaluation samples), mean ± standard error over the seeds.\n",
                  paired_table(results, suite["reference"]) + "\n"]  # fmt: skip
    if "overoptimization" in suite:
        keys = suite["overoptimization"]
        plot_proxy_gold(results, keys["proxy"], keys["gold"], out / "proxy_gold.png")
        parts += ["## Proxy and gold\n", proxy_gold_table(results, keys["proxy"], keys["gold"]) + "\n",
                  "![proxy and gold per rollout batch](proxy_gold.png)\n"]  # fmt: skip
    if "target_accuracy" in suite:
        parts += [
            "## Convergence and over-fitting\n",
            convergence_table(results, suite["target_accuracy"]) + "\n",
        ]
    if len(_pass_ks(results)) > 1:
        plot_pass_at(results, out / "pass_at_k.png")
        parts += ["## pass@k\n", pass_at_table(results) + "\n", "![pass@k over k](pass_at_k.png)\n"]
    parts.append("![learning curves](curves.png)\n")
    (out / "report.md").write_text("\n".join(parts))

"""Reward over-optimisation in a ``grouptune compare`` report: the proxy reward against the gold one.

A policy trained on a learned reward model (the proxy) can raise the proxy's score while the true
quality (the gold: the verifier's accuracy, which the training reward never sees) falls. A suite
with ``overoptimization: {proxy: test/score/rm, gold: test/greedy}`` evaluates both on held-out
prompts every rollout batch; the report tabulates, per method, the final proxy and gold, the peak
gold and the batch where it peaked, and the drop from that peak to the end (mean ± std over seeds),
and plots both curves.
"""

from __future__ import annotations

from pathlib import Path

from grouptune.testbed.stats import figure, mean_curve, pm, series


def seed_summary(result: dict, proxy: str, gold: str) -> dict:
    """One seed's final proxy and gold, the peak gold, the batch of the peak and the drop from it.
    A run without a curve (the base model) has only its final values: its peak is its final."""
    golds = series(result["curve"], f"eval/{gold}") or [(0, result["final"][f"eval/{gold}"])]
    peak_batch, peak = max(golds, key=lambda bv: bv[1])  # the first batch reaching the peak
    final_gold = result["final"][f"eval/{gold}"]
    return {"proxy": result["final"].get(f"eval/{proxy}", float("nan")), "gold": final_gold,
            "peak": peak, "peak_batch": peak_batch, "drop": peak - final_gold}  # fmt: skip


def proxy_gold_table(results: dict, proxy: str, gold: str) -> str:
    head = f"| method | final proxy ({proxy}) | final gold ({gold}) | peak gold | batch of peak gold | drop from peak |"
    lines = [head, "|---|---|---|---|---|---|"]
    for label, seeds in results.items():
        rows = [seed_summary(r, proxy, gold) for r in seeds.values()]
        cells = [pm([r[k] for r in rows]) for k in ("proxy", "gold", "peak")]
        batches = ", ".join(str(r["peak_batch"]) for r in rows)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {batches} | {pm([r['drop'] for r in rows])} |")
    return "\n".join(lines)


def plot_proxy_gold(results: dict, proxy: str, gold: str, path: Path) -> None:
    with figure(path, 1, 2, (11, 3.8)) as (_, axes):
        for ax, key, title in ((axes[0], proxy, f"proxy: {proxy}"), (axes[1], gold, f"gold: {gold}")):
            for label, seeds in results.items():
                xs, ys = mean_curve(seeds.values(), f"eval/{key}")
                if xs:
                    ax.plot(xs, ys, label=label)
            ax.set_title(f"{title} (held-out, mean over seeds)")
            ax.set_xlabel("rollout batch")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)

"""Peak memory and time of per-token log-probs from big logits: grouptune vs naive vs TRL.

    python benchmarks/bench_logprobs.py                       # 8 x 1024 tokens, vocab 151,936
    python benchmarks/bench_logprobs.py --batch 1 --repeats 1  # quick look

Every (dtype, mode, variant) runs in a fresh subprocess so the peak is its own: the child fills
the logits in place (no temporary copy), reads ``ru_maxrss``, runs the variant ``--repeats``
times and reports the growth of ``ru_maxrss`` (the extra peak memory on top of the logits) and
the median wall time. ``forward`` runs under ``torch.no_grad()`` (old / reference log-probs);
``forward+backward`` backpropagates ``sum(logp)`` into the logits, so the gradient of the
logits (one more logits-sized tensor, the same for every variant) is included.

Variants (``+entropy`` also computes the per-token entropy, as a training forward does):
    grouptune       grouptune.logprobs.selective_log_softmax (float32 per chunk)
    naive           torch.log_softmax(logits.float(), -1).gather(...)       (float32 copy)
    naive_native    torch.log_softmax(logits, -1).gather(...).float()       (bf16 only)
    trl             trl.trainer.utils.selective_log_softmax (+ entropy_from_logits)

A run whose estimated peak does not fit in the available memory (minus a safety margin, the
machine is shared) is skipped and reported as such. Results go to
``benchmarks/results/logprobs.json`` and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DTYPES = {"bf16": 2, "fp32": 4}  # bytes per element
VARIANTS = ["grouptune", "grouptune+entropy", "naive", "naive_native", "trl", "trl+entropy"]
MODES = ["forward", "forward+backward"]
# Extra peak in logits-sized tensors (float32 ones, input-dtype ones), from small runs of this
# script; used only to skip a run that would not fit in memory. grouptune: (0, 1) + chunks.
ESTIMATE = {
    ("naive", "forward"): (2, 0),
    ("naive", "forward+backward"): (3, 0),
    ("naive_native", "forward"): (0, 1),
    ("naive_native", "forward+backward"): (0, 4),
    ("trl", "forward"): (0, 1),
    ("trl", "forward+backward"): (0, 4),
    ("trl+entropy", "forward"): (0, 1.5),
    ("trl+entropy", "forward+backward"): (0, 5),
}
MARGIN_GB = 3.0


# ----------------------------------------------------------------------------- child process


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _variant(name: str):
    import torch

    if name.startswith("grouptune"):
        from grouptune.logprobs import logprobs_and_entropy

        with_entropy = name.endswith("+entropy")
        return lambda x, i: logprobs_and_entropy(x, i, with_entropy=with_entropy)
    if name == "naive":
        return lambda x, i: (torch.log_softmax(x.float(), -1).gather(-1, i[..., None]).squeeze(-1), None)
    if name == "naive_native":
        return lambda x, i: (torch.log_softmax(x, -1).gather(-1, i[..., None]).squeeze(-1).float(), None)
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    if name == "trl":
        return lambda x, i: (selective_log_softmax(x, i).float(), None)
    return lambda x, i: (selective_log_softmax(x, i).float(), entropy_from_logits(x).float())


def run_child(variant: str, dtype: str, mode: str, batch: int, seq: int, vocab: int, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    fn = _variant(variant)
    logits = torch.empty(batch, seq, vocab, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)
    for b in range(batch):  # filled in place, a slice at a time: no logits-sized temporary
        for t in range(0, seq, 64):
            logits[b, t : t + 64].normal_(0.0, 2.0)
    index = torch.randint(0, vocab, (batch, seq))
    weights = torch.randn(batch, seq)
    base = _max_rss_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if mode == "forward":
            with torch.no_grad():
                out = fn(logits, index)
        else:
            logits.requires_grad_(True)
            out = fn(logits, index)
            objective = (weights * out[0]).sum() + (out[1].sum() if out[1] is not None else 0.0)
            objective.backward()
            logits.grad = None
        times.append(time.perf_counter() - start)
        del out
    return {
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_extra_gb": (_max_rss_bytes() - base) / 1e9,
    }


# ----------------------------------------------------------------------------- parent process


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("inf")


def _plan(dtypes: list[str], variants: list[str]) -> list[tuple[str, str, str]]:
    runs = []
    for dtype in dtypes:
        for mode in MODES:
            for variant in variants:
                if variant == "naive_native" and dtype == "fp32":
                    continue  # the same as naive
                runs.append((dtype, mode, variant))
    return runs


def _table(results: list[dict]) -> str:
    lines = [
        "| dtype | mode | variant | time (s) | peak extra (GB) | time vs naive | memory vs naive | time vs TRL | memory vs TRL |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    index = {(r["dtype"], r["mode"], r["variant"]): r for r in results}

    def ratio(r, other, key):
        if other is None or "skipped" in other or "skipped" in r or other[key] <= 0:
            return "-"
        return f"{r[key] / other[key]:.2f}"

    for r in results:
        naive = index.get((r["dtype"], r["mode"], "naive"))
        trl = index.get(
            (r["dtype"], r["mode"], "trl+entropy" if r["variant"].endswith("+entropy") else "trl")
        )
        if "skipped" in r:
            lines.append(
                f"| {r['dtype']} | {r['mode']} | {r['variant']} | skipped: {r['skipped']} | | | | | |"
            )
            continue
        lines.append(
            f"| {r['dtype']} | {r['mode']} | {r['variant']} | {r['time_s']:.2f} | {r['peak_extra_gb']:.2f} "
            f"| {ratio(r, naive, 'time_s')} | {ratio(r, naive, 'peak_extra_gb')} "
            f"| {ratio(r, trl, 'time_s')} | {ratio(r, trl, 'peak_extra_gb')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "logprobs.json"))
    p.add_argument("--child", nargs=3, metavar=("VARIANT", "DTYPE", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(run_child(*a.child, a.batch, a.seq, a.vocab, a.repeats)))
        return

    results = []
    for dtype, mode, variant in _plan(a.dtypes.split(","), a.variants.split(",")):
        logits_gb = a.batch * a.seq * a.vocab * DTYPES[dtype] / 1e9
        n32, n_in = ESTIMATE.get((variant, mode), (0, 1 if mode == "forward+backward" else 0))
        need = logits_gb + n32 * logits_gb * 4 / DTYPES[dtype] + n_in * logits_gb + MARGIN_GB
        row = {"dtype": dtype, "mode": mode, "variant": variant}
        if need > _available_gb():
            row["skipped"] = f"needs ~{need:.0f} GB with margin, {_available_gb():.0f} GB available"
        else:
            cmd = [sys.executable, __file__, "--child", variant, dtype, mode, "--batch", str(a.batch)]
            cmd += ["--seq", str(a.seq), "--vocab", str(a.vocab), "--repeats", str(a.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                row["skipped"] = f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
            else:
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(row), file=sys.stderr, flush=True)
        results.append(row)

    setup = {"batch": a.batch, "seq": a.seq, "vocab": a.vocab, "repeats": a.repeats}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
    print(f"logits {a.batch} x {a.seq} x {a.vocab}; median of {a.repeats}; peak extra = ru_maxrss growth\n")
    print(_table(results))


if __name__ == "__main__":
    main()

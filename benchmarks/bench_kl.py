"""Peak memory and time of ASFT's full-vocabulary KL(pi_ref || pi) per position: grouptune vs naive.

    python benchmarks/bench_kl.py                                # 8 x 1024 tokens, vocab 151,936
    python benchmarks/bench_kl.py --batch 2 --out benchmarks/results/kl_batch2.json

Every (mode, variant) runs in a fresh subprocess so the peak is its own: the child fills the
policy's and the reference's logits (bf16 by default, the dtype a bf16 model's forward returns)
in place, reads ``ru_maxrss``, runs the variant ``--repeats`` times and reports the growth of
``ru_maxrss`` (the extra peak memory on top of the two logits tensors) and the median wall
time. ``forward`` runs under ``torch.no_grad()``; ``forward+backward`` backpropagates
``sum(w * kl)`` into the policy's logits, so the gradient of the logits (one more logits-sized
tensor, the same for every variant) is included.

Variants:
    grouptune       grouptune.losses.vocab_kl (float32 per chunk, custom backward)
    naive           F.kl_div(F.log_softmax(x.float()), F.softmax(r.float())).sum(-1)   (float32 copies)
    naive_native    the same without .float(): what ASFT's train_v2.py runs on bf16 logits

A run whose estimated peak does not fit in the available memory (minus a margin, the machine is
shared) is skipped and reported as such. Results go to ``benchmarks/results/kl.json`` and a
Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DTYPES = {"bf16": 2, "fp32": 4}  # bytes per element
MARGIN_GB = 3.0  # memory left free (the machine is shared), as bench_logprobs.py
VARIANTS = ["grouptune", "naive", "naive_native"]
MODES = ["forward", "forward+backward"]
# Extra peak in logits-sized tensors (float32 ones, input-dtype ones), from small runs of this
# script; used only to skip a run that would not fit. grouptune: (0, 1) + chunks.
ESTIMATE = {
    ("naive", "forward"): (4, 0),
    ("naive", "forward+backward"): (5, 1),
    ("naive_native", "forward"): (0, 4),
    ("naive_native", "forward+backward"): (0, 6),
}


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("inf")


def _variant(name: str):
    import torch.nn.functional as F

    if name == "grouptune":
        from grouptune.losses import vocab_kl

        return vocab_kl
    if name == "naive":
        return lambda x, r: F.kl_div(F.log_softmax(x.float(), -1), F.softmax(r.float(), -1), reduction="none").sum(-1)
    return lambda x, r: F.kl_div(F.log_softmax(x, -1), F.softmax(r, -1), reduction="none").sum(-1).float()


def run_child(variant: str, dtype: str, mode: str, batch: int, seq: int, vocab: int, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    fn = _variant(variant)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    logits, ref = torch.empty(batch, seq, vocab, dtype=dt), torch.empty(batch, seq, vocab, dtype=dt)
    for b in range(batch):  # filled in place, a slice at a time: no logits-sized temporary
        for t in range(0, seq, 64):
            logits[b, t : t + 64].normal_(0.0, 2.0)
            ref[b, t : t + 64].copy_(logits[b, t : t + 64]).add_(torch.randn(min(64, seq - t), vocab).to(dt))
    weights = torch.randn(batch, seq)
    base = _max_rss_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if mode == "forward":
            with torch.no_grad():
                out = fn(logits, ref)
        else:
            logits.requires_grad_(True)
            out = fn(logits, ref)
            (weights * out).sum().backward()
            logits.grad = None
        times.append(time.perf_counter() - start)
        del out
    return {"time_s": statistics.median(times), "times_s": times, "peak_extra_gb": (_max_rss_bytes() - base) / 1e9}


def _table(results: list[dict]) -> str:
    lines = [
        "| dtype | mode | variant | time (s) | peak extra (GB) | time vs naive | memory vs naive |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    index = {(r["dtype"], r["mode"], r["variant"]): r for r in results}
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['dtype']} | {r['mode']} | {r['variant']} | skipped: {r['skipped']} | | | |")
            continue
        naive = index.get((r["dtype"], r["mode"], "naive"))
        ok = naive is not None and "skipped" not in naive and naive["peak_extra_gb"] > 0
        t = f"{r['time_s'] / naive['time_s']:.2f}" if ok else "-"
        m = f"{r['peak_extra_gb'] / naive['peak_extra_gb']:.3f}" if ok else "-"
        lines.append(
            f"| {r['dtype']} | {r['mode']} | {r['variant']} | {r['time_s']:.2f} | {r['peak_extra_gb']:.2f} | {t} | {m} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", default="bf16")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "kl.json"))
    p.add_argument("--child", nargs=3, metavar=("VARIANT", "DTYPE", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(run_child(*a.child, a.batch, a.seq, a.vocab, a.repeats)))
        return

    results = []
    for dtype in a.dtypes.split(","):
        for mode in MODES:
            for variant in a.variants.split(","):
                results.append(_run(a, dtype, mode, variant))
    setup = {"batch": a.batch, "seq": a.seq, "vocab": a.vocab, "repeats": a.repeats,
             "load_average_at_end": os.getloadavg()}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
    print(f"policy and reference logits {a.batch} x {a.seq} x {a.vocab}; median of {a.repeats}; "
          f"peak extra = ru_maxrss growth above both logits\n")  # fmt: skip
    print(_table(results))


def _run(a, dtype: str, mode: str, variant: str) -> dict:
    logits_gb = a.batch * a.seq * a.vocab * DTYPES[dtype] / 1e9
    n32, n_in = ESTIMATE.get((variant, mode), (0, 1 if mode == "forward+backward" else 0))
    need = 2 * logits_gb + n32 * logits_gb * 4 / DTYPES[dtype] + n_in * logits_gb + MARGIN_GB
    row = {"dtype": dtype, "mode": mode, "variant": variant, "load_average_before": os.getloadavg()[0]}
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
    return row


if __name__ == "__main__":
    main()

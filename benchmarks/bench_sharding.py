"""Memory per process under DDP, FSDP2, ZeRO-2 and ZeRO-3: 2 CPU processes, one GRPO rollout batch
with a KL to a frozen reference model (policy, gradients, AdamW state and reference all resident).

    python benchmarks/bench_sharding.py                  # Qwen2-style 12 x 1024 model (~135M parameters)
    python benchmarks/bench_sharding.py --layers 4       # quick look

The model is a randomly initialised Qwen2 architecture (``bench_memory.build_model``) saved to a
temporary directory. Each engine runs in fresh processes: DDP under ``torchrun``, the others under
``accelerate launch --config_file <the shipped config> --mixed_precision no``. On this CPU machine
accelerate enables FSDP and DeepSpeed only when told it is on an accelerator host: the child does
what ``tests/test_distributed.py`` does (one line of accelerate state), and devices and backend stay
CPU and gloo. Each process reports its resident memory (``VmRSS``, after ``malloc_trim`` returns
freed memory to the system) after building the trainer and after one rollout batch (generation,
reference log-probs, one optimizer step), and its peak (``VmHWM``, which includes loading the
full model before it is sharded). The table shows the
larger of the two processes. Results go to ``benchmarks/results/sharding.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_memory import build_data, build_model  # noqa: E402

ENGINES = ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]

CHILD = """
import ctypes, json, os, sys
if sys.argv[1] != "ddp":
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType
    PartialState(cpu=True).distributed_type = DistributedType.MULTI_GPU
from grouptune.config import load_config
from grouptune.trainer import Trainer

def status(key):
    if key == "VmRSS":  # what is live, not what glibc keeps of freed memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    line = next(x for x in open("/proc/self/status") if x.startswith(key + ":"))
    return int(line.split()[1]) * 1024 / 1e9  # kB -> GB

trainer = Trainer(load_config(overrides=json.loads(sys.argv[2])))
built = status("VmRSS")
metrics = trainer.train()
assert metrics["loss"] == metrics["loss"], "non-finite loss"
rank = trainer.acc.process_index
out = {"rank": rank, "after_setup_gb": built, "after_batch_gb": status("VmRSS"), "peak_gb": status("VmHWM"),
       "distributed_type": str(trainer.acc.distributed_type)}
open(os.path.join(sys.argv[3], f"rank{rank}.json"), "w").write(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_engine(engine: str, overrides: dict, tmp: Path) -> dict:
    out = tmp / engine
    out.mkdir()
    script = tmp / "child.py"
    script.write_text(CHILD)
    args = [str(script), engine, json.dumps({**overrides, "log.output_dir": str(out / "run")}), str(out)]
    if engine == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    else:
        config = Path(__file__).parents[1] / "src" / "grouptune" / "configs" / "accelerate" / f"{engine}.yaml"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes",
               "2", "--mixed_precision", "no", "--main_process_port", str(_free_port()), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    keys = ("after_setup_gb", "after_batch_gb", "peak_gb")
    return {"engine": engine, **{k: max(r[k] for r in ranks) for k in keys}, "per_rank": ranks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--kl-beta", type=float, default=0.04, help="0: no reference model")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sharding.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_params = build_model(tmp / "model", a.hidden, a.layers)
        build_data(tmp / "data.jsonl", batch=4, length=32)
        overrides = {
            "model.name_or_path": str(tmp / "model"), "data.train": str(tmp / "data.jsonl"),
            "reward.functions": ["exact_match"], "method.name": "grpo", "method.kl_beta": a.kl_beta,
            "rollout.prompts_per_batch": 4, "rollout.group_size": 2, "rollout.max_new_tokens": 16,
            "optim.steps_per_rollout": 1, "optim.total_batches": 1, "optim.lr": 1e-5,
            "checkpoint.save_final": False, "log.progress": False,
        }  # fmt: skip
        results = []
        for engine in a.engines.split(","):
            results.append(run_engine(engine, overrides, tmp))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "per_rank"}), file=sys.stderr, flush=True)
    setup = {"model": f"Qwen2, hidden {a.hidden}, {a.layers} layers, random init", "params": n_params,
             "fp32_copy_gb": n_params * 4 / 1e9, "method": f"grpo with kl_beta {a.kl_beta} ({'frozen reference' if a.kl_beta else 'no reference model'}), float32, AdamW",
             "processes": 2}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
    ddp = next((r for r in results if r["engine"] == "ddp"), None)
    lines = ["| engine | resident after setup (GB) | resident after a rollout batch (GB) | vs DDP | peak (GB) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        ratio = f"{r['after_batch_gb'] / ddp['after_batch_gb']:.2f}" if ddp else "-"
        lines.append(f"| {r['engine']} | {r['after_setup_gb']:.2f} | {r['after_batch_gb']:.2f} | {ratio} | {r['peak_gb']:.2f} |")
    header = (f"Memory per process (the larger of 2 CPU processes): {setup['model']} ({n_params:,} parameters, "
              f"{setup['fp32_copy_gb']:.2f} GB per float32 copy), {setup['method']}, one rollout batch.")  # fmt: skip
    table = "\n".join(lines)
    Path(a.out).with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(f"{header}\n\n{table}")


if __name__ == "__main__":
    main()

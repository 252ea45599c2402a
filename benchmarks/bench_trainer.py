"""Training-step time, peak memory and rollout throughput: grouptune's loop against TRL's GRPOTrainer.

    nice -n -5 python benchmarks/bench_trainer.py                    # everything (~15 min on 2 cores)
    python benchmarks/bench_trainer.py --suites rollout --repeats 1  # quick look at one suite

What runs, on identical work (one local random-init model, tokenizer, prompts and reward):
    step     wall time of one rollout batch (generation + reward + ``--steps`` optimizer steps) of
             grouptune GRPO and GIFT and of TRL's GRPOTrainer (the nearest equivalent of GIFT),
             after one warm-up batch; split into generation (``model.generate`` and what wraps
             it) and the rest (log-probs, losses, backward, optimizer, metrics).
    memory   peak resident memory (``ru_maxrss``) of a process that runs one rollout batch,
             and its growth over the resident memory just before the batch starts.
    rollout  tokens per second of grouptune's rollout path (``Trainer._rollouts``) against a bare
             ``model.generate`` call with the same settings (the transformers backend's ceiling).

Identical work means: the same model and tokenizer (float32 on both sides, TRL's default bf16
switched off), ``--prompts`` prompts of equal length per rollout batch, ``--group-size``
completions each, exactly ``--max-new-tokens`` tokens per completion (EOS is held back by
``min_new_tokens`` on every side, so no completion ends early), the same reward function,
``--steps`` optimizer steps per rollout batch (TRL: ``steps_per_generation``), no reference
model (KL coefficient 0), no evaluation, no checkpoints, one log line per rollout batch.

Every case runs in a fresh subprocess, and the repetitions are interleaved (grouptune, TRL,
grouptune, ...) so that load from other processes falls on all cases alike; the load average
is recorded with each case. A case reports the median over its measured rollout batches, and
the table shows the median over ``--repeats`` processes. Results go to
``benchmarks/results/trainer.json`` and ``benchmarks/results/trainer.md``.

The model is a Qwen2-architecture network, randomly initialised from a seed: vocabulary 32,000
(Llama 2's and Mistral's; ``--vocab 151936`` for Qwen2.5's, about 5x slower on CPU), hidden size
128, 2 layers, 4.5M parameters of which 4.1M are the tied embedding. The tokenizer is a
byte-level BPE over the same ids (256 bytes, then the lower-case words of up to 4 letters, then
EOS and padding), so every sampled id decodes to text; the reward is the fraction of vowels.
Each process uses one torch thread (``--threads``): on a shared machine, two threads that wait
for each other at every operation suffer more from other processes than one does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SPECIAL = ["<|endoftext|>", "<pad>"]  # EOS, padding


# ----------------------------------------------------------------------------- assets


def vowel_reward(prompts, completions, **columns):
    """Fraction of vowels in each completion (a cheap reward with spread within groups)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(ch in "aeiou" for ch in t) / max(len(t), 1) for t in texts]


def byte_level_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer of ``vocab_size`` ids, as Qwen's: the 256 byte symbols, then the
    words " a" ... " z", " aa" ... " zz", " aaa" ..., each one merge of its prefix and a letter, and
    two special tokens (EOS, padding) at the end. Every id decodes to text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges, frontier = [], ["\u0120"]  # the byte-level symbol of a space
    while len(vocab) < vocab_size - len(SPECIAL):
        frontier = [p + c for p in frontier for c in string.ascii_lowercase]
        for word in frontier[: vocab_size - len(SPECIAL) - len(vocab)]:
            vocab[word] = len(vocab)
            merges.append((word[:-1], word[-1]))
    vocab.update({t: len(vocab) + i for i, t in enumerate(SPECIAL)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=SPECIAL[0], pad_token=SPECIAL[1])


def build_assets(root: Path, a: argparse.Namespace) -> dict:
    """Save the model, the tokenizer and the prompts under ``root``; return their paths."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = byte_level_tokenizer(a.vocab)
    tok.save_pretrained(root / "model")
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=3 * a.hidden, num_hidden_layers=a.layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2ForCausalLM(cfg)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = tok.eos_token_id, tok.pad_token_id
    gen.min_new_tokens = a.max_new_tokens  # every completion has exactly max_new_tokens tokens
    model.save_pretrained(root / "model", safe_serialization=True)

    # Prompts of whole-word tokens of the longest length n: the first word has no leading space
    # (n byte tokens), so prompt_tokens - n + 1 words make prompt_tokens tokens.
    spaced = [t for t in tok.get_vocab() if t[0] == "\u0120" and len(t) > 1]
    n = max(map(len, spaced)) - 1
    words = sorted(t[1:] for t in spaced if len(t) == n + 1)
    rng = random.Random(0)
    rows = [{"prompt": " ".join(rng.choices(words, k=a.prompt_tokens - n + 1)), "answer": "0"}
            for _ in range(a.prompts * (a.batches + 1))]  # fmt: skip
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = AutoTokenizer.from_pretrained(root / "model")  # as the trainers will load it
    lengths = {len(loaded(r["prompt"]).input_ids) for r in rows}
    return {"model": str(root / "model"), "train": str(root / "train.jsonl"),
            "params": sum(p.numel() for p in model.parameters()), "prompt_lengths": sorted(lengths)}  # fmt: skip


# ----------------------------------------------------------------------------- child processes


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _wrap(cls, name: str, record: list, count=None):
    """Time every call of ``cls.name`` into ``record`` as ``(seconds, count(result))``."""
    original = getattr(cls, name)

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = original(self, *args, **kwargs)
        record.append((time.perf_counter() - t0, count(out) if count else 0))
        return out

    setattr(cls, name, timed)


def _grouptune_trainer(a, assets, method: str, batches: int, out: str):
    from grouptune.config import load_config
    from grouptune.trainer import Trainer

    cfg = load_config(overrides={
        "model.name_or_path": assets["model"], "data.train": assets["train"],
        "reward.functions": [f"{HERE}:vowel_reward"],
        "rollout.prompts_per_batch": a.prompts, "rollout.group_size": a.group_size,
        "rollout.max_new_tokens": a.max_new_tokens, "method.name": method,
        "optim.lr": 1e-6, "optim.weight_decay": 0.0, "optim.steps_per_rollout": a.steps,
        "optim.total_batches": batches, "optim.seed": 0, "log.output_dir": out, "log.progress": False,
        "log.samples_per_log": 0, "checkpoint.save_final": False,
    })  # fmt: skip
    return Trainer(cfg)


def _trl_trainer(a, assets, batches: int, out: str):
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    rows_per_step = a.prompts * a.group_size // a.steps
    args = GRPOConfig(
        output_dir=out, use_cpu=True, bf16=False, seed=0, learning_rate=1e-6, weight_decay=0.0,
        lr_scheduler_type="constant", max_grad_norm=1.0, per_device_train_batch_size=rows_per_step,
        gradient_accumulation_steps=1, steps_per_generation=a.steps, num_generations=a.group_size,
        max_completion_length=a.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
        loss_type="dapo", epsilon=0.2, max_steps=batches * a.steps, logging_steps=a.steps,
        save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        generation_kwargs={"min_new_tokens": a.max_new_tokens},
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(assets["model"])
    data = load_dataset("json", data_files=assets["train"], split="train")
    return GRPOTrainer(model=model, reward_funcs=[vowel_reward], args=args, train_dataset=data,
                       processing_class=tok)  # fmt: skip


def run_step_child(a, assets, case: str, batches: int) -> dict:
    """One training run of ``batches`` rollout batches; per-batch wall times and the generation part."""
    import torch

    torch.manual_seed(0)
    gen: list = []
    boundaries: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        if case.startswith("grouptune"):
            from grouptune.trainer import Trainer

            _wrap(Trainer, "_rollouts", gen, count=lambda r: sum(len(ids) for ids, _ in r))
            original_update = Trainer.update

            def update(self, batch):
                result = original_update(self, batch)
                boundaries.append(time.perf_counter())
                return result

            Trainer.update = update
            trainer = _grouptune_trainer(a, assets, case.split("-")[1], batches, out)
        else:
            from transformers import TrainerCallback
            from trl import GRPOTrainer

            _wrap(GRPOTrainer, "_generate_single_turn", gen, count=lambda r: sum(len(c) for c in r[0]))

            class Boundaries(TrainerCallback):
                def on_step_end(self, args, state, control, **kw):
                    if state.global_step % a.steps == 0:
                        boundaries.append(time.perf_counter())

            trainer = _trl_trainer(a, assets, batches, out)
            trainer.add_callback(Boundaries())
        rss_before = _rss_now()
        start = time.perf_counter()
        trainer.train()
    edges = [start] + boundaries
    cycles = [t1 - t0 for t0, t1 in zip(edges, edges[1:])]
    return {
        "batch_s": cycles, "generation_s": [t for t, _ in gen], "generated_tokens": [n for _, n in gen],
        "peak_rss_gb": _max_rss() / 1e9, "rss_before_gb": rss_before / 1e9,
    }


def run_rollout_child(a, assets, case: str) -> dict:
    """Tokens per second of the trainer's rollout path or of a bare ``generate`` on the same prompts."""
    import torch

    with tempfile.TemporaryDirectory() as out:
        trainer = _grouptune_trainer(a, assets, "grpo", 1, out)
        examples = trainer.next_examples(a.prompts)
        model = trainer.acc.unwrap_model(trainer.model)
        if case == "bare_generate":
            from grouptune.rollout import pad

            prompts = [ex.prompt_ids for ex in examples for _ in range(a.group_size)]
            ids, mask = pad(prompts, trainer.tokenizer.pad_token_id, left=True)
            model.eval()

            def run():
                with torch.no_grad():
                    out_ids = model.generate(
                        input_ids=ids, attention_mask=mask, max_new_tokens=a.max_new_tokens, do_sample=True,
                        temperature=1.0, top_p=1.0, top_k=0, pad_token_id=trainer.tokenizer.pad_token_id,
                        eos_token_id=trainer.eos_ids,
                    )  # fmt: skip
                return (out_ids.shape[1] - ids.shape[1]) * out_ids.shape[0]
        else:

            def run():
                return sum(len(c) for c in trainer._rollouts(examples, 0).token_ids)

        run()  # warm-up
        times, tokens = [], 0
        for _ in range(a.rollout_calls):
            t0 = time.perf_counter()
            tokens = run()
            times.append(time.perf_counter() - t0)
    return {"seconds": times, "tokens": tokens, "tokens_per_s": tokens / statistics.median(times)}


# ----------------------------------------------------------------------------- parent process


STEP_CASES = ["grouptune-grpo", "trl-grpo", "grouptune-gift"]
ROLLOUT_CASES = ["grouptune_rollout", "bare_generate"]


def _child(a, assets_dir: Path, suite: str, case: str) -> dict:
    cmd = [sys.executable, str(HERE), "--child", suite, case, "--assets", str(assets_dir)]
    for k in ("prompts", "group_size", "max_new_tokens", "steps", "batches", "rollout_calls", "threads"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    load0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"{suite} {case} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["loadavg_1m"] = [load0, os.getloadavg()[0]]
    return row


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarise(raw: dict, a) -> dict:
    """Medians per case (over repeats of per-process medians) and the ratios against the reference."""
    out: dict = {}
    for case, runs in raw.get("step", {}).items():
        # the first rollout batch is warm-up; the generation calls line up with the batches
        out[case] = {
            "batch_s": _median([_median(r["batch_s"][1:]) for r in runs]),
            "generation_s": _median([_median(r["generation_s"][1:]) for r in runs]),
            "tokens_per_batch": _median([_median(r["generated_tokens"]) for r in runs]),
        }
        out[case]["rest_s"] = out[case]["batch_s"] - out[case]["generation_s"]
    for case, runs in raw.get("memory", {}).items():
        out.setdefault(case, {}).update({
            "peak_rss_gb": _median([r["peak_rss_gb"] for r in runs]),
            "step_growth_gb": _median([r["peak_rss_gb"] - r["rss_before_gb"] for r in runs]),
        })  # fmt: skip
    for case, runs in raw.get("rollout", {}).items():
        out[case] = {"tokens_per_s": _median([r["tokens_per_s"] for r in runs]),
                     "tokens_per_call": runs[0]["tokens"]}  # fmt: skip
    return out


def _ratio(x, y) -> str:
    return f"{x / y:.2f}" if x == x and y == y and y > 0 else "-"


def markdown(summary: dict, meta: dict) -> str:
    s = summary
    lines = [
        "# grouptune vs TRL GRPOTrainer: step time, peak memory, rollout throughput",
        "",
        f"Setup: {meta['setup_text']}",
        f"Machine: {meta['machine']}; load average during the cases: {meta['load_text']}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| measurement | grouptune | reference | ratio | goal | met |",
        "|---|---:|---:|---:|---|---|",
    ]

    def row(name, ours, ref, ref_name, unit, goal, ok):
        r = _ratio(s.get(ours, {}).get(unit, float("nan")), s.get(ref, {}).get(unit, float("nan")))
        x, y = s.get(ours, {}).get(unit), s.get(ref, {}).get(unit)
        if x is None or y is None:
            return
        met = "-" if goal == "-" else "yes" if ok(float(r)) else "**no**"
        lines.append(f"| {name} | {x:.3g} | {y:.3g} ({ref_name}) | {r} | {goal} | {met} |")

    row("GRPO rollout batch (s)", "grouptune-grpo", "trl-grpo", "TRL GRPO", "batch_s", "<= 0.5", lambda r: r <= 0.5)
    row("GIFT rollout batch (s)", "grouptune-gift", "trl-grpo", "TRL GRPO", "batch_s", "<= 0.5", lambda r: r <= 0.5)
    row("  of which generation (s)", "grouptune-grpo", "trl-grpo", "TRL GRPO", "generation_s", "-", lambda r: True)
    row("  of which the rest (s)", "grouptune-grpo", "trl-grpo", "TRL GRPO", "rest_s", "-", lambda r: True)
    row("Rollout throughput (tokens/s)", "grouptune_rollout", "bare_generate", "bare generate", "tokens_per_s",
        ">= 0.9", lambda r: r >= 0.9)  # fmt: skip
    row("GRPO peak RSS (GB)", "grouptune-grpo", "trl-grpo", "TRL GRPO", "peak_rss_gb", "<= 1", lambda r: r <= 1)
    row("GIFT peak RSS (GB)", "grouptune-gift", "trl-grpo", "TRL GRPO", "peak_rss_gb", "<= 1", lambda r: r <= 1)
    row("GRPO step memory growth (GB)", "grouptune-grpo", "trl-grpo", "TRL GRPO", "step_growth_gb", "<= 1",
        lambda r: r <= 1)  # fmt: skip
    lines += ["", "Per case (medians over processes):", "", "```", json.dumps(summary, indent=1), "```"]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suites", default="step,memory,rollout")
    p.add_argument("--repeats", type=int, default=3, help="processes per case, interleaved across cases")
    p.add_argument("--prompts", type=int, default=4, help="prompts per rollout batch")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per rollout batch")
    p.add_argument("--batches", type=int, default=4, help="rollout batches per step run (the first is warm-up)")
    p.add_argument("--rollout-calls", type=int, default=3, help="timed rollouts per rollout process")
    p.add_argument("--vocab", type=int, default=32_000)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE.parent / "results" / "trainer.json"))
    p.add_argument("--assets", help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("SUITE", "CASE"), help=argparse.SUPPRESS)
    p.add_argument("--render", action="store_true", help="rewrite the Markdown table from the JSON at --out")
    return p.parse_args()


def run_child(a: argparse.Namespace) -> dict:
    """One measured case in this (fresh) process."""
    import torch

    torch.set_num_threads(a.threads)
    assets = json.loads((Path(a.assets) / "assets.json").read_text())
    suite, case = a.child
    if suite == "step":
        return run_step_child(a, assets, case, a.batches)
    if suite == "memory":
        return run_step_child(a, assets, case, 1)
    return run_rollout_child(a, assets, case)


def main() -> None:
    a = parse_args()
    if a.render:
        saved = json.loads(Path(a.out).read_text())
        Path(a.out).with_suffix(".md").write_text(markdown(saved["summary"], saved["meta"]))
        return
    if a.child:
        print(json.dumps(run_child(a)))
        return
    raw: dict = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        assets = build_assets(Path(tmp), a)
        (Path(tmp) / "assets.json").write_text(json.dumps(assets))
        suites = a.suites.split(",")
        for rep in range(a.repeats):
            for suite in suites:
                cases = ROLLOUT_CASES if suite == "rollout" else STEP_CASES
                for case in cases if rep % 2 == 0 else cases[::-1]:
                    row = _child(a, Path(tmp), suite, case)
                    loads += row["loadavg_1m"]
                    raw.setdefault(suite, {}).setdefault(case, []).append(row)
                    print(f"[{rep}] {suite} {case}: {json.dumps({k: v for k, v in row.items()})}",
                          file=sys.stderr, flush=True)  # fmt: skip

    setup = {k: getattr(a, k) for k in ("prompts", "group_size", "max_new_tokens", "prompt_tokens", "steps",
                                        "batches", "repeats", "vocab", "hidden", "layers", "threads")}  # fmt: skip
    setup["params"] = assets["params"]
    meta = {
        "setup_text": (
            f"Qwen2 random init, {assets['params'] / 1e6:.1f}M parameters (vocab {a.vocab}, hidden {a.hidden}, "
            f"{a.layers} layers), float32; {a.prompts} prompts x {a.group_size} completions per rollout batch, "
            f"{a.prompt_tokens} prompt tokens, exactly {a.max_new_tokens} new tokens, {a.steps} optimizer steps "
            f"per rollout batch; {a.batches - 1} measured batches after 1 warm-up per process; "
            f"median over {a.repeats} interleaved processes per case; {a.threads} torch thread(s) per process."
        ),
        "machine": f"{os.cpu_count()} CPU cores, no GPU, Python {sys.version.split()[0]}",
        "load_text": f"median {statistics.median(loads):.2f}, max {max(loads):.2f} (1-minute load average)",
        "nice": os.nice(0),
        "command": " ".join(["python", "benchmarks/bench_trainer.py", *sys.argv[1:]]),
    }
    summary = summarise(raw, a)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": setup, "meta": meta, "summary": summary, "raw": raw}, indent=1) + "\n")
    text = markdown(summary, meta)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

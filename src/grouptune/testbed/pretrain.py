"""Pretrain the testbed's tiny base model and write its data splits.

    python -m grouptune.testbed.pretrain --out DIR --seed 0 [--data-out DATA_DIR]

Builds the character tokenizer, a small Llama-architecture model from a config, and
trains it with plain PyTorch (AdamW, warmup + cosine) on a stream of arithmetic
problems with worked solutions (``grouptune.testbed.arithmetic``).

The base model must leave room for post-training, so its corpus is deliberately
imperfect, like a web corpus. A fraction ``careless`` of its solutions come from a
student who forgets every carry and borrow (``arithmetic.careless_solution``): a
systematic misconception the model picks up as a competing habit, so its greedy
answers are wrong on many problems that need a carry while samples at T=1 carry
sometimes -- groups of rollouts have reward spread, and a method that learns from
rewards or from the expert demonstrations can fix the habit quickly. A further
fraction ``noise`` has one random slip, made by the same simulated teacher that writes
the data's ``teacher_completions``. One batch in ``1 / hard_fraction`` holds harder
(longer) problems, which keeps the hard split above zero without padding every batch
to its length. Prompts of the shipped splits never appear in the corpus.

Deterministic: one CPU thread, seeded model init and data stream, deterministic
algorithms; the same arguments give bit-identical weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from grouptune.testbed import arithmetic
from grouptune.testbed.tokenizer import build_tokenizer


def help_field(default, help: str):
    """A dataclass field with its help text (the ``--help`` of the testbed's scripts)."""
    return field(default=default, metadata={"help": help})


_f = help_field


@contextlib.contextmanager
def deterministic(threads: int):
    """Run with ``threads`` torch CPU threads and deterministic algorithms, then restore the caller's."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


@dataclass
class PretrainConfig:
    seed: int = _f(0, "Seed of the model init and of the pretraining data stream.")
    data_seed: int = _f(0, "Seed of the shipped splits (train, test, test_hard).")
    steps: int = _f(1000, "Optimizer steps.")
    batch_size: int = _f(64, "Sequences per step.")
    lr: float = _f(3e-3, "Peak learning rate (linear warmup, cosine decay to 10%).")
    warmup: int = _f(100, "Warmup steps.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    careless: float = _f(0.6, "Fraction of corpus solutions that forget every carry and borrow.")
    noise: float = _f(0.1, "Fraction of corpus solutions with one random slip (as the noisy teacher makes).")
    easy_fraction: float = _f(0.1, "Fraction of corpus problems from the 'easy' difficulty.")
    hard_fraction: float = _f(0.1, "Fraction of batches made of 'hard' problems.")
    hidden_size: int = _f(128, "Model width.")
    num_layers: int = _f(4, "Transformer blocks.")
    num_heads: int = _f(4, "Attention heads.")
    intermediate_size: int = _f(384, "MLP width.")
    threads: int = _f(1, "torch CPU threads (1 keeps the run reproducible and the machine usable).")
    log_every: int = _f(200, "Print the loss every N steps.")


# ---------------------------------------------------------------------------- data


def shipped_splits(
    data_seed: int, n_train: int = 4000, n_test: int = 400, n_hard: int = 200
) -> dict[str, list[dict]]:
    """The three data files of the testbed; test prompts never occur in train."""
    test = arithmetic.generate_split(n_test, seed=data_seed + 1, difficulty="standard")
    hard = arithmetic.generate_split(n_hard, seed=data_seed + 2, difficulty="hard")
    held_out = [r["prompt"] for r in test + hard]
    train = arithmetic.generate_split(n_train, seed=data_seed, difficulty="standard", exclude=held_out)
    return {"train": train, "test": test, "test_hard": hard}


def corpus_example(rng: random.Random, cfg: PretrainConfig, difficulty: str) -> tuple[str, str]:
    """One (prompt, solution) pair of the pretraining corpus: careless, slipped or correct."""
    if difficulty == "standard" and rng.random() < cfg.easy_fraction:
        difficulty = "easy"
    terms, ops = arithmetic.make_problem(rng, difficulty)
    u = rng.random()
    steps = None
    if u < cfg.careless:
        steps = arithmetic.careless_solution(terms, ops)
    elif u < cfg.careless + cfg.noise:
        steps = arithmetic.wrong_solution(rng, terms, ops)
    steps = steps or arithmetic.solve(terms, ops)
    prompt = arithmetic.PROMPT_TEMPLATE.format(expr=arithmetic.expression(terms, ops))
    return prompt, arithmetic.format_solution(steps)


def corpus_batch(
    rng: random.Random, cfg: PretrainConfig, tokenizer, exclude: set[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids (B, T)`` right-padded, ``mask (B, T)`` = 1 on solution tokens and the final EOS."""
    difficulty = "hard" if rng.random() < cfg.hard_fraction else "standard"
    rows = []
    while len(rows) < cfg.batch_size:
        prompt, solution = corpus_example(rng, cfg, difficulty)
        if prompt in exclude:
            continue
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        s = tokenizer(solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + s, [0] * len(p) + [1] * len(s)))
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.float32)
    for i, (row_ids, row_mask) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        mask[i, : len(row_mask)] = torch.tensor(row_mask, dtype=torch.float32)
    return ids, mask


# ---------------------------------------------------------------------------- model


def build_model(cfg: PretrainConfig, tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=256,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, max_new_tokens=64
    )
    return model


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------- training


def pretrain(cfg: PretrainConfig, exclude: set[str] = frozenset(), verbose: bool = True):
    """Train the base model; returns ``(model, tokenizer)``.

    Runs with ``cfg.threads`` threads and deterministic algorithms, then restores the
    caller's settings.
    """
    with deterministic(cfg.threads):
        return _pretrain(cfg, exclude, verbose)


def _pretrain(cfg: PretrainConfig, exclude: set[str], verbose: bool):
    tokenizer = build_tokenizer()
    model = build_model(cfg, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    rng = random.Random(f"grouptune-pretrain:{cfg.seed}")
    model.train()
    t0, running = time.time(), 0.0
    for step in range(cfg.steps):
        ids, mask = corpus_batch(rng, cfg, tokenizer, exclude)  # (B, T)
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        target, tmask = ids[:, 1:], mask[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, T-1)
        loss = (nll * tmask).sum() / tmask.sum()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if verbose and (step + 1) % cfg.log_every == 0:
            print(
                f"step {step + 1:5d}  loss {running / cfg.log_every:.4f}  lr {lr_at(step, cfg):.2e}  {time.time() - t0:.0f}s",
                flush=True,
            )
            running = 0.0
    model.eval()
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="Directory for the model and tokenizer.")
    p.add_argument(
        "--data-out", default=None, help="Directory for train/test/test_hard.jsonl (default: not written)."
    )
    for f in dataclasses.fields(PretrainConfig):
        p.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default, help=f.metadata["help"]
        )
    args = p.parse_args(argv)
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)})

    splits = shipped_splits(cfg.data_seed)
    if args.data_out:
        for name, rows in splits.items():
            arithmetic.write_jsonl(rows, Path(args.data_out) / f"{name}.jsonl")
    exclude = {r["prompt"] for rows in splits.values() for r in rows}
    model, tokenizer = pretrain(cfg, exclude)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (Path(args.out) / "pretrain_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


if __name__ == "__main__":
    main()

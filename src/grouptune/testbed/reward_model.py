"""Train the testbed's reward model: GIFT's RLHF setting in miniature.

    python -m grouptune.testbed.reward_model --out DIR --seed 0

A ``LlamaForSequenceClassification`` (one logit) initialised from the shipped base model
(its transformer and tokenizer; the score head is new and seeded), as RLHF reward models
start from the policy's base, and trained with a Bradley-Terry loss by TRL's
``RewardTrainer`` on preference pairs from the first rows of the train split: the correct
worked solution (chosen) against a wrong one (rejected), half of them from the careless
student who forgets every carry and borrow (``arithmetic.careless_solution``), half from
the noisy teacher's wrong ``teacher_completions``. The data is deliberately small, so the
model is an imperfect proxy of correctness -- what a learned reward is in RLHF. Use it as
``reward.functions: [rm:PATH]``. (``--init scratch`` trains a small model from a random
init instead: with this little data it stays near chance on held-out pairs.)

Training sees exactly the tokens ``grouptune.verifiers.RewardModel`` (``rm:PATH``) scores:
``tokenizer(prompt + completion)`` with default special tokens (this tokenizer adds none)
and no EOS, since rollout completions are decoded without special tokens. TRL would
append EOS to text pairs, so the pairs are handed to it tokenized (``chosen_ids`` /
``rejected_ids``). The saved tokenizer pads on the right, as TRL's collator does, so a
batch is scored at the positions it was trained at.

Deterministic: one CPU thread, seeded model init and pair order, deterministic
algorithms; the same arguments give bit-identical weights. Needs the ``trl`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from grouptune.testbed import arithmetic, check
from grouptune.testbed.paths import base_model_path, data_path
from grouptune.testbed.pretrain import deterministic, help_field
from grouptune.testbed.tokenizer import build_tokenizer

CONFIG_FILE = "reward_config.json"
CARD_FILE = "MODEL_CARD.md"


_f = help_field


@dataclass
class RewardModelConfig:
    seed: int = _f(0, "Seed of the score head's init (whole model: init scratch) and pair order.")
    init: str = _f("base", "Start from the shipped base model (base) or a random init (scratch).")
    n_pairs: int = _f(1200, "Training pairs from the first rows of train: half careless, half teacher.")
    n_eval_pairs: int = _f(200, "Held-out pairs from the test split the card reports accuracy on (same mix).")
    epochs: int = _f(2, "Passes over the training pairs.")
    batch_size: int = _f(16, "Pairs per optimizer step.")
    lr: float = _f(5e-4, "Peak learning rate (linear warmup, linear decay to 0).")
    warmup: float = _f(0.1, "Warmup, as a fraction of the steps.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    hidden_size: int = _f(64, "Model width (init scratch).")
    num_layers: int = _f(2, "Transformer blocks (init scratch).")
    num_heads: int = _f(4, "Attention heads (init scratch).")
    intermediate_size: int = _f(128, "MLP width (init scratch).")
    threads: int = _f(1, "torch CPU threads (1 keeps the run reproducible and the machine usable).")


# ---------------------------------------------------------------------------- data


def _problem(prompt: str) -> tuple[list[int], list[str]]:
    """``(terms, ops)`` of a prompt ``Q:47+85-9\\nA:``."""
    expr = prompt.removeprefix("Q:").removesuffix("\nA:")
    return [int(t) for t in re.split(r"[+-]", expr)], re.findall(r"[+-]", expr)


def _careless_rejected(row: dict) -> str | None:
    terms, ops = _problem(row["prompt"])
    steps = arithmetic.careless_solution(terms, ops)
    return arithmetic.format_solution(steps) if steps else None


def preference_pairs(rows: list[dict], n_pairs: int) -> list[dict]:
    """``n_pairs`` rows ``{prompt, chosen, rejected, kind}`` from ``rows`` in order: the first
    ``n_pairs // 2`` careless-student pairs, then noisy-teacher pairs up to ``n_pairs``. The
    rejected answer is always wrong (problems the careless student gets right are skipped)."""
    kinds = {"careless": [], "teacher": []}
    for row in rows:
        candidates = [("careless", _careless_rejected(row))]
        candidates += [("teacher", t) for t in dict.fromkeys(row["teacher_completions"])]
        for kind, rejected in candidates:
            if rejected is not None and not check.is_correct(rejected, row["answer"]):
                kinds[kind].append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected,
                                    "kind": kind})  # fmt: skip
    careless = kinds["careless"][: n_pairs // 2]
    pairs = careless + kinds["teacher"][: n_pairs - len(careless)]
    if len(pairs) < n_pairs:
        raise ValueError(f"only {len(pairs)} preference pairs in {len(rows)} rows, {n_pairs} asked")
    return pairs


def pairs_from_split(split: str, n_pairs: int) -> list[dict]:
    return preference_pairs(arithmetic.read_jsonl(data_path(split)), n_pairs)


def encode(tokenizer, prompt: str, completion: str) -> list[int]:
    """The tokens ``grouptune.verifiers.RewardModel`` scores: ``prompt + completion``, default
    special tokens, no EOS appended (unpadded)."""
    return tokenizer(prompt + completion)["input_ids"]


def tokenized_pairs(pairs: list[dict], tokenizer):
    """A ``datasets.Dataset`` of ``chosen_ids`` / ``rejected_ids``: TRL uses such ids as they are."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "chosen_ids": [encode(tokenizer, p["prompt"], p["chosen"]) for p in pairs],
            "rejected_ids": [encode(tokenizer, p["prompt"], p["rejected"]) for p in pairs],
        }
    )


# ---------------------------------------------------------------------------- model


def reward_tokenizer():
    """The base model's character tokenizer, padding on the right (as TRL's collator pads)."""
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "right"
    return tokenizer


def build_model(cfg: RewardModelConfig, tokenizer) -> LlamaForSequenceClassification:
    """The model before training: the base model with a seeded score head, or a random init."""
    if cfg.init not in ("base", "scratch"):
        raise ValueError(f"init must be base or scratch, got {cfg.init!r}")
    torch.manual_seed(cfg.seed)
    if cfg.init == "base":
        with _quiet_transformers():  # lm_head.weight unused, score.weight new: as intended
            model = LlamaForSequenceClassification.from_pretrained(base_model_path(), num_labels=1)
        same_vocab = model.config.vocab_size == len(tokenizer)
        assert same_vocab and model.config.pad_token_id == tokenizer.pad_token_id
        return model
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=256,
        rope_theta=10000.0,
        num_labels=1,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForSequenceClassification(config)


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


# ---------------------------------------------------------------------------- training


def train_reward_model(cfg: RewardModelConfig, verbose: bool = True):
    """Train the reward model; returns ``(model, tokenizer, pairs)``.

    Runs with ``cfg.threads`` threads and deterministic algorithms, then restores the
    caller's settings.
    """
    with deterministic(cfg.threads):
        return _train(cfg, verbose)


@contextlib.contextmanager
def _no_telemetry():
    """TRL trainers ping the Hub's telemetry endpoint when built; the testbed stays offline."""
    from huggingface_hub import constants

    before = constants.HF_HUB_DISABLE_TELEMETRY
    constants.HF_HUB_DISABLE_TELEMETRY = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_TELEMETRY = before


def _trl_config(cfg: RewardModelConfig, output_dir: str, verbose: bool):
    from trl import RewardConfig

    return RewardConfig(
        output_dir=output_dir,  # a temporary directory: nothing is saved there
        seed=cfg.seed,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        lr_scheduler_type="linear",
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        max_length=None,  # the texts are < 60 characters
        pad_to_multiple_of=None,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        dataloader_num_workers=0,
        save_strategy="no",
        report_to="none",
        logging_strategy="epoch" if verbose else "no",
        disable_tqdm=True,
    )


def _train(cfg: RewardModelConfig, verbose: bool):
    from transformers import PrinterCallback
    from trl import RewardTrainer

    tokenizer = reward_tokenizer()
    pairs = pairs_from_split("train", cfg.n_pairs)
    model = build_model(cfg, tokenizer)
    with tempfile.TemporaryDirectory() as tmp, _no_telemetry():
        trainer = RewardTrainer(
            model=model,
            args=_trl_config(cfg, tmp, verbose),
            train_dataset=tokenized_pairs(pairs, tokenizer),
            processing_class=tokenizer,
        )
        if not verbose:
            trainer.remove_callback(PrinterCallback)
        trainer.train()
    model.eval()
    return model, tokenizer, pairs


# ---------------------------------------------------------------------------- evaluation and files


def pair_accuracy(score, pairs: list[dict]) -> float:
    """Fraction of pairs with ``score(chosen) > score(rejected)``; ``score(prompts, completions)``
    is a reward function such as ``grouptune.verifiers.RewardModel``."""
    prompts = [p["prompt"] for p in pairs]
    chosen = score(prompts, [p["chosen"] for p in pairs])
    rejected = score(prompts, [p["rejected"] for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def save(out: Path, model, tokenizer, cfg: RewardModelConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def load_config(path: Path) -> RewardModelConfig:
    """The settings a reward model was made with (its ``reward_config.json``)."""
    return RewardModelConfig(**json.loads((Path(path) / CONFIG_FILE).read_text()))


def measure(out: Path, cfg: RewardModelConfig, train_pairs: list[dict]) -> dict:
    """Pair accuracies of the saved model, scored as ``rm:PATH`` scores (``RewardModel``)."""
    from grouptune.verifiers import RewardModel

    score = RewardModel(str(out), batch_size=64)
    held_out = pairs_from_split("test", cfg.n_eval_pairs)
    stats = {"train": pair_accuracy(score, train_pairs), "test": pair_accuracy(score, held_out)}
    for kind in ("careless", "teacher"):
        stats[f"test_{kind}"] = pair_accuracy(score, [p for p in held_out if p["kind"] == kind])
    return stats


def write_card(out: Path, model, cfg: RewardModelConfig, stats: dict, seconds: float) -> None:
    c = model.config
    n_params = sum(p.numel() for p in model.parameters())
    mb = (out / "model.safetensors").stat().st_size / 1e6
    half = cfg.n_eval_pairs // 2
    start = (
        "initialised from the testbed's base model" if cfg.init == "base" else "trained from a random init"
    )
    text = f"""# grouptune testbed reward model

A tiny `LlamaForSequenceClassification` (one logit; {c.num_hidden_layers} layers, hidden {c.hidden_size},
{c.num_attention_heads} heads, MLP {c.intermediate_size}, the base model's {c.vocab_size}-character tokenizer;
{n_params / 1e6:.2f} M parameters, {mb:.1f} MB as float32 safetensors), {start}, that
scores an arithmetic worked solution given its prompt: GIFT's RLHF setting in miniature. Use
it as `reward.functions: [rm:PATH]`. Made by

    python -m grouptune.testbed.reward_model --out src/grouptune/testbed/assets/reward --seed 0

(TRL `RewardTrainer`, Bradley-Terry loss; one CPU thread, {seconds:.0f} s of training here;
`{CONFIG_FILE}` holds every setting). The same command gives the same weights.

Training data: {cfg.n_pairs} preference pairs from the first rows of the train split, the
correct worked solution (chosen) against a wrong one (rejected): {cfg.n_pairs // 2} from a
careless student who forgets every carry and borrow, {cfg.n_pairs - cfg.n_pairs // 2} wrong
answers of the noisy teacher (one slip, propagated). {cfg.epochs} epochs, batch {cfg.batch_size},
peak learning rate {cfg.lr:g}. The data is kept small on purpose, so the model is an
imperfect proxy of correctness, as a learned reward is.

It scores `prompt + completion` as `rm:PATH` does, with no EOS at the end (rollouts are
decoded without special tokens); training saw the same tokens.

Pair accuracy (fraction of pairs where score(chosen) > score(rejected)), scored through
`grouptune.verifiers.RewardModel`, i.e. as `rm:PATH` scores:

| pairs | n | accuracy |
| --- | --- | --- |
| training pairs | {cfg.n_pairs} | {stats["train"]:.3f} |
| held out (first rows of the test split): all | {cfg.n_eval_pairs} | {stats["test"]:.3f} |
| held out: careless student | {half} | {stats["test_careless"]:.3f} |
| held out: noisy teacher | {cfg.n_eval_pairs - half} | {stats["test_teacher"]:.3f} |
"""
    (out / CARD_FILE).write_text(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="Directory for the model, tokenizer, settings and card.")
    p.add_argument("--quiet", action="store_true", help="Print nothing while training.")
    for f in dataclasses.fields(RewardModelConfig):
        p.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default, help=f.metadata["help"]
        )
    args = p.parse_args(argv)
    cfg = RewardModelConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RewardModelConfig)})
    t0 = time.time()
    model, tokenizer, pairs = train_reward_model(cfg, verbose=not args.quiet)
    seconds = time.time() - t0
    out = Path(args.out)
    save(out, model, tokenizer, cfg)
    stats = measure(out, cfg, pairs)
    write_card(out, model, cfg, stats, seconds)
    print(
        f"trained in {seconds:.0f} s; pair accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items())
    )


if __name__ == "__main__":
    main()

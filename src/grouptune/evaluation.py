"""Held-out evaluation: greedy accuracy, avg@k and the unbiased pass@k of arXiv 2107.03374.

A completion is *correct* when the first reward function (the verifier) gives it at
least 0.5 — the built-in verifiers of :mod:`grouptune.rewards` are binary. Used during
training and by ``grouptune eval``.
"""

from __future__ import annotations

import torch

from grouptune.data import Example
from grouptune.metrics import summarize_eval
from grouptune.rewards import compute_rewards, score_name


def _judge(reward_fns, examples: list[Example], completions: list[str], reps: int, *, score: bool = False):
    """Which completions the first function (the verifier) marks correct; with ``score``, also the
    mean of every later function (``score/<name>``: e.g. a reward model's proxy score)."""
    prompts = [ex.prompt_text for ex in examples for _ in range(reps)]
    columns: dict[str, list] = {"answer": [ex.answer for ex in examples for _ in range(reps)]}
    for key in examples[0].row:
        if key != "answer":
            columns[key] = [ex.row.get(key) for ex in examples for _ in range(reps)]
    rows = [ex.index for ex in examples for _ in range(reps)]
    fns = reward_fns if score else reward_fns[:1]
    result = compute_rewards(fns, prompts, completions, columns, row_ids=rows)
    values = list(result.per_function.values())
    correct = [bool(v >= 0.5) for v in values[0].tolist()]  # NaN (unjudged) counts as wrong
    return correct, {f"score/{score_name(rf.name)}": v for rf, v in zip(fns[1:], values[1:])}


@torch.no_grad()
def evaluate_examples(
    engine,
    tokenizer,
    examples: list[Example],
    reward_fns,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int = 0,
    max_examples: int = 0,
    accelerator=None,
    greedy: bool = True,
    pass_at: tuple[int, ...] | list = (),
) -> dict:
    """Greedy accuracy, and with ``k > 0`` samples per prompt avg@k and pass@k.

    ``engine``: a rollout engine (``grouptune.engines``) holding the model's current weights.
    With an ``accelerator`` the examples are sharded over processes and the results gathered.
    ``greedy=False`` skips greedy decoding (the result has no ``greedy`` key; needs ``k > 0``).
    ``pass_at``: more k (each at most ``k``) whose pass@k is reported from the same samples.
    """
    if not greedy and k <= 0:
        raise ValueError("evaluate_examples: greedy=False needs k > 0 samples per prompt")
    if max_examples:
        examples = examples[:max_examples]
    real = len(examples)
    if accelerator is not None and accelerator.num_processes > 1:
        examples, real = shard(examples, accelerator.process_index, accelerator.num_processes)
    prompts = [ex.prompt_ids for ex in examples]
    greedy_flags, scores = None, {}
    if greedy:
        greedy_ids = engine.generate(prompts, greedy=True, max_new_tokens=max_new_tokens).token_ids
        texts = tokenizer.batch_decode(greedy_ids, skip_special_tokens=True)
        greedy_flags, scores = _judge(reward_fns, examples, texts, 1, score=True)
        greedy_flags = greedy_flags[:real]  # drop the padding of an uneven shard
        scores = {k: v[:real].tolist() for k, v in scores.items()}
    samples: list[list[bool]] = [[] for _ in examples]
    if k > 0:
        torch.manual_seed(seed)  # requests without seeds continue torch's stream (or draw theirs from it)
        many = [p for p in prompts for _ in range(k)]
        ids = engine.generate(many, temperature=temperature, max_new_tokens=max_new_tokens).token_ids
        flat, _ = _judge(reward_fns, examples, tokenizer.batch_decode(ids, skip_special_tokens=True), k)
        samples = [flat[i * k : (i + 1) * k] for i in range(len(examples))]
    samples = samples[:real]
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        greedy_flags = gather_object(greedy_flags) if greedy else None
        samples = gather_object(samples)
        scores = {name: gather_object(v) for name, v in scores.items()}
    means = {name: _nanmean(v) for name, v in scores.items()}
    if k == 0:
        return {"n_problems": len(greedy_flags), "greedy": sum(greedy_flags) / max(len(greedy_flags), 1), **means}
    return {**summarize_eval(samples, greedy_flags, k, pass_at), **means}


def _nanmean(values: list[float]) -> float:
    """The mean over the judged rows (NaN = a function that could not judge the row)."""
    judged = [v for v in values if v == v]
    return sum(judged) / len(judged) if judged else float("nan")


def check_pass_at(log) -> None:
    """Refuse ``log.eval_pass_at`` values that the samples cannot give, before any training."""
    from grouptune.config import ConfigError

    bad = [j for j in log.eval_pass_at if not (isinstance(j, int) and not isinstance(j, bool) and 1 <= j <= log.eval_samples)]
    if bad:
        raise ConfigError(f"log.eval_pass_at: each k must be an integer in 1..log.eval_samples ({log.eval_samples}), got {bad}")


def shard(examples: list, rank: int, world: int) -> tuple[list, int]:
    """Process ``rank``'s examples (every ``world``-th) and how many are real: shards are padded
    to one length with a repeated example, so every process runs the same generation calls."""
    mine = examples[rank::world]
    size = -(-len(examples) // world)  # ceil
    filler = mine[-1:] or examples[:1]
    return mine + filler * (size - len(mine)), len(mine)


def load_engine(cfg):
    """The policy of ``cfg.model`` in the rollout engine ``rollout.engine`` names, and its tokenizer."""
    from grouptune.engines import make_engine
    from grouptune.modeling import eos_ids, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(cfg.model)
    return make_engine(cfg, None, model, tokenizer, eos_ids(tokenizer, model)), tokenizer


def evaluate_model(cfg) -> dict:
    """``grouptune eval``: every ``data.eval`` set of a ``TrainConfig``, results keyed by data set."""
    from pathlib import Path

    from grouptune.config import ConfigError
    from grouptune.data import load_examples
    from grouptune.rewards import build_eval_functions

    if not cfg.data.eval:
        raise ConfigError("data.eval: name at least one held-out data set to evaluate on")
    check_pass_at(cfg.log)
    engine, tokenizer = load_engine(cfg)
    reward_fns = build_eval_functions(cfg.reward)
    results = {}
    for src in cfg.data.eval:
        examples = load_examples(cfg.data, src, tokenizer, split=cfg.data.eval_split)
        results[Path(src).stem if Path(src).suffix else src] = evaluate_examples(
            engine, tokenizer, examples, reward_fns, k=cfg.log.eval_samples,
            temperature=cfg.log.eval_temperature, max_new_tokens=cfg.rollout.max_new_tokens,
            seed=cfg.optim.seed, max_examples=cfg.data.max_eval_examples, pass_at=cfg.log.eval_pass_at,
        )  # fmt: skip
    engine.close()
    return results

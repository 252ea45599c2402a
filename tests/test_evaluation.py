"""Evaluation sharded over processes: equal shards (so sharded weights generate in lockstep),
padding left out of the results, every problem counted once."""

from __future__ import annotations

from types import SimpleNamespace

import accelerate.utils
import pytest
from conftest import arithmetic_rows, write_jsonl

from grouptune.config import load_config
from grouptune.data import load_examples
from grouptune.engines.transformers import TransformersEngine
from grouptune.evaluation import evaluate_examples, shard
from grouptune.modeling import eos_ids, load_model_and_tokenizer
from grouptune.rewards import build_reward_functions


@pytest.mark.parametrize(("n", "world"), [(5, 2), (4, 2), (1, 2), (7, 3), (2, 4)])
def test_shards_are_equal_and_cover_every_example_once(n, world):
    examples = list(range(n))
    shards = [shard(examples, r, world) for r in range(world)]
    assert len({len(s) for s, _ in shards}) == 1, "every process must make the same generation calls"
    real = [x for s, k in shards for x in s[:k]]
    assert sorted(real) == examples
    assert all(set(s) <= set(examples) for s, _ in shards)


def test_uneven_shards_report_only_their_real_problems(tiny_llama, tmp_path, monkeypatch):
    """5 problems on 2 processes: 3 + 2 problems, each shard generating for 3 prompts."""
    cfg = load_config(overrides={"model.name_or_path": str(tiny_llama), "reward.functions": ["gsm8k"]})
    model, tok = load_model_and_tokenizer(cfg.model)
    data = write_jsonl(tmp_path / "eval.jsonl", arithmetic_rows(5))
    examples = load_examples(cfg.data, str(data), tok, require=("answer",))
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda x: x)  # this process's results only
    counts = []
    for rank in range(2):
        acc = SimpleNamespace(num_processes=2, process_index=rank)
        engine = TransformersEngine(model, pad_id=tok.pad_token_id, eos_ids=eos_ids(tok, model))
        res = evaluate_examples(
            engine, tok, examples, build_reward_functions(cfg.reward), k=2, temperature=1.0, max_new_tokens=4,
            accelerator=acc,
        )  # fmt: skip
        counts.append(res["n_problems"])
        assert 0.0 <= res["greedy"] <= 1.0 and 0.0 <= res["avg@2"] <= res["pass@2"] <= 1.0
    assert counts == [3, 2]

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
from grouptune.rewards import build_eval_functions, build_reward_functions


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


def test_eval_functions_judge_with_the_first_and_report_the_mean_score_of_the_rest(tiny_llama, tmp_path):
    """reward.eval_functions = [gsm8k, a user function]: accuracy from gsm8k on the greedy
    completions, score/<fn> the mean of the user function over the same completions."""
    (tmp_path / "proxy.py").write_text(
        "SEEN = []\n"
        "def length(prompts, completions, **_):\n"
        "    SEEN.extend(completions)\n"
        "    return [float(len(c)) for c in completions]\n"
    )
    spec = f"{tmp_path / 'proxy.py'}:length"
    cfg = load_config(overrides={"model.name_or_path": str(tiny_llama), "reward.functions": [spec],
                                 "reward.eval_functions": ["gsm8k", spec]})  # fmt: skip
    model, tok = load_model_and_tokenizer(cfg.model)
    rows = arithmetic_rows(4)
    examples = load_examples(cfg.data, str(write_jsonl(tmp_path / "eval.jsonl", rows)), tok, require=("answer",))
    fns = build_eval_functions(cfg.reward)
    assert [rf.name for rf in fns] == ["gsm8k", spec] and build_reward_functions(cfg.reward)[0].name == spec
    engine = TransformersEngine(model, pad_id=tok.pad_token_id, eos_ids=eos_ids(tok, model))
    res = evaluate_examples(engine, tok, examples, fns, k=0, temperature=1.0, max_new_tokens=6)
    seen = fns[1].fn.__globals__["SEEN"]
    assert len(seen) == 4  # the greedy completions, scored once
    assert res["score/length"] == pytest.approx(sum(len(c) for c in seen) / 4)
    assert res["greedy"] == sum(c.strip().endswith(f"#### {r['answer']}") for c, r in zip(seen, rows)) / 4


@pytest.mark.parametrize(
    ("functions", "message"),
    [(["gsm8k", "gsm9k"], r"reward.eval_functions\[1\].*gsm9k"), (["gsm8k", "gsm8k"], "eval_functions lists")],
)
def test_bad_eval_functions_are_refused_before_the_model_loads(functions, message, tmp_path):
    from grouptune.config import ConfigError
    from grouptune.preflight import check_run

    cfg = load_config(overrides={"model.name_or_path": str(tmp_path / "missing"), "reward.eval_functions": functions,
                                 "data.train": str(write_jsonl(tmp_path / "t.jsonl", arithmetic_rows(2)))})  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        check_run(cfg)

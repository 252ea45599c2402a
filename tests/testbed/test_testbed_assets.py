"""The shipped testbed: data files, and a base model that loads offline and answers in format."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grouptune.testbed import check
from grouptune.testbed.arithmetic import read_jsonl
from grouptune.testbed.paths import base_model_path, data_path


def test_shipped_splits_have_the_documented_columns_and_no_leak():
    splits = {s: read_jsonl(data_path(s)) for s in ("train", "test", "test_hard")}
    assert len(splits["train"]) >= 2000 and len(splits["test"]) >= 200 and len(splits["test_hard"]) >= 200
    for rows in splits.values():
        for r in rows[:50]:
            assert set(r) == {"prompt", "answer", "completion", "teacher_completions"}
            assert r["completion"].endswith(f"#### {r['answer']}") and len(r["teacher_completions"]) == 3
    train = {r["prompt"] for r in splits["train"]}
    assert not train & {r["prompt"] for r in splits["test"] + splits["test_hard"]}


def test_shipped_model_loads_and_answers_in_format():
    """Greedy answers of the base model to 16 held-out prompts: nearly all end in ``#### n``
    (a broken tokenizer or model would give 0), some but not all are right (room to improve)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = AutoModelForCausalLM.from_pretrained(base_model_path())
        tok = AutoTokenizer.from_pretrained(base_model_path())
        rows = read_jsonl(data_path("test"))[:16]
        outs = check.generate(model, tok, [r["prompt"] for r in rows], max_new_tokens=48)
    finally:
        torch.set_num_threads(threads)
    assert model.config.model_type in {"llama", "qwen2"}
    assert sum("####" in o and check.extract_answer(o) is not None for o in outs) >= 14
    right = sum(check.is_correct(o, r["answer"]) for o, r in zip(outs, rows))
    assert 1 <= right <= 15

"""Benchmark presets on small local files in each benchmark's public format (tests/helpers_benchmarks.py):
the question and gold answer each preset builds, the prompt templates, and that the verifier the
suites use scores a right completion 1 and a wrong one 0."""

from __future__ import annotations

import csv
import json

import pytest
from helpers_benchmarks import BENCHMARKS, write_benchmark
from helpers_tokenizer import build_tokenizer

from grouptune.config import ConfigError, DataConfig
from grouptune.data import DataError, load_examples
from grouptune.data.templates import TEMPLATES
from grouptune.suites import CATALOGUE, _reward


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def data_cfg(preset: str, template: str = "qwen25-math-cot") -> DataConfig:
    return DataConfig(preset=preset, prompt_template=template, max_prompt_length=4096)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_preset_reads_question_and_gold_and_the_verifier_scores_right_1_wrong_0(name, tmp_path, tok):
    bench = CATALOGUE[name]
    examples = load_examples(data_cfg(bench.preset), str(write_benchmark(tmp_path, name)), tok, split="test")
    cases = BENCHMARKS[name]
    assert [ex.answer for ex in examples] == [c.gold for c in cases]
    verifier = _reward(bench, timeout=10.0)[0].fn
    for ex, case in zip(examples, cases):
        question = ex.row.get("_question") or ex.prompt
        if case.question.startswith("="):
            assert question == case.question[1:]
        else:
            assert case.question in question
        assert ex.prompt_text == TEMPLATES["qwen25-math-cot"].replace("{question}", question)
        completions = list(case.right) + list(case.wrong)
        scores = verifier([ex.prompt_text] * len(completions), completions, answer=[ex.answer] * len(completions))
        expected = [1.0] * len(case.right) + [0.0] * len(case.wrong)
        assert dict(zip(completions, scores)) == dict(zip(completions, expected)), f"gold {ex.answer!r}"


def test_prompt_templates_are_the_harness_texts(tok, tmp_path):
    """QwenLM/Qwen2.5-Math evaluation/utils.py PROMPT_TEMPLATES (commit a45202bd), written out as text."""
    path = write_benchmark(tmp_path, "aime25")
    question = BENCHMARKS["aime25"][0].row["problem"]
    instruction = "Please reason step by step, and put your final answer within \\boxed{}."
    expected = {
        "qwen25-math-cot": f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n",
        "qwen-boxed": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{question}\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
        "plain": f"{question}\n{instruction}",
        "chat": tok.apply_chat_template(
            [{"role": "user", "content": f"{question}\n{instruction}"}], tokenize=False, add_generation_prompt=True
        ),
    }
    for template, text in expected.items():
        (ex,) = load_examples(data_cfg("aime25", template), str(path), tok)
        assert ex.prompt_text == text, template
        assert ex.prompt_ids == tok(text, add_special_tokens=False)["input_ids"]
    suffixed = DataConfig(preset="aime25", prompt_template="plain", prompt_suffix="Be brief.")
    (ex,) = load_examples(suffixed, str(path), tok)
    assert ex.prompt_text == f"{question} Be brief.\n{instruction}"
    with pytest.raises(ConfigError, match="prompt_template"):
        load_examples(data_cfg("aime25", "qwen"), str(path), tok)


def test_template_on_a_lone_user_message_and_not_on_a_conversation(tok, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "answer": "4"},
            {"prompt": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], "answer": "4"}]  # fmt: skip
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(prompt_template="plain"), str(path), tok)
    assert [p.row for p in err.value.problems] == [1] and "single user message" in str(err.value)
    path.write_text(json.dumps(rows[0]) + "\n")
    (ex,) = load_examples(DataConfig(prompt_template="plain"), str(path), tok)
    assert ex.prompt_text.startswith("What is 2 + 2?\nPlease reason step by step")


def test_csv_cells_hold_lists_as_json(tok, tmp_path):
    """In CSV the MMLU choices and OlympiadBench's final_answer list are JSON arrays in their cells."""
    for name, listed in (("mmlu_stem", "choices"), ("olympiadbench", "final_answer")):
        rows = [case.row for case in BENCHMARKS[name]]
        path = tmp_path / f"{name}.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v) if k in (listed, "solution") else v for k, v in row.items()})
        examples = load_examples(data_cfg(name), str(path), tok)
        assert [ex.answer for ex in examples] == [case.gold for case in BENCHMARKS[name]]


def test_missing_column_is_reported_once_and_bad_rows_by_row(tok, tmp_path):
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": 1}) + "\n" for i in range(3)))
    with pytest.raises(DataError) as err:
        load_examples(data_cfg("mmlu_stem"), str(path), tok)
    assert len(err.value.problems) == 1 and err.value.problems[0].column == "choices"
    rows = [c.row for c in BENCHMARKS["sat_math"]]
    rows[1] = {**rows[1], "Answer": "E"}
    rows.append({**rows[0], "options": "(1) 2 (2) 3"})
    path = tmp_path / "sat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_examples(data_cfg("sat_math"), str(path), tok)
    assert [p.row for p in err.value.problems] == [1, 2]
    assert "A-D" in err.value.problems[0].message and "A) ..." in err.value.problems[1].message


def test_mmlu_hub_rows_outside_the_stem_subjects_are_skipped(tok, tmp_path):
    """hails/mmlu_no_train has every subject under ``subject``; the harness keeps 18 STEM ones."""
    rows = [{"question": "Force?", "subject": "high_school_physics", "choices": ["a", "b", "c", "d"], "answer": 0},
            {"question": "Kant?", "subject": "philosophy", "choices": ["a", "b", "c", "d"], "answer": 2},
            {"question": "Bits?", "subject": "machine_learning", "choices": ["a", "b", "c", "d"], "answer": "D"}]  # fmt: skip
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(data_cfg("mmlu_stem"), str(path), tok)
    assert [(ex.index, ex.answer) for ex in examples] == [(0, "A"), (2, "D")]
    assert examples.report.n_rows == 3

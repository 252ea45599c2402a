"""Data loading: real GSM8K / MATH / DAPO row formats, every file format, prompt rendering,
long prompts, and validation that reports every problem at once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers_tokenizer import build_tokenizer

from grouptune.config import ConfigError, DataConfig
from grouptune.data import DataError, Example, ExampleList, load_examples, reward_columns

SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."

GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
        "in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
        "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    },
    {"question": "A shop sells 1,200 pens a day. How many in 5 days?", "answer": "1,200 * 5 = 6,000\n#### 6,000"},
]

MATH_ROWS = [
    {
        "problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?",
        "solution": "We add: $\\frac{1}{4} + \\frac{1}{4} = \\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
        "answer": "\\frac{1}{2}",
        "level": "Level 1",
    },
    {
        "problem": "Find $x$ if $2x = 6$.",
        "solution": "Dividing by 2, $x = \\boxed{3}$.",
        "answer": "3",
        "level": "Level 1",
    },
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def token_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------- presets


def test_gsm8k_preset_gold_demo_and_prompt(tmp_path, tok):
    src = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    examples = load_examples(DataConfig(preset="gsm8k", prompt_suffix=SUFFIX), src, tok)
    assert [ex.answer for ex in examples] == ["72", "10", "6000"]
    assert examples[0].completion == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
    )
    assert examples[2].completion == "1,200 * 5 = 6,000\n#### 6000"
    ex = examples[0]
    assert ex.prompt == GSM8K_ROWS[0]["question"]
    assert ex.prompt_text == f"<|im_start|>user\n{GSM8K_ROWS[0]['question']} {SUFFIX}<|im_end|>\n<|im_start|>assistant\n"
    assert ex.prompt_ids == token_ids(tok, ex.prompt_text)
    assert ex.row == GSM8K_ROWS[0] and ex.teacher_completions == [] and ex.index == 0
    assert [e.index for e in examples] == [0, 1, 2]


def test_gsm8k_preset_without_hashes_is_an_error_per_row(tmp_path, tok):
    rows = [GSM8K_ROWS[0], {"question": "Q?", "answer": "The answer is 5."}, {"question": "Q?", "answer": "#### five"}]
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(preset="gsm8k"), src, tok)
    assert [(p.row, p.column) for p in err.value.problems] == [(1, "answer"), (2, "answer")]
    assert "#### <number>" in str(err.value) and "bad.jsonl, row 1 (line 2), column 'answer'" in str(err.value)


def test_math_preset_prefers_answer_column_else_last_boxed(tmp_path, tok):
    with_answer = load_examples(DataConfig(preset="math"), write_jsonl(tmp_path / "a.jsonl", MATH_ROWS), tok)
    assert [ex.answer for ex in with_answer] == ["\\frac{1}{2}", "3"]
    assert with_answer[0].completion == MATH_ROWS[0]["solution"]
    no_answer = [{k: v for k, v in r.items() if k != "answer"} for r in MATH_ROWS]
    boxed = load_examples(DataConfig(preset="math500"), write_jsonl(tmp_path / "b.jsonl", no_answer), tok)
    assert [ex.answer for ex in boxed] == ["\\frac{1}{2}", "3"]  # nested braces kept whole


def test_numina_preset_reads_gold_from_solution(tmp_path, tok):
    rows = [{"problem": "Compute $2^3$.", "solution": "First \\boxed{6}? No: $2^3 = \\boxed{8}$.", "source": "amc"}]
    (ex,) = load_examples(DataConfig(preset="numina"), write_jsonl(tmp_path / "n.jsonl", rows), tok)
    assert ex.answer == "8" and ex.completion == rows[0]["solution"] and ex.row["source"] == "amc"
    bad = [{"problem": "Compute $2^3$.", "solution": "It is 8."}]
    with pytest.raises(DataError, match=r"row 0 \(line 1\), column 'solution': no \\boxed"):
        load_examples(DataConfig(preset="numina"), write_jsonl(tmp_path / "m.jsonl", bad), tok)


DAPO_ROW = {
    "data_source": "math_dapo",
    "prompt": [{"role": "user", "content": "Solve 1 + 1. Remember to put your answer after \"Answer:\"."}],
    "ability": "MATH",
    "reward_model": {"ground_truth": "2", "style": "rule-lighteval/MATH_v2"},
    "extra_info": {"index": "a1b2"},
}


def test_dapo_math_preset_nested_gold_and_messages(tmp_path, tok):
    (ex,) = load_examples(DataConfig(preset="dapo_math"), write_jsonl(tmp_path / "d.jsonl", [DAPO_ROW]), tok)
    assert ex.answer == "2" and ex.completion is None and ex.prompt == DAPO_ROW["prompt"]
    assert ex.prompt_text == f"<|im_start|>user\n{DAPO_ROW['prompt'][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(DataError, match="has no demonstrations"):
        load_examples(DataConfig(preset="dapo_math"), str(tmp_path / "d.jsonl"), tok, require=["completion"])


def test_dotted_column_names_read_nested_values(tmp_path, tok):
    rows = [{"q": "Say hi.", "meta": {"gold": {"text": "hi"}}}]
    cfg = DataConfig(prompt_column="q", answer_column="meta.gold.text")
    (ex,) = load_examples(cfg, write_jsonl(tmp_path / "n.jsonl", rows), tok)
    assert ex.answer == "hi"


# ----------------------------------------------------------------------------- file formats

CHAT_ROWS = [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}],
        "answer": "5",
        "completion": "2 + 3 = 5. \\boxed{5}",
        "teacher_completions": ["\\boxed{5}", "\\boxed{6}"],
    },
    {
        "prompt": "What is 7 - 4?",
        "answer": "3",
        "completion": "\\boxed{3}",
        "teacher_completions": [],
    },
]


def write_all_formats(tmp_path: Path, rows: list[dict]) -> dict[str, str]:
    import datasets

    paths = {"jsonl": write_jsonl(tmp_path / "d.jsonl", rows)}
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2))
    paths["json"] = str(tmp_path / "d.json")
    with open(tmp_path / "d.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:  # list-valued cells as JSON, as the loader documents
            writer.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()})
    paths["csv"] = str(tmp_path / "d.csv")
    # parquet cannot mix strings and lists in one column: store every prompt as messages
    as_messages = [{**r, "prompt": r["prompt"] if isinstance(r["prompt"], list) else
                    [{"role": "user", "content": r["prompt"]}]} for r in rows]  # fmt: skip
    datasets.Dataset.from_list(as_messages).to_parquet(str(tmp_path / "d.parquet"))
    paths["parquet"] = str(tmp_path / "d.parquet")
    return paths


def test_every_file_format_gives_the_same_examples(tmp_path, tok):
    paths = write_all_formats(tmp_path, CHAT_ROWS)
    cfg = DataConfig(prompt_suffix="Box it.")
    loaded = {fmt: load_examples(cfg, path, tok) for fmt, path in paths.items()}
    expected_text = [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3? Box it.<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>user\nWhat is 7 - 4? Box it.<|im_end|>\n<|im_start|>assistant\n",
    ]
    for fmt, examples in loaded.items():
        assert isinstance(examples, ExampleList) and examples.report.n_loaded == 2, fmt
        assert [ex.prompt_text for ex in examples] == expected_text, fmt
        assert [ex.answer for ex in examples] == ["5", "3"], fmt
        assert [ex.completion for ex in examples] == ["2 + 3 = 5. \\boxed{5}", "\\boxed{3}"], fmt
        assert [ex.teacher_completions for ex in examples] == [["\\boxed{5}", "\\boxed{6}"], []], fmt
        assert [ex.prompt_ids for ex in examples] == [token_ids(tok, t) for t in expected_text], fmt
    assert loaded["jsonl"][0].prompt == CHAT_ROWS[0]["prompt"] and loaded["csv"][0].prompt == CHAT_ROWS[0]["prompt"]


def test_numbers_as_answers_and_csv_empty_cells(tmp_path, tok):
    rows = [{"prompt": "1+1?", "answer": 2}, {"prompt": "half?", "answer": 0.5}]
    assert [ex.answer for ex in load_examples(DataConfig(), write_jsonl(tmp_path / "n.jsonl", rows), tok)] == ["2", "0.5"]
    (tmp_path / "e.csv").write_text('prompt,answer,teacher_completions\n"1+1?",,\n')
    (ex,) = load_examples(DataConfig(), str(tmp_path / "e.csv"), tok)
    assert ex.answer is None and ex.teacher_completions == [] and ex.completion is None


def test_hub_names_go_through_datasets_load_dataset(monkeypatch, tok):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, *, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(GSM8K_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_examples(DataConfig(preset="gsm8k"), "openai/gsm8k:main", tok, split="test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [ex.answer for ex in examples] == ["72", "10", "6000"]
    assert examples.report.source == "openai/gsm8k:main"


def test_hub_failure_is_a_data_error(monkeypatch, tok):
    import datasets

    def failing(*args, **kwargs):
        raise FileNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DataError, match=r"nobody/nothing: cannot load data set \(split 'train'\)"):
        load_examples(DataConfig(), "nobody/nothing", tok)


# ----------------------------------------------------------------------------- prompts


def test_string_prompt_without_template(tmp_path, tok):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 2+2?\n"}])
    (ex,) = load_examples(DataConfig(prompt_suffix="Think."), src, build_tokenizer(chat_template=False))
    assert ex.prompt_text == "What is 2+2?\nThink."  # no extra space after a newline
    (ex,) = load_examples(DataConfig(prompt_suffix="Think.", chat_template=False), src, tok)
    assert ex.prompt_text == "What is 2+2?\nThink."


def test_chat_prompt_needs_a_template(tmp_path, tok):
    src = write_jsonl(tmp_path / "c.jsonl", [{"prompt": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(DataError, match="the tokenizer has no chat template"):
        load_examples(DataConfig(), src, build_tokenizer(chat_template=False))
    with pytest.raises(DataError, match="data.chat_template is false"):
        load_examples(DataConfig(chat_template=False), src, tok)


def test_suffix_goes_to_the_last_user_message(tmp_path, tok):
    prompt = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}, {"role": "user", "content": "C"}]
    (ex,) = load_examples(DataConfig(prompt_suffix="S"), write_jsonl(tmp_path / "c.jsonl", [{"prompt": prompt}]), tok)
    assert "user\nA<|im_end|>" in ex.prompt_text and "user\nC S<|im_end|>" in ex.prompt_text
    assert ex.prompt == prompt  # the raw prompt is left as in the file


# ----------------------------------------------------------------------------- long prompts


def long_rows() -> list[dict]:
    return [{"prompt": "short"}, {"prompt": "word " * 200}, {"prompt": "also short"}]


def test_long_prompts_dropped_and_counted(tmp_path, tok):
    examples = load_examples(DataConfig(max_prompt_length=40), write_jsonl(tmp_path / "l.jsonl", long_rows()), tok)
    assert [ex.index for ex in examples] == [0, 2]
    r = examples.report
    assert (r.n_rows, r.n_loaded, r.n_dropped, r.n_truncated) == (3, 2, 1, 0)
    assert "1 long prompts dropped" in str(r)


def test_long_prompts_truncated_keep_the_end(tmp_path, tok):
    cfg = DataConfig(max_prompt_length=40, long_prompts="truncate")
    examples = load_examples(cfg, write_jsonl(tmp_path / "l.jsonl", long_rows()), tok)
    full = token_ids(tok, f"<|im_start|>user\n{'word ' * 200}<|im_end|>\n<|im_start|>assistant\n")
    assert examples[1].prompt_ids == full[-40:]
    assert examples[1].prompt_text.endswith("<|im_start|>assistant\n")
    assert (examples.report.n_truncated, examples.report.max_prompt_tokens) == (1, 40)


def test_long_prompts_error_lists_the_rows(tmp_path, tok):
    cfg = DataConfig(max_prompt_length=40, long_prompts="error")
    with pytest.raises(DataError, match=r"row 1 \(line 2\): prompt has \d+ tokens, more than data.max_prompt_length=40"):
        load_examples(cfg, write_jsonl(tmp_path / "l.jsonl", long_rows()), tok)


def test_all_prompts_too_long_is_an_error(tmp_path, tok):
    with pytest.raises(DataError, match="every prompt is longer than 5 tokens"):
        load_examples(DataConfig(max_prompt_length=5), write_jsonl(tmp_path / "l.jsonl", long_rows()), tok)


# ----------------------------------------------------------------------------- validation


def test_malformed_file_reports_every_problem_at_once(tmp_path, tok):
    lines = [
        json.dumps({"prompt": "fine", "answer": "1", "teacher_completions": ["a"]}),
        json.dumps({"prompt": "", "answer": "1"}),  # empty prompt
        json.dumps({"prompt": 7, "answer": ["1"]}),  # wrong types in two columns
        "{not json",
        json.dumps({"prompt": [{"role": "user"}], "teacher_completions": "just one"}),  # no content; not a list
        "",  # blank lines are skipped
        json.dumps(["a", "list"]),
        json.dumps({"prompt": "ok", "answer": True, "teacher_completions": [1, 2]}),
    ]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(), str(path), tok)
    found = [(p.row, p.line, p.column) for p in err.value.problems]
    assert found == [
        (1, 2, "prompt"),
        (2, 3, "prompt"),
        (2, 3, "answer"),
        (3, 4, None),
        (4, 5, "prompt"),
        (4, 5, "teacher_completions"),
        (5, 7, None),
        (6, 8, "answer"),
        (6, 8, "teacher_completions"),
    ]
    text = str(err.value)
    assert text.startswith("9 problem(s) in the data:")
    assert f"{path}, row 2 (line 3), column 'answer': expected a string, got list ['1']" in text
    assert f"{path}, row 3 (line 4): invalid JSON" in text
    assert "message 0 must be an object with string 'role' and 'content'" in text
    assert "expected a list of strings, got 'just one'" in text
    assert isinstance(err.value, ValueError)


def test_many_problems_are_listed_up_to_twenty(tmp_path, tok):
    src = write_jsonl(tmp_path / "many.jsonl", [{"prompt": ""}] * 25)
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(), src, tok)
    assert len(err.value.problems) == 25
    assert str(err.value).count("no prompt (missing, null or empty)") == 20
    assert str(err.value).endswith("... and 5 more")


def test_misnamed_columns_suggest_close_names(tmp_path, tok):
    src = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "Answer": "1", "teacher_responses": ["x"]}])
    cfg = DataConfig(prompt_column="questoin", answer_column="answer_text", teacher_column="teacher")
    with pytest.raises(DataError) as err:
        load_examples(cfg, src, tok)
    messages = {p.column: p.message for p in err.value.problems}
    assert set(messages) == {"questoin", "answer_text", "teacher"}
    assert "did you mean 'question'?" in messages["questoin"]
    assert "columns: Answer, question, teacher_responses" in messages["answer_text"]
    assert all(p.row is None for p in err.value.problems)  # one problem per column, not per row


def test_default_optional_columns_may_be_absent_unless_required(tmp_path, tok):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q1"}, {"prompt": "Q2", "completion": "A2"}])
    examples = load_examples(DataConfig(), src, tok)
    assert [(ex.answer, ex.completion, ex.teacher_completions) for ex in examples] == [(None, None, []), (None, "A2", [])]
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(), src, tok, require=["answer", "completion"])
    assert [(p.row, p.column) for p in err.value.problems] == [(None, "answer"), (0, "completion")]
    with pytest.raises(ValueError, match="unknown field"):
        load_examples(DataConfig(), src, tok, require=["gold"])


def test_missing_and_unsupported_files(tmp_path, tok):
    with pytest.raises(DataError, match=r"file not found: .*nope\.jsonl"):
        load_examples(DataConfig(), str(tmp_path / "nope.jsonl"), tok)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_examples(DataConfig(), str(tmp_path / "notes.txt"), tok)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        load_examples(DataConfig(), str(tmp_path / "empty.jsonl"), tok)
    (tmp_path / "broken.json").write_text('[{"prompt": "a"},')
    with pytest.raises(DataError, match="invalid JSON at line 1"):
        load_examples(DataConfig(), str(tmp_path / "broken.json"), tok)


def test_csv_problems_name_lines(tmp_path, tok):
    (tmp_path / "b.csv").write_text('prompt,teacher_completions\n"ok","[""a""]"\n"x",not json\n"y","[1]",extra\n')
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(), str(tmp_path / "b.csv"), tok)
    assert [(p.row, p.line, p.column) for p in err.value.problems] == [
        (1, 3, "teacher_completions"),
        (2, 4, None),
    ]
    assert "must be a JSON array of strings" in str(err.value) and "3 cells for 2 header columns" in str(err.value)


def test_invalid_settings_are_config_errors(tmp_path, tok):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q"}])
    with pytest.raises(ConfigError, match="did you mean 'gsm8k'"):
        load_examples(DataConfig(preset="gsm8"), src, tok)
    with pytest.raises(ConfigError, match="data.long_prompts"):
        load_examples(DataConfig(long_prompts="cut"), src, tok)


def test_reward_columns_repeat_per_group(tmp_path, tok):
    src = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS[:2])
    examples = load_examples(DataConfig(preset="gsm8k"), src, tok)
    columns = reward_columns(examples, repeat=2)
    assert columns["answer"] == ["72", "72", "10", "10"]  # the gold, not the raw "answer" text
    assert columns["question"] == [GSM8K_ROWS[0]["question"]] * 2 + [GSM8K_ROWS[1]["question"]] * 2
    assert set(columns) == {"answer", "question"}
    assert isinstance(examples[0], Example)

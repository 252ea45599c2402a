"""The RLHF preference presets: UltraFeedback (binarized) and Anthropic HH-RLHF rows read as
prompts with the chosen response as the demonstration and no gold answer; malformed rows named
by file, row, line and column."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_tokenizer import build_tokenizer

from grouptune.config import DataConfig, load_config
from grouptune.data import DataError, load_examples, load_run_data


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def uf_row(prompt: str, chosen: str, rejected: str = "No idea.") -> dict:
    """A row of HuggingFaceH4/ultrafeedback_binarized (its other columns included)."""
    user = {"role": "user", "content": prompt}
    return {
        "prompt": prompt, "prompt_id": f"id-{len(prompt)}", "score_chosen": 8.0, "score_rejected": 3.0,
        "chosen": [user, {"role": "assistant", "content": chosen}],
        "rejected": [user, {"role": "assistant", "content": rejected}],
        "messages": [user, {"role": "assistant", "content": chosen}],
    }  # fmt: skip


HH_SINGLE = {
    "chosen": "\n\nHuman: What is a good name for a cat?\n\nAssistant: How about Miso?",
    "rejected": "\n\nHuman: What is a good name for a cat?\n\nAssistant: Cats do not need names.",
}
HH_MULTI = {
    "chosen": "\n\nHuman: I want to bake bread.\n\nAssistant: Great! Do you have yeast?\n\nHuman: Yes, dry yeast."
    "\n\nAssistant: Then start by proofing it in warm water.",
    "rejected": "\n\nHuman: I want to bake bread.\n\nAssistant: Great! Do you have yeast?\n\nHuman: Yes, dry yeast."
    "\n\nAssistant: Buy bread instead.",
}


def test_ultrafeedback_prompt_and_chosen_demonstration(tmp_path, tok):
    rows = [uf_row("Write a haiku about rain.", "Soft rain on the roof"), uf_row("Name a prime.", "7 is prime.")]
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    examples = load_examples(DataConfig(preset="ultrafeedback"), path, tok, require=("completion",))
    assert [ex.prompt for ex in examples] == ["Write a haiku about rain.", "Name a prime."]
    assert [ex.completion for ex in examples] == ["Soft rain on the roof", "7 is prime."]
    assert all(ex.answer is None for ex in examples)
    chat = tok.apply_chat_template([{"role": "user", "content": "Name a prime."}], tokenize=False,
                                   add_generation_prompt=True)  # fmt: skip
    assert examples[1].prompt_text == chat
    assert examples[1].row["rejected"][1]["content"] == "No idea."  # every raw column reaches reward functions


def test_ultrafeedback_from_csv_cells(tmp_path, tok):
    path = tmp_path / "uf.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "chosen"])
        writer.writeheader()
        writer.writerow({"prompt": "Say hi.", "chosen": json.dumps(uf_row("Say hi.", "Hi!")["chosen"])})
    (example,) = load_examples(DataConfig(preset="ultrafeedback"), str(path), tok)
    assert (example.prompt, example.completion) == ("Say hi.", "Hi!")


def test_ultrafeedback_malformed_rows_name_row_line_and_column(tmp_path, tok):
    good = uf_row("Name a prime.", "7 is prime.")
    no_reply = {**good, "chosen": good["chosen"][:1]}  # ends with the user's turn
    not_messages = {**good, "chosen": "7 is prime."}
    empty_reply = {**good, "chosen": [good["chosen"][0], {"role": "assistant", "content": "  "}]}
    path = write_jsonl(tmp_path / "uf.jsonl", [good, no_reply, not_messages, empty_reply])
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(preset="ultrafeedback"), path, tok)
    text = str(err.value)
    assert len(err.value.problems) == 3
    assert f"{path}, row 1 (line 2), column 'chosen': the chosen conversation must end with the assistant's turn; " \
           "its last message is 'user'" in text  # fmt: skip
    assert f"{path}, row 2 (line 3), column 'chosen': expected a list of chat messages" in text
    assert f"{path}, row 3 (line 4), column 'chosen': the chosen conversation's last (assistant) message is empty" in text


def test_hh_single_turn_prompt_and_response(tmp_path, tok):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE])
    (example,) = load_examples(DataConfig(preset="hh_rlhf"), path, tok, require=("completion",))
    assert example.prompt == [{"role": "user", "content": "What is a good name for a cat?"}]
    assert example.completion == "How about Miso?"
    assert example.answer is None
    assert example.prompt_text == tok.apply_chat_template(example.prompt, tokenize=False, add_generation_prompt=True)
    assert "Assistant:" not in example.prompt_text and "Miso" not in example.prompt_text


def test_hh_multi_turn_keeps_every_turn_before_the_last_response(tmp_path, tok):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE, HH_MULTI])
    examples = load_examples(DataConfig(preset="hh_rlhf"), path, tok)
    assert examples[1].prompt == [
        {"role": "user", "content": "I want to bake bread."},
        {"role": "assistant", "content": "Great! Do you have yeast?"},
        {"role": "user", "content": "Yes, dry yeast."},
    ]
    assert examples[1].completion == "Then start by proofing it in warm water."
    assert examples[1].prompt_text.count("Great! Do you have yeast?") == 1
    assert "Buy bread" not in examples[1].prompt_text and "proofing" not in examples[1].prompt_text


def test_hh_malformed_rows_name_row_line_and_column(tmp_path, tok):
    rows = [
        HH_SINGLE,
        {"chosen": "\n\nHuman: Hello there, no reply at all", "rejected": ""},
        {"chosen": "Preamble\n\nAssistant: Hi", "rejected": ""},
        {"chosen": "\n\nHuman: Hello\n\nAssistant:   ", "rejected": ""},
        {"chosen": ["not", "a", "transcript"], "rejected": ""},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_examples(DataConfig(preset="hh_rlhf"), path, tok)
    text = str(err.value)
    assert [(p.row, p.line, p.column) for p in err.value.problems] == [(1, 2, "chosen"), (2, 3, "chosen"),
                                                                      (3, 4, "chosen"), (4, 5, "chosen")]  # fmt: skip
    assert f"{path}, row 1 (line 2), column 'chosen': no '\\n\\nAssistant:' turn in the transcript" in text
    assert "row 2 (line 3), column 'chosen': text before the first '\\n\\nHuman:' turn: 'Preamble'" in text
    assert "row 3 (line 4), column 'chosen': the final '\\n\\nAssistant:' response is empty" in text
    assert "row 4 (line 5), column 'chosen': expected a transcript" in text and "got list" in text


def test_a_missing_chosen_column_is_named_once(tmp_path, tok):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"choosen": HH_SINGLE["chosen"]}])
    with pytest.raises(DataError, match=r"column 'chosen': column not found; did you mean 'choosen'") as err:
        load_examples(DataConfig(preset="hh_rlhf"), path, tok)
    assert len(err.value.problems) == 1


def test_preference_presets_refuse_a_verifier_but_train_with_a_reward_model_or_function(tmp_path, tok):
    data = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE, HH_MULTI])
    verifier = load_config(overrides={"data.train": data, "data.preset": "hh_rlhf", "reward.functions": ["math"]})
    with pytest.raises(DataError, match=r"preset 'hh_rlhf' has no gold answers for a verifier to judge: score it "
                                        r"with a reward model \(rm:PATH\)"):  # fmt: skip
        load_run_data(verifier, tok, 1, [SimpleNamespace(name="math", fn=None)])
    user_fn = load_config(overrides={"data.train": data, "data.preset": "hh_rlhf", "reward.functions": ["rewards.py:f"]})
    user = [SimpleNamespace(name="rewards.py:f", fn=None)]
    train, _, _ = load_run_data(user_fn, tok, 1, user)  # a GFT-style method: one demonstration per group
    assert [ex.completion for ex in train] == ["How about Miso?", "Then start by proofing it in warm water."]

"""The character tokenizer: one token per character, exact round trip, HF save/load, chat template."""

from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from grouptune.testbed import arithmetic
from grouptune.testbed.tokenizer import CHARACTERS, build_tokenizer

TOK = build_tokenizer()


def test_task_strings_round_trip_one_token_per_character():
    for row in arithmetic.generate_split(100, seed=0) + arithmetic.generate_split(
        50, seed=0, difficulty="hard"
    ):
        for s in [
            row["prompt"],
            row["completion"],
            row["prompt"] + row["completion"],
            *row["teacher_completions"],
        ]:
            ids = TOK(s, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(s) and TOK.unk_token_id not in ids
            assert TOK.decode(ids) == s


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="".join(CHARACTERS), max_size=60))
def test_any_string_over_the_alphabet_round_trips(s):
    """Spaces, newlines and runs of them survive: the decoder concatenates, it adds nothing."""
    assert TOK.decode(TOK(s, add_special_tokens=False)["input_ids"]) == s


def test_special_tokens():
    assert (TOK.pad_token, TOK.pad_token_id) == ("<pad>", 0)
    assert (TOK.eos_token, TOK.eos_token_id) == ("</s>", 1)
    assert TOK.bos_token is None
    ids = TOK("12+3</s>", add_special_tokens=True)["input_ids"]
    assert ids == TOK("12+3", add_special_tokens=False)["input_ids"] + [TOK.eos_token_id]  # nothing added
    assert TOK.decode(ids, skip_special_tokens=True) == "12+3"
    assert TOK("x")["input_ids"] == [TOK.unk_token_id]


def test_chat_template_renders_the_string_prompt():
    row = arithmetic.generate_split(1, seed=0)[0]
    expr = row["prompt"].removeprefix("Q:").removesuffix("\nA:")
    msgs = [{"role": "user", "content": expr}]
    assert TOK.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == row["prompt"]
    full = TOK.apply_chat_template(
        msgs + [{"role": "assistant", "content": row["completion"]}], tokenize=False
    )
    assert full == row["prompt"] + row["completion"] + "</s>"


def test_save_and_reload_with_auto_tokenizer(tmp_path):
    TOK.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    s = "Q:347+85-129\nA:347+85=432\n432-129=303\n#### 303"
    assert tok(s)["input_ids"] == TOK(s)["input_ids"]
    assert tok.decode(tok(s)["input_ids"]) == s
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    assert (
        tok.apply_chat_template(
            [{"role": "user", "content": "1+2"}], tokenize=False, add_generation_prompt=True
        )
        == "Q:1+2\nA:"
    )

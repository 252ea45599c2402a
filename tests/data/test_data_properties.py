"""Property tests: whatever rows or bytes a data file holds, ``load_examples`` returns valid
``Example``s or raises the project's own ``DataError`` — never another exception."""

from __future__ import annotations

import json
import math

import pytest
from helpers_tokenizer import build_tokenizer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from grouptune.config import DataConfig
from grouptune.data import DataError, Example, Problem, load_examples

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKENIZERS = {True: build_tokenizer(), False: build_tokenizer(chat_template=False)}

leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_value = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
message = st.fixed_dictionaries(
    {}, optional={"role": st.sampled_from(["user", "system", "assistant"]) | leaf, "content": st.text(max_size=30) | leaf}
)
prompt = st.text(max_size=60) | st.lists(message, max_size=3) | json_value
gold_text = st.sampled_from(["#### 72", "x #### 1,000", "#### ", "####five", "\\boxed{\\frac12}", "\\boxed{", "42", ""])
answer = gold_text | st.text(max_size=20) | json_value
solution = st.builds(lambda a, b: f"{a}\\boxed{{{b}}}", st.text(max_size=10), st.text(max_size=10)) | answer
row = st.fixed_dictionaries(
    {},
    optional={
        "prompt": prompt,
        "question": prompt,
        "problem": prompt,
        "answer": answer,
        "solution": solution,
        "completion": st.text(max_size=30) | json_value,
        "teacher_completions": st.lists(st.text(max_size=10), max_size=3) | json_value,
        "reward_model": st.fixed_dictionaries({}, optional={"ground_truth": answer}) | json_value,
    },
)
configs = st.builds(
    DataConfig,
    preset=st.sampled_from(["", "gsm8k", "math", "math500", "numina", "dapo_math"]),
    prompt_suffix=st.sampled_from(["", "Think.", "\nBox it."]),
    chat_template=st.booleans(),
    max_prompt_length=st.integers(1, 64) | st.integers(64, 256),
    long_prompts=st.sampled_from(["drop", "truncate", "error"]),
)
requires = st.lists(st.sampled_from(["answer", "completion", "teacher_completions"]), unique=True, max_size=3)

# Well-formed rows of each layout, so that the success path is exercised too.
some_text = st.text(min_size=1, max_size=40).filter(str.strip)
chat = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": some_text}),
                min_size=1, max_size=3).map(lambda ms: ms + [{"role": "user", "content": "Go."}])  # fmt: skip
boxed = st.builds(lambda a, b: f"{a} \\boxed{{{b}}}", st.text(max_size=20), some_text.filter(lambda t: "{" not in t))
teachers = st.lists(st.text(max_size=20), max_size=3)
GOOD_ROWS = {
    "": st.fixed_dictionaries({"prompt": some_text | chat},
                              optional={"answer": some_text, "completion": st.text(max_size=20), "teacher_completions": teachers}),
    "gsm8k": st.fixed_dictionaries({"question": some_text, "answer": st.builds(
        lambda body, n: f"{body}\n#### {n:,}", st.text(max_size=30), st.integers(-(10**6), 10**6))}),
    "math": st.fixed_dictionaries({"problem": some_text, "solution": boxed}, optional={"answer": some_text}),
    "numina": st.fixed_dictionaries({"problem": some_text, "solution": boxed}),
    "dapo_math": st.fixed_dictionaries({"prompt": chat, "reward_model": st.fixed_dictionaries({"ground_truth": some_text})}),
}  # fmt: skip
GOOD_ROWS["math500"] = GOOD_ROWS["math"]


@st.composite
def mostly_good_datasets(draw):
    """A config and rows of its layout; half of the time one random (likely malformed) row is mixed in."""
    cfg = draw(configs)
    rows = draw(st.lists(GOOD_ROWS[cfg.preset], min_size=1, max_size=4))
    if draw(st.booleans()):
        rows.insert(draw(st.integers(0, len(rows))), draw(row | json_value))
    return cfg, rows


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("props")


def assert_valid_or_data_error(cfg: DataConfig, path, tokenizer, require=()) -> None:
    try:
        examples = load_examples(cfg, str(path), tokenizer, require=require)
    except DataError as err:
        event("DataError")
        assert err.problems and all(isinstance(p, Problem) for p in err.problems)
        assert str(err).startswith(f"{len(err.problems)} problem(s) in the data:")
        return
    event("loaded")
    assert examples, "an empty result must be a DataError"
    assert examples.report.n_loaded == len(examples) <= examples.report.n_rows
    assert [ex.index for ex in examples] == sorted({ex.index for ex in examples})
    for ex in examples:
        assert isinstance(ex, Example)
        assert isinstance(ex.prompt, str) or (
            isinstance(ex.prompt, list) and all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in ex.prompt)
        )
        assert isinstance(ex.prompt_text, str) and ex.prompt_text
        assert all(isinstance(i, int) for i in ex.prompt_ids) and 0 < len(ex.prompt_ids) <= cfg.max_prompt_length
        assert ex.answer is None or (isinstance(ex.answer, str) and ex.answer.strip())
        assert ex.completion is None or isinstance(ex.completion, str)
        assert isinstance(ex.teacher_completions, list) and all(isinstance(t, str) for t in ex.teacher_completions)
        assert isinstance(ex.row, dict)
        if cfg.preset or "answer" in require:
            assert ex.answer is not None
    if cfg.long_prompts != "truncate":
        for ex in examples:
            assert ex.prompt_ids == tokenizer(ex.prompt_text, add_special_tokens=False)["input_ids"]


@SETTINGS
@given(dataset=mostly_good_datasets(), templated=st.booleans())
def test_mostly_good_jsonl_rows(workdir, dataset, templated):
    cfg, rows = dataset
    path = workdir / "good.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert_valid_or_data_error(cfg, path, TOKENIZERS[templated])


@SETTINGS
@given(rows=st.lists(row | json_value, max_size=6), cfg=configs, require=requires, templated=st.booleans())
def test_random_jsonl_rows(workdir, rows, cfg, require, templated):
    path = workdir / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN/Infinity as Python's json writes them
    assert_valid_or_data_error(cfg, path, TOKENIZERS[templated], require)


@SETTINGS
@given(
    header=st.lists(st.sampled_from(["prompt", "answer", "completion", "teacher_completions", "x"]), max_size=5),
    cells=st.lists(st.lists(st.text(max_size=15) | st.just('["a", "b"]') | st.just('[{"role": "user", "content": "hi"}]'),
                            max_size=6), max_size=5),
    cfg=configs,
)  # fmt: skip
def test_random_csv_tables(workdir, header, cells, cfg):
    import csv

    path = workdir / "table.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(cells)
    assert_valid_or_data_error(cfg, path, TOKENIZERS[True])


@SETTINGS
@given(text=st.text(max_size=200), suffix=st.sampled_from([".jsonl", ".json", ".csv"]), cfg=configs)
def test_arbitrary_file_contents(workdir, text, suffix, cfg):
    path = workdir / f"raw{suffix}"
    path.write_text(text)
    assert_valid_or_data_error(cfg, path, TOKENIZERS[True])


@SETTINGS
@given(data=st.binary(max_size=100))
def test_arbitrary_bytes(workdir, data):
    path = workdir / "bytes.jsonl"
    path.write_bytes(data)
    assert_valid_or_data_error(DataConfig(), path, TOKENIZERS[True])


def test_nan_answers_are_rejected(workdir):
    path = workdir / "nan.jsonl"
    path.write_text(json.dumps({"prompt": "q", "answer": math.nan}) + "\n")
    with pytest.raises(DataError, match="column 'answer': expected a string, got float nan"):
        load_examples(DataConfig(), str(path), TOKENIZERS[True])

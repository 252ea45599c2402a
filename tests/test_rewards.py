"""Reward functions: math-verify equivalences, GSM8K matching, user functions by path, reward
models, time limits in and out of the main thread, and how a batch's rewards are combined."""

from __future__ import annotations

import logging
import math
import threading

import pytest
import torch

from grouptune.config import ConfigError, RewardConfig
from grouptune.rewards import (
    GSM8KReward,
    MathReward,
    RewardError,
    RewardFunction,
    build_reward_functions,
    compute_rewards,
    exact_match_reward,
)

PATHOLOGICAL = "\\boxed{9^{9^{9^{9}}}}"  # sympy tries to evaluate a number with ~10^8 digits


def run_in_thread(fn, *args, **kwargs):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn(*args, **kwargs)))
    thread.start()
    thread.join()
    return out["value"]


# ----------------------------------------------------------------------------- math


MATH_CASES = [  # (gold, completion, reward)
    ("\\frac{1}{2}", "So the answer is $\\boxed{0.5}$.", 1.0),
    ("\\frac{1}{2}", "\\boxed{\\dfrac12}", 1.0),
    ("0.5", "\\boxed{\\frac{1}{2}}", 1.0),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\sqrt{2}/2}", 1.0),
    ("\\frac{\\sqrt2}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}", 1.0),
    ("[1, 2)", "\\boxed{[1,2)}", 1.0),
    ("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}", 1.0),
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", 0.0),
    ("[1, 2)", "\\boxed{[1,2]}", 0.0),
    ("72", "\\boxed{72} ... wait, \\boxed{71}", 0.0),  # the last box counts
    ("72", "\\boxed{71} ... wait, \\boxed{72}", 1.0),
    ("72", "The answer is 72.", 0.0),  # no box
    ("72", "\\boxed{72", 0.0),  # cut-off box
]


@pytest.mark.parametrize("gold,completion,reward", MATH_CASES)
def test_math_reward_equivalent_forms(gold, completion, reward):
    assert MathReward()([""], [completion], answer=[gold]) == [reward]


def test_math_reward_unjudged_without_gold():
    assert MathReward()(["", ""], ["\\boxed{1}", "\\boxed{1}"], answer=[None, "  "]) == [None, None]


def test_math_reward_off_the_main_thread_uses_the_worker():
    golds = [g for g, _, _ in MATH_CASES[:9]]
    completions = [c for _, c, _ in MATH_CASES[:9]]
    expected = [r for _, _, r in MATH_CASES[:9]]
    assert run_in_thread(MathReward(), [""] * 9, completions, answer=golds) == expected


def test_math_time_limit_in_the_main_thread(caplog):
    reward = MathReward(timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="grouptune.rewards"):
        assert reward(["", ""], [PATHOLOGICAL, "\\boxed{2}"], answer=["1", "2"]) == [None, 1.0]
    assert "not judged within 0.3 s" in caplog.text


def test_math_time_limit_off_the_main_thread():
    """The worker process is killed on overrun and restarted for the next answer."""
    reward = MathReward(timeout=0.3)
    out = run_in_thread(reward, ["", ""], [PATHOLOGICAL, "\\boxed{\\frac{2}{4}}"], answer=["1", "0.5"])
    assert out == [None, 1.0]


# ----------------------------------------------------------------------------- gsm8k, exact match


def test_gsm8k_strict_and_flexible():
    completions = [
        "48/2 = 24, 48 + 24 = 72\n#### 72",
        "so $1,000 in total.\n#### $1,000",
        "The total is 72 clips.",  # no ####: strict fails, flexible reads 72
        "#### 72.00",
        "#### 71\nActually 72.",  # strict reads the ####, flexible the last number
    ]
    golds = ["Natalia ... #### 72", "1000", "#### 72", "72", "#### 72"]
    assert GSM8KReward("strict")([""] * 5, completions, answer=golds) == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert GSM8KReward("flexible")([""] * 5, completions, answer=golds) == [1.0, 1.0, 1.0, 1.0, 1.0]


def test_gsm8k_unjudged_when_gold_is_not_a_number():
    assert GSM8KReward()(["", ""], ["#### 3", "#### 3"], answer=["three", None]) == [None, None]


def test_exact_match_strips_whitespace():
    assert exact_match_reward(["", "", ""], [" Paris\n", "paris", "x"], answer=["Paris", "Paris", None]) == [
        1.0,
        0.0,
        None,
    ]


# ----------------------------------------------------------------------------- building


def test_build_builtins_with_weights():
    fns = build_reward_functions(RewardConfig(functions=["math", "gsm8k", "exact_match"], weights=[1, 0.5, 0]))
    assert [(f.name, f.weight) for f in fns] == [("math", 1.0), ("gsm8k", 0.5), ("exact_match", 0.0)]
    assert all(isinstance(f, RewardFunction) for f in fns)
    assert [f.weight for f in build_reward_functions(RewardConfig(functions=["math", "gsm8k"]))] == [1.0, 1.0]


@pytest.mark.parametrize(
    "cfg,match",
    [
        (RewardConfig(functions=["maths"]), r"reward.functions\[0\]: unknown reward function 'maths' \(did you mean 'math'\?\)"),
        (RewardConfig(functions=["math", "gsm8k"], weights=[1.0]), r"reward.weights has 1 values for 2 reward functions \(math, gsm8k\)"),
        (RewardConfig(functions=["math"], weights=[float("nan")]), r"reward.weights\[0\] must be a finite number"),
        (RewardConfig(functions=["math"], weights=[0]), "all zero"),
        (RewardConfig(functions=["math", "math"]), "twice"),
        (RewardConfig(on_error="ignore"), "reward.on_error"),
        (RewardConfig(gsm8k_mode="loose"), "reward.gsm8k_mode"),
        (RewardConfig(math_timeout=0), "reward.math_timeout"),
        (RewardConfig(functions=["missing_file.py:score"]), r"reward.functions\[0\]: file not found"),
        (RewardConfig(functions=["no_such_module_xyz:score"]), "cannot import 'no_such_module_xyz'"),
        (RewardConfig(functions=["rm:/nonexistent/rm"]), "cannot load reward model"),
    ],
)
def test_build_errors_name_the_setting(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_reward_functions(cfg)


USER_MODULE = '''
from dataclasses import dataclass

@dataclass
class Seen:  # a dataclass needs its module registered in sys.modules
    n: int

def length_penalty(prompts, completions, answer, difficulty, **kwargs):
    return [-len(c) / 100 * d for c, d in zip(completions, difficulty)]

def says_hello(prompts, completions, **kwargs):
    return [1.0 if "hello" in c else 0.0 for c in completions]
'''


def test_user_function_from_a_file(tmp_path):
    (tmp_path / "my_rewards.py").write_text(USER_MODULE)
    spec = f"{tmp_path / 'my_rewards.py'}:length_penalty"
    (fn,) = build_reward_functions(RewardConfig(functions=[spec]))
    assert fn.name == spec
    result = compute_rewards([fn], ["p", "p"], ["abcd", "ab"], {"answer": [None, None], "difficulty": [1, 3]})
    torch.testing.assert_close(result.total, torch.tensor([-0.04, -0.06]), rtol=0, atol=1e-7)


def test_user_function_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "team_rewards_mod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    (fn,) = build_reward_functions(RewardConfig(functions=["team_rewards_mod:says_hello"]))
    assert fn.fn([""], ["well hello"]) == [1.0]
    with pytest.raises(ConfigError, match="has no attribute 'say_hello'; did you mean says_hello"):
        build_reward_functions(RewardConfig(functions=["team_rewards_mod:say_hello"]))


def test_reward_model_scores_prompt_plus_completion(tmp_path):
    from helpers_tokenizer import build_tokenizer
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=tok.pad_token_id)  # fmt: skip
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    (rm,) = build_reward_functions(RewardConfig(functions=[f"rm:{tmp_path}"]))
    prompts, completions = ["What is 1+1? ", "Say hi. "], ["It is 2.", "hi there, how are you doing today"]
    scores = rm.fn(prompts, completions)
    with torch.no_grad():
        expected = [model(**tok(p + c, return_tensors="pt")).logits[0, 0].item() for p, c in zip(prompts, completions)]
    assert scores == pytest.approx(expected, abs=1e-5)  # batched with padding == one by one


# ----------------------------------------------------------------------------- combining


def constant(values):
    def fn(prompts, completions, **columns):
        return list(values)

    return fn


def test_weighted_sum_and_unjudged_rows():
    """total = 1.0 * a + 0.5 * b; row 1 has b = None -> NaN; the weight-0 function's None does not count."""
    fns = [
        RewardFunction("a", constant([1.0, 0.0, 1.0])),
        RewardFunction("b", constant([2.0, None, 0.0]), 0.5),
        RewardFunction("logged_only", constant([None, 5.0, 5.0]), 0.0),
    ]
    result = compute_rewards(fns, ["p"] * 3, ["c"] * 3, {"answer": ["1"] * 3})
    assert result.total.dtype == torch.float32
    torch.testing.assert_close(result.total, torch.tensor([2.0, math.nan, 1.0]), equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(result.per_function["b"], torch.tensor([2.0, math.nan, 0.0]), equal_nan=True)
    torch.testing.assert_close(result.per_function["logged_only"], torch.tensor([math.nan, 5.0, 5.0]), equal_nan=True)
    assert result.unjudged.tolist() == [False, True, False]
    assert result.failures == {}


def test_columns_reach_the_function():
    seen = {}

    def spy(prompts, completions, **columns):
        seen.update(columns, prompts=prompts, completions=completions)
        return [0.0] * len(completions)

    compute_rewards([RewardFunction("spy", spy)], ["p1", "p2"], ["c1", "c2"], {"answer": ["1", "2"], "level": [3, 4]})
    assert seen == {"answer": ["1", "2"], "level": [3, 4], "prompts": ["p1", "p2"], "completions": ["c1", "c2"]}


def fails_on_long(prompts, completions, **columns):
    return [1.0 / (10 - len(c)) for c in completions]  # ZeroDivisionError on a 10-character completion


def test_raising_function_names_function_and_row():
    fns = [RewardFunction("math", constant([1.0] * 3)), RewardFunction("fragile", fails_on_long)]
    with pytest.raises(RewardError) as err:
        compute_rewards(fns, ["p"] * 3, ["ok", "0123456789", "fine"], {"answer": [None] * 3}, row_ids=[40, 41, 42])
    message = str(err.value)
    assert "reward function 'fragile' raised ZeroDivisionError" in message
    assert "row 41 (batch index 1)" in message and "'0123456789'" in message
    assert isinstance(err.value.__cause__, ZeroDivisionError)


def test_on_error_unjudged_logs_and_marks_rows(caplog):
    fns = [RewardFunction("math", constant([1.0, 0.0])), RewardFunction("fragile", fails_on_long)]
    with caplog.at_level(logging.WARNING, logger="grouptune.rewards"):
        result = compute_rewards(fns, ["p", "p"], ["0123456789", "ok"], {}, on_error="unjudged")
    assert result.unjudged.tolist() == [True, False]  # only the row it fails on
    torch.testing.assert_close(result.per_function["fragile"], torch.tensor([math.nan, 1 / 8]), equal_nan=True)
    torch.testing.assert_close(result.per_function["math"], torch.tensor([1.0, 0.0]))
    assert "fragile" in result.failures and "batch index 0" in result.failures["fragile"]
    (record,) = [r for r in caplog.records if "fragile" in r.getMessage()]
    assert "1 of 2 rows count as unjudged" in record.getMessage() and record.exc_info is not None
    assert "ZeroDivisionError" in caplog.text  # the traceback is in the log


@pytest.mark.parametrize(
    "values,match",
    [
        ([1.0, math.nan], r"'bad' returned nan for row 8 \(batch index 1\); return None to mark"),
        ([math.inf, 1.0], r"'bad' returned inf for row 7 \(batch index 0\)"),
        ([1.0], "'bad' returned 1 values for 2 completions"),
        (["1.0", 1.0], r"'bad' returned '1.0' \(str\) for row 7"),
        (0.5, "'bad' returned float, expected a list of 2 floats"),
    ],
)
def test_invalid_outputs_are_errors(values, match):
    fn = RewardFunction("bad", lambda prompts, completions, **c: values)
    with pytest.raises(RewardError, match=match):
        compute_rewards([fn], ["p", "p"], ["c", "c"], {}, row_ids=[7, 8])
    with pytest.raises(RewardError, match=match):  # a broken contract, not a row it cannot judge
        compute_rewards([fn], ["p", "p"], ["c", "c"], {}, row_ids=[7, 8], on_error="unjudged")


def test_misaligned_batches_are_caller_errors():
    fn = RewardFunction("a", constant([1.0, 1.0]))
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 completions"):
        compute_rewards([fn], ["p", "p"], ["c", "c"], {"answer": ["1"]})
    with pytest.raises(ValueError, match="1 prompts for 2 completions"):
        compute_rewards([fn], ["p"], ["c", "c"], {})
    with pytest.raises(ValueError, match="no reward functions"):
        compute_rewards([], ["p"], ["c"], {})


def test_end_to_end_math_batch_from_config():
    fns = build_reward_functions(RewardConfig(functions=["math"]))
    completions = ["\\boxed{0.5}", "\\boxed{1/3}", "no box", "\\boxed{2}"]
    result = compute_rewards(fns, [""] * 4, completions, {"answer": ["\\frac12", "\\frac12", "\\frac12", None]})
    torch.testing.assert_close(result.total, torch.tensor([1.0, 0.0, 0.0, math.nan]), equal_nan=True)

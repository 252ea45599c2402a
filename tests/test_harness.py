"""The Qwen2.5-Math harness's answer rules (grouptune.harness) and the ``qwen_math`` / ``choice`` verifiers.

Every case here was judged by the harness itself (QwenLM/Qwen2.5-Math ``evaluation/parser.py``
``extract_answer`` + ``strip_string`` and ``grader.py`` ``math_equal``, commit
a45202bd16f1ec06f433442dc1152d0074773465, run outside this repository) and by math-verify on
the same boxed answer. docs/evaluation.md#answer-checking lists the same cases.
"""

from __future__ import annotations

import pytest

from grouptune.answers import math_equal
from grouptune.harness import choice_letter, extract, harness_equal, normalize
from grouptune.rewards import ChoiceReward, QwenMathReward

# (gold, boxed answer): the harness says equal, math-verify alone does not.
HARNESS_ONLY = [
    ("0.25", "25"),  # TabMWP's 25% gold is 0.25; the harness also accepts gold x 100 and gold / 100
    ("5", "500"),
    ("5", "0.05"),
    ("\\{x|-2\\leq x < 1\\}", "\\{x|-2\\le x<1\\}"),  # set-builder sets: compared as normalised text
    ("\\frac{\\sqrt{30}}{8}", "\\frac{\\sqrt30}{8}"),  # \sqrt30 -> \sqrt{30}
    ("B", "B: 5"),  # a gold letter: the letter the answer names
    ("0.3333", "\\frac13"),  # numbers equal within a relative 1e-4
    ("\\$18.90", "18.9"),  # gold with \$ (math-verify cannot read it: unjudged)
    ("\\$32,348", "32348"),
    ("2", "two"),  # word numbers
]

# (gold, boxed answer): math-verify says equal, the harness does not; qwen_math accepts them too.
MATH_VERIFY_ONLY = [
    ("1000", "1{,}000"),
    ("(45,2),(-10,-9)", "(-10,-9),(45,2)"),  # several answers in another order
    ("7,-7", "-7,7"),
    ("7,-7", "\\pm 7"),
    ("(-\\infty, \\infty)", "\\mathbb{R}"),
    ("f(x)=2 x", "2x"),
    ("145solution:", "145"),  # a Gaokao2023En gold with trailing text
    ("[2,5]", "x \\in [2,5]"),
    ("6", "6\\text{ cm}^2"),
    ("2,3", "3, 2"),
    ("1\\frac{1}{2}", "\\frac{3}{2}"),  # mixed number
    ("1.6", "1.6 \\mathrm{~cm}"),  # Minerva Math: the harness keeps units there
]

# (gold, boxed answer): both say equal.
BOTH = [
    ("10", "10\\text{ cm}"), ("10", "10^\\circ"), ("10", "10\\%"), ("10", "\\$10"), ("12", "12 miles"),
    ("[2,+\\infty)", "[2,\\infty)"), ("\\text{(C)}", "C"), ("x=3", "3"), ("3", "k = 4 - 1"),
    ("1,000", "1000"), ("\\frac{1}{2}", "\\dfrac12"), ("\\frac{1}{2}", "1/2"), ("27.0", "27"), ("40", "40.00"),
    ("\\text{Evelyn}", "Evelyn"), ("\\frac{4-6 i}{13}", "\\frac{4}{13}-\\frac{6}{13}i"), ("0.5", ".5"),
    ("(2, \\infty)", "[2,\\infty)"),  # the harness compares intervals element by element: ends open or not
]  # fmt: skip

# (gold, boxed answer): both say different.
NEITHER = [("[2,+\\infty)", "x\\ge 2"), ("90^\\circ", "\\frac{\\pi}{2}"), ("3.14", "\\pi"), ("a+b", "c+b"), ("5", "6")]


@pytest.mark.parametrize(("gold", "answer"), HARNESS_ONLY)
def test_harness_accepts_what_math_verify_alone_does_not(gold, answer):
    assert harness_equal(gold, answer)
    assert not math_equal(gold, answer)
    assert QwenMathReward().judge(f"so $\\boxed{{{answer}}}$", gold) == 1.0


@pytest.mark.parametrize(("gold", "answer"), MATH_VERIFY_ONLY)
def test_math_verify_accepts_what_the_harness_does_not(gold, answer):
    units = gold != "1.6"
    assert not harness_equal(gold, answer, units=units)
    assert math_equal(gold, answer)
    assert QwenMathReward(units=units).judge(f"so $\\boxed{{{answer}}}$", gold) == 1.0


@pytest.mark.parametrize(("gold", "answer"), BOTH)
def test_both_accept(gold, answer):
    assert QwenMathReward().judge(f"\\boxed{{{answer}}}", gold) == 1.0


@pytest.mark.parametrize(("gold", "answer"), NEITHER)
def test_neither_accepts(gold, answer):
    assert not harness_equal(gold, answer)
    assert QwenMathReward().judge(f"\\boxed{{{answer}}}", gold) == 0.0


def test_math_verify_reads_every_set_builder_set_alike_so_qwen_math_does_not_ask_it():
    gold, other = "\\{x|-2\\leq x < 1\\}", "\\{x|-2\\le x\\le 1\\}"
    assert math_equal(gold, other)  # math-verify's mistake: both parse to 1
    assert QwenMathReward().judge(f"\\boxed{{{other}}}", gold) == 0.0


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("so $\\boxed{\\frac{1}{2}}$. Done", "\\frac{1}{2}"),
        ("\\boxed 5 apples", "5 apples"),
        ("Thus the answer is 42.", "42"),
        ("so the final answer is 7", "7"),
        ("The final answer is $3.5$. I hope it is correct.", "3.5"),
        ("We get 3, then 4, so 12 in all", "12"),
        ("no number here", ""),
        ("two boxes \\boxed{1} and \\boxed{2}", "2"),
    ],
)
def test_extract_reads_the_answer_as_the_harness_does(completion, answer):
    assert extract(completion) == answer


def test_unboxed_answers_count_as_in_the_harness():
    reward = QwenMathReward()
    assert reward.judge("She has 3 + 4 = 7 apples.", "7") == 1.0  # the last number
    assert reward.judge("The answer is 8.", "7") == 0.0
    assert reward.judge("", "7") == 0.0
    assert reward.judge("\\boxed{7}", None) is None and reward.judge("\\boxed{7}", " ") is None


@pytest.mark.parametrize(
    "completion",
    ["\\boxed{B}", "\\boxed{(B)}", "\\boxed{\\text{B}}", "\\boxed{\\textbf{(B)}}", "\\boxed{b}", "\\boxed{B. 42}",
     "\\boxed{B) 42}", "The answer is (B).", "the answer is b", "The correct choice is: B", "so **B** it is",
     "A is wrong, C is wrong, hence B", "\\boxed{\\mathrm{B}}"],
)  # fmt: skip
def test_choice_letter_in_every_spelling(completion):
    assert choice_letter(completion) == "B"
    assert ChoiceReward()([""], [completion], answer=["B"]) == [1.0]
    assert ChoiceReward()([""], [completion], answer=["C"]) == [0.0]


def test_choice_letter_prefers_the_box_and_ignores_the_article_a():
    assert choice_letter("The answer is (C), so \\boxed{D}") == "D"
    assert choice_letter("This is a hard one; I pick (d)") is None  # no capital: the harness would read "A"
    assert choice_letter("\\boxed{42}") is None
    reward = ChoiceReward()
    assert reward([""], ["\\boxed{A}"], answer=[3]) == [None]  # not a letter: unjudged
    assert reward.gold_problem("E") is None and "A-E" in reward.gold_problem("F")


def test_normalize_examples():
    assert normalize("\\dfrac12") == "\\frac{1}{2}"
    assert normalize("10\\text{ cm}") == "10"
    assert normalize("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize("x\\in [2, 5]") == "[2,5]" and normalize("x \\in [2, 5]") == "x\\in[2,5]"  # as the harness
    assert normalize("2.000") == "2" and normalize("2.000 km") == "2" and normalize(".5") == "0.5"
    assert normalize("12 miles", units=False) == "12miles"

"""The arithmetic generator: determinism, correct gold answers and demonstrations, teacher noise."""

import math
import random
import re

import pytest

from grouptune.testbed import arithmetic

STEP = re.compile(r"^(\d+)([+-])(\d+)=(\d+)$")


def _steps(completion: str) -> tuple[list[tuple[int, str, int, int]], str]:
    *lines, final = completion.split("\n")
    steps = []
    for line in lines:
        m = STEP.match(line)
        assert m, f"malformed step {line!r} in {completion!r}"
        steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    assert final.startswith("#### ")
    return steps, final.removeprefix("#### ")


def _expr(prompt: str) -> str:
    assert prompt.startswith("Q:") and prompt.endswith("\nA:")
    return prompt[2:-3]


def test_same_seed_same_rows_other_seed_other_rows():
    a = arithmetic.generate_split(200, seed=7)
    assert a == arithmetic.generate_split(200, seed=7)
    assert a != arithmetic.generate_split(200, seed=8)
    assert a != arithmetic.generate_split(200, seed=7, difficulty="hard")


@pytest.mark.parametrize("difficulty", sorted(arithmetic.DIFFICULTIES))
def test_gold_answer_and_expert_demonstration_are_correct(difficulty):
    rows = arithmetic.generate_split(100 if difficulty == "easy" else 500, seed=1, difficulty=difficulty)
    n_terms, digits = arithmetic.DIFFICULTIES[difficulty]
    assert len({r["prompt"] for r in rows}) == len(rows)
    for r in rows:
        expr = _expr(r["prompt"])
        assert r["answer"] == str(eval(expr))  # the expression is digits and +/- only
        terms = [int(t) for t in re.split(r"[+-]", expr)]
        assert len(terms) in n_terms and all(len(str(t)) in digits for t in terms)
        steps, final = _steps(r["completion"])
        assert final == r["answer"] and len(steps) == len(terms) - 1
        total = terms[0]
        for (a, op, b, c), term in zip(steps, terms[1:]):
            assert (a, b) == (total, term) and c == eval(f"{a}{op}{b}") and c >= 0
            total = c


def test_teacher_error_rate_matches_configuration():
    """Each teacher answer is wrong independently with probability p, so over n answers the
    wrong count is Binomial(n, p): with n = 3 * 2000 = 6000 and p = 0.3 its std is
    sqrt(6000 * 0.3 * 0.7) = 35.5; we allow 4 std (a 6e-5 false-alarm chance for a fresh
    seed), i.e. a rate within 0.024 of p -- far tighter than a generator that ignored p.
    """
    n_rows, n_teacher, p = 2000, 3, 0.3
    rows = arithmetic.generate_split(n_rows, seed=3, teacher_error_rate=p, n_teacher=n_teacher)
    answers = [(c, r["answer"]) for r in rows for c in r["teacher_completions"]]
    assert len(answers) == n_rows * n_teacher
    wrong = sum(_steps(c)[1] != gold for c, gold in answers)
    assert abs(wrong - p * len(answers)) <= 4 * math.sqrt(len(answers) * p * (1 - p))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_teacher_error_rate_extremes(p):
    rows = arithmetic.generate_split(300, seed=4, teacher_error_rate=p, n_teacher=2)
    wrong = [_steps(c)[1] != r["answer"] for r in rows for c in r["teacher_completions"]]
    assert sum(wrong) == p * len(wrong)


def test_wrong_teacher_answer_is_one_plausible_slip_carried_through():
    rng = random.Random(0)
    for _ in range(500):
        terms, ops = arithmetic.make_problem(rng, "standard")
        steps = arithmetic.wrong_solution(rng, terms, ops)
        assert steps[-1][3] != arithmetic.evaluate(terms, ops)
        slips = [(a, op, b, c) for a, op, b, c in steps if c != eval(f"{a}{op}{b}")]
        assert len(slips) == 1  # every other step is computed right from the wrong partial result
        a, op, b, c = slips[0]
        assert c >= 0 and abs(c - eval(f"{a}{op}{b}")) in {10**k for k in range(5)}


def test_dropped_carry_and_borrow():
    # 347+85=432: 7+5 carries into the tens, 4+8+1 into the hundreds
    assert arithmetic._dropped_carries(347, "+", 85) == [422, 332]
    assert arithmetic._dropped_carries(432, "-", 129) == [313]  # 2-9 borrows
    assert arithmetic._dropped_carries(123, "+", 456) == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown difficulty"):
        arithmetic.generate_split(1, seed=0, difficulty="medium")
    with pytest.raises(ValueError, match="teacher_error_rate"):
        arithmetic.generate_split(1, seed=0, teacher_error_rate=1.5)
    with pytest.raises(ValueError, match="distinct"):  # two one-digit terms: fewer than 200 problems
        arithmetic.generate_split(1000, seed=0, difficulty="easy")


def test_jsonl_round_trip(tmp_path):
    rows = arithmetic.generate_split(20, seed=5)
    arithmetic.write_jsonl(rows, tmp_path / "d" / "x.jsonl")
    assert arithmetic.read_jsonl(tmp_path / "d" / "x.jsonl") == rows


def test_careless_student_forgets_every_carry_and_borrow():
    assert arithmetic.careless(95, "+", 17) == 102  # 5+7 -> 2 (carry lost), 9+1 -> 10
    assert arithmetic.careless(95, "+", 5) == 90
    assert arithmetic.careless(52, "-", 17) == 45  # 2-7 -> 5 (borrow not paid), 5-1 -> 4
    assert arithmetic.careless(347, "+", 52) == 399  # nothing carries: right
    rng = random.Random(1)
    for _ in range(2000):
        a, b, op = rng.randrange(1000), rng.randrange(1000), rng.choice("+-")
        a, b = (b, a) if op == "-" and b > a else (a, b)
        if len(str(eval(f"{a}{op}{b}"))) > len(str(max(a, b))):
            continue  # the top column's carry is written in full, so it is not "dropped"
        dropped = arithmetic._dropped_carries(a, op, b)
        assert (arithmetic.careless(a, op, b) == eval(f"{a}{op}{b}")) == (not dropped)
        if len(dropped) == 1:
            assert arithmetic.careless(a, op, b) == dropped[0]
    steps = arithmetic.careless_solution([95, 17, 3], ["+", "-"])
    assert arithmetic.format_solution(steps) == "95+17=102\n102-3=109\n#### 109"
    assert arithmetic.careless_solution([5, 90, 99], ["+", "-"]) is None  # 95-99 would go negative

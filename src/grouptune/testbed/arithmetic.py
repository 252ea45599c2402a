"""Multi-digit arithmetic with short worked solutions: the testbed's task.

A problem is a chain of additions and subtractions, e.g. ``347+85-129``. The worked
solution computes one partial sum per line and ends GSM8K-style::

    prompt      Q:347+85-129\\nA:
    completion  347+85=432\\n432-129=303\\n#### 303

so the standard ``#### n`` reward scores it. Running totals never go below zero.

Besides the expert demonstration (the correct solution) every row carries
``teacher_completions``: answers of a simulated noisy teacher. Each one is wrong with
probability ``teacher_error_rate``; a wrong one makes a single plausible slip in one
step -- a dropped carry or borrow, or one digit off by one -- and then computes the
remaining steps correctly from the wrong partial result, so the final answer is wrong.
``careless_solution`` is a student who forgets every carry and borrow; the base model's
pretraining corpus contains such solutions (see ``grouptune.testbed.pretrain``).

Everything is a pure function of a ``random.Random``; ``generate_split`` is
deterministic from its seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

#: (number of terms, digits per term) for each difficulty.
DIFFICULTIES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "easy": ((2,), (1,)),
    "standard": ((2, 3), (1, 2)),  # the in-distribution task
    "hard": ((3,), (2, 3)),  # longer numbers, always three terms
}

PROMPT_TEMPLATE = "Q:{expr}\nA:"


def _number(rng: random.Random, digits: int, upper: int | None = None) -> int:
    lo = 10 ** (digits - 1) if digits > 1 else 0
    hi = 10**digits - 1
    if upper is not None:
        hi = min(hi, upper)
    return rng.randint(lo, hi)


def make_problem(rng: random.Random, difficulty: str = "standard") -> tuple[list[int], list[str]]:
    """Draw ``(terms, ops)`` with ``len(ops) == len(terms) - 1``; no running total is negative.

    A subtraction is drawn only when some number of the drawn size fits under the
    running total; otherwise the step becomes an addition.
    """
    n_terms_choices, digit_choices = DIFFICULTIES[difficulty]
    n_terms = rng.choice(n_terms_choices)
    terms = [_number(rng, rng.choice(digit_choices))]
    ops: list[str] = []
    total = terms[0]
    for _ in range(n_terms - 1):
        digits = rng.choice(digit_choices)
        op = rng.choice("+-")
        smallest = 10 ** (digits - 1) if digits > 1 else 0
        if op == "-" and total < smallest:
            op = "+"
        b = _number(rng, digits, upper=total if op == "-" else None)
        total = total + b if op == "+" else total - b
        terms.append(b)
        ops.append(op)
    return terms, ops


def expression(terms: list[int], ops: list[str]) -> str:
    return str(terms[0]) + "".join(op + str(b) for op, b in zip(ops, terms[1:]))


def evaluate(terms: list[int], ops: list[str]) -> int:
    total = terms[0]
    for op, b in zip(ops, terms[1:]):
        total = total + b if op == "+" else total - b
    return total


def format_solution(steps: list[tuple[int, str, int, int]]) -> str:
    """Render ``[(a, op, b, result), ...]`` as the worked solution ending in ``#### result``."""
    lines = [f"{a}{op}{b}={c}" for a, op, b, c in steps]
    return "\n".join(lines) + f"\n#### {steps[-1][3]}"


def solve(
    terms: list[int], ops: list[str], slip: tuple[int, int] | None = None
) -> list[tuple[int, str, int, int]]:
    """Partial-sum steps; ``slip = (step, wrong_result)`` replaces one step's result."""
    steps = []
    total = terms[0]
    for i, (op, b) in enumerate(zip(ops, terms[1:])):
        result = total + b if op == "+" else total - b
        if slip is not None and slip[0] == i:
            result = slip[1]
        steps.append((total, op, b, result))
        total = result
    return steps


def _dropped_carries(a: int, op: str, b: int) -> list[int]:
    """Results of ``a op b`` with one carry (addition) or borrow (subtraction) forgotten."""
    out = []
    carry = 0
    place = 1
    x, y = a, b
    while x or y or carry:
        dx, dy = x % 10, y % 10
        if op == "+":
            carry = 1 if dx + dy + carry >= 10 else 0
        else:
            carry = 1 if dx - dy - carry < 0 else 0
        if carry:
            # the column above did not receive its carry / pay its borrow
            delta = -10 * place if op == "+" else 10 * place
            out.append((a + b if op == "+" else a - b) + delta)
        x, y, place = x // 10, y // 10, place * 10
    return out


def _digit_slips(c: int) -> list[int]:
    """``c`` with one digit off by one (no new leading zero, no negative number)."""
    out = []
    s = str(c)
    for i, ch in enumerate(s):
        for d in (-1, 1):
            v = int(ch) + d
            if not 0 <= v <= 9 or (i == 0 and v == 0 and len(s) > 1):
                continue
            out.append(int(s[:i] + str(v) + s[i + 1 :]))
    return out


def wrong_solution(rng: random.Random, terms: list[int], ops: list[str]) -> list[tuple[int, str, int, int]]:
    """A plausible wrong worked solution: one slip in one step, propagated to the answer."""
    correct = solve(terms, ops)
    gold = correct[-1][3]
    for _ in range(100):
        i = rng.randrange(len(correct))
        a, op, b, c = correct[i]
        carries = _dropped_carries(a, op, b)
        candidates = carries if carries and rng.random() < 0.6 else _digit_slips(c)
        candidates = [w for w in candidates if w != c and w >= 0]
        if not candidates:
            continue
        steps = solve(terms, ops, slip=(i, rng.choice(candidates)))
        if all(s[3] >= 0 for s in steps) and steps[-1][3] != gold:
            return steps
    raise RuntimeError(f"no plausible slip found for {expression(terms, ops)}")  # pragma: no cover


def careless(a: int, op: str, b: int) -> int:
    """``a op b`` column by column with every carry and borrow forgotten (the top column is
    written in full): ``95+17 -> 102``, ``52-17 -> 45``. Equals ``a op b`` when nothing carries."""
    result, place = 0, 1
    while a or b:
        da, db, a, b = a % 10, b % 10, a // 10, b // 10
        top = a == 0 and b == 0
        digit = da + db if op == "+" else da - db
        result += (digit if top and op == "+" else digit % 10) * place
        place *= 10
    return result


def careless_solution(terms: list[int], ops: list[str]) -> list[tuple[int, str, int, int]] | None:
    """The worked solution of a student who never carries or borrows; None if a total goes negative."""
    steps = []
    total = terms[0]
    for op, b in zip(ops, terms[1:]):
        if op == "-" and total < b:
            return None
        result = careless(total, op, b)
        steps.append((total, op, b, result))
        total = result
    return steps


def make_row(
    rng: random.Random, difficulty: str = "standard", teacher_error_rate: float = 0.3, n_teacher: int = 3
) -> dict:
    """One data row: prompt, gold answer, expert demonstration and teacher responses."""
    terms, ops = make_problem(rng, difficulty)
    teacher = []
    for _ in range(n_teacher):
        wrong = rng.random() < teacher_error_rate
        teacher.append(format_solution(wrong_solution(rng, terms, ops) if wrong else solve(terms, ops)))
    return {
        "prompt": PROMPT_TEMPLATE.format(expr=expression(terms, ops)),
        "answer": str(evaluate(terms, ops)),
        "completion": format_solution(solve(terms, ops)),
        "teacher_completions": teacher,
    }


def generate_split(
    n: int,
    seed: int,
    difficulty: str = "standard",
    teacher_error_rate: float = 0.3,
    n_teacher: int = 3,
    exclude: Iterable[str] = (),
) -> list[dict]:
    """``n`` rows with distinct prompts, none of them in ``exclude`` (e.g. the test prompts)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; valid: {sorted(DIFFICULTIES)}")
    if not 0.0 <= teacher_error_rate <= 1.0:
        raise ValueError(f"teacher_error_rate must be in [0, 1], got {teacher_error_rate}")
    rng = random.Random(f"grouptune-arithmetic:{seed}:{difficulty}")
    seen = set(exclude)
    rows = []
    misses = 0
    while len(rows) < n:
        row = make_row(rng, difficulty, teacher_error_rate, n_teacher)
        if row["prompt"] in seen:
            misses += 1
            if misses > 100 * n + 10_000:
                raise ValueError(f"found only {len(rows)} distinct new {difficulty!r} problems, {n} asked")
            continue
        seen.add(row["prompt"])
        rows.append(row)
    return rows


def write_jsonl(rows: Iterable[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]

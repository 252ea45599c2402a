"""Answer extraction shared by the data presets and the verifier rewards."""

from fractions import Fraction

import pytest

from grouptune.answers import gsm8k_final_answer, last_boxed, last_number, parse_number, strict_gsm8k_number


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # last box; escaped braces inside
        ("\\fbox{7}", "7"),
        ("is $\\boxed 5$", "5"),
        ("\\boxed{3} and finally \\boxed{12", None),  # the last box is cut off: no answer
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_numbers():
    assert parse_number("$1,234.50") == Fraction(2469, 2)
    assert parse_number("72.") == 72 and parse_number("-.5") == Fraction(-1, 2)
    assert parse_number("1e999999999") is None  # no exponents: a pathological one cannot stall Fraction
    assert parse_number("seven") is None
    assert gsm8k_final_answer("Natalia sold 72 clips.\n#### 1,000") == "1000"
    assert gsm8k_final_answer("#### five") is None and gsm8k_final_answer("72") is None
    assert strict_gsm8k_number("#### 5\nno wait\n#### $1,200.") == 1200
    assert last_number("from 12 to 3,400 apples.") == 3400 and last_number("none") is None

"""The answer rules of the Qwen2.5-Math evaluation harness, re-implemented (no code copied).

The GFT paper scores its math benchmarks with the Qwen2.5-Math harness (QwenLM/Qwen2.5-Math,
``evaluation/``, read at commit a45202bd16f1ec06f433442dc1152d0074773465): ``parser.py``
(``extract_answer``, ``strip_string``, ``choice_answer_clean``) reads and normalises an answer,
``grader.py`` (``math_equal``) compares two. The ``qwen_math`` reward
(``grouptune.rewards.QwenMathReward``) judges an answer correct when math-verify says so *or*
these rules do, so it accepts what either accepts. Every case where the two disagree, found by
running both on the same answers, is listed in docs/evaluation.md#answer-checking and tested
in tests/test_harness.py.

Pure string and number functions: no sympy, nothing that can hang, importable without torch.

- ``extract``: the answer of a completion: the last ``\\boxed{}``, else the text after "the
  answer is" / "final answer is", else the last number (``extract_answer``).
- ``normalize``: ``strip_string``'s rewrites that keep an answer's value: units, degrees, ``\\$``,
  ``\\%``, ``\\text{}``, ``x=`` prefixes, ``\\dfrac``, ``\\frac12``, ``\\sqrt3``, ``a/b``, trailing
  zeros, word numbers, ``\\left``/``\\right``, spaces.
- ``harness_equal``: ``math_equal``'s rules on normalised answers: equal text; a gold letter and
  the letter the answer names; numbers equal within a relative 1e-4, the gold also read as a
  percentage (x 100 and / 100, as the harness does for every number); brackets ignored;
  tuples and intervals element by element; simple fractions compared by value.
- ``choice_letter``: the option letter a completion names (multiple choice).
"""

from __future__ import annotations

import math
import re

from grouptune.answers import last_boxed

LETTERS = "ABCDE"

# Unit words the harness strips from an answer ("12 miles" -> "12"). The harness's list also has
# single letters ("a", "c", "m", "s", ...) and "and", which makes "a+b" equal "c+b": left out.
_UNITS = (
    "degree", "degrees", "deg", "mph", "kmph", "kmh", "ft", "feet", "foot", "inch", "inches", "mile", "miles",
    "yard", "yards", "meter", "meters", "metre", "metres", "cm", "mm", "km", "kg", "gm", "gram", "grams",
    "lb", "lbs", "pound", "pounds", "liter", "liters", "litre", "litres", "gallon", "gallons", "sq", "square",
    "cubic", "units", "unit", "hour", "hours", "hr", "hrs", "minute", "minutes", "min", "mins", "second",
    "seconds", "sec", "secs", "day", "days", "month", "months", "year", "years", "yr", "yrs", "dollar",
    "dollars", "cent", "cents", "percent", "rupee", "rupees", "rs", "acre", "acres", "hectare", "hectares",
)  # fmt: skip
_UNIT_WORDS = re.compile(r"(^|\W)(?:" + "|".join(_UNITS) + r")(?=$|\W)")
_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER = re.compile(r"-?\d*\.?\d+")
_PLAIN = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_TRIGGERS = re.compile(r"answer is|choice is", re.IGNORECASE)


# ----------------------------------------------------------------------------- reading an answer


def _boxed_after(text: str) -> str:
    """What follows the last "boxed": the braced group, or the text up to a ``$``."""
    tail = text.split("boxed")[-1]
    if not tail.startswith("{"):
        return tail.split("$")[0].strip()
    depth = 0
    for i, ch in enumerate(tail):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return tail[1:i]
    return tail[1:]  # cut off: everything after the brace, as the harness keeps it


def extract(completion: str) -> str:
    """The answer of a completion as the harness reads it; "" when it finds none."""
    if "final answer is $" in completion and "$. I hope" in completion:  # Minerva's format
        return completion.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    if "boxed" in completion:
        answer = _boxed_after(completion)
    elif "he answer is" in completion:
        answer = completion.split("he answer is")[-1].strip()
    elif "final answer is" in completion:
        answer = completion.split("final answer is")[-1].strip()
    else:
        numbers = _NUMBER.findall(completion.replace(",", ""))
        answer = numbers[-1] if numbers else ""
    answer = re.sub(r"\n\s*", "", answer)
    return answer.removeprefix(":").removesuffix(".").removesuffix("/")


def choice_letter(completion: str) -> str | None:
    """The option letter (A-E) a completion names, or None.

    In order: a letter in the last ``\\boxed{}`` (``B``, ``(B)``, ``\\text{B}``, ``B: 42``, ``b``);
    the first letter after the last "answer is" / "choice is" ("The answer is (b)."); the last
    stand-alone capital A-E of the text. The harness (``choice_answer_clean``) reads only the
    last two ways and upper-cases the text first, so there the article "a" counts as option A.
    """
    boxed = last_boxed(completion)
    if boxed is not None and (letter := _letter_in(boxed)):
        return letter
    triggers = list(_TRIGGERS.finditer(completion))
    if triggers:
        after = completion[triggers[-1].end() :]
        found = re.match(r"[\s:*$]*(?:\\text\{|\\textbf\{|\\mathrm\{)?\(?([A-Ea-e])\b", after)
        if found:
            return found.group(1).upper()
    letters = re.findall(r"\b([A-E])\b", completion)
    return letters[-1] if letters else None


def _letter_in(text: str) -> str | None:
    """The letter a boxed answer names: ``(B)``, ``\\text{B}``, ``B. 12``; else its only capital A-E."""
    text = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", text).strip()
    found = re.match(r"\(?([A-Ea-e])\)?(?:[\s.:)]|$)", text)
    if found:
        return found.group(1).upper()
    capitals = set(re.findall(r"\b([A-E])\b", text))
    return capitals.pop() if len(capitals) == 1 else None


# ----------------------------------------------------------------------------- normalising


def _fix_fracs(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``."""
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    return re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", text)


def _slash_to_frac(text: str) -> str:
    """``3/4`` (two integers) -> ``\\frac{3}{4}``."""
    found = re.fullmatch(r"(-?\d+)/(\d+)", text)
    return f"\\frac{{{found.group(1)}}}{{{found.group(2)}}}" if found else text


def _strip_units(text: str) -> str:
    """A trailing ``\\text{...}`` or ``\\mbox{...}`` and unit words go, unless nothing would be left."""
    for pattern in (r"\\text\{[^{}]*\}$", r"\\mbox\{[^{}]*\}$"):
        cut = re.sub(pattern, "", text).strip()
        text = cut or text
    for _ in range(2):
        cut = _UNIT_WORDS.sub(r"\1", text).strip()
        text = cut or text
    return text


def normalize(answer: str, units: bool = True) -> str:
    """An answer rewritten as the harness's ``strip_string`` does, where the value stays the same.

    ``units=False`` keeps unit words (the harness does so for Minerva Math).
    """
    text = str(answer).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    text = re.sub(r"\\begin\{array\}\{[^{}]*\}", r"\\begin{pmatrix}", text)
    text = text.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    text = text.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    text = _strip_units(text) if units else text
    text = text.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "")
    text = text.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    text = str(_WORDS[text.lower()]) if text.lower() in _WORDS else text
    text = re.sub(r"\\(?:text|textbf|mathrm)\{(.*?)\}", r"\1", text)
    for prefix in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        text = text.replace(prefix, "")
    text = text.replace("\\emptyset", "{}").replace("\\%", "").replace("%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.").replace("infinity", "\\infty")
    text = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", text)
    text = re.sub(r"(\d+)\.0*$", r"\1", text)
    text = "0" + text if text.startswith(".") else text
    if text.count("=") == 1 and len(text.split("=")[0].strip()) <= 2:  # "k = 4" -> "4"
        text = text.split("=")[1]
    text = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", text).replace(" ", "").replace("\\,", "")
    return _slash_to_frac(_fix_fracs(text))


# ----------------------------------------------------------------------------- comparing


def _number(text: str) -> float | None:
    """A plain number (commas allowed, a trailing ``%`` divides by 100), as ``grader.parse_digits``."""
    text = text.replace(",", "")
    scale = 1.0
    if text.endswith("%"):
        text, scale = text[:-1].removesuffix("\\"), 0.01
    return float(text) * scale if _PLAIN.fullmatch(text) else None


def _value(text: str) -> float | None:
    """The value of a plain number or a fraction of two (``\\frac{a}{b}``, ``-\\frac{a}{b}``)."""
    if (number := _number(text)) is not None:
        return number
    found = re.fullmatch(r"(-?)\\frac\{([^{}]+)\}\{([^{}]+)\}", text)
    if not found:
        return None
    top, bottom = _number(found.group(2)), _number(found.group(3))
    if top is None or not bottom:
        return None
    return (-1 if found.group(1) else 1) * top / bottom


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4)


def _bracket_blind_equal(gold: str, answer: str) -> bool:
    """The harness's bracket-blind comparison: an answer wrapped in ``[...]`` or ``(...)`` loses the
    outer brackets on both sides (unless the gold opens with the other kind), then ``{}()`` go."""
    a, g = answer, gold
    if (a[:1], a[-1:]) in (("[", "]"), ("(", ")")) and g[:1] != {"[": "(", "(": "["}[a[0]]:
        a, g = a.strip("[]()"), g.strip("[]()")
    return re.sub(r"[{}()]", "", a).lower() == re.sub(r"[{}()]", "", g).lower()


def _bracketed_parts(text: str) -> list[str] | None:
    if re.fullmatch(r"[(\[].+[)\]]", text):
        return text[1:-1].split(",")
    return None


def harness_equal(gold: str, answer: str, units: bool = True) -> bool:
    """Does the harness's ``math_equal`` call ``answer`` equal to ``gold`` (both normalised)?"""
    g, a = normalize(gold, units), normalize(answer, units)
    if not a:
        return False
    if g.lower() == a.lower():
        return True
    if len(g) == 1 and g in LETTERS:
        return choice_letter(answer) == g
    gn, an = _number(g), _number(a)
    if gn is not None and an is not None:  # the harness stops here for two numbers
        return any(_close(an, x) for x in (gn / 100, gn, gn * 100))
    if _bracket_blind_equal(g, a):
        return True
    g_parts, a_parts = _bracketed_parts(g), _bracketed_parts(a)
    if g_parts and a_parts and len(g_parts) == len(a_parts) > 1:
        if all(harness_equal(x, y, units) for x, y in zip(g_parts, a_parts)):
            return True
    gv, av = _value(g), _value(a)
    return gv is not None and av is not None and _close(av, gv)

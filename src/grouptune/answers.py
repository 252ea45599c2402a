"""Reading final answers out of text, and judging math answers with math-verify.

Shared by the data loader (gold answers of the presets) and the verifier rewards. Kept free
of torch so that the math-verify worker process (see ``grouptune.time_limits``) starts in half a
second: it imports only this module and math-verify.

- ``last_boxed``: the content of the last ``\\boxed{...}`` (braces balanced).
- ``gsm8k_final_answer``: the number after the last ``####`` (GSM8K's answer format).
- ``parse_number`` / ``last_number``: plain decimal numbers, commas and ``$`` stripped.
- ``math_equal``: math-verify, gold first (``verify`` is asymmetric on purpose).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from fractions import Fraction
from functools import lru_cache

_BOXED = re.compile(r"\\(?:boxed|fbox)\b\s*")
# A plain decimal number: no exponent, so a pathological "1e999999999" cannot stall Fraction.
_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_NUMBER_IN_TEXT = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_STRICT_GSM8K = re.compile(r"####\s*(\$?\s*-?\$?[\d,]*\.?\d+)")


def _balanced(text: str, start: int) -> str | None:
    """``text[start]`` is ``{``: the text up to its matching ``}`` (escaped ``\\{`` ignored)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "{}" and i > 0 and text[i - 1] == "\\":
            continue
        depth += 1 if text[i] == "{" else -1 if text[i] == "}" else 0
        if depth == 0:
            return text[start + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}``; None if there is none.

    Only the last one counts: if it is cut off (unbalanced braces) the answer is None rather
    than an earlier, intermediate box. ``\\boxed 5`` (no braces) gives ``5``.
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    end = matches[-1].end()
    if end < len(text) and text[end] == "{":
        return _balanced(text, end)
    bare = re.match(r"[^\s$]+", text[end:])
    return bare.group(0) if bare else None


def parse_number(text: str) -> Fraction | None:
    """``"1,234.50"``, ``"$72"``, ``"-3"`` -> an exact Fraction; None if not a plain number."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    if not _DECIMAL.fullmatch(cleaned):
        return None
    return Fraction(cleaned)


def gsm8k_final_answer(text: str) -> str | None:
    """GSM8K gold: the number after the last ``####`` with commas and ``$`` removed; else None."""
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    cleaned = tail.replace(",", "").replace("$", "").strip().rstrip(".")
    return cleaned if parse_number(cleaned) is not None else None


def strict_gsm8k_number(completion: str) -> Fraction | None:
    """The number of the last ``#### n`` in a completion (lm-eval's strict match)."""
    matches = _STRICT_GSM8K.findall(completion)
    return parse_number(matches[-1]) if matches else None


def last_number(completion: str) -> Fraction | None:
    """The last number anywhere in a completion (lm-eval's flexible match)."""
    matches = _NUMBER_IN_TEXT.findall(completion)
    return parse_number(matches[-1]) if matches else None


# ----------------------------------------------------------------------------- math-verify


class _NoTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that with its timeouts off "you must provide the logic for timeout
    interruption yourself" — we do (``grouptune.time_limits.judge_math``), so the warning would mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutDisabledWarning())


def _as_latex(gold: str) -> str:
    """math-verify extracts LaTeX only inside ``$...$`` or ``\\boxed{}``: wrap a bare gold answer."""
    return gold if "\\boxed" in gold or "$" in gold else f"${gold}$"


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    from math_verify import parse

    return parse(_as_latex(gold), parsing_timeout=None)


def warm_up() -> None:
    """Import math-verify and load its parsers, which it does lazily on first use (seconds on a
    loaded machine), so that no answer's time limit pays for it."""
    math_equal("\\frac{1}{2}", "0.5")


def math_equal(gold: str, boxed: str) -> bool | None:
    """Is the boxed answer equal to the gold one? None when the gold answer does not parse.

    No time limit here (math-verify's own limits are switched off, they only work in the
    main thread); the caller imposes one, see ``grouptune.rewards``.
    """
    from math_verify import parse, verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return None
    pred = parse("\\boxed{" + boxed + "}", parsing_timeout=None)
    return bool(verify(gold_parsed, pred, timeout_seconds=None))


def serve_math_judge() -> None:
    """Worker loop: one JSON ``[gold, boxed]`` per input line -> ``true``/``false``/``null``.

    Prints ``ready`` once math-verify is imported and has judged one warm-up answer (its parsers
    load lazily on first use), so its start-up is not billed to the first answer's time limit.
    """
    warm_up()
    print("ready", flush=True)
    for line in sys.stdin:
        gold, boxed = json.loads(line)
        print(json.dumps(math_equal(gold, boxed)), flush=True)

"""Tiny local copies of the benchmarks, in each one's public format, written by hand.

The field names and layouts follow the files of the Qwen2.5-Math harness
(QwenLM/Qwen2.5-Math ``evaluation/data/<name>/test.jsonl``, commit
a45202bd16f1ec06f433442dc1152d0074773465; TabMWP in the PromptPG ``problems_test.json`` row
layout, MATH-500 and GSM8K as on the hub). The problems are made up: nothing here is downloaded.

``BENCHMARKS[name]`` is a list of cases, one per row: the row, the gold answer the preset must
read, a text the question must contain, completions that must score 1 and ones that must
score 0 with the benchmark's verifier (``qwen_math`` or ``choice``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Case:
    row: dict
    gold: str
    question: str  # contained in the built question (the whole question where it starts with "=")
    right: tuple[str, ...]
    wrong: tuple[str, ...]


def boxed(answer: str) -> str:
    return f"Let me work it out step by step.\nSo the final answer is $\\boxed{{{answer}}}$."


AMC23 = [
    Case({"id": 0, "problem": "Two towns are $45$ miles apart. Ann bikes at 18 mph and Bo at 12 mph towards each "
          "other. How many miles from Ann's town do they meet?", "answer": 27.0,
          "url": "https://example.org/amc/1", "question": "Two towns are $45$ miles apart. Ann bikes at 18 mph "
          "and Bo at 12 mph towards each other. How many miles from Ann's town do they meet?"},
         "27", "Two towns are $45$ miles apart.", (boxed("27"), boxed("27 \\text{ miles}"), boxed("27.0")),
         (boxed("28"), "I could not solve it.")),
    Case({"id": 1, "problem": "What is $\\frac{3}{4}+\\frac{1}{8}$?", "answer": 0.875,
          "url": "https://example.org/amc/2", "question": "What is $\\frac{3}{4}+\\frac{1}{8}$?"},
         "0.875", "\\frac{1}{8}", (boxed("\\frac{7}{8}"), boxed("\\dfrac78"), boxed("0.875")), (boxed("\\frac{3}{8}"),)),
]  # fmt: skip

AIME24 = [
    Case({"id": "60", "problem": "Find the number of minutes the walk takes her.", "solution": "It is $\\boxed{204}$.",
          "answer": "204", "url": "https://example.org/aime/60", "question": "Find the number of minutes the walk takes her."},
         "204", "=Find the number of minutes the walk takes her.", (boxed("204"), boxed("204 \\text{ minutes}")),
         (boxed("240"),)),
    Case({"id": "61", "problem": "Find $m+n$.", "solution": "...", "answer": "033", "url": "u", "question": "Find $m+n$."},
         "033", "Find $m+n$.", (boxed("33"), boxed("033")), (boxed("34"),)),
]  # fmt: skip

AIME25 = [  # math-ai/aime25 layout: problem, answer, id
    Case({"problem": "Find the sum of all integer bases $b>9$ for which $17_b$ divides $97_b$.", "answer": "70",
          "id": "0"}, "70", "integer bases", (boxed("70"),), (boxed("16"),)),
]  # fmt: skip

COLLEGE_MATH = [
    Case({"data_source": "college_math.algebra", "question_number": "exercise.0.4.61", "question": "Simplify: $-10-4(n-5)$",
          "answer": "$10-4 n$", "license": "CC BY 3.0", "data_topic": "college_math.algebra"},
         "10-4 n", "=Simplify: $-10-4(n-5)$", (boxed("10-4n"), boxed("-4n+10")), (boxed("10+4n"),)),
    Case({"data_source": "college_math.calculus", "question_number": "exercise.1.2.3",
          "question": "Find the domain of $f(x)=\\sqrt{x-2}$.", "answer": "$[2, \\infty)$", "license": "CC BY 3.0",
          "data_topic": "college_math.calculus"},
         "[2, \\infty)", "domain", (boxed("[2,+\\infty)"), boxed("[2, \\infty)")), (boxed("[3,\\infty)"),)),
    Case({"data_source": "college_math.logic", "question_number": "exercise.2.1.1", "question": "Is 7 a prime number?",
          "answer": "True", "license": "CC BY 3.0", "data_topic": "college_math.logic"},
         "True", "=Is 7 a prime number? (True or False)", (boxed("\\text{True}"), boxed("true")), (boxed("\\text{False}"),)),
]  # fmt: skip

GAOKAO2023EN = [
    Case({"source": "2023/01Q.en", "question": "Given sets $M=\\{x|x+2\\geq 0\\},N=\\{x|x-1<0\\}$, find $M \\cap N$.",
          "lang": "en", "answer": "$\\{x|-2\\leq x < 1\\}$"},
         "\\{x|-2\\leq x < 1\\}", "M \\cap N", (boxed("\\{x|-2\\le x<1\\}"), boxed("\\{x|-2\\leq x<1\\}")), (boxed("\\{x|-2\\le x\\le 1\\}"),)),
    Case({"source": "2023/05Q.en", "question": "Which number is prime: (A) 4 (B) 6 (C) 7 (D) 9", "lang": "en",
          "answer": "C"}, "C", "(C) 7", (boxed("C"), boxed("(C)"), boxed("\\text{C}"), "The answer is (C)."),
         (boxed("B"), boxed("7"))),
    Case({"source": "2023/07Q.en", "question": "Find $\\sin^2 30^\\circ$.", "lang": "en", "answer": "$\\frac14$"},
         "\\frac14", "30^\\circ", (boxed("0.25"), boxed("\\frac{1}{4}"), boxed("1/4")), (boxed("\\frac{1}{3}"),)),
]  # fmt: skip

MATH500 = [
    Case({"problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.",
          "solution": "... so $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
          "subject": "Precalculus", "level": 2, "unique_id": "test/precalculus/807.json"},
         "\\left( 3, \\frac{\\pi}{2} \\right)", "polar coordinates", (boxed("(3, \\frac{\\pi}{2})"), boxed("\\left(3,\\tfrac{\\pi}{2}\\right)")),
         (boxed("(3, \\pi)"),)),
    Case({"problem": "Find the angle $x$ in degrees.", "solution": "$x = \\boxed{60^\\circ}$", "answer": "60^\\circ",
          "subject": "Geometry", "level": 1, "unique_id": "test/geometry/1.json"},
         "60^\\circ", "degrees", (boxed("60"), boxed("60^\\circ"), boxed("60^{\\circ}"), boxed("60 \\text{ degrees}")),
         (boxed("30"),)),
    Case({"problem": "Which option is right?", "solution": "$\\boxed{\\text{(C)}}$", "answer": "\\text{(C)}",
          "subject": "Algebra", "level": 3, "unique_id": "test/algebra/2.json"},
         "\\text{(C)}", "Which option", (boxed("C"), boxed("(C)"), boxed("\\text{(C)}")), (boxed("(B)"),)),
    Case({"problem": "What percent of 80 is 20?", "solution": "$\\boxed{25\\%}$", "answer": "25\\%",
          "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/3.json"},
         "25\\%", "percent", (boxed("25\\%"), boxed("25"), boxed("0.25")), (boxed("20\\%"),)),
]  # fmt: skip

MINERVA_MATH = [
    Case({"problem": "Find the diameter of the image (in $\\mathrm{cm}$).",
          "solution": "\\[\ns=\\alpha f=\\boxed{1.6} \\mathrm{~cm}\n\\]", "type": "Astronomy", "idx": 0},
         "1.6", "=Find the diameter of the image (in $\\mathrm{cm}$).", (boxed("1.6"), boxed("1.60"), boxed("1.6 \\mathrm{~cm}")),
         (boxed("2.3"),)),
    Case({"problem": "Compute the luminosity in ergs per second.", "solution": "$L \\simeq \\boxed{4.5e33}$", "type": "Astronomy",
          "idx": 1}, "4.5e33", "luminosity", (boxed("4.5e33"),), (boxed("4.5e30"),)),
]  # fmt: skip

OLYMPIADBENCH = [
    Case({"id": 1610, "subfield": "Algebra", "context": None, "question": "Determine the largest real number $\\mu$.",
          "solution": ["The required maximum is $\\frac{1}{2 n+2}$."], "final_answer": ["$\\frac{1}{2 n+2}$"],
          "is_multiple_answer": False, "unit": None, "answer_type": "Expression", "error": None},
         "\\frac{1}{2 n+2}", "=Determine the largest real number $\\mu$.", (boxed("\\frac{1}{2n+2}"), boxed("\\frac{1}{2(n+1)}")),
         (boxed("\\frac{1}{2n}"),)),
    Case({"id": 1700, "subfield": "Number Theory", "context": None, "question": "Find all pairs $(a, b)$.",
          "solution": ["..."], "final_answer": ["$(2,4)$"], "is_multiple_answer": False, "unit": None,
          "answer_type": "Tuple", "error": None}, "(2,4)", "pairs", (boxed("(2, 4)"),), (boxed("(2,5)"),)),
    Case({"id": 1800, "subfield": "Algebra", "context": None, "question": "Compute the sum.", "solution": ["..."],
          "final_answer": ["$2^{1009}$"], "is_multiple_answer": False, "unit": None, "answer_type": "Numerical",
          "error": None}, "2^{1009}", "sum", (boxed("2^{1009}"), boxed("2^1009")), (boxed("2^{1008}"),)),
]  # fmt: skip

_TABLE = "Name | Number of coins\nBraden | 76\nCamilla | 94"
TABMWP = [
    Case({"question": "How many coins do they have in all?", "choices": None, "answer": "1,250", "unit": None,
          "table_title": "Coin collections", "table": _TABLE, "table_for_pd": {"Name": ["Braden", "Camilla"]},
          "row_num": 3, "column_num": 2, "solution": "...", "ques_type": "free_text", "ans_type": "integer_number",
          "grade": 5, "split": "test"},
         "1250", '=Read the following table regarding "Coin collections" and answer a question:\n' + _TABLE
         + "\nHow many coins do they have in all?", (boxed("1250"), boxed("1,250")), (boxed("125"),)),
    Case({"question": "What fraction of the coins are Braden's? Simplify your answer.", "choices": None, "answer": "3/4",
          "unit": None, "table_title": "", "table": _TABLE, "table_for_pd": {}, "row_num": 3, "column_num": 2,
          "solution": "...", "ques_type": "free_text", "ans_type": "other_text", "grade": 6, "split": "test"},
         "3/4", "=Read the following table and answer a question:\n" + _TABLE
         + "\nWhat fraction of the coins are Braden's? Simplify your answer.", (boxed("\\frac{3}{4}"), boxed("3/4")),
         (boxed("\\frac{4}{3}"),)),
    Case({"question": "What is the discount?", "choices": None, "answer": "25%", "unit": None, "table_title": "Sale",
          "table": _TABLE, "table_for_pd": {}, "row_num": 3, "column_num": 2, "solution": "...", "ques_type": "free_text",
          "ans_type": "decimal_number", "grade": 7, "split": "test"},
         "0.25", "discount", (boxed("25\\%"), boxed("0.25"), boxed("25")), (boxed("20\\%"),)),
    Case({"question": "Is the number of coins even?", "choices": ["yes", "no"], "answer": "yes", "unit": None,
          "table_title": "Coin collections", "table": _TABLE, "table_for_pd": {}, "row_num": 3, "column_num": 2,
          "solution": "...", "ques_type": "multi_choice", "ans_type": "boolean_text", "grade": 2, "split": "test"},
         "yes", "even? Please select from the following options: ['yes', 'no'] (Yes or No)",
         (boxed("yes"), boxed("\\text{Yes}")), (boxed("no"),)),
    Case({"question": "Who has more coins?", "choices": ["Braden", "Camilla"], "answer": "Camilla", "unit": None,
          "table_title": "Coin collections", "table": _TABLE, "table_for_pd": {}, "row_num": 3, "column_num": 2,
          "solution": "...", "ques_type": "multi_choice", "ans_type": "extractive_text", "grade": 2, "split": "test"},
         "Camilla", "['Braden', 'Camilla']", (boxed("\\text{Camilla}"), boxed("Camilla")), (boxed("\\text{Braden}"),)),
]  # fmt: skip

GSM8K = [
    Case({"question": "A farm sells 40 boxes of 25 eggs. How many eggs is that?",
          "answer": "40 * 25 = <<40*25=1000>>1,000 eggs.\n#### 1,000"},
         "1000", "=A farm sells 40 boxes of 25 eggs. How many eggs is that?",
         (boxed("1000"), boxed("1,000"), boxed("1000 \\text{ eggs}"), "40 boxes of 25 make 1000 eggs. The answer is 1000."),
         (boxed("100"),)),
    Case({"question": "She pays $12 an hour for 2 hours. How much?", "answer": "12 * 2 = $<<12*2=24>>24\n#### 24"},
         "24", "How much?", (boxed("\\$24"), boxed("24 \\text{ dollars}"), boxed("24.00")), (boxed("12"),)),
]  # fmt: skip

MMLU_STEM = [
    Case({"question": "What is the SI unit of force?", "type": "high_school_physics",
          "choices": ["joule", "newton", "watt", "pascal"], "answer": 1},
         "B", "=What is the SI unit of force?\nAnswer Choices: (A) joule (B) newton (C) watt (D) pascal",
         (boxed("B"), boxed("(B)"), boxed("\\text{B}"), boxed("\\textbf{(B)}"), boxed("b"), boxed("B: newton"),
          "The answer is (B).", "So the answer is: b", "Newton is the unit, so the correct choice is B"),
         (boxed("A"), "The answer is (C).", boxed("newton"))),
    Case({"question": "How many bits are in a byte?", "type": "college_computer_science",
          "choices": ["4", "8", "16", "32"], "answer": 1}, "B", "(B) 8", (boxed("B"),), (boxed("D"),)),
]  # fmt: skip

SAT_MATH = [
    Case({"id": "0", "question": "The graph of $f$ has $x$-intercepts $(-6,0)$ and $(6,0)$. Which must be true?",
          "options": "A) $f(-6)=0$ B) $f(6)=-6$ C) $f(-6)=6$ D) $f(0)=-6$", "Answer": "A"},
         "A", "Which must be true?\nAnswer Choices: (A) $f(-6)=0$ (B) $f(6)=-6$ (C) $f(-6)=6$ (D) $f(0)=-6$",
         (boxed("A"), boxed("(A)"), boxed("\\text{(A)}"), "The answer is A."), (boxed("C"), boxed("D"))),
    Case({"id": "1", "question": "What is the solution $(x, y)$?", "options": "A) $(-3,-6)$ B) $(3,18)$ C) $(15,66)$ D) $(1,2)$",
          "Answer": "C"}, "C", "(C) $(15,66)$", (boxed("C"),), (boxed("A"),)),
]  # fmt: skip

BENCHMARKS = {
    "amc23": AMC23, "aime24": AIME24, "aime25": AIME25, "college_math": COLLEGE_MATH, "gaokao2023en": GAOKAO2023EN,
    "math500": MATH500, "minerva_math": MINERVA_MATH, "olympiadbench": OLYMPIADBENCH, "tabmwp": TABMWP,
    "gsm8k": GSM8K, "mmlu_stem": MMLU_STEM, "sat_math": SAT_MATH,
}  # fmt: skip


def write_benchmark(directory: Path, name: str) -> Path:
    """``directory/<name>/test.jsonl``: the benchmark's rows, as the suite data directory holds them."""
    path = directory / name / "test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(case.row) + "\n" for case in BENCHMARKS[name]))
    return path

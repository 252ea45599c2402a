"""The built-in reward functions (``reward.functions``): verifiers that judge a completion against
a gold answer, and a reward model. ``grouptune.rewards`` builds them by name and scores batches."""

from __future__ import annotations

import logging
import re
from fractions import Fraction

import torch

from grouptune.answers import (
    gsm8k_final_answer,
    last_boxed,
    last_number,
    parse_number,
    strict_gsm8k_number,
    warm_up,
)
from grouptune.harness import LETTERS, choice_letter, extract, harness_equal
from grouptune.time_limits import judge_math

logger = logging.getLogger("grouptune.rewards")
_SET_BUILDER = re.compile(r"\\\{[^{}]*\|")  # \{x | ...\}


class MathReward:
    """``math``: 1.0 if the last ``\\boxed{}`` of the completion equals the gold answer (math-verify).

    No box -> 0.0. Gold missing or unparsable, or out of time -> None (unjudged).
    """

    __name__ = "math"

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        warm_up()  # math-verify's lazy start-up must not count against the first answer's time limit

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, gold in zip(completions, answer):
            boxed = last_boxed(completion)
            if gold is None or not str(gold).strip():
                rewards.append(None)
            elif boxed is None:
                rewards.append(0.0)
            else:
                same = judge_math(str(gold), boxed, self.timeout)
                rewards.append(None if same is None else float(same))
        return rewards


class GSM8KReward:
    """``gsm8k``: gold ``... #### n`` or a bare number; ``strict`` reads ``#### n`` in the
    completion, ``flexible`` its last number. Commas and ``$`` stripped, exact numeric compare.
    Gold that is not a number -> None (unjudged); no number in the completion -> 0.0.
    """

    __name__ = "gsm8k"

    def __init__(self, mode: str = "strict"):
        self.read = strict_gsm8k_number if mode == "strict" else last_number

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, gold in zip(completions, answer):
            target = self._target(gold)
            rewards.append(None if target is None else float(self.read(completion) == target))
        return rewards

    @staticmethod
    def _target(gold) -> Fraction | None:
        gold_text = "" if gold is None else str(gold)
        return parse_number(gsm8k_final_answer(gold_text) or gold_text)

    def gold_problem(self, gold) -> str | None:
        """Why a gold answer cannot be judged (checked before training), or None."""
        if self._target(gold) is None:
            return f"gold answer {gold!r} is neither a number nor '... #### n' (reward gsm8k)"
        return None


class QwenMathReward:
    """``qwen_math``: correct when math-verify or the Qwen2.5-Math harness's rules say so (1.0/0.0).

    The answer is read as the harness reads it (``grouptune.harness.extract``): the last
    ``\\boxed{}``, else the text after "the answer is", else the last number. A gold option letter
    is compared with the letter the answer names. Scored as the harness scores: an answer
    math-verify cannot judge (or not in time) is wrong unless the harness's rules accept it.
    Gold missing -> None (unjudged). The cases where the two checkers disagree are listed in
    docs/evaluation.md#answer-checking.
    """

    __name__ = "qwen_math"

    def __init__(self, timeout: float = 5.0, units: bool = True):
        self.timeout = timeout
        self.units = units  # False: unit words are kept, as the harness does for Minerva Math

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        return [self.judge(c, None if gold is None else str(gold)) for c, gold in zip(completions, answer)]

    def judge(self, completion: str, gold: str | None) -> float | None:
        if gold is None or not gold.strip():
            return None
        answer = extract(completion)
        if not answer:
            return 0.0
        if harness_equal(gold, answer, self.units):
            return 1.0
        if len(gold.strip()) == 1 and gold.strip() in LETTERS:
            return 0.0  # a letter: harness_equal compared the letter the answer names
        if _SET_BUILDER.search(gold):
            return 0.0  # math-verify reads every set-builder set {x | ...} as 1: all would be equal
        return 1.0 if judge_math(gold, answer, self.timeout) else 0.0


class ChoiceReward:
    """``choice``: 1.0 if the option letter the completion names (``grouptune.harness.choice_letter``:
    the last ``\\boxed{}``, then "the answer is (X)", then the last stand-alone capital A-E) is the
    gold letter, else 0.0. Gold that is not one letter A-E -> None (unjudged)."""

    __name__ = "choice"

    def __call__(self, prompts, completions, answer, **_) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, gold in zip(completions, answer):
            target = self._target(gold)
            rewards.append(None if target is None else float(choice_letter(completion) == target))
        return rewards

    @staticmethod
    def _target(gold) -> str | None:
        text = "" if gold is None else str(gold).strip().strip("()").upper()
        return text if len(text) == 1 and text in LETTERS else None

    def gold_problem(self, gold) -> str | None:
        """Why a gold answer cannot be judged (checked before training), or None."""
        if self._target(gold) is None:
            return f"gold answer {gold!r} is not an option letter A-E (reward choice)"
        return None


def exact_match_reward(prompts, completions, answer, **_) -> list[float | None]:
    """1.0 if the completion equals the answer after stripping surrounding whitespace."""
    return [None if gold is None else float(c.strip() == str(gold).strip()) for c, gold in zip(completions, answer)]


class RewardModel:
    """``rm:PATH``: ``AutoModelForSequenceClassification`` (one logit) on ``prompt + completion``."""

    def __init__(self, path: str, *, device=None, trust_remote_code: bool = False, batch_size: int = 8):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=trust_remote_code, use_safetensors=True
        )
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # finds each row's last token
        self.model.eval().requires_grad_(False).to(device or "cpu")
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts, completions, **_) -> list[float]:
        texts = [p + c for p, c in zip(prompts, completions)]
        scores: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size], padding=True, truncation=True, return_tensors="pt"
            ).to(self.model.device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores


# ============================================================================ building

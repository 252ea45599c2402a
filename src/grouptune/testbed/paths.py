"""Where the shipped testbed files live (inside the installed package)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
SPLITS = ("train", "test", "test_hard")
EVAL_SPLITS = ("test", "test_hard")  # held out: what ``demo`` and ``compare`` report on


def base_model_path() -> Path:
    """Directory of the pretrained base model and its tokenizer (loads with ``from_pretrained``)."""
    return ASSETS / "base"


def reward_model_path() -> Path:
    """Directory of the testbed's reward model (``reward.functions: [rm:PATH]``; see
    ``grouptune.testbed.reward_model``)."""
    return ASSETS / "reward"


def data_path(split: str) -> Path:
    """The ``.jsonl`` file of a shipped split: ``train``, ``test`` or ``test_hard``."""
    if split not in SPLITS:
        raise ValueError(f"unknown testbed split {split!r}; valid: {list(SPLITS)}")
    return ASSETS / "data" / f"{split}.jsonl"

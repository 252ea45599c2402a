"""Shared fixtures: tiny randomly initialised causal LMs with a real chat template, saved locally.

Nothing here touches a hub: the tokenizer is built by ``helpers_tokenizer`` and the models
from configs, so every end-to-end test runs on CPU in seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers_tokenizer import build_tokenizer  # noqa: E402


def make_tiny_model(arch: str, vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    raise ValueError(arch)


def save_tiny_model(path: Path, arch: str = "llama", seed: int = 0) -> Path:
    tok = build_tokenizer()
    model = make_tiny_model(arch, len(tok), seed)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def arithmetic_rows(n: int = 12, chat: bool = True) -> list[dict]:
    """GSM8K-style rows: gold number, a correct demonstration and three teacher responses (one wrong)."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        question = f"What is {a} + {b}?"
        rows.append({
            "prompt": [{"role": "user", "content": question}] if chat else question,
            "answer": str(a + b),
            "completion": f"{a} + {b} = {a + b} #### {a + b}",
            "teacher_completions": [f"#### {a + b}", f"{a}+{b} is {a + b} #### {a + b}", f"#### {a + b + 1}"],
        })  # fmt: skip
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def fresh_accelerate():
    """accelerate's state is one per process and fixes the mixed precision: start and end clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {
        "train": write_jsonl(d / "train.jsonl", arithmetic_rows(12)),
        "eval": write_jsonl(d / "eval.jsonl", arithmetic_rows(4)),
    }

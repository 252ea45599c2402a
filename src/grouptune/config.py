"""Run configuration: one dataclass per concern, each field documented once (its ``help``).

A run is a ``TrainConfig`` made of ``ModelConfig``, ``DataConfig``, ``RewardConfig``,
``RolloutConfig``, ``MethodConfig``, ``OptimConfig``, ``LogConfig`` and ``CheckpointConfig``.
YAML files mirror that nesting; command-line overrides use dotted keys
(``--method.name gift --optim.lr 3e-6``). Unknown keys and values of the wrong type are
rejected on load with the dotted name of the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its one piece of documentation."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


class ConfigError(ValueError):
    """A configuration value or combination that cannot run; the message names the setting."""


@dataclass
class ModelConfig:
    name_or_path: str = _f("", "Hugging Face model id or local directory of the policy (and of the initial reference).")
    dtype: str = _f("float32", "Parameter dtype: float32, bfloat16 or float16.")
    trust_remote_code: bool = _f(False, "Allow model/tokenizer code from the checkpoint's repository. Off unless you trust it.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    ref_on_cpu: bool = _f(False, "Keep the frozen reference model on CPU (saves accelerator memory, costs time).")
    lora_r: int = _f(0, "LoRA rank; 0 trains all weights. With LoRA the reference is the base model with the adapter disabled.")
    lora_alpha: int = _f(16, "LoRA alpha.")
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Module names LoRA adapts.")
    merge_lora_on_save: bool = _f(False, "Merge the LoRA adapter into a full model when saving the final model.")


@dataclass
class DataConfig:
    train: str = _f("", "Training data: a local .jsonl/.json/.parquet/.csv file or a Hugging Face data set name.")
    eval: str = _f("", "Held-out evaluation data (same forms as `train`); empty disables evaluation.")
    train_split: str = _f("train", "Split to read when `train` is a hub data set.")
    eval_split: str = _f("test", "Split to read when `eval` is a hub data set.")
    preset: str = _f("", "Column preset: gsm8k, math, math500, numina, dapo_math; empty uses the column names below.")
    prompt_column: str = _f("prompt", "Column holding the prompt (a string or a list of chat messages).")
    answer_column: str = _f("answer", "Column holding the verifier's gold answer.")
    completion_column: str = _f("completion", "Column holding the expert demonstration.")
    teacher_column: str = _f("teacher_completions", "Column holding teacher responses (a list of strings); optional.")
    prompt_suffix: str = _f("", "Text appended to every prompt, e.g. \"Let's think step by step and output the final answer within \\boxed{}.\"")
    chat_template: bool = _f(True, "Apply the tokenizer's chat template when the tokenizer has one.")
    max_prompt_length: int = _f(1024, "Longest prompt in tokens.")
    long_prompts: str = _f("drop", "What to do with longer prompts: drop, truncate (keep the end) or error.")
    max_eval_examples: int = _f(0, "Evaluate on at most this many held-out examples (0 = all).")


@dataclass
class RewardConfig:
    functions: list = _f(["math"], "Reward functions: math, gsm8k, exact_match, a reward model path (rm:PATH), or a user function (pkg.mod:fn or file.py:fn).")
    weights: list = _f([], "One weight per reward function (default: all 1.0).")
    on_error: str = _f("raise", "A reward function that raises: raise (stop, naming function and row) or unjudged (count the row as unjudged).")
    math_timeout: float = _f(5.0, "Seconds math-verify may spend on one answer before it counts as unjudged.")
    gsm8k_mode: str = _f("strict", "gsm8k reward: strict (`#### n` only) or flexible (last number in the completion).")

"""Run configuration: one dataclass per concern, each field documented once (its ``help``).

A run is a ``TrainConfig`` made of ``ModelConfig``, ``DataConfig``, ``RewardConfig``,
``RolloutConfig``, ``VLLMConfig``, ``MethodConfig``, ``OptimConfig``, ``LogConfig`` and ``CheckpointConfig``.
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
    init_from: str = _f("", "A previous run's output directory (or its final/): start from that run's final model, weights and tokenizer, which then also is the initial reference; name_or_path is replaced by its path.")
    dtype: str = _f("float32", "Parameter dtype: float32, bfloat16 or float16.")
    mixed_precision: str = _f("", "Autocast through accelerate: bf16, fp16 or no (empty = the launcher's setting, else no). Weights stay in `dtype`.")
    trust_remote_code: bool = _f(False, "Allow model/tokenizer code from the checkpoint's repository. Off unless you trust it.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    ref_on_cpu: bool = _f(False, "Keep the frozen reference model on CPU (saves accelerator memory, costs time).")
    lora_r: int = _f(0, "LoRA rank; 0 trains all weights. With LoRA the reference is the base model with the adapter disabled.")
    lora_alpha: int = _f(16, "LoRA alpha.")
    lora_dropout: float = _f(0.0, "LoRA dropout.")
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Module names LoRA adapts.")
    merge_lora_on_save: bool = _f(False, "Merge the LoRA adapter into a full model when saving the final model.")
    load_in_4bit: bool = _f(False, "QLoRA: load the frozen base weights in 4-bit NF4 through bitsandbytes (a CUDA GPU; needs lora_r > 0); compute in `dtype`.")


@dataclass
class DataConfig:
    train: str = _f("", "Training data: a local .jsonl/.json/.parquet/.csv file or a Hugging Face data set name.")
    eval: list = _f([], "Held-out evaluation data sets (same forms as `train`), each reported on its own; empty disables evaluation.")
    train_split: str = _f("train", "Split to read when `train` is a hub data set.")
    eval_split: str = _f("test", "Split to read when `eval` is a hub data set.")
    preset: str = _f("", "Column preset: gsm8k, math, math500, numina, dapo_math, or a benchmark's (docs/data.md#benchmark-presets); empty uses the column names below.")
    prompt_column: str = _f("prompt", "Column holding the prompt (a string or a list of chat messages).")
    answer_column: str = _f("answer", "Column holding the verifier's gold answer.")
    completion_column: str = _f("completion", "Column holding the expert demonstration.")
    teacher_column: str = _f("teacher_completions", "Column holding teacher responses (a list of strings); optional.")
    prompt_suffix: str = _f("", "Text appended to every prompt, e.g. \"Let's think step by step and output the final answer within \\boxed{}.\"")
    prompt_template: str = _f("", "Prompt template of the papers' evaluations: qwen25-math-cot, qwen-boxed, plain or chat (see docs/evaluation.md#prompt-templates); empty renders prompts with `chat_template`.")
    chat_template: bool = _f(True, "Apply the tokenizer's chat template when the tokenizer has one.")
    max_prompt_length: int = _f(1024, "Longest prompt in tokens.")
    long_prompts: str = _f("drop", "What to do with longer prompts: drop, truncate (keep the end) or error.")
    max_eval_examples: int = _f(0, "Evaluate on at most this many held-out examples (0 = all).")


@dataclass
class RewardConfig:
    functions: list = _f(["math"], "Reward functions: math, gsm8k, exact_match, qwen_math, choice, a reward model path (rm:PATH), or a user function (pkg.mod:fn or file.py:fn).")
    weights: list = _f([], "One weight per reward function (default: all 1.0).")
    on_error: str = _f("raise", "A reward function that raises: raise (stop, naming function and row) or unjudged (count the row as unjudged).")
    math_timeout: float = _f(5.0, "Seconds math-verify may spend on one answer before it counts as unjudged.")
    gsm8k_mode: str = _f("strict", "gsm8k reward: strict (`#### n` only) or flexible (last number in the completion).")


@dataclass
class RolloutConfig:
    prompts_per_batch: int = _f(128, "Prompts per rollout batch (all ranks together). Official GFT: 128; GIFT: 1024.")
    group_size: int = _f(8, "G: members scored together per prompt (on-policy plus off-policy). Must be >= 2 for group methods.")
    temperature: float = _f(1.0, "Sampling temperature; RL losses score tokens under the same tempered policy (as TRL and verl do).")
    top_p: float = _f(1.0, "Nucleus sampling threshold.")
    max_new_tokens: int = _f(2048, "Longest completion in tokens (official GFT: 2048); longer ones are cut and counted as truncated.")
    mask_truncated: bool = _f(False, "Leave truncated completions out of the loss (they still count in the group statistics).")
    generation_batch_size: int = _f(0, "Sequences generated at once per process (0 = the whole rollout batch).")
    engine: str = _f("transformers", "What samples rollouts and evaluation completions: transformers (model.generate on the policy) or vllm (a colocated vLLM engine per process, synced every rollout batch; settings under vllm.*).")


@dataclass
class VLLMConfig:
    """The colocated vLLM engine (``rollout.engine: vllm``): one engine in each training process."""

    gpu_memory_utilization: float = _f(0.3, "Share of the device's memory (on CPU: of the RAM) vLLM may take for weights and KV cache.")
    max_model_len: int = _f(0, "Longest prompt + completion the engine serves (0 = data.max_prompt_length + rollout.max_new_tokens).")
    tensor_parallel_size: int = _f(1, "GPUs one engine spans (training processes of one tensor-parallel group share it).")
    sleep_mode: bool = _f(False, "CUDA: free the engine's weights and KV cache while training, woken before each sync.")
    dtype: str = _f("", "Engine dtype: float32, bfloat16 or float16 (empty = model.dtype, the policy's).")
    enforce_eager: bool = _f(False, "No CUDA graphs / torch.compile: faster start-up, slower decoding.")
    kv_cache_gb: float = _f(0.0, "KV cache size in GiB (0 = what gpu_memory_utilization leaves).")
    importance_sampling_cap: float = _f(0.0, "Truncated importance sampling: weight each sampled token's loss by min(exp(old_logp - vllm_logp), cap) to correct the engine/trainer mismatch; 0 = off (verl and TRL use 2).")


@dataclass
class MethodConfig:
    """Settings of the training method. ``None`` means "the method's default": each method's
    record in ``grouptune.methods`` says what that is, and the run resolves it when it starts
    (``config.yaml`` holds the resolved values)."""

    name: str = _f("gft", "Method (the list of registered methods is at the end of `grouptune train --help`).")
    # group advantages (docs/methods.md#group-advantages)
    adv_baseline: str = _f("mean", "Advantage baseline: mean, leave_one_out or on_policy_mean.")
    adv_scale: str | None = _f(None, "Advantage scale: group (std of the group), batch (std of the batch) or none (None = the method's: group; LUFFY none).")
    # GFT (docs/methods.md#gft)
    tau: float = _f(0.5, "GFT rectification threshold: tokens with p <= tau get weight p (gradient coefficient 1).")
    num_off_policy: int = _f(4, "GFT, SFT(mix): off-policy members per group (expert demonstration first, then teacher responses).")
    # GRPO family (docs/methods.md#grpo)
    loss_type: str | None = _f(None, "GRPO aggregation: grpo, dapo, dr_grpo or bnpo (None = the method's: dapo; GSPO grpo).")
    epsilon_low: float | None = _f(None, "Lower clip range of the ratio (None = the method's: 0.2; GSPO 3e-4).")
    epsilon_high: float | None = _f(None, "Upper clip range of the ratio (None = the method's: 0.2; DAPO 0.28; GSPO 4e-4).")
    importance_sampling_level: str | None = _f(None, "Ratio per token or per sequence (None = the method's: token; GSPO sequence).")
    kl_beta: float = _f(0.0, "GRPO family: coefficient of the k3 KL to the initial model (0 = no reference model).")
    dynamic_sampling: bool | None = _f(None, "Drop groups with zero reward spread and draw more prompts (None = the method's: on for dapo).")
    max_resample_rounds: int = _f(4, "Dynamic sampling: most extra rounds of prompts drawn to fill a rollout batch.")
    overlong_buffer: int | None = _f(None, "Soft over-long penalty: length of the penalty ramp before max_new_tokens, 0 = off (None = the method's: dapo max_new_tokens/4).")
    dual_clip: float | None = _f(None, "Dual-clip PPO bound c > 1 (verl's clip_ratio_c): for A < 0 the token loss is at most -A * c; 0 = off (None = the method's: off; CHORD 3).")
    loss_normalizer: str = _f("step", "Token-mean normaliser: step (tokens of the whole optimizer step) or micro_batch (each micro-batch's tokens times the number of micro-batches, as the official GFT code and verl).")
    # GIFT (docs/methods.md#gift)
    gift_beta: float = _f(1.0, "GIFT: scale of the normalised implicit reward in (a - beta * z)^2.")
    gift_reference: str = _f("old", "GIFT reference: old (the policy that sampled the batch) or initial (the frozen start).")
    gift_std_floor: float = _f(0.0, "GIFT: lower bound on the detached std of the implicit rewards (0 = the official behaviour).")
    # the GFT paper's other baselines (docs/methods.md#asft, #psft, #luffy, #chord)
    asft_kl_coef: float = _f(0.1, "ASFT: lambda, the weight of the full-vocabulary KL(pi_ref || pi) at each demonstration token.")
    luffy_normalizer: float | None = _f(None, "LUFFY: the constant the summed token losses of an optimizer step are divided by (None = the method's: rollout.max_new_tokens * 8, the official padded width times 8 GPUs).")
    luffy_shaping: float = _f(0.1, "LUFFY: gamma of the policy shaping f(p) = p / (p + gamma) on demonstration tokens.")
    luffy_entropy_coef: float = _f(0.001, "LUFFY: weight of the entropy bonus (token mean over all response tokens).")
    chord_expert_per_group: int = _f(2, "CHORD: expert demonstrations (of other prompts, a stream of their own) per rollout group in each optimizer step (official: 64 per 32 groups).")
    chord_mu_warmup: int | None = _f(None, "CHORD: optimizer steps of linear warm-up of mu to chord_mu_peak (None = the method's: 0).")
    chord_mu_decay: int | None = _f(None, "CHORD: optimizer steps of cosine decay of mu from the peak to chord_mu_valley (None = the method's: chord_mu 200, chord_phi 0).")
    chord_mu_peak: float | None = _f(None, "CHORD: peak of mu, the weight of the SFT loss (None = the method's: chord_mu 0.9, chord_phi 0.1).")
    chord_mu_valley: float | None = _f(None, "CHORD: mu after the decay (None = the method's: chord_mu 0.05, chord_phi 0.1).")


@dataclass
class OptimConfig:
    lr: float = _f(1e-6, "Learning rate (official GFT 1e-6, GIFT 3e-6).")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    max_grad_norm: float = _f(1.0, "Gradient-norm clip (0 = off).")
    scheduler: str = _f("constant", "Learning-rate schedule: constant, linear or cosine (after warmup).")
    warmup_steps: int = _f(0, "Optimizer steps of linear warmup.")
    total_batches: int = _f(100, "Rollout batches to train for.")
    steps_per_rollout: int = _f(4, "Optimizer steps per rollout batch: the batch is split into this many mini-batches of whole groups.")
    micro_batch_groups: int = _f(0, "Groups per forward/backward pass (gradient accumulation); 0 = a whole mini-batch at once.")
    seed: int = _f(0, "Seed for data order, sampling and initialisation.")
    max_bad_steps: int = _f(3, "Stop after this many optimizer steps in a row with a non-finite loss or gradient (each is skipped).")


@dataclass
class LogConfig:
    output_dir: str = _f("runs/grouptune", "Directory for checkpoints, the final model, metrics.jsonl and samples.jsonl.")
    log_every: int = _f(1, "Write metrics every N rollout batches.")
    samples_per_log: int = _f(4, "Completions (with rewards and advantages) saved to samples.jsonl at each log.")
    report_to: list = _f([], "Extra trackers through accelerate: tensorboard, wandb, trackio.")
    eval_every: int = _f(0, "Evaluate on `data.eval` every N rollout batches (0 = only at the end).")
    eval_samples: int = _f(4, "k: samples per held-out prompt for avg@k and pass@k (0 = greedy only).")
    eval_pass_at: list = _f([], "More k whose pass@k is reported from the same samples, each at most eval_samples (e.g. [1, 2, 4, 8] with 16: the GFT paper's Figure 4).")
    eval_temperature: float = _f(1.0, "Temperature of the evaluation samples.")
    eval_suite: str = _f("", "Evaluate on a paper's benchmarks as well: gft_math, gift_math or gft_fig4, each with its own prompts, k and temperature (docs/evaluation.md#suites).")
    eval_suite_data: str = _f("", "Directory of the suite's downloaded benchmark files (<dir>/<benchmark>/test.jsonl); empty: hub copies where a benchmark has one.")
    progress: bool = _f(True, "Show a progress bar.")


@dataclass
class CheckpointConfig:
    save_every: int = _f(0, "Save a resumable checkpoint every N rollout batches (0 = only on interruption).")
    keep_last: int = _f(2, "Resumable checkpoints kept on disk.")
    resume: bool = _f(False, "Continue from the latest complete checkpoint in output_dir.")
    save_final: bool = _f(True, "Save the final model (Hugging Face format, tokenizer included) to output_dir/final.")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


# ----------------------------------------------------------------------------- loading


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to the field type ``tp``, or raise ConfigError naming ``key``."""
    if isinstance(tp, str) and tp.endswith(" | None"):  # a setting whose None means "the method's default"
        if value is None:
            return None
        tp = tp.removesuffix(" | None")
    tp = {"str": str, "int": int, "float": float, "bool": bool, "list": list}.get(tp, tp) if isinstance(tp, str) else tp
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 3e-6 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp is list and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    if tp in (str, int, float, bool, list) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def parse_cli_value(text: str) -> Any:
    """Parse a command-line override with YAML rules (``[a, b]`` -> list, ``true`` -> bool).

    YAML 1.1 reads ``3e-6`` as a string; numbers written that way are floats here.
    """
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def update_config(cfg: Any, values: dict, prefix: str = "") -> Any:
    """Set nested ``values`` (a dict shaped like the dataclasses) on ``cfg``; unknown keys are errors."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            close = [k for k in fields if k.startswith(key[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown setting '{name}'{hint}; valid: {', '.join(fields)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping of settings, got {value!r}")
            update_config(current, value, prefix=f"{name}.")
        else:
            setattr(cfg, key, _check_type(value, fields[key].type, name))
    return cfg


def dotted_to_nested(overrides: dict[str, Any]) -> dict:
    """``{"optim.lr": 1e-5}`` -> ``{"optim": {"lr": 1e-5}}``."""
    nested: dict = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a TrainConfig from a YAML file and dotted overrides, then check it."""
    import yaml

    cfg = TrainConfig()
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            update_config(cfg, values)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if overrides:
        update_config(cfg, dotted_to_nested(overrides))
    return cfg


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Any) -> str:
    """The resolved configuration as YAML (what ``config.yaml`` holds and ``--config`` reads)."""
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def iter_fields(cls: type = TrainConfig, prefix: str = ""):
    """Yield ``(dotted_name, type_name, default, help)`` for every leaf setting (for --help)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            name = tp.__name__ if isinstance(tp, type) else str(tp)
            if isinstance(tp, types.GenericAlias):
                name = str(tp)
            if isinstance(tp, types.UnionType):  # X | None: None = the method's default
                name = next(a.__name__ for a in typing.get_args(tp) if a is not type(None))
            yield f"{prefix}{f.name}", name, default, f.metadata.get("help", "")

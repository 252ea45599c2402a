"""Run configuration: one dataclass per concern, each field documented once (its ``help``).

A run is a ``TrainConfig`` made of ``ModelConfig``, ``DataConfig``, ``RewardConfig``,
``RolloutConfig``, ``VLLMConfig``, ``MethodConfig``, ``OptimConfig``, ``LogConfig`` and ``CheckpointConfig``.
YAML files mirror that nesting; command-line overrides use dotted keys
(``--method.name gift --optim.lr 3e-6``). Unknown keys and values of the wrong type are
rejected on load with the dotted name of the field, and so is a value outside the range or
choices its field allows (``valid``), before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values a number setting allows: ``low`` / ``high`` bounds (None = unbounded), each
    included unless ``open_low`` / ``open_high``."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and not (value > self.low if self.open_low else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"{'<' if self.open_high else '<='} {self.high:g}"


POSITIVE = Range(0, open_low=True)  # > 0
NON_NEGATIVE = Range(0)  # >= 0
AT_LEAST_1 = Range(1)
UNIT = Range(0, 1)  # [0, 1]


def _f(default: Any, help: str, *, valid: Range | tuple | None = None, may_change: bool = False, **kw: Any) -> Any:
    """A dataclass field with its one piece of documentation.

    ``valid``: the values it allows, checked when the config loads (``validate``): a ``Range``
    for numbers, a tuple of choices for text. ``may_change``: a setting a resumed run may
    change (``resume_changes``); every other setting must match the checkpoint's.
    """
    metadata = {"help": help, "valid": valid, "may_change": may_change}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


class ConfigError(ValueError):
    """A configuration value or combination that cannot run; the message names the setting."""


@dataclass
class ModelConfig:
    name_or_path: str = _f("", "Hugging Face model id (org/name) or local directory of the policy (and of the initial reference).")
    init_from: str = _f("", "A previous run's output directory (or its final/): start from that run's final model, weights and tokenizer, which then also is the initial reference; name_or_path is replaced by its path.")
    dtype: str = _f("float32", "Parameter dtype: float32, bfloat16 or float16.", valid=("float32", "bfloat16", "float16"))
    mixed_precision: str = _f("", "Autocast through accelerate: bf16, fp16 or no (empty = the launcher's setting, else no). Weights stay in `dtype`.", valid=("", "no", "bf16", "fp16"), may_change=True)
    trust_remote_code: bool = _f(False, "Allow model/tokenizer code from the checkpoint's repository. Off unless you trust it.", may_change=True)
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.", may_change=True)
    ref_on_cpu: bool = _f(False, "Keep the frozen reference model on CPU (saves accelerator memory, costs time).", may_change=True)
    lora_r: int = _f(0, "LoRA rank; 0 trains all weights. With LoRA the reference is the base model with the adapter disabled.", valid=NON_NEGATIVE)
    lora_alpha: int = _f(16, "LoRA alpha.", valid=POSITIVE)
    lora_dropout: float = _f(0.0, "LoRA dropout.", valid=Range(0, 1, open_high=True))
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Module names LoRA adapts.")
    merge_lora_on_save: bool = _f(False, "Merge the LoRA adapter into a full model when saving the final model.", may_change=True)
    load_in_4bit: bool = _f(False, "QLoRA: load the frozen base weights in 4-bit NF4 through bitsandbytes (a CUDA GPU; needs lora_r > 0); compute in `dtype`.")


@dataclass
class DataConfig:
    train: str = _f("", "Training data: a local .jsonl/.json/.parquet/.csv file or a Hugging Face data set name.")
    expert: str = _f("", "CHORD (chord_mu, chord_phi): a separate expert SFT data set for the expert stream (same forms and columns as `train`; every row needs a demonstration), as the CHORD paper uses; empty = the demonstrations of the `train` rows. Refused for methods without an expert stream.")
    eval: list = _f([], "Held-out evaluation data sets (same forms as `train`), each reported on its own; empty disables evaluation.", may_change=True)
    train_split: str = _f("train", "Split to read when `train` is a hub data set.")
    eval_split: str = _f("test", "Split to read when `eval` is a hub data set.", may_change=True)
    preset: str = _f("", "Column preset: gsm8k, math, math500, numina, dapo_math, ultrafeedback, hh_rlhf (docs/data.md#preference-data), or a benchmark's (docs/data.md#benchmark-presets); empty uses the column names below.")
    prompt_column: str = _f("prompt", "Column holding the prompt (a string or a list of chat messages).")
    answer_column: str = _f("answer", "Column holding the verifier's gold answer.")
    completion_column: str = _f("completion", "Column holding the expert demonstration.")
    teacher_column: str = _f("teacher_completions", "Column holding teacher responses (a list of strings); optional.")
    prompt_suffix: str = _f("", "Text appended to every prompt, e.g. \"Let's think step by step and output the final answer within \\boxed{}.\"")
    prompt_template: str = _f("", "Prompt template of the papers' evaluations: qwen25-math-cot, qwen-boxed, plain or chat (see docs/evaluation.md#prompt-templates); empty renders prompts with `chat_template`.")
    chat_template: bool = _f(True, "Apply the tokenizer's chat template when the tokenizer has one.")
    max_prompt_length: int = _f(1024, "Longest prompt in tokens.", valid=AT_LEAST_1)
    long_prompts: str = _f("drop", "What to do with longer prompts: drop, truncate (keep the end) or error.", valid=("drop", "truncate", "error"))
    max_eval_examples: int = _f(0, "Evaluate on at most this many held-out examples (0 = all).", valid=NON_NEGATIVE, may_change=True)


@dataclass
class RewardConfig:
    functions: list = _f(["math"], "Reward functions: math, gsm8k, exact_match, qwen_math, choice, a reward model path (rm:PATH), or a user function (pkg.mod:fn or file.py:fn).")
    weights: list = _f([], "One weight per reward function (default: all 1.0).")
    eval_functions: list = _f([], "Reward functions for held-out evaluation (default: [] = reward.functions). The first is the verifier: a completion is correct when it scores >= 0.5. Each later one's mean score on the greedy completions is reported too, as eval/<set>/score/<name> (e.g. [gsm8k, rm:PATH]: the gold accuracy of a policy trained on a reward model, and the reward model's score).", may_change=True)
    on_error: str = _f("raise", "A reward function that raises: raise (stop, naming function and row) or unjudged (count the row as unjudged).", valid=("raise", "unjudged"), may_change=True)
    math_timeout: float = _f(5.0, "Seconds math-verify may spend on one answer before it counts as unjudged.", valid=POSITIVE, may_change=True)
    gsm8k_mode: str = _f("strict", "gsm8k reward: strict (`#### n` only) or flexible (last number in the completion).", valid=("strict", "flexible"))
    timeout: float = _f(600.0, "Seconds one call of a reward function or reward model (a whole batch) may take before the run stops with an error naming it (0 = no limit).", valid=NON_NEGATIVE, may_change=True)


@dataclass
class RolloutConfig:
    prompts_per_batch: int = _f(128, "Prompts per rollout batch (all ranks together). Official GFT: 128; GIFT: 1024.", valid=AT_LEAST_1)
    group_size: int = _f(8, "G: members scored together per prompt (on-policy plus off-policy). Must be >= 2 for group methods.", valid=AT_LEAST_1)
    temperature: float = _f(1.0, "Sampling temperature; RL losses score tokens under the same tempered policy (as TRL and verl do).", valid=POSITIVE)
    top_p: float = _f(1.0, "Nucleus sampling threshold.", valid=Range(0, 1, open_low=True))
    max_new_tokens: int = _f(2048, "Longest completion in tokens (official GFT: 2048); longer ones are cut and counted as truncated.", valid=AT_LEAST_1)
    mask_truncated: bool = _f(False, "Leave truncated completions out of the loss (they still count in the group statistics).")
    generation_batch_size: int = _f(0, "Sequences generated at once per process (0 = the whole rollout batch).", valid=NON_NEGATIVE, may_change=True)
    engine: str = _f("transformers", "What samples rollouts and evaluation completions: transformers (model.generate on the policy) or vllm (a colocated vLLM engine per process, synced every rollout batch; settings under vllm.*).", valid=("transformers", "vllm"), may_change=True)


@dataclass
class VLLMConfig:
    """The colocated vLLM engine (``rollout.engine: vllm``): one engine in each training process."""

    gpu_memory_utilization: float = _f(0.3, "Share of the device's memory (on CPU: of the RAM) vLLM may take for weights and KV cache.", valid=Range(0, 1, open_low=True), may_change=True)
    max_model_len: int = _f(0, "Longest prompt + completion the engine serves (0 = data.max_prompt_length + rollout.max_new_tokens).", valid=NON_NEGATIVE, may_change=True)
    tensor_parallel_size: int = _f(1, "GPUs one engine spans (training processes of one tensor-parallel group share it).", valid=AT_LEAST_1, may_change=True)
    sleep_mode: bool = _f(False, "CUDA: free the engine's weights and KV cache while training, woken before each sync.", may_change=True)
    dtype: str = _f("", "Engine dtype: float32, bfloat16 or float16 (empty = model.dtype, the policy's).", valid=("", "float32", "bfloat16", "float16"), may_change=True)
    enforce_eager: bool = _f(False, "No CUDA graphs / torch.compile: faster start-up, slower decoding.", may_change=True)
    kv_cache_gb: float = _f(0.0, "KV cache size in GiB (0 = what gpu_memory_utilization leaves).", valid=NON_NEGATIVE, may_change=True)
    importance_sampling_cap: float = _f(0.0, "Truncated importance sampling: weight each sampled token's loss by min(exp(old_logp - vllm_logp), cap) to correct the engine/trainer mismatch; 0 = off (verl and TRL use 2).", valid=NON_NEGATIVE)


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
    tau: float = _f(0.5, "GFT rectification threshold: tokens with p <= tau get weight p (gradient coefficient 1).", valid=UNIT)
    num_off_policy: int = _f(4, "GFT, SFT(mix): off-policy members per group (expert demonstration first, then teacher responses).", valid=AT_LEAST_1)
    # GRPO family (docs/methods.md#grpo)
    loss_type: str | None = _f(None, "GRPO aggregation: grpo, dapo, dr_grpo or bnpo (None = the method's: dapo; GSPO grpo).")
    epsilon_low: float | None = _f(None, "Lower clip range of the ratio (None = the method's: 0.2; GSPO 3e-4).", valid=NON_NEGATIVE)
    epsilon_high: float | None = _f(None, "Upper clip range of the ratio (None = the method's: 0.2; DAPO 0.28; GSPO 4e-4).", valid=NON_NEGATIVE)
    importance_sampling_level: str | None = _f(None, "Ratio per token or per sequence (None = the method's: token; GSPO sequence).")
    kl_beta: float = _f(0.0, "GRPO family: coefficient of the k3 KL to the initial model (0 = no reference model).", valid=NON_NEGATIVE)
    dynamic_sampling: bool | None = _f(None, "Drop groups with zero reward spread and draw more prompts (None = the method's: on for dapo).")
    max_resample_rounds: int = _f(4, "Dynamic sampling: most extra rounds of prompts drawn to fill a rollout batch.", valid=NON_NEGATIVE)
    overlong_buffer: int | None = _f(None, "Soft over-long penalty: length of the penalty ramp before max_new_tokens, 0 = off (None = the method's: dapo max_new_tokens/4).", valid=NON_NEGATIVE)
    dual_clip: float | None = _f(None, "Dual-clip PPO bound c > 1 (verl's clip_ratio_c): for A < 0 the token loss is at most -A * c; 0 = off (None = the method's: off; CHORD 3).", valid=NON_NEGATIVE)
    loss_normalizer: str = _f("step", "Token-mean normaliser: step (tokens of the whole optimizer step) or micro_batch (each micro-batch's tokens times the number of micro-batches, as the official GFT code and verl).", valid=("step", "micro_batch"))
    # GIFT (docs/methods.md#gift)
    gift_beta: float = _f(1.0, "GIFT: scale of the normalised implicit reward in (a - beta * z)^2.", valid=POSITIVE)
    gift_reference: str = _f("old", "GIFT reference: old (the policy that sampled the batch) or initial (the frozen start).", valid=("old", "initial"))
    gift_std_floor: float = _f(0.0, "GIFT: lower bound on the detached std of the implicit rewards (0 = the official behaviour).", valid=NON_NEGATIVE)
    # the GFT paper's other baselines (docs/methods.md#asft, #psft, #luffy, #chord)
    asft_kl_coef: float = _f(0.1, "ASFT: lambda, the weight of the full-vocabulary KL(pi_ref || pi) at each demonstration token.", valid=NON_NEGATIVE)
    luffy_normalizer: float | None = _f(None, "LUFFY: the constant the summed token losses of an optimizer step are divided by (None = the method's: rollout.max_new_tokens * 8, the official padded width times 8 GPUs; 0 for other methods).", valid=NON_NEGATIVE)
    luffy_shaping: float = _f(0.1, "LUFFY: gamma of the policy shaping f(p) = p / (p + gamma) on demonstration tokens.", valid=POSITIVE)
    luffy_entropy_coef: float = _f(0.001, "LUFFY: weight of the entropy bonus (token mean over all response tokens).", valid=NON_NEGATIVE)
    chord_expert_per_group: int = _f(2, "CHORD: expert demonstrations (of other prompts, a stream of their own) per rollout group in each optimizer step (official: 64 per 32 groups).", valid=NON_NEGATIVE)
    chord_mu_warmup: int | None = _f(None, "CHORD: optimizer steps of linear warm-up of mu to chord_mu_peak (None = the method's: 0).", valid=NON_NEGATIVE)
    chord_mu_decay: int | None = _f(None, "CHORD: optimizer steps of cosine decay of mu from the peak to chord_mu_valley (None = the method's: chord_mu 200, chord_phi 0).", valid=NON_NEGATIVE)
    chord_mu_peak: float | None = _f(None, "CHORD: peak of mu, the weight of the SFT loss (None = the method's: chord_mu 0.9, chord_phi 0.1).", valid=UNIT)
    chord_mu_valley: float | None = _f(None, "CHORD: mu after the decay (None = the method's: chord_mu 0.05, chord_phi 0.1).", valid=UNIT)


@dataclass
class OptimConfig:
    lr: float = _f(1e-6, "Learning rate (official GFT 1e-6, GIFT 3e-6). A resumed run may change it: the new value is applied to the optimizer and its schedule.", valid=POSITIVE, may_change=True)
    weight_decay: float = _f(0.01, "AdamW weight decay.", valid=NON_NEGATIVE)
    adam_beta1: float = _f(0.9, "AdamW beta1.", valid=Range(0, 1, open_high=True))
    adam_beta2: float = _f(0.999, "AdamW beta2.", valid=Range(0, 1, open_high=True))
    max_grad_norm: float = _f(1.0, "Gradient-norm clip (0 = off).", valid=NON_NEGATIVE)
    scheduler: str = _f("constant", "Learning-rate schedule: constant, linear or cosine (after warmup).", valid=("constant", "linear", "cosine"))
    warmup_steps: int = _f(0, "Optimizer steps of linear warmup.", valid=NON_NEGATIVE)
    total_batches: int = _f(100, "Rollout batches to train for.", valid=AT_LEAST_1, may_change=True)
    steps_per_rollout: int = _f(4, "Optimizer steps per rollout batch: the batch is split into this many mini-batches of whole groups.", valid=AT_LEAST_1)
    micro_batch_groups: int = _f(0, "Groups per forward/backward pass (gradient accumulation); 0 = a whole mini-batch at once.", valid=NON_NEGATIVE, may_change=True)
    seed: int = _f(0, "Seed for data order, sampling and initialisation.")
    max_bad_steps: int = _f(3, "Stop after this many optimizer steps in a row with a non-finite loss or gradient (each is skipped).", valid=AT_LEAST_1, may_change=True)


@dataclass
class LogConfig:
    output_dir: str = _f("runs/grouptune", "Directory for checkpoints, the final model, metrics.jsonl and samples.jsonl; one run at a time (a lock file, run.lock, is held while a run writes).", may_change=True)
    overwrite: bool = _f(False, "Start a new run in an output_dir that holds an earlier run: delete its checkpoints/, final/, metrics.jsonl, samples.jsonl, config.yaml and tracker logs when the new run starts. With `grouptune eval --export-alpaca-eval`: replace the export's files.", may_change=True)
    log_every: int = _f(1, "Write metrics every N rollout batches.", valid=AT_LEAST_1, may_change=True)
    samples_per_log: int = _f(4, "Completions (with rewards and advantages) saved to samples.jsonl at each log.", valid=NON_NEGATIVE, may_change=True)
    report_to: list = _f([], "Extra trackers through accelerate: tensorboard, wandb, trackio.", may_change=True)
    eval_every: int = _f(0, "Evaluate on `data.eval` every N rollout batches (0 = only at the end).", valid=NON_NEGATIVE, may_change=True)
    eval_samples: int = _f(4, "k: samples per held-out prompt for avg@k and pass@k (0 = greedy only).", valid=NON_NEGATIVE, may_change=True)
    eval_pass_at: list = _f([], "More k whose pass@k is reported from the same samples, each at most eval_samples (e.g. [1, 2, 4, 8] with 16: the GFT paper's Figure 4).", may_change=True)
    eval_temperature: float = _f(1.0, "Temperature of the evaluation samples.", valid=POSITIVE, may_change=True)
    eval_suite: str = _f("", "Evaluate on a paper's benchmarks as well: gft_math, gift_math or gft_fig4, each with its own prompts, k and temperature (docs/evaluation.md#suites).", may_change=True)
    eval_suite_data: str = _f("", "Directory of the suite's downloaded benchmark files (<dir>/<benchmark>/test.jsonl); empty: hub copies where a benchmark has one.", may_change=True)
    progress: bool = _f(True, "Show a progress bar.", may_change=True)


@dataclass
class CheckpointConfig:
    save_every: int = _f(0, "Save a resumable checkpoint every N rollout batches (0 = only on interruption).", valid=NON_NEGATIVE, may_change=True)
    keep_last: int = _f(2, "Resumable checkpoints kept on disk (0 = all).", valid=NON_NEGATIVE, may_change=True)
    resume: bool = _f(False, "Continue from the latest complete checkpoint in output_dir that passes its integrity check.", may_change=True)
    save_final: bool = _f(True, "Save the final model (Hugging Face format, tokenizer included) to output_dir/final.", may_change=True)


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
    """Build a TrainConfig from a YAML file and dotted overrides, then check every setting
    (``validate``); a ``ConfigError`` names the file (and line), the setting and the value."""
    cfg = TrainConfig()
    if path:
        path = Path(path)
        values = read_yaml(path)
        try:
            update_config(cfg, values)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if overrides:
        update_config(cfg, dotted_to_nested(overrides))
    validate(cfg)
    return cfg


def read_yaml(path: Path) -> dict:
    """A YAML file of settings; errors name the file and the line."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(decode_utf8(path.read_bytes())) or {}
    except NotUTF8 as e:
        raise ConfigError(f"{path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}{_yaml_position(e)}: not valid YAML: {_yaml_problem(e)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values


def _yaml_position(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(e: Exception) -> str:
    """The parser's complaint, with where the construct it was reading began."""
    context, mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and mark is not None and getattr(e, "problem_mark", None) is not None:
        context += f" (from line {mark.line + 1}, column {mark.column + 1})"
    parts = [context, getattr(e, "problem", None)]
    return ": ".join(p for p in parts if p) or str(e).splitlines()[0]


class NotUTF8(ValueError):
    """Bytes that are not UTF-8 text; the message names the line and column."""


def decode_utf8(data: bytes, what: str = "") -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped), or ``NotUTF8`` naming the
    line and column of the first byte that is not UTF-8 (not its byte offset)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise NotUTF8(f"not UTF-8 text: line {line}, column {column}: byte(s) {bad} ({exc.reason}); "
                      "save the file as UTF-8") from None  # fmt: skip


# ----------------------------------------------------------------------------- checking


def leaf_settings(cfg: Any, prefix: str = ""):
    """Yield ``(dotted_name, value, field metadata)`` for every leaf setting of a config."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaf_settings(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, f.metadata


def setting_problem(name: str, value: Any, valid: Range | tuple | None) -> str | None:
    """Why ``value`` is not allowed for setting ``name`` (naming the value and what is allowed), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} = {value}: must be a finite number" + (f" {valid}" if isinstance(valid, Range) else "")
    if value is None or valid is None:
        return None
    if isinstance(valid, Range) and isinstance(value, (int, float)) and value not in valid:
        return f"{name} = {value!r}: must be {valid}"
    if isinstance(valid, tuple) and value not in valid:
        return f"{name} = {value!r}: must be one of {', '.join(repr(c) for c in valid)}"
    return None


def validate(cfg: TrainConfig) -> None:
    """Every setting against the values its field allows (``valid`` in its metadata): one
    ``ConfigError`` lists every setting out of range, each with its value and the range."""
    problems = [p for name, value, meta in leaf_settings(cfg) if (p := setting_problem(name, value, meta.get("valid")))]
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} settings out of range:\n  " + "\n  ".join(problems))


NOT_COMPARED = ("checkpoint.resume", "log.overwrite")  # how a run starts, not what it is


def resume_changes(saved: dict, cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """Settings of ``cfg`` that differ from ``saved`` (a checkpoint's resolved config as a
    nested dict), as ``"name: old -> new"``: ``(refused, allowed)``. Allowed are the settings
    marked ``may_change``; every other one changes what the run means. Settings the saved
    config does not have (added since) are not compared."""
    before = flat_settings(saved)
    refused, allowed = [], []
    for name, value, meta in leaf_settings(cfg):
        if name in before and before[name] != value and name not in NOT_COMPARED:
            (allowed if meta.get("may_change") else refused).append(f"{name}: {before[name]!r} -> {value!r}")
    return refused, allowed


def flat_settings(d: dict, prefix: str = "") -> dict:
    """A nested dict of settings as ``{dotted.name: value}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_settings(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


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
            help_text = f.metadata.get("help", "")
            if isinstance(f.metadata.get("valid"), Range):
                help_text += f" Allowed: {f.metadata['valid']}."
            yield f"{prefix}{f.name}", name, default, help_text

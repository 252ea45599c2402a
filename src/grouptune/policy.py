"""The policy and its reference on accelerate's engines: loaded, adapted, sharded, saved.

``build_policy`` is the one entry point the training loop calls. It loads the policy and its
tokenizer, makes the frozen reference the method needs (a copy of the initial model, or the
policy itself with its LoRA adapter disabled), adds LoRA, builds the optimizer and scheduler,
and hands model and optimizer to accelerate, which wraps them for DDP, FSDP2 or DeepSpeed.
``save_pretrained`` writes the final model (gathered from its shards, LoRA merged when asked),
whole or not at all.

Engines: FSDP means FSDP2 (``fully_shard``, which accelerate recommends); the frozen reference
is sharded like the policy under FSDP2 and ZeRO-3, so each process holds 1/N of it.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.distributed.fsdp import register_fsdp_forward_method

from grouptune.checkpoint import WRITE_ERRORS, CheckpointWriteError, write_error_reason
from grouptune.config import ConfigError, ModelConfig, TrainConfig
from grouptune.manifest import fresh_tmp, publish
from grouptune.modeling import eos_ids, load_model_and_tokenizer


@dataclass
class Policy:
    """What the loop trains and scores with."""

    model: torch.nn.Module  # wrapped by accelerate (DDP / FSDP2 / DeepSpeed engine)
    reference: torch.nn.Module | None  # frozen initial model; None when unneeded or with LoRA (adapter off)
    tokenizer: object
    eos_ids: list[int]
    optimizer: torch.optim.Optimizer  # accelerate's wrapper
    scheduler: object


def build_policy(cfg: TrainConfig, acc: Accelerator, micro_batch_rows: int, needs_reference: bool) -> Policy:
    """Load, adapt and prepare the policy (and its reference) for training on ``acc``.

    ``micro_batch_rows``: sequences per forward/backward pass per process (DeepSpeed wants it).
    """
    m, o = cfg.model, cfg.optim
    model, tokenizer = load_model_and_tokenizer(m)
    eos = eos_ids(tokenizer, model)
    if m.gradient_checkpointing:  # before LoRA: peft then makes the checkpointed inputs require grad
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()  # (the name since transformers 5.x, the old one warns)
        model.config.use_cache = False
    reference = None
    if needs_reference and m.lora_r == 0:  # with LoRA the reference is the policy with its adapter disabled
        reference = _reference_copy(model, m).to("cpu" if m.ref_on_cpu else acc.device)
    if m.lora_r > 0:
        model = add_lora(model, m)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), weight_decay=o.weight_decay)
    scheduler = _scheduler(optimizer, o.scheduler, o.warmup_steps, o.total_batches * o.steps_per_rollout)
    _deepspeed_batch_size(acc, micro_batch_rows)
    model, optimizer = acc.prepare(model, optimizer)
    # generate() is a forward pass too: under FSDP2 it must gather the root's parameters (with
    # LoRA, PeftModel.generate bypasses the root's forward). A no-op for other engines.
    register_fsdp_forward_method(acc.unwrap_model(model), "generate")
    if reference is not None and not m.ref_on_cpu:
        reference = _shard_reference(acc, reference)
    return Policy(model, reference, tokenizer, eos, optimizer, scheduler)


def save_pretrained(acc: Accelerator, policy: Policy, m: ModelConfig, path: Path) -> None:
    """The final model in Hugging Face format with its tokenizer (LoRA merged when asked),
    written whole or not at all: into ``<path>.tmp``, renamed to ``path`` once complete, with a
    manifest of its files (``grouptune.manifest``).

    Every process takes part: FSDP and ZeRO-3 gather their shards into the full weights here.
    A write that fails (disk full, permissions) raises ``CheckpointWriteError`` on every process.
    """
    acc.wait_for_everyone()
    weights = acc.get_state_dict(policy.model)
    problem = [None]
    if acc.is_main_process:
        problem = [_write_final(acc, policy, m, path, weights)]
    if acc.num_processes > 1:  # every process raises, none waits for a collective that never comes
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(problem, from_process=0)
    if problem[0]:
        raise CheckpointWriteError(problem[0])


def _write_final(acc: Accelerator, policy: Policy, m: ModelConfig, path: Path, weights) -> str | None:
    """Main process: write the final model to ``<path>.tmp`` and publish it; why it failed, or None."""
    tmp = None
    try:
        tmp = fresh_tmp(path)
        model = acc.unwrap_model(policy.model)
        if m.lora_r > 0 and m.merge_lora_on_save:  # a plain transformers model: loads without peft
            model, weights = _merged(model, weights, m, sharded=sharded(acc)), None
        model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        policy.tokenizer.save_pretrained(tmp)
        publish(tmp, path)
    except WRITE_ERRORS as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return f"could not write the final model to {path}: {write_error_reason(exc)}"
    return None


# ----------------------------------------------------------------------------- the engine


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """accelerate's Accelerator, refusing to run launched processes as independent copies.

    On a host without an accelerator, accelerate treats ``torchrun`` processes as separate
    single-process runs unless told to use the CPU: we tell it, unless accelerate's state was
    already set up in this process (then it is used as it is). (On such a host start the
    processes with ``torchrun``: ``accelerate launch --cpu --num_processes N`` starts one
    process unless given an MPI hostfile.)
    """
    from accelerate.state import PartialState

    if cfg.model.mixed_precision not in ("", "no", "bf16", "fp16"):
        raise ConfigError(f"model.mixed_precision: expected bf16, fp16 or no, got '{cfg.model.mixed_precision}'")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = getattr(torch, "accelerator", None)  # torch >= 2.6
    no_accelerator = not (device.is_available() if device is not None else torch.cuda.is_available())
    set_up = bool(PartialState._shared_state)
    acc = Accelerator(
        cpu=world > 1 and no_accelerator and not set_up, mixed_precision=cfg.model.mixed_precision or None,
        log_with=cfg.log.report_to or None, project_dir=str(cfg.log.output_dir),
    )  # fmt: skip
    if world > 1 and acc.num_processes != world:
        raise ConfigError(f"launched as {world} processes but accelerate runs {acc.num_processes}: check the launcher")
    return acc


def sharded(acc: Accelerator) -> bool:
    """Parameters sharded over processes (FSDP, ZeRO-3): every process must run every forward."""
    if acc.distributed_type == DistributedType.FSDP:
        return True
    return acc.distributed_type == DistributedType.DEEPSPEED and acc.state.deepspeed_plugin.zero_stage == 3


def check_engine(acc: Accelerator, cfg: TrainConfig, one_pass_per_step: bool) -> None:
    """What the distributed engine cannot do with these settings, refused before anything loads.

    ``one_pass_per_step``: each optimizer step is a single forward/backward pass (DeepSpeed
    steps its optimizer inside backward: accelerate's gradient_accumulation_steps = 1).
    """
    if acc.distributed_type == DistributedType.FSDP and acc.state.fsdp_plugin.fsdp_version != 2:
        raise ConfigError(
            "FSDP: set fsdp_version: 2 in the accelerate config (FSDP1 is not supported; "
            "see grouptune/configs/accelerate/fsdp.yaml)"
        )
    zero3 = sharded(acc) and acc.distributed_type == DistributedType.DEEPSPEED
    if zero3 and cfg.model.ref_on_cpu:
        raise ConfigError("model.ref_on_cpu: under ZeRO-3 the reference model is sharded over the processes; "
                          "set it to false")  # fmt: skip
    if acc.distributed_type == DistributedType.DEEPSPEED and not one_pass_per_step:
        raise ConfigError(
            "under DeepSpeed an optimizer step is one backward pass: set optim.micro_batch_groups to 0 "
            "(all groups of a step at once) or use the FSDP config"
        )


def _deepspeed_batch_size(acc: Accelerator, rows: int) -> None:
    """DeepSpeed wants its micro-batch size up front (accelerate reads it from a dataloader,
    which the trainer does not use): the sequences of one forward/backward pass per process."""
    if acc.distributed_type == DistributedType.DEEPSPEED:
        ds = acc.state.deepspeed_plugin.deepspeed_config
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = rows


def _scheduler(optimizer, kind: str, warmup: int, total: int):
    from transformers import get_scheduler

    names = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
    if kind not in names:
        raise ConfigError(f"optim.scheduler: expected one of {', '.join(names)}, got '{kind}'")
    return get_scheduler(names[kind], optimizer, num_warmup_steps=warmup, num_training_steps=total)


# ----------------------------------------------------------------------------- the reference


def _reference_copy(model, m: ModelConfig):
    """A frozen copy of the initial policy. Under ZeRO-3 transformers loads weights already
    partitioned over processes (``deepspeed.zero.Init``), which a copy would not own: load again."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    ref = load_model_and_tokenizer(m)[0] if is_deepspeed_zero3_enabled() else copy.deepcopy(model)
    return ref.eval().requires_grad_(False)


def _shard_reference(acc: Accelerator, ref_model):
    """Shard the frozen reference model as the policy is, under FSDP2 and ZeRO-3: each process
    holds 1/N of it, gathered layer by layer in the forward pass (as TRL does)."""
    if acc.distributed_type == DistributedType.FSDP:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(acc, ref_model).eval()
    if sharded(acc):  # ZeRO-3: a DeepSpeed engine without optimizer, from the run's own config
        import deepspeed

        ds = copy.deepcopy(acc.state.deepspeed_plugin.deepspeed_config)
        for training_only in ("optimizer", "scheduler"):
            ds.pop(training_only, None)
        zero = ds["zero_optimization"]
        zero.pop("offload_optimizer", None)
        h = getattr(ref_model.config, "hidden_size", None)
        if h:  # TRL's sizes for a frozen model: gather per layer, keep only small tensors whole
            zero.update(reduce_bucket_size=h * h, stage3_param_persistence_threshold=10 * h,
                        stage3_prefetch_bucket_size=int(0.9 * h * h))  # fmt: skip
        engine, *_ = deepspeed.initialize(model=ref_model, config=ds)
        engine.eval()  # (returns None on a DeepSpeed engine)
        return engine
    return ref_model


# ----------------------------------------------------------------------------- LoRA


def add_lora(model, m: ModelConfig):
    try:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    except ImportError as e:  # pragma: no cover - peft is a dependency of the lora extra
        raise ConfigError("model.lora_r > 0 needs peft: pip install 'grouptune[peft]'") from e
    if m.load_in_4bit:  # QLoRA: norms in float32, inputs that require grad for checkpointing
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=m.gradient_checkpointing)
    lora = LoraConfig(
        r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
        target_modules=list(m.lora_target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, lora)


def _merged(model, weights: dict, m: ModelConfig, sharded: bool):
    """The policy with its LoRA adapter merged into the base weights (peft's merge_and_unload).

    With sharded weights (FSDP2, ZeRO-3) the main process rebuilds the model whole on CPU from
    the base weights and the gathered ``weights``, then merges: it needs the memory of a full copy.
    """
    if not sharded:
        return copy.deepcopy(model).merge_and_unload()
    from transformers.integrations import deepspeed as hf_deepspeed

    zero3 = hf_deepspeed._hf_deepspeed_config_weak_ref  # under ZeRO-3 transformers loads partitioned:
    hf_deepspeed.unset_hf_deepspeed_config()  # load this copy whole
    try:
        whole = add_lora(load_model_and_tokenizer(m)[0], m)
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = zero3
    whole.load_state_dict({k: v.to(whole.dtype) for k, v in weights.items()})
    return whole.merge_and_unload()

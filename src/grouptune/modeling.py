"""Loading a causal LM and its tokenizer: safetensors only, remote code only when asked."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grouptune.config import ConfigError, ModelConfig, TrainConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # name or org/name


def check_model_path(value: str, setting: str = "model.name_or_path") -> None:
    """``ConfigError`` for a model path that cannot be loaded, before anything loads.

    A path that exists must be a directory. One that does not exist is refused as missing when
    it is clearly local: absolute, relative (``./``, ``../``, ``~``), with more than one ``/``,
    not shaped like a hub id, or whose first part is a local directory (``runs/x`` when
    ``runs/`` exists). Only a name shaped like a hub id (``org/name`` or ``name``) that is not
    a local path goes to the hub.
    """
    if not value:
        raise ConfigError(f"{setting} is required: a local model directory or a hub id (org/name)")
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{setting}: {value} is a file; expected a model directory or a hub id (org/name)")
        if not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
            raise ConfigError(f"{setting}: {value} has no config.json: not a Hugging Face model directory")
        return
    first = Path(value.split("/")[0]).expanduser()
    local = value.startswith(("/", "./", "../", "~", ".")) or not HUB_ID.match(value) or (
        "/" in value and first.is_dir()
    )
    if local:
        raise ConfigError(f"{setting}: {value} does not exist (looked for {path.resolve()}); "
                          "a model on the hub is named org/name")  # fmt: skip


def load_model_and_tokenizer(m: ModelConfig, path: str | None = None):
    """The policy and its tokenizer from a hub id or local directory (``path`` overrides the config's)."""
    path = path or m.name_or_path
    check_model_path(path)
    if m.dtype not in DTYPES:
        raise ConfigError(f"model.dtype: expected one of {', '.join(DTYPES)}, got '{m.dtype}'")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=m.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=DTYPES[m.dtype], trust_remote_code=m.trust_remote_code, use_safetensors=True,
        quantization_config=_quantization(m),
    )  # fmt: skip
    return model, tokenizer


def _quantization(m: ModelConfig):
    """QLoRA's 4-bit NF4 base weights (double quantisation, compute in ``dtype``), or None."""
    if not m.load_in_4bit:
        return None
    if m.lora_r <= 0:
        raise ConfigError("model.load_in_4bit trains LoRA adapters on 4-bit base weights (QLoRA): set model.lora_r > 0")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=DTYPES[m.dtype],
    )  # fmt: skip


def eos_ids(tokenizer, model) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS, then the generation config's."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    for t in extra if isinstance(extra, list) else [extra]:
        if t is not None and t not in ids:
            ids.append(t)
    if not ids:
        raise ConfigError("the tokenizer has no eos_token: set one so completions can end")
    return ids


def resolve_init_from(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``model.name_or_path`` set to the final model ``model.init_from`` names.

    ``init_from`` is a previous run's output directory (its ``final/`` is used) or that ``final/``
    directory itself; it must hold a saved model (``config.json``, or ``adapter_config.json`` for
    a LoRA adapter saved unmerged). Without ``init_from`` the config is returned unchanged.
    """
    init = cfg.model.init_from
    if not init:
        return cfg
    path = Path(init)
    final = path / "final" if (path / "final").is_dir() else path
    if not any((final / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise ConfigError(
            f"model.init_from: no saved model in {final} (no config.json): name a finished run's output "
            "directory, or its final/ (runs save it unless checkpoint.save_final is false)"
        )
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(final)))

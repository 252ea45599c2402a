"""Resumable checkpoints: weights and optimizer tensors as safetensors, everything else as JSON.

Nothing here unpickles: a checkpoint directory holds

    model.safetensors        trainable state of the policy (the LoRA adapter only, with LoRA)
    optimizer.safetensors    the optimizer's tensors, keyed ``state/<param index>/<name>``
    rng.safetensors          torch's CPU (and CUDA) generator states
    state.json               optimizer scalars and param groups, scheduler, trainer counters

Writes are atomic: a checkpoint is written into ``<name>.tmp`` and renamed when complete,
so a crash while saving leaves the previous checkpoint as the latest complete one; the next
save removes such leftovers. Every file is flushed to disk before the rename.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output_dir: str | Path, batch: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"checkpoint-{batch:07d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (``state.json`` present, no ``.tmp`` suffix), or None."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if CKPT_RE.match(p.name) and (p / "state.json").is_file()]
    return max(done, key=lambda p: int(CKPT_RE.match(p.name).group(1)), default=None)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k in names}


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state/{pid}/{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}/{k}"] = v
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        _, pid, name = key.split("/", 2)
        state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:  # JSON turns tuples into lists; restore what torch wrote
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: Path, model, optimizer, scheduler, trainer_state: dict, keep_last: int = 0) -> Path:
    """Write a checkpoint atomically to ``path``; then keep only the ``keep_last`` newest."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), tmp / "model.safetensors")
    opt_tensors, opt_meta = _optimizer_to_files(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, tmp / "rng.safetensors")
    state = {
        "trainer": trainer_state,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "python_random": _py_random_state(),
    }
    for f in tmp.iterdir():  # on disk before the rename makes the checkpoint visible
        _fsync(f)
    _write_json(tmp / "state.json", state)  # written last: its presence marks a complete checkpoint
    _fsync(tmp)
    if path.exists():  # the same batch saved again: set the old copy aside, never delete it first
        os.replace(path, path.with_name(path.name + ".old"))
    os.replace(tmp, path)
    _fsync(path.parent)
    _prune(path.parent, keep_last)
    return path


def _prune(root: Path, keep_last: int) -> None:
    """Remove leftovers of interrupted saves (``*.tmp``, ``*.old``) and all but the ``keep_last`` newest."""
    for p in root.iterdir():
        if p.suffix in (".tmp", ".old") and CKPT_RE.match(p.stem):
            shutil.rmtree(p, ignore_errors=True)
    if keep_last > 0:
        done = sorted((p for p in root.iterdir() if CKPT_RE.match(p.name)), key=lambda p: p.name)
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG from ``path``; return the trainer counters."""
    state = json.loads((path / "state.json").read_text())
    weights = load_file(path / "model.safetensors")
    missing = set(weights) - set(model.state_dict())
    if missing:
        raise ValueError(f"{path}: checkpoint weights do not match the model (e.g. {sorted(missing)[:3]})")
    model.load_state_dict(weights, strict=False)
    _optimizer_from_files(optimizer, load_file(path / "optimizer.safetensors"), state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count())])
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))
    return state["trainer"]


def _py_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

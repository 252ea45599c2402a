"""Resumable checkpoints: weights and optimizer tensors as safetensors, everything else as JSON.

Nothing here unpickles: a checkpoint directory holds

    model.safetensors        trainable state of the policy (the LoRA adapter only, with LoRA)
    optimizer.safetensors    the optimizer's tensors, keyed ``state/<parameter name>/<name>``
    rng.safetensors          every process's torch CPU (and CUDA) generator state
    state.json               optimizer scalars and param groups, scheduler, trainer counters,
                             the run's resolved config (compared on resume)
    manifest.json            size and sha256 of every other file, written last

The state is the *full* one, whatever the engine: under FSDP each process holds a shard of
the weights and of the optimizer state, and ``torch.distributed.checkpoint.state_dict``
gathers them on the main process (in CPU memory), which alone writes; on resume the main
process reads the files and the same API broadcasts and re-shards them. So a checkpoint does
not depend on the engine or the number of processes that wrote it. Without a process group
(one process) the same functions read and write plain module and optimizer state.

Writes are atomic: a checkpoint is written into ``<name>.tmp`` and renamed when complete,
so a crash while saving leaves the previous checkpoint as the latest complete one; the next
save removes such leftovers. Every file is flushed to disk before the rename. A save that
fails (disk full, permissions) removes its temporary directory and raises
``CheckpointWriteError`` saying which checkpoint is still the latest. The final model is
written the same way (``grouptune.manifest``).

Integrity: ``manifest.json`` lists every file with its size and sha256, computed from the
files as written (read back) and written last, before the rename. ``manifest.verify``
checks a checkpoint against it; ``resumable_checkpoint`` returns the newest checkpoint that passes
and says why each newer one did not. Every read names its file when it fails
(``CheckpointError``). Hashing reads every file once per save and once per resume (about
1 GB/s per core).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from grouptune.manifest import fresh_tmp, publish, verify, write_json

CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
WRITE_ERRORS = (OSError, SafetensorError)  # what a full disk or a read-only file system raises


class CheckpointError(Exception):
    """A checkpoint cannot be read, verified or written; the message names the file."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint (or the final model) failed; the previous checkpoint is intact."""


def checkpoint_dir(output_dir: str | Path, batch: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"checkpoint-{batch:07d}"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (``state.json`` present, no ``.tmp`` suffix), newest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if CKPT_RE.match(p.name) and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(CKPT_RE.match(p.name).group(1)), reverse=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None (not verified: see ``resumable_checkpoint``)."""
    return next(iter(complete_checkpoints(output_dir)), None)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _is_main() -> bool:
    return not _distributed() or dist.get_rank() == 0


def _full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The trainable weights and the optimizer state, gathered whole on the main process.

    Every process must call this (it gathers FSDP shards); the others get empty dicts.
    Optimizer state is keyed by parameter name, not by position, so it loads into any wrapping.
    """
    if _is_zero(optimizer):
        return _zero_full_state(model, optimizer)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    return _untied({k: v.detach().contiguous() for k, v in weights.items()}), optim


def _untied(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One entry per tensor storage. Tied weights (an LM head that is the embedding, as in small
    Qwen2 models) appear in a state dict under both names; safetensors refuses shared tensors.
    The first name is kept (the one ``named_parameters`` lists); loading it ties both again."""
    seen, out = set(), {}
    for name, t in weights.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out[name] = t
    return out


# ------------------------------------------------------------------ DeepSpeed ZeRO
# DeepSpeed's own checkpoints are pickled. Its tensor-fragment API reads and writes the full fp32
# master weight and optimizer moments of each parameter whatever the stage, so a ZeRO run's
# checkpoint has the same files, names and meaning as any other (and resumes under any engine).


def _is_zero(optimizer) -> bool:
    """DeepSpeed's ZeRO optimizer around the torch optimizer (``.optimizer``, on flat partitions)."""
    return type(optimizer).__module__.startswith("deepspeed.") and hasattr(optimizer, "optimizer")


def _moments(state: dict) -> list[str]:
    """The per-element entries of a parameter's optimizer state (Adam: ``exp_avg``, ``exp_avg_sq``)."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.dim() > 0]


def _zero_full_state(model: torch.nn.Module, zero) -> tuple[dict, dict]:
    """Every trainable parameter's fp32 weight and moments, assembled from the partitions
    (collective: every process asks for the same parameters in the same order)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    flat_state = next(iter(zero.optimizer.state.values()))  # the same step for every partition
    moments = _moments(flat_state)
    weights, state = {}, {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        w = safe_get_full_fp32_param(p)
        m = {k: safe_get_full_optimizer_state(p, k) for k in moments}
        if _is_main():
            weights[name] = w.detach().cpu().contiguous()
            state[name] = {k: v.detach().cpu().contiguous() for k, v in m.items()}
            state[name]["step"] = flat_state["step"].detach().cpu().clone()
    if not _is_main():
        return {}, {}
    hyper = {k: v for k, v in zero.optimizer.param_groups[0].items() if k != "params"}
    return weights, {"state": state, "param_groups": [{**hyper, "params": list(state)}]}


def _zero_load(model: torch.nn.Module, zero, weights: dict, optim: dict) -> None:
    """Write full weights and moments into this process's partitions, then the partitioned
    model weights from the fp32 master weights."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    base = zero.optimizer
    first = next(iter(optim["state"].values()))
    moments = _moments(first)
    hyper = {k: v for k, v in optim["param_groups"][0].items() if k != "params"}
    for group in base.param_groups:
        group.update(hyper)
    # ZeRO-3 hands its flat partitions to the torch optimizer only while it steps
    flats = getattr(zero, "fp32_partitioned_groups_flat", None) or [f for g in base.param_groups for f in g["params"]]
    for flat in flats:  # the state of every flat partition, as after a step
        base.state[flat] = {"step": first["step"].clone(), **{k: torch.zeros_like(flat) for k in moments}}
    if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2: point the fragments at it
        zero._hp_optimizer_states_linked = False
        zero._lazy_init_hp_params_optimizer_state()
    for name, p in model.named_parameters():
        if p.requires_grad:
            safe_set_full_fp32_param(p, weights[name])
            for k in moments:
                safe_set_full_optimizer_state(p, optim["state"][name][k], k)
    if hasattr(zero, "fp32_partitioned_groups_flat"):  # ZeRO-3, as at the end of its step
        for i in range(len(zero.fp32_partitioned_groups_flat)):
            zero._reassign_or_swap_out_partitioned_parameters(i)
        if zero.persistent_parameters:  # small tensors every process keeps whole
            zero.persistent_parameters[0].all_gather(zero.persistent_parameters)
    else:
        zero.update_lp_params()


# ------------------------------------------------------------------ files


def _optimizer_to_files(sd: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for name, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state/{name}/{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{name}/{k}"] = v
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _optimizer_from_files(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        _, name, k = key.split("/", 2)
        state.setdefault(name, {})[k] = v
    for key, v in meta["scalars"].items():
        name, k = key.split("/", 1)
        state.setdefault(name, {})[k] = v
    groups = meta["param_groups"]
    for g in groups:  # JSON turns tuples into lists; restore what torch wrote
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _rng_states() -> dict[str, torch.Tensor]:
    """Every process's generator states (processes sample dropout masks differently)."""
    mine = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        mine.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    every = [mine]
    if _distributed():
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)  # generator states, between our own processes
    return {f"rank{r}/{k}": v for r, states in enumerate(every) for k, v in states.items()}


def save_checkpoint(
    path: Path, model, optimizer, scheduler, trainer_state: dict, keep_last: int = 0, config: dict | None = None
) -> Path:
    """Write a checkpoint atomically to ``path``; then keep only the ``keep_last`` newest.

    Called by every process (the state is gathered over them); the main process writes.
    ``model`` is the unwrapped model (the FSDP-sharded module itself under FSDP). ``config``:
    the run's resolved config, compared with the resuming run's. A write that fails raises
    ``CheckpointWriteError`` on every process, with nothing of this checkpoint left behind.
    """
    weights, optim = _full_state(model, optimizer)
    rng = _rng_states()
    problem = [None]
    if _is_main():
        state = {
            "trainer": trainer_state,
            "scheduler": scheduler.state_dict(),
            "python_random": _py_random_state(),
            "processes": dist.get_world_size() if _distributed() else 1,
            "config": config,
        }
        problem = [_write(path, weights, optim, rng, state)]
    if _distributed():  # every process raises, none waits for a collective that never comes
        dist.broadcast_object_list(problem, src=0)
    if problem[0]:
        raise CheckpointWriteError(problem[0])
    if _is_main():
        _prune(path.parent, keep_last)
    return path


def _write(path: Path, weights: dict, optim: dict, rng: dict, state: dict) -> str | None:
    """Write the checkpoint's files into ``<path>.tmp``, then publish it; why it failed, or None."""
    tmp = None
    try:
        tmp = fresh_tmp(path)
        save_file(weights, tmp / "model.safetensors")
        opt_tensors, state["optimizer"] = _optimizer_to_files(optim)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file(rng, tmp / "rng.safetensors")
        write_json(tmp / "state.json", state)  # its presence marks a complete checkpoint
        publish(tmp, path)  # the manifest last, then the rename
    except WRITE_ERRORS as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        before = latest_checkpoint(path.parent.parent)
        intact = f"the previous checkpoint {before} is intact" if before else "there is no earlier checkpoint"
        return f"could not write checkpoint {path}: {write_error_reason(exc)}; {intact}"
    return None


def write_error_reason(exc: BaseException) -> str:
    """A short reason for a failed write (safetensors wraps the OS error in its own text)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    found = re.search(r'message: "([^"]+)"', str(exc))
    return found.group(1) if found else f"{type(exc).__name__}: {exc}"


def _prune(root: Path, keep_last: int) -> None:
    """Remove leftovers of interrupted saves (``*.tmp``, ``*.old``) and all but the ``keep_last`` newest."""
    for p in root.iterdir():
        if p.suffix in (".tmp", ".old") and CKPT_RE.match(p.stem):
            shutil.rmtree(p, ignore_errors=True)
    if keep_last > 0:
        done = sorted((p for p in root.iterdir() if CKPT_RE.match(p.name)), key=lambda p: p.name)
        for old in done[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ reading


def read_state(path: Path) -> dict:
    """A checkpoint's ``state.json``; ``CheckpointError`` naming the file if it cannot be read."""
    file = path / "state.json"
    try:
        state = json.loads(file.read_text())
        for key in ("trainer", "optimizer", "scheduler", "python_random", "processes"):
            state[key]  # noqa: B018 - every key must be there
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{file}: cannot read: {type(e).__name__}: {e}") from None
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{file}: not a grouptune checkpoint state (no {e})") from None
    return state


def _tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (OSError, SafetensorError, ValueError) as e:
        raise CheckpointError(f"{file}: cannot read: {type(e).__name__}: {e}") from None


def resumable_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint that passes ``verify``, and what is wrong with each newer one."""
    skipped = []
    for path in complete_checkpoints(output_dir):
        problem = verify(path)
        if problem is None:
            return path, skipped
        skipped.append(problem)
    return None, skipped


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG from ``path``; return the trainer counters.

    Called by every process: the main process reads the tensors and broadcasts them, each
    process keeps its shard (FSDP) or a full copy; under ZeRO every process reads them and
    writes its own partitions. The small files are read by every process. A file that cannot
    be read is a ``CheckpointError`` naming it, on every process.
    """
    zero = _is_zero(optimizer)  # every process reads the files: each writes its own partitions
    broadcast = _distributed() and not zero
    weights, optim, problem = {}, {}, [None]
    try:
        state = read_state(path)
        if _is_main() or zero:
            weights, optim = _read_tensors(path, model, state)
    except CheckpointError as e:
        problem = [str(e)]
    if broadcast:  # every process raises, none waits for a broadcast that never comes
        dist.broadcast_object_list(problem, src=0)
    if problem[0]:
        raise CheckpointError(problem[0])
    if zero:
        _zero_load(model, optimizer, weights, optim)
    else:
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=broadcast, strict=False)
        set_model_state_dict(model, weights, options=options)
        set_optimizer_state_dict(model, optimizer, optim, options=options)
    scheduler.load_state_dict(state["scheduler"])
    _restore_rng(_tensors(path / "rng.safetensors"), saved_by=state["processes"])
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))
    return state["trainer"]


def _read_tensors(path: Path, model, state: dict) -> tuple[dict, dict]:
    weights = _tensors(path / "model.safetensors")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    unknown, missing = set(weights) - set(model.state_dict()), trainable - set(weights)
    if unknown or missing:
        raise CheckpointError(
            f"{path / 'model.safetensors'}: checkpoint weights do not match the model "
            f"(e.g. {sorted(unknown or missing)[:3]})"
        )
    try:
        optim = _optimizer_from_files(_tensors(path / "optimizer.safetensors"), state["optimizer"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path / 'optimizer.safetensors'}: optimizer state does not parse ({e})") from None
    return weights, optim


def set_learning_rate(scheduler, lr: float) -> None:
    """A new base learning rate for a resumed run: the scheduler's base and every param group's
    current rate, at the scheduler's position in its schedule (warm-up, decay) as it stands."""
    groups = scheduler.optimizer.param_groups
    scheduler.base_lrs = [lr for _ in groups]
    factors = [f(scheduler.last_epoch) for f in scheduler.lr_lambdas]
    for group, factor in zip(groups, factors):
        group["initial_lr"] = lr
        group["lr"] = lr * factor
    scheduler._last_lr = [group["lr"] for group in groups]


def _restore_rng(rng: dict[str, torch.Tensor], saved_by: int) -> None:
    """This process's generator states; rank 0's when the checkpoint had fewer processes."""
    rank = dist.get_rank() if _distributed() else 0
    prefix = f"rank{rank if rank < saved_by else 0}/"
    torch.set_rng_state(rng[prefix + "torch"])
    if torch.cuda.is_available() and prefix + "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"{prefix}cuda{i}"] for i in range(torch.cuda.device_count())])


def _py_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]

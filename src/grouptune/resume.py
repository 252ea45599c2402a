"""Resuming a run: from which checkpoint, and whether this run's settings may continue it.

``checkpoint_to_resume``: the newest complete checkpoint that passes its integrity check
(``grouptune.manifest.verify``); each newer one that fails is reported with its path and the
failing file, and the run falls back, saying so. None passing is a ``CheckpointError``.

``check_settings``: the resuming run's resolved config against the one the checkpoint
recorded (``config.resume_changes``). A setting that changes what the run means (method,
group size, model, data, batch arithmetic, seed, ...) refuses the resume with a list of the
differences; one marked ``may_change`` (total batches, logging, evaluation, checkpointing,
the learning rate, ...) is applied and reported. Nothing is recorded and then ignored: a new
``optim.lr`` goes into the optimizer and its schedule (``checkpoint.set_learning_rate``).

Under several processes the main process verifies the files and broadcasts its choice.
"""

from __future__ import annotations

from pathlib import Path

from grouptune import checkpoint as ckpt
from grouptune.config import ConfigError, TrainConfig, resume_changes
from grouptune.rundir import notice


def prepare(cfg: TrainConfig, acc) -> tuple[Path, list[str]] | None:
    """With ``checkpoint.resume``: the checkpoint to resume from and the allowed setting changes,
    both checked before any model loads; None for a new run."""
    if not cfg.checkpoint.resume:
        return None
    path = checkpoint_to_resume(Path(cfg.log.output_dir), acc)
    return path, check_settings(path, cfg, acc)


def checkpoint_to_resume(out: Path, acc) -> Path:
    """The newest checkpoint under ``out`` that verifies (see the module doc)."""
    found = [None, []]
    if acc.is_main_process:
        path, skipped = ckpt.resumable_checkpoint(out)
        found = [str(path) if path else None, skipped]
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(found, from_process=0)
    path, skipped = found
    if acc.is_main_process:
        for problem in skipped:
            notice(f"checkpoint failed its integrity check: {problem}")
    if path is None and not skipped:
        raise ConfigError(f"checkpoint.resume: no complete checkpoint under {out / 'checkpoints'}")
    if path is None:
        raise ckpt.CheckpointError(
            f"checkpoint.resume: no checkpoint under {out / 'checkpoints'} passes its integrity check:\n  "
            + "\n  ".join(skipped)
        )
    if skipped and acc.is_main_process:
        notice(f"resuming from {path}, the newest checkpoint that passes its integrity check")
    return Path(path)


def check_settings(path: Path, cfg: TrainConfig, acc) -> list[str]:
    """Refuse settings that change the run (``ConfigError`` listing them); report and return
    the allowed changes (``"name: old -> new"``)."""
    saved = ckpt.read_state(path).get("config")
    if saved is None:
        if acc.is_main_process:
            notice(f"{path} does not record its run's settings (written by an older grouptune): "
                   "they are not compared with this run's")  # fmt: skip
        return []
    refused, allowed = resume_changes(saved, cfg)
    if refused:
        raise ConfigError(
            f"checkpoint.resume: these settings differ from those of the run being resumed ({path}) and "
            "would change what it trains:\n  " + "\n  ".join(refused) + "\nresume with the run's own settings "
            f"(in {Path(cfg.log.output_dir) / 'config.yaml'}), or start a new run in another log.output_dir"
        )
    if allowed and acc.is_main_process:
        notice("resuming with changed settings, applied: " + "; ".join(allowed))
    return allowed


def apply_changes(changes: list[str], scheduler, cfg: TrainConfig) -> None:
    """What an allowed change needs beyond the resolved config (after the checkpoint is loaded):
    a new ``optim.lr`` replaces the checkpoint's in the optimizer and its schedule. (A new
    ``optim.total_batches`` already sets the schedule's length: the scheduler is built from it.)"""
    if any(c.startswith("optim.lr:") for c in changes):
        ckpt.set_learning_rate(scheduler, cfg.optim.lr)


def final_save_failed(trainer, error: Exception) -> ckpt.CheckpointWriteError:
    """The final model could not be written: leave a checkpoint of the last rollout batch (unless
    there is one) and return the error that says how to finish (a checkpoint that cannot be
    written either raises its own ``CheckpointWriteError``)."""
    last = ckpt.checkpoint_dir(trainer.out, trainer.state["batch"])
    if ckpt.latest_checkpoint(trainer.out) != last:
        trainer.save_checkpoint()
    return ckpt.CheckpointWriteError(
        f"{error}. A checkpoint of the last rollout batch is at {last}: finish with the same command and "
        "--checkpoint.resume true (it writes final/ without training again)"
    )

"""What a run writes about itself: ``config.yaml``, ``metrics.jsonl``, ``samples.jsonl``,
accelerate's trackers (TensorBoard, W&B, trackio) and the progress bar.

Only the main process writes files. Every record carries its rollout batch; after a resume,
records of batches past the checkpoint (written before a crash) are dropped, because the
resumed run writes them again, identically: each batch is logged once.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from accelerate import Accelerator

from grouptune.config import TrainConfig, config_to_dict, config_to_yaml, flat_settings
from grouptune.rollout import Batch

LOGS = ("metrics.jsonl", "samples.jsonl")


class RunLog:
    def __init__(self, cfg: TrainConfig, acc: Accelerator):
        self.cfg, self.acc = cfg, acc
        self.out = Path(cfg.log.output_dir)
        self.progress = None

    def start(self, batch: int) -> None:
        """Write the resolved config, start the trackers and the progress bar at ``batch``."""
        lg = self.cfg.log
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(config_to_yaml(self.cfg))
        if lg.report_to:
            self.acc.init_trackers("grouptune", config=_tracker_config(self.cfg))
        from tqdm.auto import tqdm

        self.progress = tqdm(
            total=self.cfg.optim.total_batches, initial=batch, desc=self.cfg.method.name,
            disable=not (lg.progress and self.acc.is_main_process), unit="batch", dynamic_ncols=True,
        )  # fmt: skip

    def batch_done(self, state: dict, metrics: dict, batch: Batch) -> None:
        """Log rollout batch ``state["batch"]`` (every ``log_every`` batches and the last) and tick the bar."""
        b = state["batch"]
        if b % self.cfg.log.log_every == 0 or b == self.cfg.optim.total_batches:
            self.write({"batch": b, "optimizer_steps": state["optimizer_steps"], **metrics})
            if self.cfg.log.report_to:
                self.acc.log(metrics, step=b)
            self._samples(b, batch)
        self.progress.update(1)
        self.progress.set_postfix(_postfix(metrics), refresh=False)

    def write(self, record: dict) -> None:
        """One line of ``metrics.jsonl``."""
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _samples(self, b: int, batch: Batch) -> None:
        """The first members of the batch with their completions, rewards and advantages."""
        n = min(self.cfg.log.samples_per_log, len(batch.texts or []))
        if not (self.acc.is_main_process and n):
            return
        with open(self.out / "samples.jsonl", "a") as f:
            for i in range(n):
                f.write(json.dumps({
                    "batch": b, "example": int(batch.example_index[i]), "on_policy": bool(batch.on_policy[i]),
                    "completion": batch.texts[i], "reward": _float(batch.rewards[i]),
                    "advantage": _float(batch.adv[i]) if batch.adv is not None else None,
                }) + "\n")  # fmt: skip

    def drop_after(self, batch: int) -> None:
        """Drop records of batches after ``batch`` (the checkpoint a run resumes from). Resuming
        at the last batch (the final save failed, or the run stopped at its end) also drops the
        final evaluation's record, which the resumed run writes again."""
        if not self.acc.is_main_process:
            return
        for path in (self.out / name for name in LOGS):
            if path.is_file():
                final = batch >= self.cfg.optim.total_batches and path.name == "metrics.jsonl"
                lines = path.read_text().splitlines(keepends=True)
                keep = [line for line in lines if _logged_batch(line) <= batch and not (final and _final_eval(line, batch))]
                path.with_suffix(".tmp").write_text("".join(keep))
                os.replace(path.with_suffix(".tmp"), path)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        self.acc.end_training()


def _logged_batch(line: str) -> float:
    """The batch of a JSON Lines log record; infinite for a line cut short by a crash."""
    try:
        return json.loads(line)["batch"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _final_eval(line: str, batch: int) -> bool:
    """The final evaluation's record of ``batch``: batch records carry ``optimizer_steps``, it does not."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("batch") == batch and "optimizer_steps" not in record


def _float(x) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v


def _tracker_config(cfg: TrainConfig) -> dict:
    """The settings as trackers take them: dotted names, leaves that are not numbers or text as text."""
    flat = flat_settings(config_to_dict(cfg))
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}


def _postfix(metrics: dict) -> dict:
    keys = {"loss": "loss", "reward/mean": "reward", "entropy": "ent", "grad_norm": "gnorm"}
    return {short: f"{metrics[k]:.3g}" for k, short in keys.items() if k in metrics}

"""Stopping cleanly on SIGTERM / SIGINT (a preemption, a Ctrl-C): the trainer finishes the
rollout batch, saves a resumable checkpoint and returns; a second signal stops at once."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def catch_signals(trainer):
    """SIGTERM / SIGINT: finish the current rollout batch, save a checkpoint, return.

    A second signal before then raises ``KeyboardInterrupt`` (stop now, no checkpoint).
    Handlers can only be installed from the main thread; elsewhere signals keep their handlers.
    """

    def handler(signum, frame):
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt(f"signal {signum} received twice: stopping without a checkpoint")
        trainer.stop_signal = signum  # no printing here: the signal may arrive in the middle of a print

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

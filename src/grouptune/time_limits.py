"""Time limits for code that may never return: judging a math answer with math-verify.

Math-verify's own limits use ``signal.alarm``, which exists only
in the main thread (elsewhere it raises). We switch them off and impose our own limit on
each answer (parse + verify together):
    - main thread: ``signal.setitimer`` in-process (cheap, fractional seconds);
    - any other thread: a persistent worker process (``grouptune.answers.serve_math_judge``)
      judges the answer and is killed and restarted when it overruns.
An answer that runs out of time is unjudged (None). On platforms without ``SIGALRM``
(Windows) the limit is not enforced.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from grouptune.answers import math_equal

logger = logging.getLogger("grouptune.rewards")


class _OutOfTime(BaseException):
    """Raised by our SIGALRM handler. A BaseException, so the ``except Exception`` blocks of
    math-verify and sympy cannot turn it into a wrong answer."""


@contextmanager
def _alarm(seconds: float):
    def on_alarm(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _MathWorker:
    """A child process running ``serve_math_judge``; one answer at a time, killed on overrun."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = 0  # a forked child must not share its parent's pipes

    def judge(self, gold: str, boxed: str, seconds: float) -> bool | None:
        with self._lock:
            proc = self._running()
            proc.stdin.write(json.dumps([gold, boxed]) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], seconds)
            if not ready:
                self.stop()
                raise _OutOfTime
            line = proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError(f"the math-verify worker process died: {self._stderr_tail()}")
            return json.loads(line)

    def _running(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None and self._owner_pid == os.getpid():
            return self._proc
        self._start()
        return self._proc

    def _start(self) -> None:
        src_dir = str(Path(__file__).resolve().parents[1])  # so the child finds this grouptune
        paths = [src_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from grouptune.answers import serve_math_judge; serve_math_judge()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env,
        )  # fmt: skip
        self._owner_pid = os.getpid()
        ready, _, _ = select.select([self._proc.stdout], [], [], 120.0)
        if not ready or self._proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError(f"the math-verify worker process did not start: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:] or "(no output)"

    def stop(self) -> None:
        if self._proc is not None and self._owner_pid == os.getpid():
            self._proc.kill()
            self._proc.wait()
        self._proc = None


_WORKER = _MathWorker()
atexit.register(_WORKER.stop)


def judge_math(gold: str, boxed: str, timeout: float) -> bool | None:
    """``math_equal`` under a time limit of ``timeout`` seconds; None if unjudged (see module doc)."""
    if not hasattr(signal, "setitimer"):  # no SIGALRM (Windows): no limit
        return math_equal(gold, boxed)
    try:
        if threading.current_thread() is not threading.main_thread():
            return _WORKER.judge(gold, boxed, timeout)
        with _alarm(timeout):
            return math_equal(gold, boxed)
    except _OutOfTime:
        logger.warning("math reward: answer %r not judged within %.3g s, counted unjudged", boxed[:200], timeout)
        return None

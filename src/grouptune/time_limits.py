"""Time limits for code that may never return: judging a math answer with math-verify, and
a call of a user reward function or reward model (``run_with_time_limit``).

Math-verify's own limits use ``signal.alarm``, which exists only
in the main thread (elsewhere it raises). We switch them off and impose our own limit on
each answer (parse + verify together):
    - main thread: ``signal.setitimer`` in-process (cheap, fractional seconds);
    - any other thread: a persistent worker process (``grouptune.answers.serve_math_judge``)
      judges the answer and is killed and restarted when it overruns.
An answer that runs out of time is unjudged (None). On platforms without ``SIGALRM``
(Windows) the limit is not enforced.

Limits nest (a reward function's limit around the math judge's limits inside it): one
``SIGALRM`` timer is armed for the nearest deadline, and the exception raised names its
deadline, so each limit catches only its own.

``run_with_time_limit(fn, seconds)`` raises ``TimeLimitExceeded`` when ``fn`` has not
returned after ``seconds``:
    - main thread: ``SIGALRM`` interrupts ``fn`` where it is (between Python bytecodes: a call
      stuck inside C code that never returns to Python is interrupted when it does); the
      exception's ``__cause__`` has the traceback of where ``fn`` was;
    - any other thread (signals reach only the main thread): ``fn`` runs in a daemon thread
      that is waited for ``seconds``; on timeout that thread cannot be stopped: it runs on in
      the background until ``fn`` returns (its result is dropped) or the process exits.
The failure is never swallowed: the caller gets the exception.
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
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grouptune.answers import math_equal

logger = logging.getLogger("grouptune.rewards")


class _OutOfTime(BaseException):
    """Raised by our SIGALRM handler (``deadline``: the limit that ran out) and by the math
    worker. A BaseException, so the ``except Exception`` blocks of math-verify, sympy or a user
    function cannot turn it into a wrong answer."""

    def __init__(self, message: str = "out of time", deadline: _Deadline | None = None):
        super().__init__(message)
        self.deadline = deadline


class TimeLimitExceeded(Exception):
    """``run_with_time_limit``: the function did not return in time."""


@dataclass(eq=False)
class _Deadline:
    at: float  # time.monotonic()
    seconds: float
    fired: bool = False

    @classmethod
    def after(cls, seconds: float) -> _Deadline:
        return cls(time.monotonic() + seconds, seconds)


_DEADLINES: list[_Deadline] = []  # the limits in force in the main thread, outermost first
_PREVIOUS_HANDLER: list = []


def _arm() -> None:
    """Set the timer for the nearest deadline that has not fired (or switch it off)."""
    pending = [d.at for d in _DEADLINES if not d.fired]
    delay = max(min(pending) - time.monotonic(), 1e-4) if pending else 0.0
    signal.setitimer(signal.ITIMER_REAL, delay)


def _on_alarm(signum, frame):
    now = time.monotonic()
    due = [d for d in _DEADLINES if not d.fired and d.at <= now]
    if not due:  # woken early: wait on
        _arm()
        return
    due[0].fired = True  # the outermost: it ends the most work
    _arm()
    raise _OutOfTime(f"stopped here after {due[0].seconds:g} s", due[0])


@contextmanager
def _alarm(deadline: _Deadline):
    """Raise ``_OutOfTime(deadline)`` in the main thread when ``deadline`` passes; nests."""
    if not _DEADLINES:
        _PREVIOUS_HANDLER[:] = [signal.signal(signal.SIGALRM, _on_alarm)]
    _DEADLINES.append(deadline)
    _arm()
    try:
        yield
    finally:
        _DEADLINES.remove(deadline)
        if _DEADLINES:
            _arm()
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _PREVIOUS_HANDLER.pop())


def run_with_time_limit(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()``, or ``TimeLimitExceeded`` after ``seconds`` (0 or less: no limit); see the module doc."""
    if not seconds or seconds <= 0:
        return fn()
    if threading.current_thread() is threading.main_thread():
        if not hasattr(signal, "setitimer"):  # no SIGALRM (Windows): no limit
            return fn()
        mine = _Deadline.after(seconds)
        try:
            with _alarm(mine):
                return fn()
        except _OutOfTime as exc:
            if exc.deadline is not mine:
                raise
            raise TimeLimitExceeded(f"did not return within {seconds:g} s") from exc
    return _in_thread(fn, seconds)


def _in_thread(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()`` in a daemon thread, waited for ``seconds``; left running in the background on timeout."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="grouptune-time-limited", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeLimitExceeded(f"did not return within {seconds:g} s (it runs on in a background thread)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


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
    mine = _Deadline.after(timeout)
    try:
        if threading.current_thread() is not threading.main_thread():
            return _WORKER.judge(gold, boxed, timeout)
        with _alarm(mine):
            return math_equal(gold, boxed)
    except _OutOfTime as exc:
        if exc.deadline not in (None, mine):  # an enclosing limit (the reward function's) ran out
            raise
        logger.warning("math reward: answer %r not judged within %.3g s, counted unjudged", boxed[:200], timeout)
        return None

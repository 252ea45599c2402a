"""An output directory belongs to one run: a lock while a run writes, and no silent reuse.

``claim`` is called by the trainer before anything loads:

- **The lock.** ``<output_dir>/run.lock`` is locked with ``flock`` while a run writes there,
  and holds the run's PID, host, start time and command. A second run on the same directory
  is refused, naming the holder. The kernel releases the lock when its process dies, however
  it dies, so a lock file left by a killed run is stale by construction: the next run takes it
  over and says whose it was. (``flock`` works on local file systems and on NFS through the
  kernel's emulation with POSIX locks; on a platform without ``fcntl`` there is no lock.)
- **No silent reuse.** A new run in a directory that already holds a run (checkpoints, the
  final model, metrics or samples) is refused unless it resumes that run
  (``checkpoint.resume``) or replaces it (``log.overwrite``, which deletes ``RUN_FILES``
  when the new run starts, after its model and data have loaded).

Under several processes only the main process takes the lock and looks at the directory; the
verdict is broadcast, so every process raises the same error (none waits for a collective
that never comes).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import sys
import time
import weakref
from pathlib import Path

from grouptune.config import ConfigError, TrainConfig

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK = "run.lock"
# What a run writes in its output directory, and what log.overwrite deletes: checkpoints, the
# final model (and an interrupted one), the logs, the resolved config, accelerate's tracker logs.
RUN_FILES = ("checkpoints", "final", "final.tmp", "final.old", "metrics.jsonl", "samples.jsonl", "config.yaml",
             "grouptune")  # fmt: skip


class OutputDirError(ConfigError):
    """The output directory is in use by another run, or holds a run this one would mix with."""


def notice(message: str) -> None:
    """A one-line message to the user (stderr), for what the run does on its own initiative."""
    print(f"grouptune: {message}", file=sys.stderr, flush=True)


class RunLock:
    """The held lock of one output directory (``release`` is idempotent; also on garbage collection)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._finalizer = weakref.finalize(self, _unlock, path, fd)

    def release(self) -> None:
        self._finalizer()


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file, then unlock: a run waiting on the old file sees it is gone and retries."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def acquire(out: Path) -> RunLock | None:
    """Lock ``out`` for this process, or ``OutputDirError`` naming the run that holds it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"log.output_dir: cannot create {out}: {e.strerror or e}") from None
    if fcntl is None:  # pragma: no cover
        return None
    path = out / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputDirError(f"log.output_dir: cannot write in {out}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputDirError(
                f"log.output_dir {out} is in use by another run ({holder}); wait for it to finish, stop it, "
                "or choose another log.output_dir"
            ) from None
        try:  # the file may have been removed (its run ended) between our open and our lock
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _read(fd)
    if previous:
        notice(f"took over {path} from a run that is no longer running ({_describe(previous)})")
    os.ftruncate(fd, 0)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
          "command": " ".join(sys.argv)[:500]}  # fmt: skip
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    return RunLock(path, fd)


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 1 << 16, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?", "started": "?", "note": "unreadable lock file"}


def _holder(fd: int) -> str:
    return _describe(_read(fd)) or "a run that has not written its details yet"


def _describe(info: dict) -> str:
    if not info:
        return ""
    text = f"PID {info.get('pid', '?')}"
    if info.get("host") and info["host"] != socket.gethostname():
        text += f" on {info['host']}"
    return text + f", started {info.get('started', '?')}" + (f": {info['command']}" if info.get("command") else "")


def earlier_run(out: Path) -> list[str]:
    """What in ``out`` an earlier run left (checkpoints, final model, logs), as short descriptions."""
    found = []
    checkpoints = out / "checkpoints"
    if checkpoints.is_dir() and (names := sorted(p.name for p in checkpoints.iterdir())):
        found.append(f"{len(names)} checkpoint(s), the last {names[-1]}")
    if (out / "final").exists():
        found.append("a final model (final/)")
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = out / name
        if path.is_file() and path.stat().st_size > 0:
            found.append(name)
    return found


def check_reuse(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a new run in a directory that holds an earlier one, unless it resumes or replaces it."""
    found = earlier_run(out)
    if found and not (resume or overwrite):
        raise OutputDirError(
            f"log.output_dir {out} already holds a run ({'; '.join(found)}). Continue it with "
            "--checkpoint.resume true, replace it with --log.overwrite true (deletes its checkpoints/, final/, "
            "metrics.jsonl, samples.jsonl, config.yaml and tracker logs when the new run starts), or choose "
            "another log.output_dir"
        )


def clear(out: Path) -> list[str]:
    """``log.overwrite``: delete what an earlier run wrote in ``out`` (``RUN_FILES``); return what went."""
    gone = []
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        gone.append(name)
    return gone


class OutputDir:
    """This run's hold on its output directory (every process has one; the main process's holds the lock)."""

    def __init__(self, cfg: TrainConfig, is_main: bool):
        self.out, self.cfg, self.is_main = Path(cfg.log.output_dir), cfg, is_main
        self.lock: RunLock | None = None

    def claim(self) -> str | None:
        """Main process: take the lock and check for an earlier run; the error message, or None."""
        if not self.is_main:
            return None
        try:
            self.lock = acquire(self.out)
            check_reuse(self.out, self.cfg.checkpoint.resume, self.cfg.log.overwrite)
        except OutputDirError as e:
            self.release()
            return str(e)
        return None

    def start(self) -> None:
        """When the run starts writing: ``log.overwrite`` deletes the earlier run."""
        if self.is_main and self.cfg.log.overwrite and (gone := clear(self.out)):
            notice(f"log.overwrite: deleted {', '.join(gone)} of the earlier run in {self.out}")

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def claim(cfg: TrainConfig, acc) -> OutputDir:
    """Lock ``cfg.log.output_dir`` for this run and refuse a reused one (see the module doc);
    every process of ``acc`` raises the same ``OutputDirError``."""
    hold = OutputDir(cfg, acc.is_main_process)
    problem = [hold.claim()]
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(problem, from_process=0)
    if problem[0]:
        raise OutputDirError(problem[0])
    return hold


def releasing(always: bool):
    """Decorate a ``Trainer`` method: release its ``run_dir`` when the method raises (and,
    with ``always``, when it returns), so a failed or finished run frees its directory."""

    def wrap(method):
        @functools.wraps(method)
        def inner(self, *args, **kwargs):
            try:
                result = method(self, *args, **kwargs)
            except BaseException:
                if getattr(self, "run_dir", None) is not None:
                    self.run_dir.release()
                raise
            if always:
                self.run_dir.release()
            return result

        return inner

    return wrap

"""Directories written whole or not at all, and checked when read: checkpoints and the final model.

A directory is written into ``<name>.tmp`` (``fresh_tmp``), then ``publish`` writes its
``manifest.json`` — the size and sha256 of every other file, computed from the files as they
are on disk — flushes everything to disk and renames it into place. A crash at any point
leaves either the previous directory or the new one, complete, never a mix.

``verify`` checks a directory against its manifest and says what is wrong, naming the file:
missing, a different size (truncated, overwritten) or a different checksum (same size,
different bytes). A directory without a manifest (written by an older grouptune) is checked
for readability only: its JSON parses, its safetensors headers parse and fit the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

MANIFEST = "manifest.json"
_CHUNK = 1 << 22


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path) -> None:
    files = {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in _files(directory)}  # fmt: skip
    write_json(directory / MANIFEST, {"format": 1, "files": files})


def fresh_tmp(path: Path) -> Path:
    """An empty ``<path>.tmp`` to write into (a leftover of an interrupted write is removed)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, path: Path) -> Path:
    """Manifest, flush, then rename ``tmp`` to ``path`` (an existing ``path`` is set aside
    first, never deleted before the new one is in place, then removed)."""
    write_manifest(tmp)
    for f in _files(tmp):
        fsync(f)
    fsync(tmp)
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def verify(directory: Path) -> str | None:
    """None if ``directory`` matches its manifest; else what is wrong, naming the file."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return _unreadable(directory)
    try:
        files = json.loads(manifest.read_text())["files"]
        entries = [(directory / name, int(e["bytes"]), str(e["sha256"])) for name, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{manifest}: unreadable manifest ({type(e).__name__}: {e})"
    for path, size, _ in entries:  # sizes first: cheap, and they catch truncation
        if not path.is_file():
            return f"{path}: missing (listed in {MANIFEST})"
        if path.stat().st_size != size:
            return f"{path}: {path.stat().st_size} bytes, {MANIFEST} says {size} (truncated or overwritten)"
    for path, _, digest in entries:
        if sha256(path) != digest:
            return f"{path}: contents differ from {MANIFEST} (sha256 mismatch: the file is corrupted)"
    return None


def _unreadable(directory: Path) -> str | None:
    """Without a manifest: the first JSON or safetensors file that does not parse, or None."""
    from safetensors import safe_open

    for path in _files(directory):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                with safe_open(path, "pt") as f:
                    f.keys()
        except Exception as e:  # noqa: BLE001 - any failure to parse is the answer
            return f"{path}: unreadable ({type(e).__name__}: {e}); no {MANIFEST} to check it against"
    return None


def write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())


def fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

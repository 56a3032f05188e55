"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never a torn one.

The data goes to a temporary file in the same directory (same file system, so the rename is atomic),
is fsynced, renamed over the target with ``os.replace``, and the directory is fsynced so the rename
itself survives a power loss. A failed write leaves the target as it was and no temporary file behind.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename (or a new entry) in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) for a writer that takes a file name (``onnx.save``,
    a quantizer): when the block ends without error the file written there is fsynced and replaces
    ``path``; otherwise it is removed and ``path`` is untouched. Creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (permissions as ``open`` gives: 0666 less the umask)."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = None,
                      sort_keys: bool = False, ensure_ascii: bool = True) -> None:
    """Write ``obj`` as JSON (``json.dumps`` with these options, UTF-8, a final newline) atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
                              + "\n").encode("utf-8"))

"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every write that matters (checkpoints, results, figures) goes through :func:`atomic_write`: the
content goes to a temp file in the destination's folder, is flushed and fsynced, then renamed over
the destination with ``os.replace`` (atomic on POSIX and Windows). A failure half-way leaves no
stray temp file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_torch_save", "atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temp file next to ``path``, then move it onto ``path``.

    Args:
        path: Destination file; missing parent folders are created.
        write: Writes the content to a binary file handle.

    Returns:
        The destination path.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write(d / "sub" / "a.bin", lambda h: h.write(b"hi")).read_bytes()
        b'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (see :func:`atomic_write`)."""
    import torch

    return atomic_write(path, lambda handle: torch.save(payload, handle))

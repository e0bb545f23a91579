"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every write that matters (checkpoints, results, figures, data files, provenance notes) goes
through :func:`atomic_write` or one of its forms (:func:`atomic_write_text`,
:func:`atomic_write_json`, :func:`atomic_torch_save`): the content goes to a temp file in the
destination's folder, is flushed and fsynced, then renamed over the destination with
``os.replace`` (atomic on POSIX and Windows). A failure half-way leaves no stray temp file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_torch_save", "atomic_write", "atomic_write_json", "atomic_write_text", "write_rows"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *,
                 mode: int | None = None) -> Path:
    """Call ``write(handle)`` on a temp file next to ``path``, then move it onto ``path``.

    Args:
        path: Destination file; missing parent folders are created.
        write: Writes the content to a binary file handle.
        mode: Permission bits of the result (``None``: the temp file's, owner-only; data files
            meant to be shared pass ``0o644``).

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
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (see :func:`atomic_write`)."""
    import torch

    return atomic_write(path, lambda handle: torch.save(payload, handle))


def atomic_write_text(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    Args:
        path: Destination file (missing parent folders are created).
        text: Content to write (UTF-8).
        mode: Permission bits of the result (see :func:`atomic_write`).

    Returns:
        The destination path.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_text(d / "a.txt", "hi").read_text()
        'hi'
    """
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), mode=mode)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise ``obj`` as indented JSON and write it atomically.

    Non-finite floats are written as ``null`` (strict JSON has no NaN), so any JSON reader can
    load the file.

    Args:
        path: Destination file.
        obj: JSON-able object (dicts, lists, str, int, float, bool, None; numpy scalars allowed).

    Returns:
        The destination path.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = atomic_write_json(d / "r.json", {"acc": float("nan")})
        >>> (d / "r.json").read_text().replace(" ", "").replace("\\n", "")
        '{"acc":null}'
    """
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and NaN to plain JSON values."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(obj.tolist())
    raise TypeError(f"cannot write {type(obj).__name__} value {obj!r} to JSON")


def write_rows(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file (UTF-8, ``\\n`` line ends) atomically, readable by everyone (``0o644``).

    Rows are streamed to the temp file, so a large data set is never held as one string.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> write_rows(d / "a.csv", ["x", "y"], [[1, "a"], [2, "b"]]).read_text()
        'x,y\\n1,a\\n2,b\\n'
    """
    import csv
    import io

    def write(handle: IO[bytes]) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        text.flush()
        text.detach()

    return atomic_write(path, write, mode=0o644)

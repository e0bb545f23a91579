"""Reading checkpoint files without running code from them.

Checkpoints come from users and from the internet (the official ``eqr.pth`` is a download), so
they are untrusted: a pickle can name any Python callable and have it called while loading.
:func:`safe_torch_load` always loads with ``torch.load(weights_only=True)``, whose unpickler only
builds tensors, dicts, lists, tuples, strings and numbers, plus a small allow-list:

- numpy arrays, dtypes and scalars (the numpy RNG state in training checkpoints written by
  eqsolve before it stored that state as plain numbers, and in official training checkpoints);
- the official code's carry dataclasses (``models.eqr.LatentCarry``/``ModelCarry`` and the TRM
  ones, saved in its training checkpoints), rebuilt as inert :class:`OpaqueObject` records so
  that the file's tensors can still be read without the official code installed.

Nothing on the list calls anything but a constructor of plain data. Any other global (a
``__reduce__`` that names ``os.system``, a foreign class) is refused before it is called, and
every failure is one :class:`ValueError` line naming the file.

Examples:
    >>> import io, os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save({"w": torch.ones(2)}, path)
    >>> safe_torch_load(path)["w"].tolist()
    [1.0, 1.0]
    >>> with open(path, "wb") as handle:
    ...     _ = handle.write(b"not a checkpoint")
    >>> safe_torch_load(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: checkpoint .../w.pt is not a torch checkpoint (it starts with ...
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = ["OpaqueObject", "safe_torch_load"]

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)|unsupported GLOBAL (\S+)"
                          r"|unrecognized function (\S+)|new object for \S+ .* but got (\S+)")

#: Classes of the official EqR/TRM code that its training checkpoints pickle (the carry).
_OFFICIAL_CLASSES = ("models.eqr.LatentCarry", "models.eqr.ModelCarry",
                     "models.trm.LatentCarry", "models.trm.ModelCarry")


class OpaqueObject:
    """Stand-in for an allow-listed foreign class: holds the unpickled fields, runs nothing.

    Examples:
        >>> record = OpaqueObject.__new__(OpaqueObject)
        >>> record.__setstate__({"z_H": 1})
        >>> record.z_H
        1
    """

    def __setstate__(self, state: Any) -> None:
        """Keep the pickled state as attributes (a dict) or under ``state`` (anything else)."""
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict, slots) as pickle writes for classes with __slots__
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state


def _allowed_globals() -> list[Any]:
    """The allow-list, as ``(object, "module.name")`` pairs where the pickled name differs."""
    import numpy as np

    allowed: list[Any] = [np.ndarray, np.dtype]
    # numpy 2 pickles `numpy._core...`, numpy 1 `numpy.core...`; accept both spellings
    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    for prefix in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed += [(reconstruct, f"{prefix}._reconstruct"), (scalar, f"{prefix}.scalar")]
    # numpy >= 1.25 may pickle a dtype through its class (numpy.dtypes.Float64DType, ...)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")
                    and name not in ("StringDType",) and isinstance(getattr(dtypes, name), type)]
    allowed += [(OpaqueObject, name) for name in _OFFICIAL_CLASSES]
    return allowed


def _one_line(err: BaseException) -> str:
    """The informative line of a load error (torch wraps the unpickler's in long advice)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return line.split(". ")[0].rstrip(".")  # torch's own advice follows the first sentence


def _check_magic(path: Path, what: str, advice: str) -> None:
    """Refuse a file that is neither a zip archive (torch >= 1.6) nor a pickle (older torch)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise ValueError(f"{what} {path} is an empty file, not a torch checkpoint; {advice}")
    if not (head.startswith(b"PK\x03\x04") or head[0] == 0x80):
        raise ValueError(f"{what} {path} is not a torch checkpoint (it starts with {head!r}; torch "
                         f"files are zip archives or pickles); check the path, or {advice}")


def safe_torch_load(path: str | os.PathLike, *, what: str = "checkpoint",
                    advice: str = "re-download or re-export it") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with eqsolve's allow-list; clear errors.

    Args:
        path: The file.
        what: What the file is meant to be, for messages (``"checkpoint"``, ``"--resume"``...).
        advice: What to do about a damaged file (the end of the message).

    Returns:
        The loaded object (tensors, containers, numbers, strings, numpy arrays).

    Raises:
        FileNotFoundError: No such file.
        ValueError: A folder, an unreadable file, not a torch file (random, empty or text
            bytes, a truncated zip), or a file that holds Python objects outside the allow-list
            (named; nothing of them is run).
    """
    import pickle
    import warnings

    import torch

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give the checkpoint file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        _check_magic(path, what, advice)
    except PermissionError as err:
        raise ValueError(f"{what} {path} cannot be read ({err.strerror}); check its permissions") from err
    try:
        with torch.serialization.safe_globals(_allowed_globals()), warnings.catch_warnings():
            # a pickle protocol other than torch's own is refused or read all the same; the
            # warning about it is noise on a command line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED.search(str(err))
        if found:
            name = next(g for g in found.groups() if g)
            raise ValueError(
                f"refused to load {what} {path}: it contains the Python object {name}, which a "
                "weights-only load does not build (eqsolve never runs code from checkpoint files); "
                "if you trust the file, re-save just its tensors and plain data with torch.save"
            ) from err
        raise ValueError(f"{what} {path} is corrupt or truncated, or not a torch checkpoint "
                         f"({_one_line(err)}); {advice}") from err
    except Exception as err:  # torch raises several types for torn, foreign or garbage files
        raise ValueError(f"{what} {path} is corrupt or truncated, or not a torch checkpoint "
                         f"({type(err).__name__}: {_one_line(err)}); {advice}") from err

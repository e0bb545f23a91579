"""Building an :class:`~eqsolve.models.eqr.EqR` from a file: the functional forms of its loaders.

:func:`load_checkpoint` (native or official file, detected by its layout), :func:`load_official`
and :func:`load_hub` are ``EqR.from_checkpoint``, ``EqR.from_official`` and ``EqR.load_hub``;
the file format itself is :mod:`eqsolve.models.checkpoint`.
"""

from __future__ import annotations

from typing import Any

from eqsolve.models.checkpoint import save_checkpoint
from eqsolve.models.eqr import EqR

__all__ = ["load_checkpoint", "load_hub", "load_official", "save_checkpoint"]


def load_checkpoint(path: Any, *, prefer_ema: bool = True) -> EqR:
    """An EqR, in eval mode, from a native eqsolve checkpoint or an official one (path or dict)."""
    return EqR.from_checkpoint(path, prefer_ema=prefer_ema)


def load_official(source: Any, *, prefer_ema: bool = True, seq_len: int | None = None,
                  vocab_size: int | None = None) -> EqR:
    """An EqR, in eval mode, from an official release checkpoint (path, dict or bare state dict)."""
    return EqR.from_official(source, prefer_ema=prefer_ema, seq_len=seq_len, vocab_size=vocab_size)


def load_hub(repo_id: str = "locuslab/EqR-model", filename: str = "sudoku-extreme/eqr.pth",
             **kwargs: Any) -> EqR:
    """An EqR from an official checkpoint on the HuggingFace hub (``hub`` extra)."""
    return EqR.load_hub(repo_id, filename, **kwargs)

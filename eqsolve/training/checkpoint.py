"""Training checkpoints: atomic writes, strict reads, compatibility checks, RNG capture.

A training checkpoint is a superset of the model's native format (``eqsolve.eqr/1``: keys
``format``, ``config``, ``model``, ``ema``, ``extra``), so ``EqR.from_checkpoint`` and
``eqsolve bench --checkpoint`` read it directly. The training state lives under ``train``:
step, optimizer, RNG states (torch, numpy, python and the run's own generators), the data
position (per-slot draw counters and the carried latent state), the train config, the pool
fingerprint, the git commit and the elapsed wall time.

Every entry is a tensor, a container or a plain number/string (the numpy RNG state is stored as
a dict with its key as a tensor), so the file loads with ``torch.load(weights_only=True)``:
reading a checkpoint never runs code from it. Files written before that change hold the numpy
state as an array, which the loader's allow-list still accepts (see :mod:`eqsolve._safe_load`).

Examples:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.pt")
    >>> _ = atomic_torch_save({"format": "eqsolve.eqr/1", "config": {}, "model": {}}, path)
    >>> load_training_checkpoint(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... is not a training checkpoint (no 'train' state); weights-only files ...
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqsolve._io import atomic_torch_save  # noqa: F401  (re-exported: training code saves through it)
from eqsolve._safe_load import safe_torch_load
from eqsolve.training.config import RESUMABLE_CHANGES, TrainConfig

__all__ = [
    "TRAIN_STATE_VERSION",
    "atomic_torch_save",
    "capture_global_rng",
    "check_compatible",
    "git_commit",
    "load_training_checkpoint",
    "restore_global_rng",
]

TRAIN_STATE_VERSION = 1
_REQUIRED_TRAIN_KEYS = ("version", "step", "optimizer", "train_config", "rng", "carry",
                        "pool_fingerprint")


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and sanity-check a training checkpoint.

    Args:
        path: checkpoint file.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupt/truncated, or is not an eqsolve training checkpoint.
    """
    path = Path(path)
    ckpt = safe_torch_load(path, advice=_damaged_advice(path))
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not an eqsolve checkpoint (expected keys 'model', 'config')")
    train = ckpt.get("train")
    if not isinstance(train, dict):
        raise ValueError(f"{path} is not a training checkpoint (no 'train' state); "
                         "weights-only files can be evaluated but not resumed")
    missing = [k for k in _REQUIRED_TRAIN_KEYS if k not in train]
    if missing:
        raise ValueError(f"training checkpoint {path} lacks {missing}; it is damaged or from "
                         "another version")
    if train["version"] != TRAIN_STATE_VERSION:
        raise ValueError(f"training checkpoint {path} has state version {train['version']}, "
                         f"this eqsolve writes {TRAIN_STATE_VERSION}")
    return ckpt


def _damaged_advice(path: Path) -> str:
    """What to do about a damaged ``path``: the newest other numbered checkpoint next to it.

    Numbered checkpoints are independent copies; a folder written by an older eqsolve may hold
    hard links to ``last.pt`` instead, and those share its damage, so they are left out.
    """
    others = []
    for candidate in sorted(path.parent.glob("ckpt_*.pt"), reverse=True):
        try:
            if not candidate.samefile(path):
                others.append(candidate)
        except OSError:
            continue
    if not others:
        return "delete it and start the run again (no other numbered checkpoint next to it)"
    return (f"resume from the newest other numbered checkpoint, an independent copy: --resume {others[0]}"
            + (f" (older: {', '.join(p.name for p in others[1:])})" if len(others) > 1 else ""))


def check_compatible(ckpt: dict[str, Any], model_config: dict[str, Any],
                     train_config: dict[str, Any], pool_fingerprint: str, origin: str) -> None:
    """Refuse to resume a checkpoint made with another model, recipe or data pool.

    Args:
        ckpt: loaded checkpoint.
        model_config: the current run's EqRConfig as a dict.
        train_config: the current run's TrainConfig as a dict.
        pool_fingerprint: fingerprint of the current training pool.
        origin: checkpoint path for messages.

    Raises:
        ValueError: naming every differing key with both values.
    """
    from eqsolve.models.eqr_config import EqRConfig

    # a field added to EqRConfig after the checkpoint was written is compatible at its default
    # (e.g. ffn_multiple: 256 is what every older model was built with)
    model_defaults = EqRConfig().to_dict()
    saved_model = {**model_defaults, **ckpt["config"]}
    diffs = [f"model.{k}: checkpoint {saved_model.get(k)!r} != run {v!r}"
             for k, v in model_config.items() if saved_model.get(k) != v]
    saved = ckpt["train"]["train_config"]
    # a key added to TrainConfig after the checkpoint was written is compatible at its default
    defaults = TrainConfig().to_dict()
    diffs += [f"train.{k}: checkpoint {saved.get(k, defaults.get(k))!r} != run {v!r}"
              for k, v in train_config.items()
              if k not in RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != v]
    if ckpt["train"]["pool_fingerprint"] != pool_fingerprint:
        diffs.append("training pool differs from the one the checkpoint was trained on")
    if diffs:
        raise ValueError(f"checkpoint {origin} does not match this run:\n  " + "\n  ".join(diffs))


def capture_global_rng() -> dict[str, Any]:
    """States of the global python, numpy and torch (CPU and CUDA) generators, as plain data.

    Examples:
        >>> state = capture_global_rng()
        >>> sorted(state["numpy"])
        ['cached_gaussian', 'has_gauss', 'key', 'kind', 'pos']
        >>> a = np.random.rand(); restore_global_rng(state); a == np.random.rand()
        True
    """
    kind, key, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                   "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_global_rng` (also reads the older numpy-tuple form)."""
    random.setstate(state["python"])
    saved = state["numpy"]
    if isinstance(saved, dict):
        saved = (saved["kind"], saved["key"].numpy().astype(np.uint32), saved["pos"],
                 saved["has_gauss"], saved["cached_gaussian"])
    np.random.set_state(saved)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """:func:`eqsolve.runs.git_commit` (``EQSOLVE_COMMIT`` overrides it; ``-dirty`` when
    modified), or ``"unknown"`` outside a git checkout: what checkpoints record."""
    from eqsolve._git import git_commit as _commit

    return _commit(repo) or "unknown"

"""Training checkpoints: atomic writes, strict reads, compatibility checks, RNG capture.

A training checkpoint is a superset of the model's native format (``eqsolve.eqr/1``: keys
``format``, ``config``, ``model``, ``ema``, ``extra``), so ``EqR.from_checkpoint`` and
``eqsolve bench --checkpoint`` read it directly. The training state lives under ``train``:
step, optimizer, RNG states (torch, numpy, python and the run's own generators), the data
position (per-slot draw counters and the carried latent state), the train config, the pool
fingerprint, the git commit and the elapsed wall time.

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

from eqsolve._atomic import atomic_torch_save  # noqa: F401  (re-exported: training code saves through it)
from eqsolve.training_config import RESUMABLE_CHANGES, TrainConfig

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
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for torn/garbage files
        raise ValueError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: "
                         f"{err}); delete it or resume from an older one") from err
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
    diffs = [f"model.{k}: checkpoint {ckpt['config'].get(k)!r} != run {v!r}"
             for k, v in model_config.items() if ckpt["config"].get(k) != v]
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
    """States of the global python, numpy and torch (CPU and CUDA) generators."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_global_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """:func:`eqsolve.runs.git_commit` (``EQSOLVE_COMMIT`` overrides it; ``-dirty`` when
    modified), or ``"unknown"`` outside a git checkout: what checkpoints record."""
    from eqsolve.runs import git_commit as _commit

    return _commit(repo) or "unknown"

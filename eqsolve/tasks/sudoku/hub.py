"""Download Sudoku-Extreme from the HuggingFace hub (needs the ``hub`` extra)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HUB_REPO", "fetch_sudoku_extreme"]

HUB_REPO = "sapientinc/sudoku-extreme"


def fetch_sudoku_extreme(dest: str | os.PathLike, split: str = "test", revision: str | None = None) -> Path:
    """Downloads a split of the HuggingFace dataset ``sapientinc/sudoku-extreme`` (``hub`` extra).

    Args:
        dest: folder to store the CSV in.
        split: ``"train"`` (3,831,994 rows) or ``"test"`` (422,786 rows).
        revision: a branch, tag or commit of the dataset repository (None: the default
            branch); pin one to make a measurement reproducible.

    Returns:
        Path of the downloaded CSV; load it with :func:`~eqsolve.tasks.sudoku.io.load_csv`.

    Raises:
        ImportError: huggingface_hub is not installed (``pip install eqsolve[hub]``).
        ValueError: an unknown split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ImportError(
            "downloading Sudoku-Extreme needs huggingface_hub: pip install 'eqsolve[hub]'"
        ) from exc
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return Path(
        hf_hub_download(
            repo_id=HUB_REPO, filename=f"{split}.csv", repo_type="dataset", local_dir=dest,
            revision=revision,
        )
    )

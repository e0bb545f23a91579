"""The tiny reasoners the tests train and bench (seconds on 2 CPU cores), defined once.

Import from a test module (``tests/`` is on the path through its conftest)::

    from tiny_models import tiny_config, tiny_overrides

- :func:`tiny_config`: an :class:`~eqsolve.models.eqr.EqRConfig` to train in a test (16 wide,
  1 H-cycle of 2 L-cycles of 1 layer, the light ``sudoku_pool`` mixer);
- :func:`tiny_overrides`: ``model.*=...`` overrides for the CLI and bench configs (16 wide,
  1 H-cycle of 1 L-cycle: one map is 2 block applications);
- :func:`write_puzzles`: a CSV of generated Sudoku puzzles with answers, for the bench (the
  ``puzzle_csv`` fixture of ``conftest.py`` holds six).

Either takes field changes, e.g. ``tiny_config(L_cycles=1)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eqsolve.models.eqr import EqRConfig

#: the training tests' reasoner
TRAIN_MODEL: dict[str, Any] = dict(hidden_size=16, num_heads=2, H_cycles=1, L_cycles=2, L_layers=1,
                                   mixer="sudoku_pool")
#: the bench and CLI tests' reasoner (as model fields)
BENCH_MODEL: dict[str, Any] = dict(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1, expansion=2.0)


def tiny_config(**changes: Any) -> EqRConfig:
    """:data:`TRAIN_MODEL` with ``changes``, as a config."""
    return EqRConfig(**{**TRAIN_MODEL, **changes})


def tiny_overrides(**changes: Any) -> list[str]:
    """:data:`BENCH_MODEL` with ``changes``, as ``model.<field>=<value>`` overrides."""
    return [f"model.{k}={v}" for k, v in {**BENCH_MODEL, **changes}.items()]


def write_puzzles(path: Path, n: int = 6) -> Path:
    """``n`` generated easy puzzles with their answers (seed 5), saved as a CSV at ``path``."""
    from eqsolve.tasks.sudoku import SudokuSet, generate_easy, save_csv

    save_csv(SudokuSet.from_items(generate_easy(n, seed=5), "test"), path)
    return path

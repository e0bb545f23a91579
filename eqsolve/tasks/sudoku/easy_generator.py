"""Sudoku puzzle generators: quick minimal puzzles and Sudoku-Extreme-like hard ones.

Every generated puzzle has exactly one solution (checked by the classical solver) and carries
its rating (backtracks of :func:`eqsolve.tasks.sudoku.solver.rate`). Generators take an
explicit integer ``seed`` and are deterministic given it.

- :func:`generate_easy` removes clues from a random full grid in random order, keeping a clue
  whenever removing it would lose uniqueness. The results are minimal puzzles (or stop at a
  requested clue count) and are mostly easy (rating 0-2): the training curriculum generator.
- :func:`generate` (in :mod:`eqsolve.tasks.sudoku.generator`) adds a local search that drops and
  re-adds clues and keeps the harder puzzle, to reach the Sudoku-Extreme difficulty mix.
"""

from __future__ import annotations

import numpy as np

from .solver import masks_to_digits, search_cells

__all__ = ["random_grid", "generate_easy", "minimise"]

Item = tuple[np.ndarray, np.ndarray, int]


def random_grid(rng: np.random.Generator) -> list[int]:
    """Draws a random complete valid grid.

    The three diagonal boxes (independent of each other) are filled with random permutations,
    the classical solver completes the grid, and a random relabelling of the digits plus a
    random choice among the first solutions found spreads the draws further.

    Args:
        rng: numpy random generator.

    Returns:
        81 digits (list of int), row-major.
    """
    cells = [0] * 81
    for b in range(3):
        perm = rng.permutation(9) + 1
        for k in range(9):
            cells[(b * 3 + k // 3) * 9 + b * 3 + k % 3] = int(perm[k])
    solutions, _, _ = search_cells(cells, limit=8)
    grid = masks_to_digits(solutions[int(rng.integers(len(solutions)))])
    relabel = [0] + [int(d) for d in rng.permutation(9) + 1]
    return [relabel[d] for d in grid]


def _is_unique(cells: list[int]) -> bool:
    return len(search_cells(cells, limit=2)[0]) == 1


def minimise(cells: list[int], rng: np.random.Generator, min_clues: int = 17) -> list[int]:
    """Removes clues in random order while the puzzle stays unique.

    Args:
        cells: a puzzle with a unique solution (81 ints); not modified.
        rng: random generator for the removal order.
        min_clues: stop removing once this many clues remain.

    Returns:
        The reduced puzzle (minimal when ``min_clues`` was not reached).
    """
    puzzle = list(cells)
    n_clues = sum(1 for v in puzzle if v)
    for i in rng.permutation(81).tolist():
        if n_clues <= min_clues:
            break
        v = puzzle[i]
        if not v:
            continue
        puzzle[i] = 0
        if _is_unique(puzzle):
            n_clues -= 1
        else:
            puzzle[i] = v
    return puzzle


def generate_easy(n: int, seed: int, *, clues: tuple[int, int] | None = None) -> list[Item]:
    """Generates ``n`` quick, mostly easy puzzles with unique solutions (training curricula).

    Args:
        n: number of puzzles.
        seed: random seed (use different seeds for training and evaluation data).
        clues: optional ``(low, high)``: each puzzle stops at a clue count drawn uniformly in
            that range (more clues = easier); None removes clues down to a minimal puzzle.

    Returns:
        A list of ``(question, answer, rating)``: (81,) int64 digit arrays (0 blank) and the
        backtrack rating.

    Examples:
        >>> q, a, r = generate_easy(1, seed=0)[0]
        >>> int((q > 0).sum()) < 40 and r >= 0
        True
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if clues is not None:
        low, high = clues
        if not 17 <= low <= high <= 81:
            raise ValueError(f"clues must satisfy 17 <= low <= high <= 81, got {clues}")
    rng = np.random.default_rng(seed)
    out: list[Item] = []
    for _ in range(n):
        grid = random_grid(rng)
        target = 17 if clues is None else int(rng.integers(clues[0], clues[1] + 1))
        puzzle = minimise(grid, rng, min_clues=target)
        _, _, backtracks = search_cells(puzzle, limit=2)
        out.append((np.array(puzzle, dtype=np.int64), np.array(grid, dtype=np.int64), backtracks))
    return out

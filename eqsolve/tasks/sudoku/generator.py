"""Sudoku-Extreme-like puzzle generator: local search for hard puzzles with unique solutions.

Removing clues from a full grid mostly yields easy puzzles (about 70% of minimal puzzles rate
0-2, see :func:`eqsolve.tasks.sudoku.easy_generator.generate_easy`). :func:`generate` therefore
mixes a fraction of such easy puzzles with hard ones found by a hill climb on the rating:

1. start from a minimal puzzle of a random grid;
2. move: drop 1-3 random clues, then re-add clues of the same grid at cells where the two
   solutions found by the solver differ, until the puzzle is unique again;
3. keep the new puzzle when its rating (backtracks of
   :func:`eqsolve.tasks.sudoku.solver.rate`) is at least the current one (plateau moves
   allowed), stop at ``target`` rating or after ``patience`` moves without improvement;
4. keep the best puzzle seen if it rates at least ``min_hard``, else start over with a new grid.

Puzzle ``k`` of a call uses its own random stream ``default_rng([seed, k])`` and easy slots are
spread evenly (:func:`is_easy_slot`), so output is reproducible, independent of ``workers``,
and every prefix has the requested mix.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .easy_generator import minimise, random_grid
from .solver import search_cells

__all__ = ["generate", "iter_generate", "harden", "is_easy_slot"]

Item = tuple[np.ndarray, np.ndarray, int]


def _repair(cells: list[int], grid: list[int], rng: np.random.Generator, tries: int = 12):
    """Re-adds clues of ``grid`` where two solutions differ until unique; (cells, rating) or None."""
    for _ in range(tries):
        solutions, _, backtracks = search_cells(cells, limit=2)
        if len(solutions) == 1:
            return cells, backtracks
        first, second = solutions
        diff = [j for j in range(81) if first[j] != second[j]]
        j = diff[int(rng.integers(len(diff)))]
        cells[j] = grid[j]
    return None


def harden(
    grid: list[int],
    rng: np.random.Generator,
    *,
    target: int,
    max_steps: int = 800,
    patience: int = 100,
    max_drop: int = 3,
) -> tuple[list[int], int, int]:
    """Hill-climbs from a minimal puzzle of ``grid`` towards rating ``target``.

    Args:
        grid: a complete valid grid (81 digits); every puzzle visited has it as its solution.
        rng: random generator.
        target: stop as soon as the rating reaches this.
        max_steps: move budget.
        patience: stop after this many moves without a rating increase.
        max_drop: a move drops 1..max_drop clues (uniformly) before repairing.

    Returns:
        ``(puzzle, rating, steps)`` for the hardest puzzle seen.
    """
    puzzle = minimise(grid, rng)
    rating = search_cells(puzzle, limit=2)[2]
    best, best_rating = puzzle, rating
    stale = 0
    for step in range(max_steps):
        if best_rating >= target or stale >= patience:
            return best, best_rating, step
        cells = list(puzzle)
        clues = [i for i in range(81) if cells[i]]
        for i in rng.choice(clues, size=1 + int(rng.integers(max_drop)), replace=False).tolist():
            cells[i] = 0
        repaired = _repair(cells, grid, rng)
        stale += 1
        if repaired is None:
            continue
        cells, new_rating = repaired
        if new_rating >= rating:
            puzzle, rating = cells, new_rating
        if rating > best_rating:
            best, best_rating, stale = puzzle, rating, 0
    return best, best_rating, max_steps


def is_easy_slot(k: int, easy_fraction: float) -> bool:
    """Whether puzzle ``k`` of a stream is an easy one; spreads easy slots evenly, so every
    prefix of the stream has the requested mix (up to one puzzle)."""
    return int((k + 1) * easy_fraction) > int(k * easy_fraction)


def _generate_one(args: tuple[int, int, bool, int, int, int, int, int]) -> tuple[Item, int]:
    seed, k, easy, target, min_hard, max_steps, patience, max_drop = args
    rng = np.random.default_rng([seed, k])
    attempts = 0
    while True:
        attempts += 1
        grid = random_grid(rng)
        if easy:
            puzzle = minimise(grid, rng)
            rating = search_cells(puzzle, limit=2)[2]
            if rating <= 2:
                break
        else:
            puzzle, rating, _ = harden(
                grid, rng, target=target, max_steps=max_steps, patience=patience, max_drop=max_drop
            )
            if rating >= min_hard:
                break
    item = (np.array(puzzle, dtype=np.int64), np.array(grid, dtype=np.int64), int(rating))
    return item, attempts


def iter_generate(
    seed: int,
    start: int = 0,
    stop: int | None = None,
    *,
    easy_fraction: float = 0.25,
    target: int = 30,
    min_hard: int = 21,
    max_steps: int = 800,
    patience: int = 100,
    max_drop: int = 3,
    workers: int = 1,
) -> Iterator[tuple[int, Item, int]]:
    """Yields ``(k, (question, answer, rating), attempts)`` for puzzles ``start..stop-1`` in order.

    Same options as :func:`generate`; ``stop=None`` streams forever. Puzzle ``k`` depends only on
    ``seed``, ``k`` and the options, so a stream can be cut and resumed anywhere.
    """
    if not 0.0 <= easy_fraction <= 1.0:
        raise ValueError(f"easy_fraction must lie in [0, 1], got {easy_fraction}")
    if min_hard > target:
        raise ValueError(f"min_hard ({min_hard}) must not exceed target ({target})")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    options = (target, min_hard, max_steps, patience, max_drop)
    indices = itertools.count(start) if stop is None else range(start, stop)
    jobs = ((seed, k, is_easy_slot(k, easy_fraction), *options) for k in indices)
    if workers == 1:
        for job in jobs:
            item, attempts = _generate_one(job)
            yield job[1], item, attempts
        return
    with ProcessPoolExecutor(workers) as pool:
        # map() would submit the whole (maybe infinite) job list; keep a small window instead.
        window: list = []
        for job in jobs:
            window.append((job[1], pool.submit(_generate_one, job)))
            if len(window) >= 2 * workers:
                k, fut = window.pop(0)
                yield (k, *fut.result())
        for k, fut in window:
            yield (k, *fut.result())


def generate(
    n: int,
    seed: int,
    *,
    easy_fraction: float = 0.25,
    target: int = 30,
    min_hard: int = 21,
    max_steps: int = 800,
    patience: int = 100,
    max_drop: int = 3,
    workers: int = 1,
    stats: dict | None = None,
) -> list[Item]:
    """Generates ``n`` Sudoku-Extreme-like puzzles: an easy fraction plus hard local-search ones.

    Args:
        n: number of puzzles.
        seed: random seed (keep evaluation and training seeds apart).
        easy_fraction: share of easy puzzles (rating 0-2), spread evenly through the output.
        target: a hard puzzle's search stops when its rating reaches this.
        min_hard: hard puzzles rate at least this (21 = the ``"hard"`` bucket); searches that
            end below it are discarded and restarted on a new grid.
        max_steps: move budget of one search.
        patience: moves without improvement before a search gives up.
        max_drop: a move drops 1..max_drop clues before repairing uniqueness.
        workers: processes to use (output does not depend on it).
        stats: if given, filled with ``seconds``, ``attempts`` (searches run) and ``n_easy``.

    Returns:
        A list of ``(question, answer, rating)``; questions have exactly one solution, the
        answer.

    Examples:
        >>> items = generate(2, seed=0, easy_fraction=0.5, target=3, min_hard=3)
        >>> [r > 2 for _, _, r in items]
        [True, False]
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    begin = time.perf_counter()
    results = list(
        iter_generate(
            seed,
            0,
            n,
            easy_fraction=easy_fraction,
            target=target,
            min_hard=min_hard,
            max_steps=max_steps,
            patience=patience,
            max_drop=max_drop,
            workers=workers,
        )
    )
    if stats is not None:
        stats.update(
            seconds=time.perf_counter() - begin,
            attempts=sum(a for _, _, a in results),
            n_easy=sum(is_easy_slot(k, easy_fraction) for k in range(n)),
        )
    return [item for _, item, _ in results]

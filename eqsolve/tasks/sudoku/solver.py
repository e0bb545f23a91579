"""Classical Sudoku solver and difficulty rater (pure Python, candidate bitmasks).

The solver keeps one 9-bit candidate mask per cell (bit d-1 set when digit d is still
possible), propagates naked singles (a cell with one candidate removes it from its 20 peers)
and hidden singles (a digit with one place left in a unit) to a fixpoint, and then branches on
an unsolved cell with the fewest candidates, trying its digits in increasing order. It keeps
searching after the first solution until it has found two or exhausted the tree, so every
call also decides uniqueness.

Rating (:func:`rate`): the number of **backtracks**, i.e. branches that ended in a
contradiction, in the complete search that proves uniqueness (stopping early only once a
second solution is found). Because the whole tree is explored, the count does not depend on
the order in which digits are tried, only on the (deterministic) branching cell; a puzzle that
singles alone solve rates 0. tdoku's rating (the ``rating`` column of Sudoku-Extreme) is the
same kind of count for a solver that propagates more (it also eliminates locked candidates)
and stops at the first solution, so the two scales are correlated but not equal; the
calibration of this rater on the real hard lists is reported in
``eqsolve/assets/sudoku_extreme_eval.PROVENANCE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .board import UNITS, parse_board

__all__ = [
    "SolveResult",
    "solve",
    "solve_classical",
    "rate",
    "count_solutions",
    "propagate",
    "search_cells",
    "masks_to_digits",
]

ALL = 0x1FF
_PEERS = tuple(
    tuple(sorted({j for unit in UNITS if i in unit for j in unit} - {i})) for i in range(81)
)
ALL_UNITS = (1 << 27) - 1
# Bit set of the three units (row, column, box) that contain each cell.
_UNITS_OF_CELL = tuple(sum(1 << u for u, unit in enumerate(UNITS) if i in unit) for i in range(81))
_POPCOUNT = tuple(bin(m).count("1") for m in range(512))
_SINGLE = tuple(m if _POPCOUNT[m] == 1 else 0 for m in range(512))
_DIGIT_OF_BIT = {1 << d: d + 1 for d in range(9)}


@dataclass(frozen=True)
class SolveResult:
    """Outcome of a classical solve.

    Attributes:
        solution: (81,) int64 digits of the first solution found, or None when there is none.
        n_solutions: 0, 1 or 2 (2 means "at least two"; the search stops there).
        n_guesses: branch alternatives tried (each digit tried at a branching cell).
        n_backtracks: branches that ended in a contradiction (the difficulty rating).
    """

    solution: np.ndarray | None
    n_solutions: int
    n_guesses: int
    n_backtracks: int

    @property
    def unique(self) -> bool:
        """True when the puzzle has exactly one solution."""
        return self.n_solutions == 1


def _place_hidden(cand: list[int], unit: tuple[int, ...], hidden: int, queue: list[int]) -> bool:
    """Places the digits of ``hidden`` (each with one place left in ``unit``); False on conflict."""
    for i in unit:
        m = cand[i]
        s = m & hidden
        if s:
            if s & (s - 1):  # two digits can only go in this one cell
                return False
            if s != m:
                cand[i] = s
                queue.append(i)
    return True


def _build_hidden_scan():
    """Compiles the hidden-single scan over the 27 units with the loops unrolled.

    The scan runs after every naked-single fixpoint and dominates the solver's time; unrolling
    it (constant indices, no inner loop) is worth it. Only units marked in the ``dirty`` bit
    set (units with a changed cell since the last scan) are scanned: the others cannot hold a
    new hidden single. For each unit, ``once`` collects digits seen at least once and ``twice`` those seen at least twice,
    so ``once & ~twice`` are the digits with exactly one place; digits already placed (``s``,
    the cells with a single candidate) are left out so that only new hidden singles are placed.
    """
    lines = ["def _hidden_scan(cand, queue, dirty, S=_SINGLE_TABLE):"]
    for u, unit in enumerate(UNITS):
        lines.append(f"    if dirty & {1 << u}:")
        lines.append(f"        o = cand[{unit[0]}]; t = 0; s = S[o]")
        for i in unit[1:]:
            lines.append(f"        m = cand[{i}]; t |= o & m; o |= m; s |= S[m]")
        lines.append("        if o != 511: return False")
        lines.append("        h = o & ~t & ~s")
        lines.append(f"        if h and not _place_hidden(cand, UNITS[{u}], h, queue): return False")
    lines.append("    return True")
    namespace = {"UNITS": UNITS, "_place_hidden": _place_hidden, "_SINGLE_TABLE": _SINGLE}
    exec(compile("\n".join(lines), "<sudoku hidden-single scan>", "exec"), namespace)
    return namespace["_hidden_scan"]


_hidden_scan = _build_hidden_scan()


def propagate(cand: list[int], queue: list[int], dirty: int = ALL_UNITS) -> bool:
    """Applies naked and hidden singles in place until nothing changes.

    Args:
        cand: 81 candidate masks, modified in place.
        queue: cells whose mask is a single digit that still has to be removed from the peers.
        dirty: bit set of the units that may hold a hidden single (default: all). The units of
            queued and changed cells are added automatically, so a caller that starts from a
            fixpoint and only changed queued cells can pass 0.

    Returns:
        False on a contradiction (a cell or a unit without candidates), else True.
    """
    peers = _PEERS
    units_of = _UNITS_OF_CELL
    while True:
        while queue:
            i = queue.pop()
            m = cand[i]
            dirty |= units_of[i]
            for p in peers[i]:
                c = cand[p]
                if c & m:
                    c ^= m
                    if not c:
                        return False
                    cand[p] = c
                    dirty |= units_of[p]
                    if not c & (c - 1):
                        queue.append(p)
        if not _hidden_scan(cand, queue, dirty):
            return False
        dirty = 0
        if not queue:
            return True


class _Search:
    __slots__ = ("guesses", "backtracks", "solutions", "limit", "guess_limit")

    def __init__(self, limit: int, guess_limit: int | None) -> None:
        self.guesses = 0
        self.backtracks = 0
        self.solutions: list[list[int]] = []
        self.limit = limit
        self.guess_limit = guess_limit

    def run(self, cand: list[int]) -> None:
        best = -1
        fewest = 10
        pop = _POPCOUNT
        for i in range(81):
            n = pop[cand[i]]
            if 1 < n < fewest:
                fewest = n
                best = i
                if n == 2:
                    break
        if best < 0:
            self.solutions.append(cand)
            return
        m = cand[best]
        while m:
            bit = m & -m
            m ^= bit
            self.guesses += 1
            if self.guess_limit is not None and self.guesses > self.guess_limit:
                raise _GuessLimit
            child = cand[:]
            child[best] = bit
            if propagate(child, [best], 0):
                self.run(child)
                if len(self.solutions) >= self.limit:
                    return
            else:
                self.backtracks += 1


class _GuessLimit(Exception):
    pass


def _initial_candidates(cells: list[int]) -> tuple[list[int], list[int]]:
    cand = [ALL] * 81
    queue = []
    for i, v in enumerate(cells):
        if v:
            cand[i] = 1 << (v - 1)
            queue.append(i)
    return cand, queue


def search_cells(
    cells: list[int], limit: int = 2, guess_limit: int | None = None
) -> tuple[list[list[int]], int, int]:
    """Fast path on a plain list of 81 ints (no parsing or validation), for generators.

    Args:
        cells: 81 ints, 0 blank, 1..9 digits.
        limit: stop after this many solutions.
        guess_limit: raise ``RuntimeError`` after this many guesses; None for no limit.

    Returns:
        ``(solutions, n_guesses, n_backtracks)`` where each solution is a list of 81
        single-bit candidate masks (see :func:`masks_to_digits`).
    """
    cand, queue = _initial_candidates(cells)
    search = _Search(limit, guess_limit)
    try:
        if propagate(cand, queue):
            search.run(cand)
    except _GuessLimit:
        raise RuntimeError(f"gave up after {guess_limit} guesses") from None
    return search.solutions, search.guesses, search.backtracks


def masks_to_digits(masks: list[int]) -> list[int]:
    """Converts 81 single-bit candidate masks of a solved grid to digits 1..9."""
    return [_DIGIT_OF_BIT[m] for m in masks]


def solve(question: Any, *, limit: int = 2, guess_limit: int | None = None) -> SolveResult:
    """Solves a puzzle and counts its solutions up to ``limit``.

    Args:
        question: a board accepted by :func:`eqsolve.tasks.sudoku.board.parse_board`; givens
            that contradict each other simply yield zero solutions.
        limit: stop after this many solutions (2 decides uniqueness; 1 is faster).
        guess_limit: give up (``RuntimeError``) after this many guesses; None for no limit.

    Returns:
        A :class:`SolveResult`.

    Examples:
        >>> solve("." * 81).n_solutions
        2
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    q = parse_board(question, check_givens=False)
    solutions, guesses, backtracks = search_cells(q.tolist(), limit, guess_limit)
    solution = None
    if solutions:
        solution = np.array(masks_to_digits(solutions[0]), dtype=np.int64)
    return SolveResult(solution, len(solutions), guesses, backtracks)


def solve_classical(question: Any) -> tuple[np.ndarray | None, int, bool]:
    """Solves a puzzle and decides uniqueness (the contract's tuple form).

    Args:
        question: a board (see :func:`solve`).

    Returns:
        ``(solution, n_guesses, unique)``: the first solution (None when unsolvable), the
        number of guesses of the uniqueness-proving search, and whether it is the only one.

    Examples:
        >>> sol, guesses, unique = solve_classical("." * 81)
        >>> unique
        False
    """
    res = solve(question, limit=2)
    return res.solution, res.n_guesses, res.unique


def rate(question: Any) -> int:
    """Difficulty rating: backtracks of the complete (uniqueness-proving) search.

    Args:
        question: a board (see :func:`solve`).

    Returns:
        The backtrack count; 0 when singles alone solve the puzzle.

    Examples:
        >>> rate("." * 81)
        0
    """
    return solve(question, limit=2).n_backtracks


def count_solutions(question: Any, limit: int = 2) -> int:
    """Number of solutions, counted up to ``limit``.

    Args:
        question: a board (see :func:`solve`).
        limit: the count stops here.

    Returns:
        min(true number of solutions, limit).
    """
    return solve(question, limit=limit).n_solutions

"""Classical solver: solutions, uniqueness, ratings."""

from __future__ import annotations

import numpy as np
import pytest
from sudoku_cases import INKALA, WIKI, WIKI_SOLUTION

from eqsolve.tasks.sudoku import (
    count_solutions,
    generate_easy,
    is_solution,
    parse_board,
    rate,
    solve,
    solve_classical,
)


def test_solves_easy_puzzle_without_guessing():
    sol, guesses, unique = solve_classical(WIKI)
    assert unique and guesses == 0
    np.testing.assert_array_equal(sol, parse_board(WIKI_SOLUTION))
    assert rate(WIKI) == 0


def test_solves_hard_puzzle_with_search_and_rates_it_higher():
    res = solve(INKALA)
    assert res.unique and is_solution(res.solution, INKALA)
    assert res.n_guesses > res.n_backtracks > 10
    assert rate(INKALA) > rate(WIKI)


def test_detects_two_solutions():
    q, a, _ = generate_easy(1, seed=3)[0]  # minimal: removing any clue loses uniqueness
    assert count_solutions(q) == 1
    clue = int(np.flatnonzero(q)[0])
    loose = q.copy()
    loose[clue] = 0
    res = solve(loose)
    assert res.n_solutions == 2 and not res.unique
    assert is_solution(res.solution, loose)
    assert solve_classical(loose)[2] is False


def test_no_solution_and_limits():
    # Row 1 needs a 9 at cell 8, but column 9 already holds a 9 lower down.
    broken = "12345678." + "." * 8 + "9" + "." * 63
    res = solve(broken)
    assert res.n_solutions == 0 and res.solution is None
    assert count_solutions("." * 81, limit=5) == 5
    with pytest.raises(RuntimeError, match="gave up"):
        solve(INKALA, guess_limit=3)
    with pytest.raises(ValueError):
        solve(WIKI, limit=0)

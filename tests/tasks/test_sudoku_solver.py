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
from eqsolve.tasks.sudoku.solver import propagate


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


def test_two_hidden_digits_in_one_cell_is_a_contradiction():
    # Row 1: digits 1 and 2 can only go in cell 0, whose candidates are exactly {1, 2}.
    cand = [0x1FF] * 81
    cand[0] = 0b11
    for i in range(1, 9):
        cand[i] = 0x1FC
    assert propagate(list(cand), []) is False
    # With one of the two digits also possible elsewhere it is a plain hidden single.
    cand[5] = 0x1FD
    fixed = list(cand)
    assert propagate(fixed, []) is True
    assert fixed[0] == 0b10 and fixed[5] == 0b1


def test_rating_does_not_depend_on_propagation_order():
    # Scanning only the guessed cell's units first, or all units, must reach the same fixpoint.
    from eqsolve.tasks.sudoku.solver import ALL_UNITS, _initial_candidates

    q = parse_board(INKALA).tolist()
    cand, queue = _initial_candidates(q)
    assert propagate(cand, queue)
    for cell in range(81):
        m = cand[cell]
        while m & (m - 1):
            bit = m & -m
            m ^= bit
            lazy, full = list(cand), list(cand)
            lazy[cell] = full[cell] = bit
            ok = propagate(lazy, [cell], 0)
            assert ok == propagate(full, [cell], ALL_UNITS)
            if ok:
                assert lazy == full

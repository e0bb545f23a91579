"""Symmetry augmentations and the exact canonical form."""

from __future__ import annotations

import numpy as np
import pytest
from sudoku_cases import INKALA, WIKI, WIKI_SOLUTION

from eqsolve.tasks.sudoku import (
    SudokuSet,
    apply_symmetry,
    augment,
    augment_set,
    canonical_form,
    contamination,
    generate_easy,
    is_solution,
    parse_board,
    random_symmetry,
    solve,
)


@pytest.fixture(scope="module")
def puzzles():
    return generate_easy(12, seed=11)


def test_augment_keeps_question_answer_pairs_valid():
    rng = np.random.default_rng(0)
    q, a = parse_board(WIKI), parse_board(WIKI_SOLUTION)
    changed = 0
    for _ in range(20):
        q2, a2 = augment(q, a, rng)
        assert is_solution(a2, q2)
        assert (q2 > 0).sum() == (q > 0).sum()
        res = solve(q2)
        assert res.unique
        np.testing.assert_array_equal(res.solution, a2)
        changed += int(not np.array_equal(q2, q))
    assert changed >= 19  # the identity is drawn with probability 1/(2 * 6^8 * 9!)


def test_each_generator_is_a_symmetry():
    q, a = parse_board(INKALA), solve(INKALA).solution
    grid = np.arange(81).reshape(9, 9)
    generators = {
        "transpose": grid.T.reshape(81),
        "band swap": grid[[3, 4, 5, 0, 1, 2, 6, 7, 8]].reshape(81),
        "stack swap": grid[:, [6, 7, 8, 3, 4, 5, 0, 1, 2]].reshape(81),
        "rows in band": grid[[1, 0, 2, 3, 4, 5, 6, 7, 8]].reshape(81),
        "cols in stack": grid[:, [0, 1, 2, 5, 4, 3, 6, 7, 8]].reshape(81),
    }
    digits = np.array([0, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    form = canonical_form(q)
    for name, cells in generators.items():
        q2 = apply_symmetry(q, (cells, digits))
        a2 = apply_symmetry(a, (cells, digits))
        assert is_solution(a2, q2), name
        assert canonical_form(q2) == form, name


def test_canonical_form_is_invariant_and_idempotent(puzzles):
    rng = np.random.default_rng(1)
    for q, _, _ in puzzles[:6]:
        form = canonical_form(q)
        assert canonical_form(form) == form
        assert sum(ch != "." for ch in form) == int((q > 0).sum())
        for _ in range(3):
            assert canonical_form(apply_symmetry(q, random_symmetry(rng))) == form


def test_canonical_form_distinguishes_inequivalent_puzzles(puzzles):
    forms = [canonical_form(q) for q, _, _ in puzzles]
    assert len(set(forms)) == len(forms)
    # Same clue pattern, but a clue's digit changed so that one digit occurs once more: the
    # multiset of digit counts is a symmetry invariant, so these cannot be equivalent.
    q = parse_board(WIKI)
    changed = q.copy()
    changed[0] = 1  # 5 -> 1 (the row, column and box of cell 0 hold no 1)
    assert parse_board(changed).tolist() == changed.tolist()  # still consistent givens
    assert canonical_form(changed) != canonical_form(q)


def test_contamination_finds_symmetric_copies(puzzles):
    rng = np.random.default_rng(2)
    reference = np.stack([q for q, _, _ in puzzles[:6]])
    queries = np.stack(
        [apply_symmetry(puzzles[1][0], random_symmetry(rng)), puzzles[8][0], puzzles[4][0]]
    )
    assert contamination(reference, queries).tolist() == [0, 2]


def test_augment_set_appends_variants(puzzles):
    data = SudokuSet.from_items(puzzles[:3], "easy")
    out = augment_set(data, 2, seed=0)
    assert len(out) == 9
    assert out.sources[:3] == ["easy", "easy+aug", "easy+aug"]
    np.testing.assert_array_equal(out.questions[0], data.questions[0])
    assert out.ratings.tolist() == np.repeat(data.ratings, 3).tolist()
    assert all(is_solution(out.answers[k], out.questions[k]) for k in range(9))
    assert len({canonical_form(q) for q in out.questions}) == 3

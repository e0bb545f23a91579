"""Generators: uniqueness, ratings, determinism, the easy/hard mix."""

from __future__ import annotations

import numpy as np
import pytest

from eqsolve.tasks.sudoku import (
    check_batch,
    count_solutions,
    generate,
    generate_easy,
    iter_generate,
    random_grid,
    rate,
)
from eqsolve.tasks.sudoku.generator import is_easy_slot


def _stack(items):
    q = np.stack([i[0] for i in items])
    a = np.stack([i[1] for i in items])
    return q, a, np.array([i[2] for i in items])


def test_random_grids_are_valid_and_varied():
    rng = np.random.default_rng(0)
    grids = np.array([random_grid(rng) for _ in range(5)])
    assert check_batch(grids, np.zeros_like(grids)).all()
    assert len({tuple(g) for g in grids}) == 5


def test_generate_easy_unique_minimal_and_rated():
    items = generate_easy(6, seed=1)
    q, a, r = _stack(items)
    assert check_batch(a, q).all()
    for k in range(len(items)):
        assert count_solutions(q[k]) == 1
        assert r[k] == rate(q[k])
        clue = int(np.flatnonzero(q[k])[-1])
        loose = q[k].copy()
        loose[clue] = 0
        assert count_solutions(loose) == 2  # minimal: every clue is needed
    assert (q > 0).sum(axis=1).max() < 35


def test_generate_easy_is_seeded_and_honours_clue_range():
    first, again, other = (generate_easy(3, seed=s) for s in (7, 7, 8))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(first, again))
    assert not any(np.array_equal(x[0], y[0]) for x, y in zip(first, other))
    q, a, _ = _stack(generate_easy(4, seed=2, clues=(40, 45)))
    assert ((q > 0).sum(axis=1) >= 40).all() and ((q > 0).sum(axis=1) <= 45).all()
    assert check_batch(a, q).all()
    with pytest.raises(ValueError, match="clues"):
        generate_easy(1, seed=0, clues=(10, 20))


def test_easy_slots_spread_evenly():
    slots = [is_easy_slot(k, 0.25) for k in range(100)]
    assert sum(slots) == 25
    assert all(sum(slots[: 4 * m]) == m for m in range(1, 26))


def test_generate_mix_unique_and_rated():
    stats = {}
    items = generate(4, seed=3, easy_fraction=0.5, target=6, min_hard=4, stats=stats)
    q, a, r = _stack(items)
    assert check_batch(a, q).all()
    assert [x <= 2 for x in r] == [is_easy_slot(k, 0.5) for k in range(4)]
    assert all(x >= 4 for x in r if x > 2)
    for k in range(4):
        assert count_solutions(q[k]) == 1 and rate(q[k]) == r[k]
    assert stats["n_easy"] == 2 and stats["attempts"] >= 4


def test_generate_is_deterministic_and_resumable():
    options = dict(easy_fraction=0.5, target=4, min_hard=3)
    full = generate(3, seed=9, **options)
    tail = [item for _, item, _ in iter_generate(9, 1, 3, **options)]
    for x, y in zip(full[1:], tail):
        assert np.array_equal(x[0], y[0]) and x[2] == y[2]
    with pytest.raises(ValueError, match="min_hard"):
        generate(1, seed=0, target=3, min_hard=5)

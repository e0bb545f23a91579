"""The 8 dihedral symmetries: a group, consistent on questions and answers, inside the grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maze_cases import open_is_tree, sample

from eqsolve.tasks.maze import (
    NUM_SYMMETRIES,
    OPEN,
    START,
    WALL,
    augment,
    canonical_keys,
    check_batch,
    compose,
    inverse,
    transform,
)

IDS = range(NUM_SYMMETRIES)


def test_the_transforms_form_a_group():
    table = [[compose(a, b) for b in IDS] for a in IDS]
    assert all(sorted(row) == list(IDS) for row in table)  # closed, each row a permutation
    assert all(compose(0, k) == compose(k, 0) == k for k in IDS)  # identity
    assert all(compose(k, inverse(k)) == 0 == compose(inverse(k), k) for k in IDS)
    for a, b, c in itertools.product(IDS, repeat=3):
        assert compose(a, compose(b, c)) == compose(compose(a, b), c)
    assert sum(compose(a, b) != compose(b, a) for a in IDS for b in IDS) > 0  # dihedral, not abelian


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 7), st.integers(0, 7), st.booleans())
def test_transform_composes_like_the_table(a, b, full):
    g = sample().answers[:2] if not full else np.random.default_rng(a * 8 + b).integers(1, 6, (2, 30, 30)).astype(np.uint8)
    np.testing.assert_array_equal(transform(transform(g, b, full=full), a, full=full),
                                  transform(g, compose(a, b), full=full))
    np.testing.assert_array_equal(transform(transform(g, a, full=full), inverse(a), full=full), g)


def test_eight_distinct_images_that_stay_maze_unique_mazes():
    data = sample()
    q, a = data.questions[:3], data.answers[:3]
    images = [transform(q, k) for k in IDS]
    assert len({img[0].tobytes() for img in images}) == NUM_SYMMETRIES
    odd = np.arange(1, 29, 2)
    for k in IDS:
        tq, ta = images[k], transform(a, k)
        assert check_batch(ta, tq).all()  # the path is still the (unique) answer
        assert ((tq == WALL)[:, 29].all() and (tq == WALL)[:, :, 29].all()
                and (tq == WALL)[:, 0].all() and (tq == WALL)[:, 28].all())
        assert (tq[:, odd][:, :, odd] != WALL).all()  # rooms stay on the odd lattice
        assert all(open_is_tree(g) for g in tq)
        assert canonical_keys(tq) == canonical_keys(q)


def test_block_mode_refuses_a_maze_using_the_margin_and_full_mode_turns_it():
    g = np.full((30, 30), OPEN, np.uint8)
    g[0, 0], g[29, 29] = START, 4
    with pytest.raises(ValueError, match="row/column 30"):
        transform(g, 1)
    turned = transform(g, 2, full=True)
    assert turned[0, 0] == 4 and turned[29, 29] == START
    assert check_batch(transform(np.stack([g]), 0, full=True), g[None]).tolist() == [False]


def test_augment_applies_the_same_symmetry_to_both():
    data = sample()
    q, a, ids = augment(data.questions, data.answers, np.random.default_rng(0))
    assert check_batch(a, q).all()
    for i, k in enumerate(ids):
        np.testing.assert_array_equal(q[i], transform(data.questions[i], int(k)))
    assert len(set(ids.tolist())) > 1
    with pytest.raises(ValueError, match="symmetry id"):
        transform(q, 8)

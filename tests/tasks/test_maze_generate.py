"""The Maze-Unique generator: determinism, perfect mazes, path lengths, de-duplication."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from maze_cases import open_is_tree, sample

from eqsolve.tasks.maze import (
    PATH,
    ROOMS,
    WALL,
    canonical_keys,
    carve,
    check_batch,
    generate,
    iter_generate,
    path_length,
    shortest_distance,
    transform,
    unique_shortest_path,
)


def test_same_seed_same_mazes_and_prefixes():
    a, b = generate(4, seed=11), generate(4, seed=11)
    np.testing.assert_array_equal(a.questions, b.questions)
    np.testing.assert_array_equal(a.answers, b.answers)
    assert a.sources == b.sources
    np.testing.assert_array_equal(generate(2, seed=11).questions, a.questions[:2])
    assert not np.array_equal(generate(4, seed=12).questions, a.questions)


def test_carved_mazes_are_perfect_and_on_the_odd_lattice():
    rng = np.random.default_rng(3)
    for _ in range(5):
        m = carve(rng)
        odd = np.arange(1, 2 * ROOMS, 2)
        assert m[np.ix_(odd, odd)].all()  # every room is open
        assert not m[np.ix_(odd - 1, odd - 1)].any()  # (even, even) corners are wall
        assert not (m[28:].any() or m[:, 28:].any() or m[0].any() or m[:, 0].any())
        assert int(m.sum()) == ROOMS * ROOMS + ROOMS * ROOMS - 1  # rooms + the tree's passages
        assert open_is_tree(np.where(m, 2, WALL))


def test_generated_records_satisfy_the_recipe():
    data = sample()
    assert len(data) == 12
    assert ((data.lengths >= 100) & (data.lengths <= 140)).all()
    np.testing.assert_array_equal(shortest_distance(data.questions), data.lengths)
    np.testing.assert_array_equal(path_length(data.answers), data.lengths)
    assert unique_shortest_path(data.questions).all()
    assert check_batch(data.answers, data.questions).all()
    assert all(open_is_tree(q) for q in data.questions)
    # the answer's o cells are exactly the interior of the S-G path
    assert ((data.answers == PATH).sum((1, 2)) == data.lengths - 1).all()
    assert len(set(canonical_keys(data.questions))) == len(data)


def test_lengths_cover_the_range_roughly_uniformly():
    lengths = generate(300, seed=1).lengths
    counts = np.bincount(lengths - 100, minlength=41)
    assert len(counts) == 41 and (counts > 0).sum() >= 33
    assert abs(lengths.mean() - 120) < 3.5  # uniform on [100, 140]: mean 120, sd of the mean 0.7
    fixed = generate(3, seed=2, min_length=57, max_length=57)
    assert fixed.lengths.tolist() == [57, 57, 57]


def test_exclude_and_dedup_drop_keys_and_move_on():
    first = generate(3, seed=9)
    keys = set(canonical_keys(first.questions[:1]))
    skipped = generate(2, seed=9, exclude=keys)
    np.testing.assert_array_equal(skipped.questions, first.questions[1:3])
    assert skipped.sources == ["maze-unique:seed=9:k=1", "maze-unique:seed=9:k=2"]


def test_symmetric_images_within_a_stream_are_dropped(monkeypatch):
    from eqsolve.tasks.maze import generator as gen_module

    data = sample()
    a, b = data.subset([0]), data.subset([1])
    turned = (transform(a.questions[0], 5), transform(a.answers[0], 5))
    draws = iter([(a.questions[0], a.answers[0]), turned, (b.questions[0], b.answers[0])])
    monkeypatch.setattr(gen_module, "_place", lambda *args: next(draws))
    out = [(item[3], item[0]) for item in itertools.islice(gen_module.iter_generate(0), 2)]
    assert [k for k, _ in out] == [0, 2]  # draw 1 (a mirror image of draw 0) was dropped
    np.testing.assert_array_equal(out[1][1], b.questions[0])


def test_bad_options():
    with pytest.raises(ValueError, match="min_length <= max_length"):
        generate(1, seed=0, min_length=140, max_length=100)
    with pytest.raises(ValueError, match="n must be"):
        generate(-1, seed=0)
    with pytest.raises(ValueError, match="no maze with a path of 10000 moves"):
        next(iter_generate(0, min_length=10000, max_length=10000, max_mazes=2, start_attempts=2))
    assert len(generate(0, seed=0)) == 0

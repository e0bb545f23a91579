"""BFS, path counting and the checker, against brute force on small mazes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maze_cases import CORRIDOR, CORRIDOR_ANSWER, ROOM, sample

from eqsolve.tasks.maze import (
    GOAL,
    OPEN,
    PAD_TOKEN,
    PATH,
    START,
    WALL,
    answer_problems,
    check_batch,
    count_shortest_paths,
    encode_tokens,
    grid_to_string,
    shortest_distance,
    solve,
    unique_shortest_path,
)


def brute_force(grid: np.ndarray) -> tuple[int, int]:
    """(shortest length in moves, number of shortest paths) by enumerating simple paths; (-1, 0)
    when G is unreachable."""
    start = tuple(int(v) for v in np.argwhere(grid == START)[0])
    goal = tuple(int(v) for v in np.argwhere(grid == GOAL)[0])
    lengths: list[int] = []

    def walk(cell, visited):
        if cell == goal:
            lengths.append(len(visited) - 1)
            return
        r, c = cell
        for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nb[0] < 30 and 0 <= nb[1] < 30 and grid[nb] != WALL and nb not in visited:
                walk(nb, visited | {nb})

    walk(start, {start})
    if not lengths:
        return -1, 0
    best = min(lengths)
    return best, lengths.count(best)


@st.composite
def small_mazes(draw):
    """A random 4 x 5 room of open/wall cells (inside the all-wall 30 x 30 grid) with S and G."""
    h, w = 4, 5
    cells = draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w))
    s, g = draw(st.lists(st.integers(0, h * w - 1), min_size=2, max_size=2, unique=True))
    grid = np.full((30, 30), WALL, np.uint8)
    block = np.where(np.array(cells).reshape(h, w), OPEN, WALL).astype(np.uint8)
    block.flat[s], block.flat[g] = START, GOAL
    grid[1:1 + h, 1:1 + w] = block
    return grid


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_mazes())
def test_bfs_matches_brute_force(grid):
    best, count = brute_force(grid)
    assert shortest_distance(grid).tolist() == [best]
    assert count_shortest_paths(grid, cap=1000).tolist() == [count]
    assert unique_shortest_path(grid).tolist() == [count == 1]
    if best < 0:
        with pytest.raises(ValueError, match="unreachable"):
            solve(grid)
        assert not check_batch(grid, grid)[0]
    else:
        answer = solve(grid)
        assert check_batch(answer, grid).tolist() == [True]
        assert int((answer == PATH).sum()) == best - 1


def test_known_cases():
    assert shortest_distance(np.stack([CORRIDOR, ROOM])).tolist() == [3, 4]
    assert count_shortest_paths(ROOM, cap=100).tolist() == [6]
    assert count_shortest_paths(ROOM, cap=2).tolist() == [2]
    np.testing.assert_array_equal(solve(CORRIDOR)[0], CORRIDOR_ANSWER)


def test_checker_accepts_the_answer_in_every_form():
    data = sample()
    q, a = data.tokens()
    assert check_batch(a, q).all()
    assert check_batch(data.answers, data.questions).all()
    assert check_batch(a.numpy(), [grid_to_string(g) for g in data.questions]).all()
    assert not check_batch(q, q).any()  # the question itself marks no path


def test_checker_rejects_every_single_cell_change():
    data = sample()
    q, a = data.questions[0], data.answers[0]
    rng = np.random.default_rng(0)
    preds = []
    for r, c in np.argwhere(a == PATH):  # drop each path cell
        p = a.copy()
        p[r, c] = OPEN
        preds.append(p)
    for _ in range(200):  # any other cell to any other symbol, pad included
        p = a.copy()
        r, c = rng.integers(30, size=2)
        p[r, c] = rng.choice([v for v in (PAD_TOKEN, WALL, OPEN, START, GOAL, PATH) if v != a[r, c]])
        preds.append(p)
    preds = np.stack(preds)
    assert not check_batch(preds, np.broadcast_to(q, preds.shape)).any()


def test_checker_rejects_a_moved_path_cell_and_accepts_any_shortest_path():
    # remove one path cell and add one elsewhere: the count is right, the path is broken
    p = CORRIDOR_ANSWER.copy()
    p[1, 2], p[2, 1] = OPEN, PATH
    assert not check_batch(p, CORRIDOR)[0]
    assert answer_problems(p, CORRIDOR) == ["the answer's path cells do not join S to G"]
    # in the open room every one of the shortest paths counts (not only the BFS one)
    paths = 0
    for inner in itertools.permutations(["D", "D", "R", "R"]):
        grid, (r, c) = ROOM.copy(), (1, 1)
        for move in inner[:-1]:
            r, c = (r + 1, c) if move == "D" else (r, c + 1)
            grid[r, c] = PATH
        paths += bool(check_batch(grid, ROOM)[0])
    assert paths == 24  # 4!/(2!2!) = 6 distinct paths, each counted 4 times by permutations


def test_answer_problems_explain():
    wall = CORRIDOR_ANSWER.copy()
    wall[0, 0] = OPEN
    extra = CORRIDOR_ANSWER.copy()
    extra[2, 1] = PATH
    assert answer_problems(np.stack([CORRIDOR_ANSWER, wall, extra]), np.stack([CORRIDOR] * 3)) == [
        None,
        "the answer changes the question at row 1, column 1: '#' -> ' '",
        "the answer marks 3 path cells; the shortest path has 3 moves (2 cells between S and G)",
    ]


def test_check_batch_shapes():
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        check_batch(encode_tokens(np.stack([CORRIDOR, CORRIDOR])), CORRIDOR)
    assert check_batch(torch.as_tensor(CORRIDOR_ANSWER.reshape(1, 900)), CORRIDOR).tolist() == [True]

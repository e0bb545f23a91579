"""Seeded generator of Maze-Unique mazes (EqR paper, App. C.2; official ``build_maze_unique_dataset.py``).

Recipe, one maze at a time from one ``numpy.random.default_rng(seed)`` stream:

1. **Carve** a perfect maze in the top-left ``29 × 29`` block of a ``30 × 30`` all-wall grid:
   the 14 × 14 *rooms* sit at odd coordinates ``(2r + 1, 2c + 1)``; an iterative randomized
   depth-first search (an explicit stack, so no recursion limit) starts at a uniform room and
   knocks down the wall between a room and a uniformly chosen unvisited neighbour. The open
   cells (196 rooms + 195 passages) form a tree: exactly one path joins any two of them.
2. **Length**: draw ``L`` uniformly from ``[min_length, max_length]`` (moves; default
   ``[100, 140]``).
3. **Start and goal**: draw a start uniformly among the open cells, BFS from it, and draw the
   goal uniformly among the cells at distance exactly ``L``; a start with no such cell is
   redrawn (up to ``start_attempts`` times, then a new maze is carved). So lengths are uniform
   on the range, as in the official builder.
4. **De-duplicate**: a maze whose :func:`~eqsolve.tasks.maze.symmetry.canonical_keys` key was
   already produced (or is in ``exclude``) is dropped and the stream goes on.

The stream is sequential, so ``generate(n, seed)`` is a prefix of ``generate(m, seed)`` for
``n < m``. Distinct seeds give unrelated streams (there are far more perfect mazes than any
run can draw), and :func:`~eqsolve.tasks.maze.io.eval_set_keys` lets a training run exclude the
shipped evaluation set exactly.

Examples:
    >>> data = generate(2, seed=0)
    >>> len(data), bool(((data.lengths >= 100) & (data.lengths <= 140)).all())
    (2, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterator

import numpy as np

from .grid import GOAL, OPEN, PATH, SIDE, START, WALL
from .io import MazeSet
from .symmetry import canonical_keys

__all__ = ["ROOMS", "carve", "generate", "iter_generate"]

#: Rooms per side of the carved block (29 = 2 * 14 + 1).
ROOMS = (SIDE - 1) // 2
_STEPS = (-SIDE, SIDE, -1, 1)  # flat-index moves: up, down, left, right


def carve(rng: np.random.Generator) -> np.ndarray:
    """A perfect maze: ``(30, 30)`` bool, True on open cells (randomized DFS, see the module).

    Examples:
        >>> m = carve(np.random.default_rng(0))
        >>> int(m.sum()), bool(m[29].any() or m[:, 29].any() or m[0].any() or m[28].any())
        (391, False)
    """
    open_ = np.zeros(SIDE * SIDE, dtype=bool)
    visited = [False] * (ROOMS * ROOMS)
    first = int(rng.integers(ROOMS * ROOMS))
    visited[first] = True
    stack = [first]
    open_[(2 * (first // ROOMS) + 1) * SIDE + 2 * (first % ROOMS) + 1] = True
    while stack:
        room = stack[-1]
        r, c = divmod(room, ROOMS)
        nbrs = [n for n, ok in ((room - ROOMS, r > 0), (room + ROOMS, r < ROOMS - 1),
                                (room - 1, c > 0), (room + 1, c < ROOMS - 1)) if ok and not visited[n]]
        if not nbrs:
            stack.pop()
            continue
        nxt = nbrs[int(rng.integers(len(nbrs)))] if len(nbrs) > 1 else nbrs[0]
        visited[nxt] = True
        nr, nc = divmod(nxt, ROOMS)
        open_[(r + nr + 1) * SIDE + c + nc + 1] = True  # the wall between the two rooms
        open_[(2 * nr + 1) * SIDE + 2 * nc + 1] = True
        stack.append(nxt)
    return open_.reshape(SIDE, SIDE)


def _bfs(open_flat: np.ndarray, start: int) -> tuple[list[int], list[int]]:
    """Distances and parents (flat indices, -1 unreached) from ``start``; the margin is wall, so
    flat moves never wrap around a row edge."""
    dist = [-1] * (SIDE * SIDE)
    parent = [-1] * (SIDE * SIDE)
    dist[start] = 0
    queue = deque([start])
    ok = open_flat.tolist()
    while queue:
        cur = queue.popleft()
        d = dist[cur] + 1
        for step in _STEPS:
            nxt = cur + step
            if 0 <= nxt < SIDE * SIDE and ok[nxt] and dist[nxt] < 0:
                dist[nxt] = d
                parent[nxt] = cur
                queue.append(nxt)
    return dist, parent


def _place(open_: np.ndarray, length: int, rng: np.random.Generator,
           start_attempts: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Question and answer grids for a start/goal pair at distance ``length``, or None."""
    flat = open_.reshape(-1)
    cells = np.flatnonzero(flat)
    for _ in range(start_attempts):
        start = int(cells[rng.integers(len(cells))])
        dist, parent = _bfs(flat, start)
        far = np.flatnonzero(np.asarray(dist) == length)
        if not len(far):
            continue
        goal = int(far[rng.integers(len(far))])
        question = np.where(flat, OPEN, WALL).astype(np.uint8)
        question[start], question[goal] = START, GOAL
        answer = question.copy()
        cur = parent[goal]
        while cur != start:
            answer[cur] = PATH
            cur = parent[cur]
        return question.reshape(SIDE, SIDE), answer.reshape(SIDE, SIDE)
    return None


def iter_generate(
    seed: int,
    *,
    min_length: int = 100,
    max_length: int = 140,
    exclude: Collection[bytes] = (),
    start_attempts: int = 200,
    max_mazes: int = 1000,
) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
    """The endless stream behind :func:`generate`: ``(question, answer, length, index)`` items.

    ``index`` counts draws in the stream (dropped duplicates included), so ``(seed, index)``
    names a maze. ``max_mazes`` bounds the carvings spent on one length before giving up.

    Raises:
        ValueError: a length range no perfect maze of this size can serve.
    """
    if not (isinstance(min_length, int) and isinstance(max_length, int) and 1 <= min_length <= max_length):
        raise ValueError(f"need 1 <= min_length <= max_length, got [{min_length}, {max_length}]")
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    index = 0
    while True:
        length = int(rng.integers(min_length, max_length + 1))
        for _ in range(max_mazes):
            placed = _place(carve(rng), length, rng, start_attempts)
            if placed is not None:
                break
        else:
            raise ValueError(f"no maze with a path of {length} moves in {max_mazes} carvings")
        question, answer = placed
        index += 1
        key = canonical_keys(question)[0]
        if key in seen or key in exclude:
            continue
        seen.add(key)
        yield question, answer, length, index - 1


def generate(
    n: int,
    seed: int,
    *,
    min_length: int = 100,
    max_length: int = 140,
    exclude: Collection[bytes] = (),
    start_attempts: int = 200,
) -> MazeSet:
    """``n`` distinct Maze-Unique mazes (up to symmetry) from ``seed`` (see the module for the recipe).

    Args:
        n: Number of mazes.
        seed: Seed of the stream (``numpy.random.default_rng(seed)``).
        min_length: Shortest allowed path length, in moves.
        max_length: Longest allowed path length, in moves (inclusive).
        exclude: Canonical keys to leave out (e.g. :func:`~eqsolve.tasks.maze.io.eval_set_keys`).
        start_attempts: Starts tried on one carving before carving anew.

    Returns:
        A :class:`~eqsolve.tasks.maze.io.MazeSet`; ``sources`` read ``maze-unique:seed=S:k=I``.

    Examples:
        >>> a, b = generate(3, seed=7), generate(2, seed=7)
        >>> bool((a.questions[:2] == b.questions).all()), a.sources[0]
        (True, 'maze-unique:seed=7:k=0')
    """
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    items = []
    stream = iter_generate(seed, min_length=min_length, max_length=max_length, exclude=exclude,
                           start_attempts=start_attempts)
    for _ in range(n):
        items.append(next(stream))
    if not items:
        return MazeSet.empty()
    return MazeSet(
        np.stack([i[0] for i in items]),
        np.stack([i[1] for i in items]),
        np.array([i[2] for i in items]),
        [f"maze-unique:seed={seed}:k={i[3]}" for i in items],
    )


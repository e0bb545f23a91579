"""Small hand-made mazes and generated ones shared by the maze tests (not a test module)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from eqsolve.tasks.maze import SIDE, WALL, generate, parse_grid


def embed(rows: list[str]) -> np.ndarray:
    """A 30 × 30 grid: ``rows`` (symbols, ``.`` open) at the top-left, wall everywhere else."""
    lines = [(r + "#" * SIDE)[:SIDE] for r in rows] + ["#" * SIDE] * (SIDE - len(rows))
    return parse_grid("\n".join(lines))


# A 3-move corridor with a dead end; its answer marks the two middle cells.
CORRIDOR = embed(["#####", "#S..G", "#.###"])
CORRIDOR_ANSWER = embed(["#####", "#SooG", "#.###"])
# An open 3 x 3 room: 6 shortest paths from corner to corner.
ROOM = embed(["#####", "#S..#", "#...#", "#..G#", "#####"])


@lru_cache(maxsize=1)
def sample(n: int = 12, seed: int = 5):
    """Generated mazes (cached: several test modules use them)."""
    return generate(n, seed=seed)


def open_is_tree(question: np.ndarray) -> bool:
    """Whether the open cells form one tree: connected, and edges = vertices - 1 (independent of
    the package's BFS)."""
    open_ = question != WALL
    cells = {tuple(int(v) for v in rc) for rc in np.argwhere(open_)}
    edges = int((open_[1:] & open_[:-1]).sum() + (open_[:, 1:] & open_[:, :-1]).sum())
    first = next(iter(cells))
    seen, todo = {first}, [first]
    while todo:
        r, c = todo.pop()
        for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if nb in cells and nb not in seen:
                seen.add(nb)
                todo.append(nb)
    return len(seen) == len(cells) and edges == len(cells) - 1

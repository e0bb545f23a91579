"""Breadth-first search on batches of mazes: distances, shortest paths, path counts, the checker.

All functions take batches (``(N, 30, 30)`` codes, ``(N, 900)`` tokens or strings, see
:func:`eqsolve.tasks.maze.grid.as_grids`) and work on the whole batch at once: one BFS layer is
a few boolean shifts of an ``(N, 30, 30)`` array, so a batch costs about ``max distance`` numpy
steps rather than a Python loop per cell.

**Length** of a path is its number of *moves* (edges): a path of length ``D`` has ``D + 1``
cells, ``S`` and ``G`` included, and ``D - 1`` cells marked ``o`` in the answer (the official
generator's convention: ``dist == length`` and ``o`` on ``path[1:-1]``).

**The checker** (:func:`check_batch`): a prediction solves a maze when it equals the question
on every wall, ``S`` and ``G`` cell, has only ``' '`` or ``o`` on open cells, and its ``o`` cells
are exactly the cells between ``S`` and ``G`` of *a* shortest path: the ``o`` cells with ``S``
and ``G`` join ``S`` to ``G`` within ``D`` moves and there are exactly ``D - 1`` of them. On a
Maze-Unique maze (a perfect maze, one path) this is the same as equality with the answer.

Examples:
    >>> from eqsolve.tasks.maze.grid import parse_grid
    >>> rows = ["#" * 30] * 30
    >>> rows[1] = "#S  G" + "#" * 25
    >>> q = parse_grid("\\n".join(rows))[None]
    >>> int(shortest_distance(q)[0]), bool(check_batch(solve(q), q)[0]), bool(check_batch(q, q)[0])
    (3, True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .grid import GOAL, OPEN, PATH, SIDE, START, WALL, as_grids

__all__ = [
    "answer_problems",
    "check_batch",
    "count_shortest_paths",
    "distances",
    "path_length",
    "shortest_distance",
    "solve",
    "unique_shortest_path",
]

_SYMBOL = "?# SGo"


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Cells 4-adjacent to ``mask`` (``mask`` itself excluded unless adjacent)."""
    out = np.zeros_like(mask)
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def distances(
    passable: np.ndarray, sources: np.ndarray, targets: np.ndarray | None = None
) -> np.ndarray:
    """BFS distances (moves) from ``sources`` through ``passable`` cells, -1 where unreached.

    Args:
        passable: ``(N, H, W)`` bool, cells that may be entered.
        sources: ``(N, H, W)`` bool, distance 0 (a row may have several sources).
        targets: Optional ``(N, H, W)`` bool; the search stops once every row has reached
            one of its targets (or cannot grow), so farther cells stay -1.

    Returns:
        ``(N, H, W)`` int32 distances.

    Examples:
        >>> p = np.ones((1, 1, 4), bool); s = np.zeros_like(p); s[0, 0, 0] = True
        >>> distances(p, s)[0, 0].tolist()
        [0, 1, 2, 3]
    """
    dist = np.where(sources, 0, -1).astype(np.int32)
    visited = sources.copy()
    frontier = sources.copy()
    has_target = None if targets is None else targets.any((1, 2))
    step = 0
    while True:
        if has_target is not None:
            done = ~has_target | (visited & targets).any((1, 2))
            if done.all():
                break
        frontier = _dilate(frontier) & passable & ~visited
        if not frontier.any():
            break
        step += 1
        dist[frontier] = step
        visited |= frontier
    return dist


def _start_goal(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return q == START, q == GOAL


def shortest_distance(questions: Any) -> np.ndarray:
    """Moves of the shortest ``S`` → ``G`` path per maze, -1 where the goal is unreachable.

    Examples:
        >>> from eqsolve.tasks.maze.grid import parse_grid
        >>> shortest_distance(parse_grid("SG" + "#" * 898)).tolist()
        [1]
    """
    q = as_grids(questions)
    s, g = _start_goal(q)
    dist = distances(q != WALL, s, g)
    return np.where(g.any((1, 2)), np.where(g, dist, -1).max((1, 2)), -1)


def solve(questions: Any) -> np.ndarray:
    """Answers: each question with the cells of a shortest path between ``S`` and ``G`` set to ``o``.

    Where several shortest paths exist, the one found by backtracking from ``G`` that prefers
    up, down, left, right (in that order) is returned; a perfect maze has only one.

    Raises:
        ValueError: a maze whose goal is unreachable (naming its index).

    Examples:
        >>> from eqsolve.tasks.maze.grid import grid_to_string, parse_grid
        >>> grid_to_string(solve(parse_grid("S G" + "#" * 897))[0])[:3]
        'SoG'
    """
    q = as_grids(questions)
    n = len(q)
    s, g = _start_goal(q)
    dist = distances(q != WALL, s, g)
    total = np.where(g, dist, -1).max((1, 2)) if n else np.zeros(0, int)
    bad = np.flatnonzero((total < 0) | ~g.any((1, 2)) | ~s.any((1, 2)))
    if len(bad):
        raise ValueError(f"maze {int(bad[0])}: goal unreachable from start (or no S/G)")
    # Walk back from G along strictly decreasing distance, all rows at once, on a padded grid.
    w = SIDE + 2
    pad = np.full((n, w, w), -1, dtype=np.int32)
    pad[:, 1:-1, 1:-1] = dist
    flat = pad.reshape(n, -1)
    offsets = np.array([-w, w, -1, 1])
    goal_rc = np.argwhere(g)[:, 1:]
    cur = (goal_rc[:, 0] + 1) * w + goal_rc[:, 1] + 1
    answers = q.copy()
    out = answers.reshape(n, -1)
    rows = np.arange(n)
    for _ in range(int(total.max(initial=0)) - 1):
        d = flat[rows, cur]
        active = d > 1
        cand = flat[rows[:, None], cur[:, None] + offsets] == (d - 1)[:, None]
        cur = np.where(active, cur + offsets[cand.argmax(1)], cur)
        r, c = cur // w - 1, cur % w - 1
        out[rows[active], (r * SIDE + c)[active]] = PATH
    return answers


def count_shortest_paths(questions: Any, cap: int = 2) -> np.ndarray:
    """Number of distinct shortest ``S`` → ``G`` paths per maze, capped at ``cap`` (0: unreachable).

    Examples:
        >>> from eqsolve.tasks.maze.grid import parse_grid
        >>> rows = [" " * 30] * 30
        >>> rows[0] = "S" + " " * 29; rows[29] = " " * 29 + "G"
        >>> count_shortest_paths(parse_grid("\\n".join(rows)), cap=10).tolist()
        [10]
    """
    q = as_grids(questions)
    s, g = _start_goal(q)
    dist = distances(q != WALL, s, g)
    counts = s.astype(np.int64)
    for d in range(1, int(dist.max(initial=0)) + 1):
        prev = np.where(dist == d - 1, counts, 0)
        incoming = np.zeros_like(prev)
        incoming[:, 1:] += prev[:, :-1]
        incoming[:, :-1] += prev[:, 1:]
        incoming[:, :, 1:] += prev[:, :, :-1]
        incoming[:, :, :-1] += prev[:, :, 1:]
        counts = np.where(dist == d, np.minimum(incoming, cap), counts)
    return np.where(g, counts, 0).max((1, 2))


def unique_shortest_path(questions: Any) -> np.ndarray:
    """Whether each maze has exactly one shortest ``S`` → ``G`` path (False if unreachable).

    The cells on *some* shortest path are those with ``d(S, v) + d(v, G) = D``; the path is
    unique exactly when there are ``D + 1`` of them (one per distance). Two searches, cheaper
    than :func:`count_shortest_paths`.

    Examples:
        >>> from eqsolve.tasks.maze.grid import parse_grid
        >>> unique_shortest_path(np.stack([parse_grid("S G" + "#" * 897), parse_grid("S" + " " * 898 + "G")])).tolist()
        [True, False]
    """
    q = as_grids(questions)
    s, g = _start_goal(q)
    passable = q != WALL
    from_s = distances(passable, s, g)
    from_g = distances(passable, g, s)
    total = np.where(g, from_s, -1).max((1, 2))
    on_some = (from_s >= 0) & (from_g >= 0) & (from_s + from_g == total[:, None, None])
    return (total >= 0) & (on_some.sum((1, 2)) == total + 1)


def path_length(answers: Any) -> np.ndarray:
    """Length (moves) of each answer's path: the number of ``o`` cells plus one."""
    return (as_grids(answers) == PATH).sum((1, 2)) + 1


def _verdicts(preds: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row failure flags of :func:`check_batch`, each ``(N,)`` bool (True = that test fails)."""
    s, g = _start_goal(q)
    changed = (preds != q) & ~((q == OPEN) & (preds == PATH))
    on_path = (preds == PATH) | s | g
    dist_q = distances(q != WALL, s, g)
    dist_p = distances(on_path, s, g)
    total = np.where(g, dist_q, -1).max((1, 2))
    along = np.where(g, dist_p, -1).max((1, 2))
    marked = (preds == PATH).sum((1, 2))
    return {
        "changed": changed.any((1, 2)),
        "unreachable": total < 0,
        "count": marked != total - 1,
        "broken": along != total,
    }


def check_batch(preds: Any, questions: Any) -> np.ndarray:
    """Whether each prediction is the path answer of its question (see the module's rule).

    Args:
        preds: Predicted grids, tokens ``(N, 900)`` (array or tensor) or strings.
        questions: The questions, same forms.

    Returns:
        ``(N,)`` bool array.

    Examples:
        >>> from eqsolve.tasks.maze.grid import parse_grid
        >>> q = parse_grid("S G" + "#" * 897)
        >>> check_batch([solve(q)[0], q], np.stack([q, q])).tolist()
        [True, False]
    """
    if isinstance(preds, list) and preds and not isinstance(preds[0], str):
        preds = np.stack([np.asarray(p) for p in preds])
    p, q = as_grids(preds), as_grids(questions)
    if p.shape != q.shape:
        raise ValueError(f"{len(p)} predictions for {len(q)} questions")
    v = _verdicts(p, q)
    return ~(v["changed"] | v["unreachable"] | v["count"] | v["broken"])


def answer_problems(answers: Any, questions: Any) -> list[str | None]:
    """Why each answer is not a valid shortest-path answer of its question (``None``: valid).

    Examples:
        >>> from eqsolve.tasks.maze.grid import parse_grid
        >>> q = parse_grid("S G" + "#" * 897)
        >>> answer_problems(np.stack([q]), q)
        ['the answer marks 0 path cells; the shortest path has 2 moves (1 cells between S and G)']
    """
    a, q = as_grids(answers), as_grids(questions)
    v = _verdicts(a, q)
    failing = v["changed"] | v["unreachable"] | v["count"] | v["broken"]
    total = shortest_distance(q) if failing.any() else None  # only messages need it
    out: list[str | None] = []
    for i in range(len(q)):
        if v["changed"][i]:
            r, c = np.argwhere((a[i] != q[i]) & ~((q[i] == OPEN) & (a[i] == PATH)))[0]
            out.append(
                f"the answer changes the question at row {r + 1}, column {c + 1}: "
                f"{_SYMBOL[q[i, r, c]]!r} -> {_SYMBOL[a[i, r, c]]!r}"
            )
        elif v["unreachable"][i]:
            out.append("goal unreachable from start")
        elif v["count"][i] and total is not None:
            marked = int((a[i] == PATH).sum())
            out.append(
                f"the answer marks {marked} path cells; the shortest path has {total[i]} moves "
                f"({total[i] - 1} cells between S and G)"
            )
        elif v["broken"][i]:
            out.append("the answer's path cells do not join S to G")
        else:
            out.append(None)
    return out

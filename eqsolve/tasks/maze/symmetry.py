"""The 8 dihedral symmetries of a maze, applied alike to questions and answers.

**The border rule.** A Maze-Unique maze is carved in the top-left ``29 × 29`` block of the
``30 × 30`` grid: passages at odd coordinates 1..27, the block's own border (rows/columns 0 and
28) wall, and a *margin* (row 29 and column 29) that is all wall. Turning the whole ``30 × 30``
grid would move the maze to the bottom-right block and onto even coordinates: still a maze,
but one the generator never makes. So by default a transform acts on the **29 × 29 block only**
and leaves the margin in place; since ``i -> 28 - i`` keeps odd coordinates odd, a transformed
Maze-Unique maze is again a Maze-Unique maze (same carving lattice, same border). A grid with
anything but wall in its margin is refused (``ValueError``) in this mode. ``full=True`` turns the
whole ``30 × 30`` grid instead (HRM's ``maze-30x30-hard-1k`` uses every cell; its augmentation
is this one). Either way the 8 transforms form the dihedral group: see :func:`compose`.

Transform ids follow HRM's ``dihedral_transform`` (``dataset/common.py``): 0 identity,
1/2/3 ``rot90`` by 90/180/270 degrees counter-clockwise, 4 left-right flip, 5 up-down flip,
6 transpose, 7 anti-transpose.

Examples:
    >>> import numpy as np
    >>> g = np.full((30, 30), 1, np.uint8); g[1, 1] = 3; g[1, 3] = 4
    >>> t = transform(g, 1)
    >>> [tuple(int(v) for v in np.argwhere(t == c)[0]) for c in (3, 4)]
    [(27, 1), (25, 1)]
    >>> bool((transform(t, inverse(1)) == g).all())
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .grid import SIDE, WALL, as_grids

__all__ = ["NUM_SYMMETRIES", "augment", "canonical_keys", "compose", "inverse", "transform"]

NUM_SYMMETRIES = 8
_BLOCK = SIDE - 1


def _dihedral(arr: np.ndarray, k: int) -> np.ndarray:
    """HRM's transform ``k`` on the last two axes of ``arr``."""
    axes = (-2, -1)
    if k == 0:
        return arr
    if k in (1, 2, 3):
        return np.rot90(arr, k, axes=axes)
    if k == 4:
        return np.flip(arr, -1)
    if k == 5:
        return np.flip(arr, -2)
    if k == 6:
        return np.swapaxes(arr, -2, -1)
    if k == 7:
        return np.flip(np.rot90(arr, 1, axes=axes), -1)
    raise ValueError(f"symmetry id must be in 0..7, got {k!r}")


def _table() -> np.ndarray:
    """``table[a, b]``: the id of "apply ``b``, then ``a``" (found by acting on a labelled square)."""
    probe = np.arange(9).reshape(3, 3)
    images = [_dihedral(probe, k).tobytes() for k in range(NUM_SYMMETRIES)]
    table = np.zeros((NUM_SYMMETRIES, NUM_SYMMETRIES), dtype=np.int64)
    for a in range(NUM_SYMMETRIES):
        for b in range(NUM_SYMMETRIES):
            table[a, b] = images.index(_dihedral(_dihedral(probe, b), a).tobytes())
    return table


_COMPOSE = _table()


def compose(a: int, b: int) -> int:
    """The id of applying ``b`` first, then ``a``.

    Examples:
        >>> compose(1, 1), compose(4, 4), compose(1, 3)
        (2, 0, 0)
    """
    return int(_COMPOSE[a, b])


def inverse(k: int) -> int:
    """The id that undoes ``k`` (HRM's ``DIHEDRAL_INVERSE``).

    Examples:
        >>> [inverse(k) for k in range(8)]
        [0, 3, 2, 1, 4, 5, 6, 7]
    """
    return int(np.flatnonzero(_COMPOSE[:, k] == 0)[0])


def transform(grids: Any, k: int, *, full: bool = False) -> np.ndarray:
    """Applies symmetry ``k`` to one grid ``(30, 30)`` or a batch ``(N, 30, 30)`` (see the border rule).

    Args:
        grids: Grids (codes), tokens ``(N, 900)`` or strings.
        k: Transform id 0..7.
        full: Turn the whole 30 × 30 grid instead of the top-left 29 × 29 block.

    Returns:
        Transformed grids, same shape as a grid input (``(N, 30, 30)`` for tokens or strings).

    Raises:
        ValueError: ``k`` out of range, or (``full=False``) a grid whose margin (row 30 or
            column 30, 1-based) is not all wall.
    """
    single = isinstance(grids, np.ndarray) and grids.shape == (SIDE, SIDE)
    g = as_grids(grids)
    if full:
        out = np.ascontiguousarray(_dihedral(g, k))
    else:
        margin = (g[:, _BLOCK, :] != WALL).any(1) | (g[:, :, _BLOCK] != WALL).any(1)
        if margin.any():
            raise ValueError(
                f"maze {int(np.flatnonzero(margin)[0])} has non-wall cells in row/column {SIDE}: "
                "block symmetries need an all-wall margin (pass full=True to turn the whole grid)"
            )
        out = g.copy()
        out[:, :_BLOCK, :_BLOCK] = _dihedral(g[:, :_BLOCK, :_BLOCK], k)
    return out[0] if single else out


def canonical_keys(questions: Any, *, full: bool = False) -> list[bytes]:
    """A key per maze, equal for two mazes exactly when one is a symmetric image of the other.

    The key is the smallest byte string of the 8 transformed questions (``full`` as in
    :func:`transform`). The answer is not part of the key: a question determines it.

    Examples:
        >>> import numpy as np
        >>> g = np.full((30, 30), 1, np.uint8); g[1, 1] = 3; g[1, 2] = 2; g[1, 3] = 4
        >>> canonical_keys(g)[0] == canonical_keys(transform(g, 6))[0]
        True
    """
    g = as_grids(questions)
    images = np.stack([transform(g, k, full=full).reshape(len(g), -1) for k in range(NUM_SYMMETRIES)], 1)
    return [min(row.tobytes() for row in rows) for rows in images]


def augment(
    questions: Any, answers: Any, rng: np.random.Generator, *, full: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random symmetry per maze, the same for its question and answer.

    Returns:
        ``(questions, answers, ids)``: transformed grids ``(N, 30, 30)`` and the ids used.

    Examples:
        >>> import numpy as np
        >>> g = np.full((2, 30, 30), 1, np.uint8)
        >>> q, a, ids = augment(g, g, np.random.default_rng(0))
        >>> q.shape, ids.shape
        ((2, 30, 30), (2,))
    """
    q, a = as_grids(questions), as_grids(answers)
    if q.shape != a.shape:
        raise ValueError(f"{len(q)} questions but {len(a)} answers")
    ids = rng.integers(0, NUM_SYMMETRIES, size=len(q))
    out_q, out_a = q.copy(), a.copy()
    for k in np.unique(ids):
        rows = ids == k
        out_q[rows] = transform(q[rows], int(k), full=full)
        out_a[rows] = transform(a[rows], int(k), full=full)
    return out_q, out_a, ids

"""Paired statistics of bench cells: two cells run on the same puzzles are compared puzzle by puzzle."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["consecutive_depth_pairs", "mcnemar_p"]


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split at least this uneven if a puzzle
    that one of two paired cells solves and the other does not is as likely either way.

    Examples:
        >>> mcnemar_p(5, 0), mcnemar_p(0, 0), round(mcnemar_p(7, 2), 4)
        (0.0625, 1.0, 0.1797)
    """
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def consecutive_depth_pairs(correct: Mapping[tuple[str, int, int], Mapping[int, np.ndarray]]) -> list[dict[str, Any]]:
    """Consecutive depths of every (solver label, breadth), compared puzzle by puzzle.

    Args:
        correct: ``(label, breadth, depth) -> {chunk: per-puzzle bool array}``; a pair is
            compared on the chunks both depths have (all of them for a finished bench, the ones
            done so far for a running one). Groups come out in the order of first appearance.

    Returns:
        One dict per pair: ``label``, ``breadth``, ``from_depth``, ``to_depth``, ``n`` (puzzles
        compared), ``acc_from``, ``acc_to``, ``gained`` (solved only at the deeper depth),
        ``lost`` (only at the shallower one) and ``p_value`` (:func:`mcnemar_p` of that split).

    Examples:
        >>> pairs = consecutive_depth_pairs({("anderson", 1, 16): {0: np.array([1, 0, 0, 1], bool)},
        ...                                  ("anderson", 1, 64): {0: np.array([1, 1, 1, 1], bool)}})
        >>> pairs[0]["gained"], pairs[0]["lost"], pairs[0]["acc_to"]
        (2, 0, 1.0)
    """
    groups: dict[tuple[str, int], dict[int, Mapping[int, np.ndarray]]] = {}
    for (label, breadth, depth), chunks in correct.items():
        groups.setdefault((label, breadth), {})[depth] = chunks
    out = []
    for (label, breadth), by_depth in groups.items():
        depths = sorted(by_depth)
        for shallow, deep in zip(depths, depths[1:]):
            common = sorted(set(by_depth[shallow]) & set(by_depth[deep]))
            if not common:
                continue
            a = np.concatenate([np.asarray(by_depth[shallow][c], dtype=bool) for c in common])
            b = np.concatenate([np.asarray(by_depth[deep][c], dtype=bool) for c in common])
            gained, lost = int((b & ~a).sum()), int((a & ~b).sum())
            out.append({"label": label, "breadth": breadth, "from_depth": shallow, "to_depth": deep, "n": int(a.size),
                        "acc_from": float(a.mean()), "acc_to": float(b.mean()), "gained": gained, "lost": lost,
                        "p_value": mcnemar_p(gained, lost)})
    return out

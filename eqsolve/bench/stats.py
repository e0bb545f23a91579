"""Paired statistics of bench cells: two cells run on the same puzzles are compared puzzle by puzzle."""

from __future__ import annotations

import math

__all__ = ["mcnemar_p"]


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

"""Residual as a correctness signal: AUROC, accuracy against residual, halting thresholds.

A reasoner that has learned attractors should be right where its fixed-point residual is small.
These functions measure how well "residual below t => correct" holds on a set of end states. They
use numpy only (no scikit-learn at run time); the AUROC is the tie-aware Mann-Whitney statistic.

Example:
    >>> import numpy as np
    >>> residual = np.array([0.01, 0.02, 0.5, 0.9])
    >>> correct = np.array([True, True, False, True])
    >>> round(residual_auroc(residual, correct), 3)
    0.667
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_pair(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validates and flattens a (scores, labels) pair into float64 / bool arrays."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"scores must be finite; scores[{bad}] = {s[bad]}")
    if y.dtype != bool:
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"labels must be boolean or 0/1, got values {sorted(values)[:5]}")
        y = y.astype(bool)
    return s, y


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks.

    Args:
        values: (n,) numbers.

    Returns:
        (n,) float64 ranks.

    Example:
        >>> average_ranks(np.array([3.0, 1.0, 3.0])).tolist()
        [2.5, 1.0, 2.5]
    """
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # start index of each run of equal values in the sorted order
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of `scores` for predicting `labels` (higher score = positive).

    Computed as the Mann-Whitney U statistic with average ranks, so tied scores count one half,
    exactly as scikit-learn's `roc_auc_score`.

    Args:
        scores: (n,) finite scores.
        labels: (n,) booleans (or 0/1); both classes must be present.

    Returns:
        AUROC in [0, 1].

    Raises:
        ValueError: on length mismatch, non-finite scores, or a single class.

    Example:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    s, y = _as_pair(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes; got {n_pos} positive and {n_neg} negative")
    ranks = average_ranks(s)  # average ranks: ties contribute 1/2 per pair
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def residual_auroc(residual: Any, correct: Any) -> float:
    """AUROC of "smaller residual => correct"; NaN when only one class is present.

    Args:
        residual: (n,) residuals (finite).
        correct: (n,) booleans.

    Returns:
        AUROC of `-residual` against `correct`, or `nan` if all rows are correct or all wrong.

    Example:
        >>> residual_auroc([0.1, 0.2, 0.3], [True, False, False])
        1.0
    """
    r, y = _as_pair(residual, correct)
    if y.all() or not y.any():
        return float("nan")
    return auroc(-r, y)


def accuracy_vs_residual(
    residual: Any, correct: Any, *, n_bins: int = 10, spacing: str = "quantile"
) -> dict[str, list[float]]:
    """Accuracy of end states binned by residual.

    Args:
        residual: (n,) positive residuals.
        correct: (n,) booleans.
        n_bins: number of bins (fewer when residuals repeat).
        spacing: "quantile" (equal-count bins) or "log" (equal width in log10 residual).

    Returns:
        Dict with lists `edges` (n_bins+1), `count`, `accuracy` (NaN for empty bins) and
        `mean_residual` per bin.

    Example:
        >>> out = accuracy_vs_residual([0.1, 0.2, 1.0, 2.0], [1, 1, 0, 0], n_bins=2)
        >>> out["accuracy"]
        [1.0, 0.0]
    """
    r, y = _as_pair(residual, correct)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if spacing == "quantile":
        edges = np.unique(np.quantile(r, np.linspace(0.0, 1.0, n_bins + 1)))
    elif spacing == "log":
        lo = np.log10(max(r.min(), 1e-30))
        hi = np.log10(max(r.max(), 1e-30))
        edges = np.unique(np.logspace(lo, hi, n_bins + 1))
    else:
        raise ValueError(f"spacing must be 'quantile' or 'log', got {spacing!r}")
    if edges.size < 2:  # all residuals equal: one bin
        edges = np.array([r.min(), r.max()])
    # right-closed last bin so that the maximum lands in a bin
    idx = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, edges.size - 2)
    count, acc, mean_r = [], [], []
    for b in range(edges.size - 1):
        m = idx == b
        count.append(int(m.sum()))
        acc.append(float(y[m].mean()) if m.any() else float("nan"))
        mean_r.append(float(r[m].mean()) if m.any() else float("nan"))
    return {"edges": edges.tolist(), "count": count, "accuracy": acc, "mean_residual": mean_r}


def threshold_curve(residual: Any, correct: Any) -> dict[str, list[float]]:
    """Accuracy and coverage of the rule "accept if residual <= t" for every distinct t.

    Args:
        residual: (n,) residuals.
        correct: (n,) booleans.

    Returns:
        Dict of lists over increasing thresholds: `threshold`, `accuracy` (of accepted rows),
        `coverage` (fraction accepted), `recall` (fraction of correct rows accepted).

    Example:
        >>> threshold_curve([0.1, 0.1, 0.5], [1, 0, 1])["accuracy"]
        [0.5, 0.6666666666666666]
    """
    r, y = _as_pair(residual, correct)
    order = np.argsort(r, kind="stable")
    r_sorted, y_sorted = r[order], y[order]
    cum_correct = np.cumsum(y_sorted)
    # last index of each run of equal residuals: ties are accepted or rejected together
    last = np.flatnonzero(np.append(r_sorted[1:] != r_sorted[:-1], True))
    accepted = last + 1
    n_correct = max(int(y.sum()), 1)
    return {
        "threshold": r_sorted[last].tolist(),
        "accuracy": (cum_correct[last] / accepted).tolist(),
        "coverage": (accepted / r.size).tolist(),
        "recall": (cum_correct[last] / n_correct).tolist(),
    }


def halting_threshold(residual: Any, correct: Any, target_accuracy: float) -> dict[str, Any]:
    """Largest residual threshold whose accepted rows reach `target_accuracy`.

    Halting a solve once the residual falls below this threshold keeps (on this data) the
    accuracy of halted rows at or above the target while halting as many rows as possible.

    Args:
        residual: (n,) residuals.
        correct: (n,) booleans.
        target_accuracy: desired accuracy of accepted rows, in (0, 1].

    Returns:
        Dict with `threshold` (None when no threshold reaches the target), `accuracy` and
        `coverage` at that threshold, and the `target_accuracy`.

    Example:
        >>> halting_threshold([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 1], 0.9)["threshold"]
        0.2
    """
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy}")
    curve = threshold_curve(residual, correct)
    acc = np.asarray(curve["accuracy"])
    ok = np.flatnonzero(acc >= target_accuracy - 1e-12)
    if ok.size == 0:
        return {"target_accuracy": target_accuracy, "threshold": None, "accuracy": None,
                "coverage": 0.0}
    k = int(ok[-1])
    return {
        "target_accuracy": target_accuracy,
        "threshold": curve["threshold"][k],
        "accuracy": curve["accuracy"][k],
        "coverage": curve["coverage"][k],
    }

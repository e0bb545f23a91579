"""Residual as a correctness signal: AUROC against scikit-learn and a pairwise count."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from eqsolve.diagnostics.calibration import (
    accuracy_vs_residual,
    auroc,
    average_ranks,
    halting_threshold,
    residual_auroc,
    threshold_curve,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def pairwise_auroc(scores, labels) -> float:
    """P(score of a positive > score of a negative) + 1/2 P(tie), by counting all pairs."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


FIXED = [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    ([1, 1, 1, 1], [0, 1, 0, 1], 0.5),  # all tied
    ([0.2, 0.2, 0.5, 0.1, 0.5, 0.9], [1, 0, 1, 0, 0, 1], None),  # ties across classes
    ([3, 2, 1], [1, 0, 0], 1.0),
    ([3, 2, 1], [0, 1, 1], 0.0),
]


@pytest.mark.parametrize("scores,labels,expected", FIXED)
def test_auroc_fixed_inputs_match_sklearn_and_pairwise(scores, labels, expected):
    ours = auroc(scores, labels)
    assert ours == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert ours == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)
    if expected is not None:
        assert ours == pytest.approx(expected)


def test_auroc_random_with_heavy_ties_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 200))
        scores = rng.integers(0, 6, n).astype(float)  # few distinct values: many ties
        labels = rng.random(n) < 0.4
        if labels.all() or not labels.any():
            continue
        ours = auroc(scores, labels)
        assert ours == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
        assert ours == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)


def test_average_ranks_and_errors():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="finite"):
        auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="length"):
        auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        auroc([0.1, 0.2], [0, 2])


def test_residual_auroc_is_for_low_residual_and_nan_for_one_class():
    residual = [1e-4, 2e-4, 3e-1, 5e-1, 1e-3]
    correct = [True, True, False, False, True]
    assert residual_auroc(residual, correct) == 1.0
    assert residual_auroc(residual, [not c for c in correct]) == 0.0
    assert np.isnan(residual_auroc(residual, [True] * 5))


def test_accuracy_vs_residual_bins():
    residual = np.array([0.1, 0.2, 0.3, 0.4, 1.0, 2.0, 3.0, 4.0])
    correct = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    out = accuracy_vs_residual(residual, correct, n_bins=2)
    assert out["count"] == [4, 4]
    assert out["accuracy"] == [0.75, 0.25]
    log = accuracy_vs_residual(residual, correct, n_bins=3, spacing="log")
    assert sum(log["count"]) == 8
    with pytest.raises(ValueError, match="spacing"):
        accuracy_vs_residual(residual, correct, spacing="linear")


def test_threshold_curve_and_halting_threshold():
    residual = [0.1, 0.2, 0.2, 0.3, 0.4, 0.5]
    correct = [1, 1, 0, 1, 0, 0]
    curve = threshold_curve(residual, correct)
    assert curve["threshold"] == [0.1, 0.2, 0.3, 0.4, 0.5]  # ties accepted together
    assert curve["accuracy"] == pytest.approx([1.0, 2 / 3, 3 / 4, 3 / 5, 1 / 2])
    assert curve["coverage"] == pytest.approx([1 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert curve["recall"][-1] == 1.0
    h = halting_threshold(residual, correct, 0.75)
    assert h["threshold"] == 0.3 and h["coverage"] == pytest.approx(4 / 6)
    assert halting_threshold(residual, [0] * 6, 0.5)["threshold"] is None
    with pytest.raises(ValueError, match="target_accuracy"):
        halting_threshold(residual, correct, 0.0)

"""The relative residual, written once: ``‖f(z) - z‖ / (‖f(z)‖ + 1e-8)`` per row.

Every driver outside the solver library (unrolled gradients, test-time scaling, training
metrics, the attractor census, the scaling benchmark) reports it through :func:`relative_residual`,
so "relative residual" means one number everywhere. ``eqsolve.solvers`` computes the same
formula inside its loop (it is standalone, so it keeps its own copy).

Examples:
    >>> import torch
    >>> relative_residual(torch.tensor([1.0]), torch.tensor([4.0]))
    tensor([0.2500])
    >>> relative_residual(1.0, 0.0)
    100000000.0
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["RESIDUAL_EPS", "relative_residual"]

#: Added to ``‖f(z)‖`` so that a zero map gives a finite relative residual.
RESIDUAL_EPS = 1e-8

T = TypeVar("T")


def relative_residual(diff: T, fz_norm: T) -> T:
    """``diff / (fz_norm + RESIDUAL_EPS)``: the absolute residual ``‖f(z) - z‖`` relative to ``‖f(z)‖``.

    Args:
        diff: Absolute residual per row (tensor or float).
        fz_norm: ``‖f(z)‖`` per row, same shape (computed by the caller in its own precision).

    Returns:
        The relative residual, same type and shape.
    """
    return diff / (fz_norm + RESIDUAL_EPS)  # type: ignore[operator,return-value]

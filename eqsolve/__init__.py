"""eqsolve: fixed points of neural maps, and training through them.

>>> import torch
>>> from eqsolve import solve, DEQ, Implicit
>>> sol = solve(lambda z, x: torch.tanh(0.5 * z + x), torch.zeros(4, 8), torch.randn(4, 8))
>>> bool(sol.converged.all())
True

The solvers live in :mod:`eqsolve.solvers` (torch only); gradients in :mod:`eqsolve.gradients`;
the DEQ layer in :mod:`eqsolve.deq`; test-time scaling in :mod:`eqsolve.scaling`; the Sudoku
task and the Equilibrium Reasoner in :mod:`eqsolve.tasks` and :mod:`eqsolve.models`.
"""

from __future__ import annotations

from typing import Any

from eqsolve.deq import DEQ, correction_loss
from eqsolve.gradients import (
    BackwardStats,
    ConvergenceWarning,
    GradSolution,
    Implicit,
    OneStep,
    Phantom,
    Unrolled,
    available_gradients,
    get_gradient,
)
from eqsolve.jacobian import jac_reg, spectral_radius
from eqsolve.solvers import (
    Anderson,
    Broyden,
    FixedPointIteration,
    Solution,
    SolveError,
    Status,
    available_solvers,
    get_solver,
    register_solver,
    solve,
)

#: The one place the version is written; pyproject.toml reads it (tool.setuptools.dynamic).
__version__ = "0.1.0"

# Heavier parts (numpy/hydra users) load on first use, so `import eqsolve` stays torch-only.
_LAZY = {
    "solve_many": ("eqsolve.scaling", "solve_many"),
    "ScalingResult": ("eqsolve.scaling", "ScalingResult"),
    "EqR": ("eqsolve.models.eqr", "EqR"),
    "EqRConfig": ("eqsolve.models.eqr", "EqRConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'eqsolve' has no attribute {name!r}")


__all__ = [
    "DEQ",
    "Anderson",
    "BackwardStats",
    "Broyden",
    "ConvergenceWarning",
    "EqR",
    "EqRConfig",
    "FixedPointIteration",
    "GradSolution",
    "Implicit",
    "OneStep",
    "Phantom",
    "ScalingResult",
    "Solution",
    "SolveError",
    "Status",
    "Unrolled",
    "__version__",
    "available_gradients",
    "available_solvers",
    "correction_loss",
    "get_gradient",
    "get_solver",
    "jac_reg",
    "register_solver",
    "solve",
    "solve_many",
    "spectral_radius",
]

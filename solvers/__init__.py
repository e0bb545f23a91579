"""eqsolve.solvers: batched fixed-point solvers for PyTorch (depends on torch only).

Solve ``z = f(z, *args)`` for every row of a batch, each row stopping on its own:

>>> import torch
>>> from eqsolve.solvers import solve
>>> sol = solve(lambda z: 0.5 * torch.tanh(z) + 1.0, torch.zeros(8, 3), solver="anderson", tol=1e-6)
>>> bool(sol.converged.all())
True

Modules: ``_solution`` (Solution, Status), ``_base`` (the solver protocol), ``_registry``
(solvers by name), ``_engine`` (the one engine that drives every solver: stepping, status,
best iterate, NFE, with a pluggable stop rule), ``_loop`` (:func:`solve` on that engine), one
module per algorithm, and ``torchdeq`` (adapter registering eqsolve's solvers in torchdeq).
"""

from ._base import Solver, SolverState, flat_map
from ._loop import solve
from ._registry import (
    available_solvers,
    describe_solvers,
    get_solver,
    register_alias,
    register_solver,
)
from ._solution import Solution, SolveError, Status
from .anderson import Anderson, AndersonState
from .broyden import Broyden, BroydenState
from .fixed_point import FixedPointIteration

register_solver("fixed_point", FixedPointIteration)
register_alias("naive", "fixed_point")
register_solver("anderson", Anderson)
register_solver("broyden", Broyden)

__all__ = [
    "Anderson",
    "AndersonState",
    "Broyden",
    "BroydenState",
    "FixedPointIteration",
    "SolveError",
    "Solution",
    "Solver",
    "SolverState",
    "Status",
    "available_solvers",
    "describe_solvers",
    "flat_map",
    "get_solver",
    "register_alias",
    "register_solver",
    "solve",
]

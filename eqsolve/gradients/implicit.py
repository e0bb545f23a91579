"""Implicit differentiation: :class:`Implicit` and the ``autograd.Function`` behind it.

The backward pass solves the adjoint fixed point ``g = Jᵀ g + ∂L/∂z*`` with any registered
solver and records per-row :class:`~eqsolve.gradients.BackwardStats`. Import
:class:`Implicit` from :mod:`eqsolve.gradients`.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from eqsolve._errors import check_keys
from eqsolve.gradients.base import BackwardStats, ConvergenceWarning, FixedPointFn, GradientStrategy
from eqsolve.solvers import Status, available_solvers, solve
from eqsolve.solvers._base import option
from eqsolve.solvers._registry import resolve_solver

__all__ = ["Implicit"]


# Loop options of the adjoint solve. The adjoint map is linear, so progress is geometric and
# stagnation checks only cost time (a stuck row still ends as MAX_ITER); divergence stays on.
_ADJOINT_LOOP: dict[str, Any] = {"stall_window": None, "diverge_factor": 1e4, "check_every": 1}

# Strategies (by id) that have warned about a non-converged adjoint solve: the strategy is
# frozen, so "warn once per strategy" lives here; an entry goes when its strategy is collected.
_WARNED: set[int] = set()


def _warn_once(strategy: Implicit, message: str) -> None:
    key = id(strategy)
    if key in _WARNED:
        return
    _WARNED.add(key)
    weakref.finalize(strategy, _WARNED.discard, key)
    warnings.warn(message, ConvergenceWarning, stacklevel=3)


@dataclass(frozen=True, init=False, repr=False)
class Implicit(GradientStrategy):
    """Implicit differentiation: ``dL/dθ = gᵀ ∂f/∂θ`` with ``g = Jᵀ g + ∂L/∂z*``.

    The adjoint fixed point is solved by :func:`eqsolve.solvers.solve` on vector-Jacobian
    products of the one graph built at ``z*`` (memory independent of forward depth). Rows stop
    independently; ``sol.backward`` records status and residual per row after ``backward()``.
    A non-converged adjoint warns once per strategy object (:class:`ConvergenceWarning`), or
    raises with ``throw=True``; the best adjoint iterate is used either way.

    Args:
        solver: adjoint solver name (any registered one) or solver object.
        tol: adjoint tolerance.
        max_iter: adjoint iteration budget.
        stop: ``"rel"`` or ``"abs"`` adjoint residual.
        compact: drop converged rows from the adjoint solve (rows of ``f`` must be independent).
        throw: raise ``RuntimeError`` in ``backward()`` when a row does not converge.
        stall_window: adjoint loop option of :func:`~eqsolve.solvers.solve` (None here: never).
        diverge_factor: adjoint loop option (1e4).
        check_every: adjoint loop option (1: the host checks every step).
        solver_options: options of the named adjoint solver, as a mapping; or give them as
            keywords (``Implicit(solver="anderson", m=5)``). Validated now, with the solver
            built once (:func:`eqsolve.solvers._registry.resolve_solver`).

    Examples:
        >>> Implicit(solver="anderson", tol=1e-8, max_iter=100, m=5)
        Implicit(solver='anderson', tol=1e-08, max_iter=100, stop='rel', compact=True, throw=False, m=5)
    """

    name = "implicit"

    solver: Any = option("anderson", "adjoint solver name or object")
    tol: float = option(1e-6, "adjoint tolerance (> 0)")
    max_iter: int = option(100, "adjoint iteration budget (>= 1)")
    stop: str = option("rel", "adjoint residual: rel or abs")
    compact: bool = option(True, "drop converged rows from the adjoint solve")
    throw: bool = option(False, "raise in backward() when a row does not converge")
    stall_window: int | None = option(None, "adjoint loop: STAGNATED after this many steps without progress")
    diverge_factor: float | None = option(1e4, "adjoint loop: DIVERGED beyond this factor")
    check_every: int = option(1, "adjoint loop: host check every this many steps")
    solver_options: tuple[tuple[str, Any], ...] = option((), "options of the named adjoint solver")

    def __init__(self, solver: Any = "anderson", tol: float = 1e-6, max_iter: int = 100,
                 stop: str = "rel", compact: bool = True, throw: bool = False,
                 stall_window: int | None = None, diverge_factor: float | None = 1e4,
                 check_every: int = 1, solver_options: Any = (), **options: Any) -> None:
        if not tol > 0:
            raise ValueError(f"Implicit: tol must be > 0, got {tol!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"Implicit: max_iter must be an int >= 1, got {max_iter!r}")
        if stop not in ("rel", "abs"):
            raise ValueError(f"Implicit: stop must be 'rel' or 'abs', got {stop!r}")
        extra = {**dict(solver_options), **options}
        if isinstance(solver, str) and solver in available_solvers():
            # one error for a misspelled option, naming Implicit's options and the solver's
            valid = [*(n for n in self.option_names() if n != "solver_options"),
                     *available_solvers()[solver].option_names()]
            check_keys("option", extra, valid, f" for gradient 'implicit' (adjoint solver {solver!r})")
        adjoint = resolve_solver(solver, extra)  # built once; unknown name or value: fails now
        values = dict(solver=solver, tol=tol, max_iter=max_iter, stop=stop, compact=compact, throw=throw,
                      stall_window=stall_window, diverge_factor=diverge_factor, check_every=check_every,
                      solver_options=tuple(sorted(extra.items())))
        for key, value in values.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_adjoint_solver", adjoint)

    @property
    def loop_options(self) -> dict[str, Any]:
        """The loop options of the adjoint solve (``stall_window``, ``diverge_factor``, ``check_every``)."""
        return {k: getattr(self, k) for k in _ADJOINT_LOOP}

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in ("solver", "tol", "max_iter", "stop", "compact", "throw")}
        shown.update(self.solver_options)
        shown.update({k: v for k, v in self.loop_options.items() if v != _ADJOINT_LOOP[k]})
        return f"Implicit({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, BackwardStats]:
        z_in = z_star.detach().requires_grad_()
        with torch.enable_grad():
            fz = f(z_in, *args)
        stats = BackwardStats()
        return _ImplicitFunction.apply(fz, z_in, self, stats), stats

    def _adjoint(self, fz: Tensor, z_in: Tensor, v: Tensor, stats: BackwardStats) -> Tensor:
        """Solve ``g = Jᵀ g + v`` per row, record stats, warn/raise on failure."""
        batch = v.shape[0]

        def adjoint_map(g: Tensor, v_rows: Tensor, rows: Tensor) -> Tensor:
            if g.shape[0] == batch:
                return torch.autograd.grad(fz, z_in, g, retain_graph=True)[0] + v_rows
            # J is block-diagonal over rows: one full-batch vjp, read back the active rows.
            full = torch.zeros_like(v).index_copy(0, rows, g)
            return torch.autograd.grad(fz, z_in, full, retain_graph=True)[0].index_select(0, rows) + v_rows

        rows = torch.arange(batch, device=v.device)
        with torch.no_grad():
            # inference=False: the map runs autograd's backward on f's graph, which inference mode
            # is not documented to support across torch versions (its speed-up is small here)
            sol = solve(adjoint_map, v, v, rows, solver=self.__dict__["_adjoint_solver"], tol=self.tol, stop=self.stop,
                        max_iter=self.max_iter, compact=self.compact, inference=False, **self.loop_options)
        stats.ran = True
        stats.status, stats.nfe, stats.nstep = sol.status, sol.nfe, sol.nstep
        stats.abs_residual, stats.rel_residual = sol.abs_residual, sol.rel_residual
        failed = int((sol.status != int(Status.CONVERGED)).sum())
        if failed:
            message = (f"Implicit backward: adjoint solve did not converge for {failed}/{batch} rows "
                       f"(max {self.stop} residual {float(sol.residual.max()):.3g} > tol {self.tol:g}, "
                       f"statuses {sorted({Status(int(s)).name for s in sol.status.unique()})}); "
                       "gradients use the best adjoint iterate. See sol.backward.")
            if self.throw:
                raise RuntimeError(message)
            _warn_once(self, message)
        return sol.z


class _ImplicitFunction(torch.autograd.Function):
    """Identity on ``f(z*)`` whose backward maps ``v`` to ``(I - Jᵀ)⁻¹ v``.

    Autograd then carries that adjoint through the graph of ``f(z*)`` into the parameters and
    ``args``. The vjps reuse the forward graph (re-entrant ``autograd.grad`` with ``inputs`` set to
    ``z_in`` only), so no parameter gradient is accumulated twice and DDP's reducer sees exactly
    one gradient per parameter.
    """

    @staticmethod
    def forward(ctx, fz: Tensor, z_in: Tensor, strategy: Implicit, stats: BackwardStats) -> Tensor:
        ctx.save_for_backward(fz, z_in)
        ctx.strategy, ctx.stats = strategy, stats
        return fz.detach().clone()

    @staticmethod
    @once_differentiable  # double backward through the adjoint solve is not implemented
    def backward(ctx, v: Tensor) -> tuple[Tensor | None, ...]:
        fz, z_in = ctx.saved_tensors
        g = ctx.strategy._adjoint(fz, z_in, v.contiguous(), ctx.stats)
        return g, None, None, None

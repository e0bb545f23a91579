"""Implicit differentiation: :class:`Implicit` and the ``autograd.Function`` behind it.

The backward pass solves the adjoint fixed point ``g = Jᵀ g + ∂L/∂z*`` with any registered
solver and records per-row :class:`~eqsolve.gradients.BackwardStats`. Import
:class:`Implicit` from :mod:`eqsolve.gradients`.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from eqsolve.gradients.base import BackwardStats, ConvergenceWarning, FixedPointFn, GradientStrategy
from eqsolve.solvers import Status, get_solver, solve

__all__ = ["Implicit"]


# Loop options of the adjoint solve. The adjoint map is linear, so progress is geometric and
# stagnation checks only cost time (a stuck row still ends as MAX_ITER); divergence stays on.
_ADJOINT_LOOP: dict[str, Any] = {"stall_window": None, "diverge_factor": 1e4, "check_every": 1}


class Implicit(GradientStrategy):
    """Implicit differentiation: ``dL/dθ = gᵀ ∂f/∂θ`` with ``g = Jᵀ g + ∂L/∂z*``.

    The adjoint fixed point is solved by :func:`eqsolve.solvers.solve` on vector-Jacobian
    products of the one graph built at ``z*`` (memory independent of forward depth). Rows stop
    independently; ``sol.backward`` records status and residual per row after ``backward()``.
    A non-converged adjoint warns once per strategy (:class:`ConvergenceWarning`), or raises
    with ``throw=True``; the best adjoint iterate is used either way.

    Args:
        solver: adjoint solver name (any registered one) or solver object.
        tol: adjoint tolerance.
        max_iter: adjoint iteration budget.
        stop: ``"rel"`` or ``"abs"`` adjoint residual.
        compact: drop converged rows from the adjoint solve (rows of ``f`` must be independent).
        throw: raise ``RuntimeError`` in ``backward()`` when a row does not converge.
        **solver_options: options of the named adjoint solver (validated now), and the loop
            options of :func:`~eqsolve.solvers.solve` ``stall_window`` (default None here),
            ``diverge_factor`` (1e4) and ``check_every`` (1).

    Examples:
        >>> Implicit(solver="anderson", tol=1e-8, max_iter=100, m=5)
        Implicit(solver='anderson', tol=1e-08, max_iter=100, stop='rel', compact=True, throw=False, m=5)
    """

    name = "implicit"

    def __init__(self, solver: Any = "anderson", tol: float = 1e-6, max_iter: int = 100,
                 stop: str = "rel", compact: bool = True, throw: bool = False,
                 **solver_options: Any) -> None:
        if not tol > 0:
            raise ValueError(f"Implicit: tol must be > 0, got {tol!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"Implicit: max_iter must be an int >= 1, got {max_iter!r}")
        if stop not in ("rel", "abs"):
            raise ValueError(f"Implicit: stop must be 'rel' or 'abs', got {stop!r}")
        loop = dict(_ADJOINT_LOOP)
        loop.update({k: solver_options.pop(k) for k in list(solver_options) if k in loop})
        if isinstance(solver, str):
            try:
                get_solver(solver, **solver_options)  # fail now on a misspelled option, not in backward
            except ValueError as err:
                # the solver names only its own options; Implicit's and the loop's are valid too
                own = ["solver", "tol", "max_iter", "stop", "compact", "throw", *_ADJOINT_LOOP]
                hints = [m for k in solver_options for m in difflib.get_close_matches(k, own, n=1)]
                hint = f" (did you mean {hints[0]!r}?)" if hints else ""
                raise ValueError(f"Implicit: {err}; Implicit's own options: {', '.join(own)}{hint}") from None
        elif solver_options:
            raise ValueError(f"Implicit: solver options {sorted(solver_options)} given with a solver object")
        self.solver, self.tol, self.max_iter, self.stop = solver, tol, max_iter, stop
        self.compact, self.throw, self.solver_options = compact, throw, dict(solver_options)
        self.loop_options = loop
        self.last_backward: BackwardStats | None = None
        self._warned = False

    def _options(self) -> dict[str, Any]:
        return {"solver": self.solver, "tol": self.tol, "max_iter": self.max_iter,
                "stop": self.stop, "compact": self.compact, "throw": self.throw,
                **self.solver_options,
                **{k: v for k, v in self.loop_options.items() if v != _ADJOINT_LOOP[k]}}

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, BackwardStats]:
        z_in = z_star.detach().requires_grad_()
        with torch.enable_grad():
            fz = f(z_in, *args)
        stats = BackwardStats()
        self.last_backward = stats
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
        options = self.solver_options if isinstance(self.solver, str) else {}
        with torch.no_grad():
            sol = solve(adjoint_map, v, v, rows, solver=self.solver, tol=self.tol, stop=self.stop,
                        max_iter=self.max_iter, compact=self.compact, **self.loop_options, **options)
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
            if not self._warned:
                self._warned = True
                warnings.warn(message, ConvergenceWarning, stacklevel=2)
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

"""Shared pieces of the gradient strategies: base class, solution record, backward stats.

:class:`GradientStrategy` is the base every strategy in :mod:`eqsolve.gradients` derives from
(solve without a graph, then ``attach`` one at ``z*``); :class:`GradSolution` is what a strategy
returns next to ``z``, with the :class:`BackwardStats` of an adjoint solve; a failed adjoint
solve warns with :class:`ConvergenceWarning`. Import these from :mod:`eqsolve.gradients`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from eqsolve.solvers import Solution, Status, solve

__all__ = ["BackwardStats", "ConvergenceWarning", "FixedPointFn", "GradSolution", "GradientStrategy"]

FixedPointFn = Callable[..., Tensor]


class ConvergenceWarning(RuntimeWarning):
    """A backward (adjoint) solve stopped before reaching its tolerance."""


@dataclass
class BackwardStats:
    """What the adjoint solve of one :class:`Implicit` call did; filled in by ``backward()``.

    Before ``backward()`` runs, ``ran`` is False and the tensors are None.

    Attributes:
        ran: whether the backward pass has run.
        status: ``(B,)`` int64 :class:`~eqsolve.solvers.Status` values of the adjoint solve.
        abs_residual: ``(B,)`` ``||Jᵀg + v - g||`` per row at the returned ``g``.
        rel_residual: ``(B,)`` the same divided by ``||Jᵀg + v||``.
        nfe: ``(B,)`` vector-Jacobian products spent per row.
        nstep: ``(B,)`` adjoint solver iterations per row.
    """

    ran: bool = False
    status: Tensor | None = None
    abs_residual: Tensor | None = None
    rel_residual: Tensor | None = None
    nfe: Tensor | None = None
    nstep: Tensor | None = None

    @property
    def converged(self) -> Tensor:
        """``(B,)`` bool mask of rows whose adjoint solve converged (raises before backward)."""
        if not self.ran:
            raise RuntimeError("backward() has not run yet for this call")
        assert self.status is not None  # filled in by backward()
        return self.status == int(Status.CONVERGED)

    def summary(self) -> dict[str, float]:
        """Batch means and worst cases as plain floats (for logs)."""
        if not self.ran:
            return {"ran": 0.0}
        assert self.abs_residual is not None and self.rel_residual is not None and self.nfe is not None
        return {
            "ran": 1.0,
            "converged_frac": self.converged.double().mean().item(),
            "abs_residual_max": self.abs_residual.max().item(),
            "rel_residual_max": self.rel_residual.max().item(),
            "nfe_mean": self.nfe.double().mean().item(),
        }


@dataclass
class GradSolution(Solution):
    """The forward :class:`~eqsolve.solvers.Solution` plus what the gradient strategy adds.

    Attributes:
        backward: the adjoint solve's :class:`BackwardStats` (``Implicit`` only; None otherwise).
        states: sampled trajectory iterates carrying a graph (DEQ trajectory supervision), or None.
    """

    backward: BackwardStats | None = None
    states: list[Tensor] | None = None

    @classmethod
    def extend(cls, sol: Solution, **extra: Any) -> GradSolution:
        """Copy ``sol``'s fields into a GradSolution with ``extra`` fields set."""
        base = {f.name: getattr(sol, f.name) for f in dataclasses.fields(sol) if f.init}
        return cls(**base, **extra)


@dataclass(frozen=True)
class GradientStrategy:
    """Base class: solve without a graph, then attach a graph at ``z*`` (``attach``).

    A strategy is, like a solver, a frozen dataclass whose fields are its options: it holds no
    per-call state (what one call did is in the :class:`GradSolution` it returns), so one object
    may be shared by several layers, processes and threads. Subclasses implement :meth:`attach`;
    :class:`Unrolled` overrides :meth:`__call__` because its graph *is* the forward iteration.
    Register a subclass by name with :func:`eqsolve.gradients.register_gradient`.
    """

    name: ClassVar[str] = ""

    def __call__(
        self,
        f: FixedPointFn,
        z0: Tensor,
        *args: Tensor,
        solver: Any = "anderson",
        tol: float = 1e-4,
        stop: str = "rel",
        max_iter: int = 50,
        **solver_options: Any,
    ) -> tuple[Tensor, GradSolution]:
        """Solve ``z = f(z, *args)`` from ``z0`` and return ``(z, sol)`` with this gradient.

        Args:
            f: the map, ``f(z, *args)`` with the shape of ``z``; rows independent.
            z0: ``(B, ...)`` initial iterate.
            *args: batch-first tensors passed to ``f`` (they receive gradients).
            solver: forward solver name or object (see :func:`eqsolve.solvers.solve`).
            tol: forward tolerance.
            stop: ``"rel"`` or ``"abs"`` residual for the forward stopping rule.
            max_iter: forward iteration budget.
            **solver_options: options of a named forward solver, and the loop options of
                :func:`eqsolve.solvers.solve` (``stall_window``, ``diverge_factor``, ...).

        Returns:
            ``z`` with a graph to the parameters of ``f`` and to ``args``, and the forward
            solution extended with ``backward`` stats where the strategy has any.
        """
        with torch.no_grad():
            # f is the user's module, trained next: no inference mode (a cache it builds in this
            # call would be an inference tensor, which a graph cannot save)
            solver_options.setdefault("inference", False)
            sol = solve(f, z0.detach(), *args, solver=solver, tol=tol, stop=stop,
                        max_iter=max_iter, **solver_options)
        z, stats = self.attach(f, sol.z, args)
        return z, GradSolution.extend(sol, backward=stats)

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, BackwardStats | None]:
        """Return ``z`` (value ≈ ``z_star``) whose graph realises this strategy's gradient."""
        raise NotImplementedError

    @classmethod
    def option_names(cls) -> list[str]:
        """Names of the options this strategy accepts (its dataclass fields)."""
        return [f.name for f in dataclasses.fields(cls) if f.init]

"""Strategies that run ``f`` (or the solver's own steps) again with a graph.

:class:`Phantom` (``k`` damped steps from ``z*``), :class:`OneStep` (one step, Jacobian-free)
and :class:`Unrolled` (backprop through the solver's ``init``/``step`` iterations, all or the
last ``k`` per row, replayed from stored solver states). Import them from
:mod:`eqsolve.gradients`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eqsolve.gradients.base import FixedPointFn, GradientStrategy, GradSolution
from eqsolve.residual import relative_residual
from eqsolve.solvers import Status
from eqsolve.solvers._base import flat_map, option, select_rows, take_rows
from eqsolve.solvers._registry import resolve_solver

__all__ = ["OneStep", "Phantom", "Unrolled"]


@dataclass(frozen=True)
class Phantom(GradientStrategy):
    """Phantom gradient: ``k`` damped steps ``z ← (1-τ) z + τ f(z)`` from ``z*`` with a graph.

    Approaches the implicit gradient as ``k`` grows (when the damped map contracts); ``k=1,
    tau=1`` is :class:`OneStep`.

    Args:
        k: number of unrolled steps (>= 1).
        tau: damping in ``(0, 1]``.

    Examples:
        >>> Phantom(k=5, tau=0.5)
        Phantom(k=5, tau=0.5)
    """

    name = "phantom"

    k: int = option(5, "number of damped steps from z* with a graph (>= 1)")
    tau: float = option(0.5, "damping in (0, 1]")

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"Phantom: k must be an int >= 1, got {self.k!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"Phantom: tau must be in (0, 1], got {self.tau!r}")

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, None]:
        z = z_star.detach()
        with torch.enable_grad():
            for _ in range(self.k):
                z = f(z, *args) if self.tau == 1.0 else (1 - self.tau) * z + self.tau * f(z, *args)
        return z, None


@dataclass(frozen=True)
class OneStep(GradientStrategy):
    """Jacobian-free gradient: ``z = f(z*)`` with ``z*`` detached, so ``dL/dθ ≈ vᵀ ∂f/∂θ``.

    Biased (it drops ``(I - J)⁻¹``) but costs one ``f`` call; a common cheap training signal.

    Examples:
        >>> OneStep()
        OneStep()
    """

    name = "onestep"

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, None]:
        with torch.enable_grad():
            return f(z_star.detach(), *args), None


@dataclass(frozen=True)
class Unrolled(GradientStrategy):
    """Backpropagation through the forward solver's own iterations.

    ``k=None`` keeps the graph of every iteration (memory grows with depth); ``k`` keeps the
    last ``k`` iterations of each row (the earlier ones run without a graph, and the last ``k``
    are replayed with one from the stored solver state, so the values match the no-graph run).
    The loop drives the solver's ``init``/``step`` protocol on the whole batch; a row stops
    (is frozen) when its residual reaches ``tol``. Like the other strategies the output is
    ``f`` at the row's final iterate (``sol.z``), here with the graph of the iterations that
    led there; it is the *last* iterate, not the best seen.

    Args:
        k: number of trailing iterations to differentiate through, or None for all.

    Examples:
        >>> Unrolled(k=8)
        Unrolled(k=8)
    """

    name = "unrolled"

    k: int | None = option(None, "trailing iterations to differentiate through (None: all)")

    def __post_init__(self) -> None:
        if self.k is not None and not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"Unrolled: k must be None or an int >= 1, got {self.k!r}")

    def __call__(self, f: FixedPointFn, z0: Tensor, *args: Tensor, solver: Any = "anderson",
                 tol: float = 1e-4, stop: str = "rel", max_iter: int = 50,
                 **solver_options: Any) -> tuple[Tensor, GradSolution]:
        if stop not in ("rel", "abs"):
            raise ValueError(f"Unrolled: stop must be 'rel' or 'abs', got {stop!r}")
        if not (isinstance(max_iter, int) and max_iter >= 0):
            raise ValueError(f"Unrolled: max_iter must be an int >= 0, got {max_iter!r}")
        solver_obj = resolve_solver(solver, solver_options)
        return _unrolled_solve(f, z0, args, solver_obj, tol=tol, stop=stop, max_iter=max_iter,
                               last_k=self.k)

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, None]:
        raise TypeError("Unrolled differentiates the forward iterations; it cannot attach at a given z*")


def _unrolled_solve(f: FixedPointFn, z0: Tensor, args: tuple, solver: Any, *, tol: float, stop: str,
                    max_iter: int, last_k: int | None) -> tuple[Tensor, GradSolution]:
    """The :class:`Unrolled` loop: full graph (``last_k=None``) or no-graph run + replay.

    For ``last_k``, rows that stop at the same step form one replay group, restarted from a
    copy of the solver state ``min(k, n)`` steps before their stop: copies, because solvers
    may update history buffers in place without a graph, and groups, because a state's
    non-tensor fields (e.g. Anderson's ring position) are shared by all its rows.
    """
    batch, shape = z0.shape[0], z0.shape[1:]
    g = flat_map(f, shape)
    z0_flat = z0.detach().reshape(batch, -1)
    keep_all = last_k is None
    k = last_k or 0  # used only when not keep_all
    nstep = torch.zeros(batch, dtype=torch.int64, device=z0.device)
    groups: list[tuple[Tensor, Any, int]] = []  # (rows, restart state of those rows, steps to replay)
    with torch.enable_grad() if keep_all else torch.no_grad():
        state = solver.init(g, z0_flat, args)
        done = _stopped(state, stop, tol)
        ring = deque([_copy_state(state)], maxlen=k + 1)  # states t-k..t
        if not keep_all and bool(done.any()):
            groups.append((done.nonzero().flatten(), take_rows(ring[-1], done.nonzero().flatten()), 0))
        t = 0
        for t in range(1, max_iter + 1):
            if bool(done.all()):
                break
            state = select_rows(done, state, solver.step(g, state, args))
            nstep = nstep + (~done).long()
            newly = ~done & _stopped(state, stop, tol)
            done = done | newly
            if not keep_all:
                ring.append(_copy_state(state))
                if bool(newly.any()):
                    rows = newly.nonzero().flatten()
                    back = min(k, t)
                    groups.append((rows, take_rows(ring[-1 - back], rows), back))
        if not keep_all and not bool(done.all()):  # rows still running when the budget ran out
            rows = (~done).nonzero().flatten()
            back = min(k, t)
            groups.append((rows, take_rows(ring[-1 - back], rows), back))
    final, out, nfe = state, state.fz, state.nfe
    if not keep_all:
        out, replayed = final.fz.detach(), torch.zeros_like(nfe)
        with torch.enable_grad():
            for rows, restart, steps in groups:
                rows_args = tuple(a[rows] if isinstance(a, Tensor) else a for a in args)
                for _ in range(steps):
                    restart = solver.step(g, restart, rows_args)
                out = out.index_copy(0, rows, restart.fz)
                replayed[rows] = steps
        nfe = nfe + replayed
    abs_res, rel_res = _residuals(final)
    res = rel_res if stop == "rel" else abs_res
    status = torch.full_like(nstep, int(Status.MAX_ITER))
    status[res <= tol] = int(Status.CONVERGED)
    status[~torch.isfinite(res)] = int(Status.NONFINITE)
    sol = GradSolution(z=final.z.detach().view(batch, *shape), abs_residual=abs_res, rel_residual=rel_res,
                       nfe=nfe, nstep=nstep, status=status, trace=None, stop=stop, tol=tol)
    return out.view(batch, *shape), sol


def _copy_state(state: Any) -> Any:
    """A state whose tensors are copies (safe from later in-place history updates)."""
    return dataclasses.replace(state, **{f.name: getattr(state, f.name).clone() for f in dataclasses.fields(state)
                                         if isinstance(getattr(state, f.name), Tensor)})


def _residuals(state: Any) -> tuple[Tensor, Tensor]:
    fz, z = state.fz.detach(), state.z.detach()
    abs_res = (fz - z).norm(dim=1)
    return abs_res, relative_residual(abs_res, fz.norm(dim=1))


def _stopped(state: Any, stop: str, tol: float) -> Tensor:
    abs_res, rel_res = _residuals(state)
    res = rel_res if stop == "rel" else abs_res
    return (res <= tol) | ~torch.isfinite(res)

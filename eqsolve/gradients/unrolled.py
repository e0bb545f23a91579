"""Strategies that run ``f`` (or the solver's own steps) again with a graph.

:class:`Phantom` (``k`` damped steps from ``z*``), :class:`OneStep` (one step, Jacobian-free)
and :class:`Unrolled` (backprop through the solver's ``init``/``step`` iterations, all or the
last ``k`` per row, replayed from stored solver states). Import them from
:mod:`eqsolve.gradients`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eqsolve.gradients.base import FixedPointFn, GradientStrategy, GradSolution
from eqsolve.solvers._base import copy_buffers, flat_map, option, take_rows
from eqsolve.solvers._engine import Engine, Tolerance
from eqsolve.solvers._registry import resolve_solver

__all__ = ["OneStep", "Phantom", "Unrolled"]

#: Loop options of :func:`~eqsolve.solvers.solve` that :class:`Unrolled` accepts too.
_LOOP_OPTIONS = ("diverge_factor", "stall_window")


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
    The forward pass is the solver engine of :func:`~eqsolve.solvers.solve` on the whole batch
    (stopped rows are frozen): a row stops with the same statuses as there (CONVERGED at
    ``tol``, DIVERGED, NONFINITE, STAGNATED, else MAX_ITER; ``diverge_factor`` and
    ``stall_window`` are accepted as loop options with ``solve``'s defaults), and ``sol.z`` is
    the row's *best* iterate with its residuals, as in ``solve``. Like the other strategies the
    output is ``f`` at ``sol.z``, here with the graph of the iterations that led there.

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
        loop = {name: solver_options.pop(name) for name in _LOOP_OPTIONS if name in solver_options}
        factor, window = loop.get("diverge_factor"), loop.get("stall_window")
        if factor is not None and not (isinstance(factor, (int, float)) and factor > 1):
            raise ValueError(f"Unrolled: diverge_factor must be a number > 1 or None, got {factor!r}")
        if window is not None and not (isinstance(window, int) and not isinstance(window, bool) and window >= 1):
            raise ValueError(f"Unrolled: stall_window must be an int >= 1 or None, got {window!r}")
        solver_obj = resolve_solver(solver, solver_options)
        return _unrolled_solve(f, z0, args, solver_obj, tol=tol, stop=stop, max_iter=max_iter,
                               last_k=self.k, **loop)

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, None]:
        raise TypeError("Unrolled differentiates the forward iterations; it cannot attach at a given z*")


def _unrolled_solve(f: FixedPointFn, z0: Tensor, args: tuple, solver: Any, *, tol: float, stop: str,
                    max_iter: int, last_k: int | None, diverge_factor: float | None = 1e4,
                    stall_window: int | None = 30) -> tuple[Tensor, GradSolution]:
    """The :class:`Unrolled` loop: the solver engine with the tolerance rule, frozen stopped rows.

    ``last_k=None`` runs the engine with a graph. For ``last_k`` the engine runs without one, and
    each row's last ``min(k, b)`` steps up to its best step ``b`` are replayed with a graph from
    a stored solver state. Rows whose best iterate is the same step form one replay group,
    restarted from the state ``min(k, b)`` steps before ``b``: the ring of the last ``k + 1``
    states keeps copies of their history buffers (:func:`~eqsolve.solvers._base.copy_buffers`:
    solvers update them in place without a graph), and a group shares one state because a
    state's non-tensor fields (e.g. Anderson's ring position) are shared by its rows.
    """
    batch, shape = z0.shape[0], z0.shape[1:]
    g = flat_map(f, shape)
    solver = solver.sized_for(max_iter)  # no longer history than the run (the replays step it too)
    z0_flat = z0.detach().reshape(batch, -1)
    keep_all = last_k is None
    k = last_k or 0  # used only when not keep_all
    # step b -> (rows whose best iterate was step b then, their state min(k, b) steps earlier, min(k, b))
    restarts: dict[int, tuple[Tensor, Any, int]] = {}
    with torch.enable_grad() if keep_all else torch.no_grad():
        eng: Engine[Any] = Engine(solver, g, Tolerance(tol), stop=stop, diverge_factor=diverge_factor,
                                  stall_window=stall_window, freeze=True, track_fz=True)
        eng.admit(z0_flat, args)
        ring: deque[Any] = deque(maxlen=k + 1)  # states t-k..t (buffers copied)
        for t in range(max_iter + 1):
            if t:
                eng.advance()
            eng.observe()
            if not keep_all:
                ring.append(copy_buffers(eng.state))
                assert eng.improved is not None
                if bool(eng.improved.any()):
                    rows = eng.improved.nonzero().flatten()
                    back = min(k, t)
                    restarts[t] = (rows, take_rows(ring[-1 - back], rows), back)
                alive = set(eng.best_step.unique().tolist())
                for step in [s for s in restarts if s not in alive]:
                    del restarts[step]  # no row's best iterate is that step any more
            if bool(eng.done.all()):
                break
    final = eng.state
    assert final is not None
    nfe = final.nfe
    assert eng.best_fz is not None
    out = eng.best_fz  # f at the best iterate (with the graph of every step when keep_all)
    if not keep_all:
        # Replace it by its replay with a graph; it stays detached where there is none (a row
        # whose best iterate is z0 itself, or which never had a finite one).
        replayed = torch.zeros_like(nfe)
        with torch.enable_grad():
            for step, (rows, restart, steps) in restarts.items():
                mine = (eng.best_step[rows] == step).nonzero().flatten()
                if mine.numel() == 0:
                    continue
                rows, restart = rows[mine], take_rows(restart, mine)
                rows_args = tuple(a[rows] if isinstance(a, Tensor) else a for a in args)
                for _ in range(steps):
                    restart = solver.step(g, restart, rows_args)
                out = out.index_copy(0, rows, restart.fz)
                replayed[rows] = steps
        nfe = nfe + replayed
    sol = GradSolution(z=eng.best_z.detach().view(batch, *shape), abs_residual=eng.best_abs.detach(),
                       rel_residual=eng.best_rel.detach(), nfe=nfe, nstep=eng.nstep, status=eng.status,
                       trace=None, stop=stop, tol=tol)
    return out.view(batch, *shape), sol

"""Gradient strategies for fixed points: how a DEQ's output gets its backward pass.

A strategy is orthogonal to the solver that found ``z*``. Each one is a small object with
one entry point, ``strategy(f, z0, *args, solver=..., tol=..., ...) -> (z, sol)``: it finds the
fixed point of ``f(z, *args)`` (or borrows one) and returns ``z`` carrying the chosen graph,
plus a :class:`GradSolution` (the forward :class:`~eqsolve.solvers.Solution` extended with a
``backward`` record filled in during ``backward()``).

- :class:`Implicit`: implicit differentiation. Forward solve without a graph, one extra ``f``
  call at ``z*`` attaches the graph, and the backward solves the adjoint fixed point
  ``g = Jᵀ g + ∂L/∂z*`` with any registered solver (per-row stopping and status). It is an
  ``autograd.Function``, so it is correct when a DEQ is called several times before one
  ``backward()`` and under ``DistributedDataParallel`` (no tensor hooks).
- :class:`Phantom`: ``k`` damped steps ``z ← (1-τ) z + τ f(z)`` from ``z*`` with a graph.
- :class:`OneStep`: the Jacobian-free gradient, one step ``f(z*)`` (biased; cheap).
- :class:`Unrolled`: backprop through the solver's own iterations, all (``k=None``) or the
  last ``k`` (per row, replayed from the stored solver state).

Strategies are picked by name for configs: ``get_gradient("implicit", tol=1e-8)``.

Examples:
    >>> import torch
    >>> from eqsolve.gradients import Implicit
    >>> _ = torch.manual_seed(0)
    >>> W = torch.nn.Linear(4, 4)
    >>> f = lambda z, x: torch.tanh(0.5 * W(z) + x)
    >>> x = torch.randn(3, 4, requires_grad=True)
    >>> z, sol = Implicit(solver="fixed_point", tol=1e-5)(f, torch.zeros(3, 4), x, tol=1e-6, max_iter=200)
    >>> z.sum().backward()
    >>> bool(sol.backward.converged.all()), x.grad.shape
    (True, torch.Size([3, 4]))
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from eqsolve.solvers import Solution, Status, get_solver, solve
from eqsolve.solvers._base import flat_map, select_rows, take_rows

__all__ = [
    "BackwardStats",
    "ConvergenceWarning",
    "GradSolution",
    "GradientStrategy",
    "Implicit",
    "OneStep",
    "Phantom",
    "Unrolled",
    "available_gradients",
    "get_gradient",
]

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
        return self.status == int(Status.CONVERGED)

    def summary(self) -> dict[str, float]:
        """Batch means and worst cases as plain floats (for logs)."""
        if not self.ran:
            return {"ran": 0.0}
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


class GradientStrategy:
    """Base class: solve without a graph, then attach a graph at ``z*`` (``attach``).

    Subclasses implement :meth:`attach`; :class:`Unrolled` overrides :meth:`__call__`
    because its graph *is* the forward iteration.
    """

    name: str = ""

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
            **solver_options: options of a named forward solver.

        Returns:
            ``z`` with a graph to the parameters of ``f`` and to ``args``, and the forward
            solution extended with ``backward`` stats where the strategy has any.
        """
        with torch.no_grad():
            sol = solve(f, z0.detach(), *args, solver=solver, tol=tol, stop=stop,
                        max_iter=max_iter, **solver_options)
        z, stats = self.attach(f, sol.z, args)
        return z, GradSolution.extend(sol, backward=stats)

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, BackwardStats | None]:
        """Return ``z`` (value ≈ ``z_star``) whose graph realises this strategy's gradient."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({opts})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._options() == other._options()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))

    def _options(self) -> dict[str, Any]:
        return {}


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
            get_solver(solver, **solver_options)  # fail now on a misspelled option, not in backward
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

    def __init__(self, k: int = 5, tau: float = 0.5) -> None:
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"Phantom: k must be an int >= 1, got {k!r}")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"Phantom: tau must be in (0, 1], got {tau!r}")
        self.k, self.tau = k, tau

    def _options(self) -> dict[str, Any]:
        return {"k": self.k, "tau": self.tau}

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, None]:
        z = z_star.detach()
        with torch.enable_grad():
            for _ in range(self.k):
                z = f(z, *args) if self.tau == 1.0 else (1 - self.tau) * z + self.tau * f(z, *args)
        return z, None


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

    def __init__(self, k: int | None = None) -> None:
        if k is not None and not (isinstance(k, int) and k >= 1):
            raise ValueError(f"Unrolled: k must be None or an int >= 1, got {k!r}")
        self.k = k

    def _options(self) -> dict[str, Any]:
        return {"k": self.k}

    def __call__(self, f: FixedPointFn, z0: Tensor, *args: Tensor, solver: Any = "anderson",
                 tol: float = 1e-4, stop: str = "rel", max_iter: int = 50,
                 **solver_options: Any) -> tuple[Tensor, GradSolution]:
        if stop not in ("rel", "abs"):
            raise ValueError(f"Unrolled: stop must be 'rel' or 'abs', got {stop!r}")
        if not (isinstance(max_iter, int) and max_iter >= 0):
            raise ValueError(f"Unrolled: max_iter must be an int >= 0, got {max_iter!r}")
        if not isinstance(solver, str) and solver_options:
            raise ValueError(f"Unrolled: solver options {sorted(solver_options)} given with a solver object")
        solver_obj = get_solver(solver, **solver_options) if isinstance(solver, str) else solver
        return _unrolled_solve(f, z0, args, solver_obj, tol=tol, stop=stop, max_iter=max_iter,
                               last_k=self.k)

    def attach(self, f: FixedPointFn, z_star: Tensor, args: tuple) -> tuple[Tensor, None]:
        raise TypeError("Unrolled differentiates the forward iterations; it cannot attach at a given z*")


_REGISTRY: dict[str, type[GradientStrategy]] = {
    "implicit": Implicit, "ift": Implicit,
    "phantom": Phantom,
    "onestep": OneStep, "one_step": OneStep, "jfb": OneStep,
    "unrolled": Unrolled, "bptt": Unrolled,
}


def available_gradients() -> dict[str, type[GradientStrategy]]:
    """Names accepted by :func:`get_gradient` (aliases included) and their classes."""
    return dict(_REGISTRY)


def get_gradient(name: str | GradientStrategy, **options: Any) -> GradientStrategy:
    """Build a gradient strategy by name, e.g. from a config.

    Args:
        name: ``"implicit"`` (``"ift"``), ``"phantom"``, ``"onestep"`` (``"jfb"``),
            ``"unrolled"`` (``"bptt"``), or a strategy object (returned as is; no options).
        **options: constructor arguments of that strategy.

    Returns:
        The strategy object.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones).

    Examples:
        >>> get_gradient("phantom", k=3, tau=0.7)
        Phantom(k=3, tau=0.7)
    """
    if isinstance(name, GradientStrategy):
        if options:
            raise ValueError(f"get_gradient: options {sorted(options)} given with a strategy object")
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown gradient {name!r}; valid: {sorted(_REGISTRY)}")
    cls = _REGISTRY[key]
    try:
        return cls(**options)
    except TypeError as err:  # unexpected keyword: name the valid ones
        import inspect

        valid = [p for p in inspect.signature(cls).parameters if p != "solver_options"]
        raise ValueError(f"gradient {key!r}: {err}; valid options: {valid}") from err


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
    nstep = torch.zeros(batch, dtype=torch.int64, device=z0.device)
    groups: list[tuple[Tensor, Any, int]] = []  # (rows, restart state of those rows, steps to replay)
    with torch.enable_grad() if keep_all else torch.no_grad():
        state = solver.init(g, z0_flat, args)
        done = _stopped(state, stop, tol)
        ring = deque([_copy_state(state)], maxlen=(last_k or 0) + 1)  # states t-k..t
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
                    back = min(last_k, t)
                    groups.append((rows, take_rows(ring[-1 - back], rows), back))
        if not keep_all and not bool(done.all()):  # rows still running when the budget ran out
            rows = (~done).nonzero().flatten()
            back = min(last_k, t)
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
    return abs_res, abs_res / (fz.norm(dim=1) + 1e-8)


def _stopped(state: Any, stop: str, tol: float) -> Tensor:
    abs_res, rel_res = _residuals(state)
    res = rel_res if stop == "rel" else abs_res
    return (res <= tol) | ~torch.isfinite(res)

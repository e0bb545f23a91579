"""The one engine that drives a solver: stepping, residuals, status, best iterate, NFE.

Every driver of a solver's ``init``/``step`` protocol (:func:`~eqsolve.solvers.solve`,
:func:`eqsolve.scaling.solve_many`, the :class:`~eqsolve.gradients.Unrolled` gradient, the
scaling benchmark) runs an :class:`Engine`. The engine owns, per row:

- the steps taken (``nstep``; the first evaluation ``f(z0)`` is step 0) and the NFE
  (``state.nfe``, counted by the solver);
- the residuals of the current iterate (``abs_residual``, ``rel_residual``, and ``residual`` of
  the ``stop`` kind: ``"rel"`` or ``"abs"``);
- the best iterate: the lowest residual of the ``stop`` kind seen within the row's scale
  (``best_z``, its residuals, and with ``track_fz`` also ``best_fz`` and ``best_step``);
- the :class:`~eqsolve.solvers.Status` of a row that stopped, from one priority order, highest
  first: NONFINITE, DIVERGED by a runaway iterate, the stop rule's code, DIVERGED by residual
  growth, STAGNATED (the health tests are on when ``diverge_factor``/``stall_window`` are set).

*When* a row stops is the caller's :class:`StopRule`: an object with ``codes(obs)`` returning,
per row, the :class:`~eqsolve.solvers.Status` the rule ends the row with, or :data:`GO`.
:class:`Tolerance` (residual ``<= tol``: CONVERGED) is :func:`~eqsolve.solvers.solve`'s rule,
:class:`Budget` (NFE budget: MAX_ITER; optional halting test: CONVERGED) is ``solve_many``'s,
:class:`Never` runs to the caller's step bound. A row the rule never stops ends with the
default status MAX_ITER when the caller stops stepping.

A driver repeats ``observe()`` (judge the current iterate of every live row) and ``advance()``
(one solver step), and may ``admit()`` new rows (continuous batching: they are initialised,
appended, and observed alone) or ``drop()`` finished ones. With ``freeze=True`` stopped rows
stay in the batch, frozen (``advance`` keeps their state), for maps that couple rows, for a
host that looks only every few steps, and for differentiating through whole batch steps.

The engine holds the state under the state-ownership rule of :mod:`eqsolve.solvers._base`; it
keeps no earlier state (a caller that does must copy its buffers:
:func:`~eqsolve.solvers._base.copy_buffers`).

Examples:
    >>> import torch
    >>> from eqsolve.solvers import flat_map, get_solver
    >>> f = flat_map(lambda z: 0.5 * z + 1.0, (2,))
    >>> eng = Engine(get_solver("fixed_point"), f, Tolerance(1e-6))
    >>> eng.admit(torch.zeros(3, 2, dtype=torch.float64), ())
    >>> code = eng.observe()
    >>> while not bool(eng.done.all()):
    ...     eng.advance()
    ...     code = eng.observe()
    >>> eng.status.tolist(), eng.nstep.tolist(), eng.state.nfe.tolist()
    ([0, 0, 0], [19, 19, 19], [20, 20, 20])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Generic, NamedTuple, Protocol

import torch
from torch import Tensor

from ._base import (
    FlatMap,
    Solver,
    StateT,
    check_backend,
    compact_rows,
    compiled,
    const,
    select_rows,
    take_rows,
)
from ._solution import Status

__all__ = ["GO", "Budget", "Engine", "Never", "Observation", "StopRule", "Tolerance", "residuals"]

#: The code of a row that goes on.
GO = -1

# A row makes progress when its best residual drops below this fraction of the reference value.
_PROGRESS = 0.99


def residuals(z: Tensor, fz: Tensor, g: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(||f(z) - z||, relative residual, ||f(z)||)`` per row of ``(B, n)`` tensors.

    ``g``, when given, is ``fz - z`` already computed (a solver state may cache it as ``g``).
    """
    diff = torch.linalg.vector_norm(fz - z if g is None else g, dim=1)
    fz_norm = torch.linalg.vector_norm(fz, dim=1)
    return diff, diff / (fz_norm + const(1e-8, fz_norm)), fz_norm


@dataclass
class Observation:
    """What a :class:`StopRule` sees of the batch at an observation (all ``(B,)`` but ``state``)."""

    state: Any
    abs_residual: Tensor
    rel_residual: Tensor
    residual: Tensor  #: of the engine's ``stop`` kind
    nstep: Tensor


class StopRule(Protocol):
    """Decides when rows stop: ``codes(obs)`` is a ``(B,)`` int64 Status per row, or :data:`GO`."""

    def codes(self, obs: Observation) -> Tensor: ...


def _go(obs: Observation) -> Tensor:
    return torch.full_like(obs.nstep, GO)


@dataclass(frozen=True)
class Tolerance:
    """CONVERGED when the residual (of the engine's ``stop`` kind) is ``<= tol``."""

    tol: float

    def codes(self, obs: Observation) -> Tensor:
        return torch.where(obs.residual <= self.tol, int(Status.CONVERGED), _go(obs))  # False for NaN


@dataclass(frozen=True)
class Budget:
    """MAX_ITER once a row spent ``nfe`` evaluations; else CONVERGED where ``halt(obs)`` is True."""

    nfe: int
    halt: Callable[[Observation], Tensor] | None = None

    def codes(self, obs: Observation) -> Tensor:
        code = _go(obs)
        if self.halt is not None:
            code = torch.where(self.halt(obs), int(Status.CONVERGED), code)
        return torch.where(obs.state.nfe >= self.nfe, int(Status.MAX_ITER), code)


@dataclass(frozen=True)
class Never:
    """Never stops a row (the caller bounds the steps)."""

    def codes(self, obs: Observation) -> Tensor:
        return _go(obs)


class _Rows(NamedTuple):
    """What :func:`_track` computes for every row of an observation: what it saw, and the
    engine's updated records (the fields of :class:`Engine` of the same names)."""

    abs_r: Tensor
    rel_r: Tensor
    res: Tensor  #: of the engine's ``stop`` kind
    live: Tensor | None
    improved: Tensor
    bounded: Tensor | None
    best_z: Tensor
    best_fz: Tensor | None
    best_abs: Tensor
    best_rel: Tensor
    best_step: Tensor
    ref_res: Tensor
    ref_step: Tensor
    min_abs: Tensor


def _track(z: Tensor, fz: Tensor, g: Tensor | None, done: Tensor, observed: Tensor | None, best_z: Tensor,
           best_fz: Tensor | None, best_abs: Tensor, best_rel: Tensor, best_step: Tensor, max_fz: Tensor,
           ref_res: Tensor, ref_step: Tensor, min_abs: Tensor, nstep: Tensor, rel: bool, freeze: bool,
           diverge: float | None, window: int | None, track: bool, detach: bool) -> _Rows:
    """The residuals of the current iterates and the updated per-row records (a pure function of
    tensors: :meth:`Engine.observe` runs it eagerly or through ``torch.compile``). With
    ``detach``, the residuals are computed without a graph; the best iterates keep theirs."""
    if detach:  # (without autograd there is no graph to detach from: 3 ops a step saved)
        abs_r, rel_r, fz_norm = residuals(z.detach(), fz.detach(), None if g is None else g.detach())
    else:
        abs_r, rel_r, fz_norm = residuals(z, fz, g)
    res = rel_r if rel else abs_r
    live = ~done if freeze else None
    if observed is not None:
        live = observed if live is None else live & observed
    improved = res < (best_rel if rel else best_abs)  # False for NaN
    bounded = None
    if diverge is not None:
        # An iterate beyond the row's scale is DIVERGED and never the best one, however
        # small its relative residual (f(z) = z + c has none: ||c|| / ||z + c|| -> 0).
        bounded = fz_norm <= max_fz  # False for NaN too: such a row is NONFINITE
        improved &= bounded
    # A frozen row still holds the iterate it stopped at (advance keeps it), whose residual
    # neither beats its best nor lowers its smallest one: only rows left out by `observed`
    # need masking (two ops a step less on the frozen path, where every op is a launch).
    masked = None if observed is None else live
    improved = improved if masked is None else masked & improved
    best_z = torch.where(improved[:, None], z, best_z)
    if best_fz is not None:
        best_fz = torch.where(improved[:, None], fz, best_fz)
    best_abs = torch.where(improved, abs_r, best_abs)
    best_rel = torch.where(improved, rel_r, best_rel)
    if track:
        best_step = torch.where(improved, nstep, best_step)
    best_res = best_rel if rel else best_abs
    # min_abs and the progress reference only feed the divergence and stall tests.
    if window is not None:
        progress = best_res < const(_PROGRESS, best_res) * ref_res
        ref_res = torch.where(progress, best_res, ref_res)
        ref_step = torch.where(progress, nstep, ref_step)
    if diverge is not None:
        lowest = torch.fmin(min_abs, abs_r)
        min_abs = lowest if masked is None else torch.where(masked, lowest, min_abs)
    return _Rows(abs_r, rel_r, res, live, improved, bounded, best_z, best_fz, best_abs, best_rel, best_step, ref_res,
                 ref_step, min_abs)


def _going(rows: _Rows, nstep: Tensor, tol: float, diverge: float | None, window: int | None) -> Tensor:
    """``(B,)`` bool: the rows a :class:`Tolerance` rule and the health tests let go on (the lazy
    observation: fewer ops than the status codes, which are worked out only when a row stops)."""
    res, abs_r, min_abs, ref_step = rows.res, rows.abs_r, rows.min_abs, rows.ref_step
    going = (res > const(tol, res)) & (res < const(math.inf, res))  # False for converged rows, NaN and inf
    if diverge is not None:
        going &= abs_r <= const(diverge, abs_r) * min_abs
    if rows.bounded is not None:
        going &= rows.bounded
    if window is not None:
        going &= ref_step > nstep - const(window, nstep)
    return going


def _codes(res: Tensor, abs_r: Tensor, bounded: Tensor | None, live: Tensor | None, min_abs: Tensor,
           ref_step: Tensor, nstep: Tensor, status: Tensor, done: Tensor, tol: float | None, ruled: Tensor | None,
           diverge: float | None, window: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """The status codes by priority (see the module docstring), and the updated ``status`` and
    ``done``. The stop rule is a :class:`Tolerance` of ``tol``, or else gave the codes ``ruled``."""
    code: Tensor | int = GO  # (a scalar until the first test: one op less)
    if window is not None:
        code = torch.where(ref_step <= nstep - window, int(Status.STAGNATED), GO)
    if diverge is not None:
        code = torch.where(abs_r > diverge * min_abs, int(Status.DIVERGED), code)
    if tol is not None:  # a Tolerance's codes() folded in: one op instead of five
        code = torch.where(res <= tol, int(Status.CONVERGED), code)  # False for NaN
    else:
        assert ruled is not None
        code = torch.where(ruled >= 0, ruled, code)
    assert isinstance(code, Tensor)
    if bounded is not None:
        code = torch.where(bounded, code, int(Status.DIVERGED))
    code = torch.where(torch.isfinite(res), code, int(Status.NONFINITE))
    if live is not None:
        code = torch.where(live, code, GO)
    stops = code >= 0
    return code, torch.where(stops, code, status), done | stops


def _observe_tolerance(z: Tensor, fz: Tensor, g: Tensor | None, done: Tensor, observed: Tensor | None,
                       best_z: Tensor, best_fz: Tensor | None, best_abs: Tensor, best_rel: Tensor, best_step: Tensor,
                       max_fz: Tensor, ref_res: Tensor, ref_step: Tensor, min_abs: Tensor, nstep: Tensor,
                       status: Tensor, tol: float, lazy: bool, rel: bool, freeze: bool, diverge: float | None,
                       window: int | None, track: bool, detach: bool) -> tuple[_Rows, Tensor, Tensor | None, Tensor | None]:
    """An observation under a :class:`Tolerance` rule in one function (the region
    ``Engine(compile=...)`` compiles): the records, and the mask of the rows that go on
    (``lazy``) or the status codes with the updated ``status`` and ``done``."""
    rows = _track(z, fz, g, done, observed, best_z, best_fz, best_abs, best_rel, best_step, max_fz, ref_res,
                  ref_step, min_abs, nstep, rel, freeze, diverge, window, track, detach)
    if lazy:
        return rows, _going(rows, nstep, tol, diverge, window), None, None
    code, status, done = _codes(rows.res, rows.abs_r, rows.bounded, rows.live, rows.min_abs, rows.ref_step, nstep,
                                status, done, tol, None, diverge, window)
    return rows, code, status, done


# Per-row tensors of the engine, aligned with the state's rows (moved by admit/drop).
_ROW_FIELDS = ("best_z", "best_fz", "best_abs", "best_rel", "best_step", "min_abs", "max_fz", "ref_res",
               "ref_step", "nstep", "status", "done")


def _cat_states(a: StateT, b: StateT) -> StateT:
    """Rows of ``b`` appended to ``a`` (non-tensor fields, e.g. ring positions, kept from ``a``)."""
    updates = {f.name: torch.cat((getattr(a, f.name), getattr(b, f.name)))
               for f in fields(a) if isinstance(getattr(a, f.name), Tensor)}
    return replace(a, **updates)


class Engine(Generic[StateT]):
    """Drives ``solver`` on the flat map ``f`` with the stop rule ``rule`` (see the module doc).

    Args:
        solver: a :class:`~eqsolve.solvers.Solver`.
        f: the flat map ``f(z, *args) -> (B, n)``.
        rule: the :class:`StopRule`.
        stop: residual kind of the best iterate and of ``obs.residual``: ``"rel"`` or ``"abs"``.
        diverge_factor: DIVERGED tests of :func:`~eqsolve.solvers.solve` (None: off).
        stall_window: STAGNATED test of :func:`~eqsolve.solvers.solve` (None: off).
        freeze: keep stopped rows in the batch, frozen, until dropped.
        track_fz: also keep ``best_fz`` (``f`` at the best iterate, with its graph if any).
        compile: run an observation's per-row work (residual norms, best iterates, health
            records, stop tests) through ``torch.compile`` with this backend (``"inductor"``),
            with dynamic shapes, when the rule is a :class:`Tolerance` and the iterates carry no
            graph: one region of a few fused kernels instead of about 30 small ops. Meant for
            GPUs, where each op is a kernel launch; on the CPU it does not pay
            (``benchmarks/results/solvers_compile.md``). The same results up to the rounding of
            the fused norms.
    """

    # Per-row records (see the module docstring), set by admit().
    best_z: Tensor
    best_fz: Tensor | None
    best_abs: Tensor
    best_rel: Tensor
    best_step: Tensor
    min_abs: Tensor
    max_fz: Tensor
    ref_res: Tensor
    ref_step: Tensor
    nstep: Tensor
    status: Tensor
    done: Tensor

    def __init__(self, solver: Solver[StateT], f: FlatMap, rule: StopRule, *, stop: str = "rel",
                 diverge_factor: float | None = None, stall_window: int | None = None, freeze: bool = False,
                 track_fz: bool = False, compile: str | None = None) -> None:
        check_backend("compile", compile)
        self.solver, self.f, self.rule, self.stop = solver, f, rule, stop
        self.compile = compile
        self.diverge_factor, self.stall_window = diverge_factor, stall_window
        self.freeze, self.track_fz = freeze, track_fz
        self.state: StateT | None = None
        self.args: tuple = ()
        # Set by observe(): the rows it judged (None: all), and what it saw.
        self.live: Tensor | None = None
        self.improved: Tensor | None = None
        self.abs_residual: Tensor | None = None
        self.rel_residual: Tensor | None = None
        self.residual: Tensor | None = None
        self.best_fz = None
        self._pending: tuple[Observation, Tensor | None] | None = None

    @property
    def size(self) -> int:
        """Rows in the batch."""
        return 0 if self.state is None else int(self.state.z.shape[0])

    def _state(self) -> StateT:
        if self.state is None:
            raise RuntimeError("Engine: no rows; admit() some first")
        return self.state

    def admit(self, z0: Tensor, args: Sequence[Any]) -> None:
        """Initialise rows from ``z0`` (``(b, n)``; one evaluation each) and append them.

        Tensors in ``args`` are batch-first and follow the rows; other arguments are shared
        (those of the first admission are kept).
        """
        fresh = self.solver.init(self.f, z0, args)
        b, dev, inf = z0.shape[0], z0.device, math.inf
        idx = torch.int64
        rows = {
            "best_z": fresh.z, "best_fz": fresh.fz if self.track_fz else None,
            "best_abs": z0.new_full((b,), inf), "best_rel": z0.new_full((b,), inf),
            "best_step": torch.zeros(b, dtype=idx, device=dev), "min_abs": z0.new_full((b,), inf),
            "max_fz": z0.new_full((b,), inf), "ref_res": z0.new_full((b,), inf),
            "ref_step": torch.zeros(b, dtype=idx, device=dev), "nstep": torch.zeros(b, dtype=idx, device=dev),
            "status": torch.full((b,), int(Status.MAX_ITER), dtype=idx, device=dev),
            "done": torch.zeros(b, dtype=torch.bool, device=dev),
        }
        if self.diverge_factor is not None:
            # The scale each row starts from: diverge_factor * (||f(z0)|| + ||f(z0) - z0||).
            abs_r, _, fz_norm = residuals(fresh.z.detach(), fresh.fz.detach())
            rows["max_fz"] = self.diverge_factor * (fz_norm + abs_r)
        if self.state is None:
            self.state, self.args = fresh, tuple(args)
            for name, value in rows.items():
                setattr(self, name, value)
            return
        self.state = _cat_states(self.state, fresh)
        self.args = tuple(torch.cat((a, n)) if isinstance(a, Tensor) else a for a, n in zip(self.args, args))
        for name, value in rows.items():
            if value is not None:
                setattr(self, name, torch.cat((getattr(self, name), value)))

    def advance(self) -> None:
        """One solver step on the batch (frozen rows keep their state and step count)."""
        state = self._state()
        new = self.solver.step(self.f, state, self.args)
        if self.freeze:
            self.state = select_rows(self.done, state, new)
            self.nstep = self.nstep + ~self.done  # (int64 + bool: one op)
        else:
            self.state = new
            self.nstep = self.nstep + const(1, self.nstep)

    def observe(self, observed: Tensor | None = None, lazy: bool = False) -> Tensor:
        """Judge the current iterate of the live rows (``observed`` ones, if given; not stopped ones).

        Updates the best iterates and the health records, and stops rows: their ``status`` is
        set and ``done`` becomes True.

        Args:
            observed: ``(B,)`` bool, the rows to judge (None: all live rows).
            lazy: (without ``freeze`` or ``observed``) return only the ``(B,)`` bool mask of the
                rows that go on, in fewer ops; the caller that finds a False in it must call
                :meth:`settle` before anything else to record why those rows stop.

        Returns:
            ``(B,)`` int64: the Status of each row that stops now, :data:`GO` for the others
            (with ``lazy``: the ``(B,)`` bool mask of the rows that go on).
        """
        state = self._state()
        z, fz, g = state.z, state.fz, getattr(state, "g", None)
        detach = torch.is_grad_enabled()
        if type(self.rule) is not Tolerance:
            rows = _track(z, fz, g, self.done, observed, self.best_z, self.best_fz, self.best_abs, self.best_rel,
                          self.best_step, self.max_fz, self.ref_res, self.ref_step, self.min_abs, self.nstep,
                          self.stop == "rel", self.freeze, self.diverge_factor, self.stall_window, self.track_fz, detach)
            return self._judge(self._record(state, rows), rows.bounded)
        # The track, then the stop mask (lazy) or the status codes, in one function: eager, or
        # compiled into a few fused kernels (not with a graph through the iterates, which would
        # need the compiler's backward).
        lazy = lazy and not self.freeze and observed is None
        observe = _observe_tolerance
        if self.compile is not None and not (detach and (z.requires_grad or fz.requires_grad
                                                         or (g is not None and g.requires_grad))):
            observe, detach = compiled(_observe_tolerance, self.compile), False  # (nothing to detach)
        rows, code, status, done = observe(
            z, fz, g, self.done, observed, self.best_z, self.best_fz, self.best_abs, self.best_rel, self.best_step,
            self.max_fz, self.ref_res, self.ref_step, self.min_abs, self.nstep, self.status, self.rule.tol, lazy,
            self.stop == "rel", self.freeze, self.diverge_factor, self.stall_window, self.track_fz, detach)
        obs = self._record(state, rows)
        if lazy:  # the mask of the rows that go on; their statuses wait for settle()
            self._pending = (obs, rows.bounded)
        else:
            assert status is not None and done is not None
            self.status, self.done = status, done
        return code

    def _record(self, state: StateT, rows: _Rows) -> Observation:
        """Keep what an observation computed; return it for the stop rule."""
        self.best_z, self.best_fz, self.best_abs, self.best_rel = rows.best_z, rows.best_fz, rows.best_abs, rows.best_rel
        self.best_step, self.ref_res, self.ref_step, self.min_abs = rows.best_step, rows.ref_res, rows.ref_step, rows.min_abs
        self.live, self.improved = rows.live, rows.improved
        self.abs_residual, self.rel_residual, self.residual = rows.abs_r, rows.rel_r, rows.res
        return Observation(state=state, abs_residual=rows.abs_r, rel_residual=rows.rel_r, residual=rows.res,
                           nstep=self.nstep)

    def settle(self) -> None:
        """Record the statuses of the rows a ``lazy`` :meth:`observe` found stopping."""
        assert self._pending is not None, "settle() follows a lazy observe()"
        self._judge(*self._pending)
        self._pending = None

    def _judge(self, obs: Observation, bounded: Tensor | None) -> Tensor:
        """The status codes by priority (see the module docstring); stop the rows."""
        tol = self.rule.tol if type(self.rule) is Tolerance else None
        ruled = None if tol is not None else self.rule.codes(obs)
        code, self.status, self.done = _codes(
            obs.residual, obs.abs_residual, bounded, self.live, self.min_abs, self.ref_step, self.nstep, self.status,
            self.done, tol, ruled, self.diverge_factor, self.stall_window)
        return code

    def drop(self, keep: Tensor, move: bool = True) -> Tensor:
        """Keep only the rows ``keep`` (sorted int64 indices) of the batch.

        ``move=True`` compacts with :func:`~eqsolve.solvers._base.compact_rows` (no copy of the
        history buffers; rows from the tail fill the holes), ``move=False`` keeps the order.

        Returns:
            The ``(len(keep),)`` old row now at each position (apply it to the caller's records).
        """
        state = self._state()
        if move:
            self.state, order = compact_rows(state, keep)
        else:
            self.state, order = take_rows(state, keep), keep
        self.args = tuple(a[order] if isinstance(a, Tensor) else a for a in self.args)
        for name in _ROW_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[order])
        for name in ("live", "improved", "abs_residual", "rel_residual", "residual"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[order])
        return order

"""Anderson acceleration (type II, difference form) with a scaled ridge and safeguards.

With ``g(z) = f(z) - z`` and the last ``m`` differences ``dG = [g_{i+1} - g_i]``,
``dZ = [z_{i+1} - z_i]``, one step solves the small least-squares problem
``gamma = argmin ||g_k - dG gamma||`` and moves to

    z_{k+1} = z_k + beta g_k - (dZ + beta dG) gamma,

i.e. ``z_{k+1} = z_k - H_k g_k`` with the multisecant inverse-Jacobian approximation
``H_k = -beta I + (dZ + beta dG)(dG^T dG)^{-1} dG^T`` that maps every stored ``dg_i`` to
``dz_i`` (Anderson's secant conditions). On linear maps with a long enough history this is
equivalent to GMRES on ``(I - A) z = b``.

**No factorisation per step.** The state keeps the inverse of the regularised Gram matrix,
``P = (dG^T dG + ridge diag(||dg_i||^2))^{-1}`` over the stored pairs (rows and columns of empty
slots are zero), so that ``gamma = P dG^T g`` is one small matrix product. Each step updates ``P``
in two rank-one corrections (:func:`_push`): the pair leaving the ring is removed (``P - p_j
p_j^T / P_jj``), and the new one is added by bordering (its Schur complement ``s = d - a^T P a``
against the stored pairs, with ``a = dG^T dg`` and ``d = (1 + ridge) ||dg||^2``). That is O(m^2)
per row and a handful of batched ops, where a Cholesky factorisation of every row's m x m
system and two triangular solves cost O(m^3), one LAPACK call per row and about twice the ops.

Robustness, per row: the ridge is relative to each column's squared norm (so it means the same
on problems of any scale; it bounds the condition number of the scaled system by about
``m / ridge``); a new pair whose difference is numerically dependent on the stored ones (``s``
below ``d / max_cond``), or non-finite, or zero, is not stored (its slot stays empty until the
ring comes round), so ``P`` stays finite and the step needs no restarts; a row without usable
history takes the plain step ``z + beta g``. The updates are done in float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import (
    MIN_SCHUR,
    FlatMap,
    Solver,
    SolverState,
    batched_combine,
    batched_dot,
    builds_graph,
    check_backend,
    check_int,
    check_real,
    compiled,
    const,
    option,
    slot_masks,
    widen,
    write_diff,
    write_slot,
)

__all__ = ["Anderson", "AndersonState"]


def _push(hinv: Tensor, col: Tensor, norm2: Tensor, e: Tensor, keep: Tensor, slot: int, wrapped: bool,
          min_pivot: float, inplace: bool) -> Tensor:
    """The inverse regularised Gram matrix after the pair in ``slot`` is replaced by a new one.

    Args:
        hinv: ``(B, m, m)`` float64 ``P``, the inverse over the stored pairs (zero rows and
            columns on empty slots).
        col: ``(B, m)`` float64 ``a = dG^T dg``: the new difference against every slot (the
            entry of ``slot`` itself is not used).
        norm2: ``(B,)`` float64 ``d = (1 + ridge) ||dg||^2``, the new pair's regularised diagonal.
        e, keep: :func:`slot_masks` of ``slot`` for the first ``n`` slots, those in use after
            this step (the others are zero and stay so; ``n = m`` out of place).
        slot: the ring position of the new pair.
        wrapped: whether ``slot`` holds an older pair, to be removed first.
        min_pivot: store the new pair only where ``s > min_pivot * d`` (``1 / max_cond``) and
            ``s > MIN_SCHUR``.
        inplace: update ``hinv`` in place (no graph is recorded); otherwise return a new tensor.

    Returns:
        The updated ``(B, m, m)`` inverse; ``slot``'s row and column are zero where the new pair
        was not stored.
    """
    n = e.shape[0]
    h, a = (hinv, col) if n == hinv.shape[1] else (hinv[:, :n, :n], col[:, :n])
    # An empty slot may hold a non-finite difference (never stored): its entry of a counts as 0
    # (P's column there is zero, but 0 * inf would spoil u). Elsewhere a is finite unless the new
    # difference is, which is not stored either.
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if wrapped:
        # Remove the old pair: P - p_j p_j^T / P_jj is the inverse over the others, and its row
        # and column j are zero up to rounding (zeroed exactly). An empty slot's column is zero.
        pj = h[:, :, slot]
        pjj = pj[:, slot:slot + 1]
        one = const(1.0, pjj)
        outer = pj.unsqueeze(2) * (pj / torch.where(pjj > 0, pjj, one)).unsqueeze(1)
        h = h.sub_(outer).mul_(keep) if inplace else (h - outer) * keep
    # Border with the new pair: with u = P a (zero in the slot, whose row of P is zero) and the
    # Schur complement s = d - a^T u, the new inverse is P + v v^T / s with v = u - e_slot.
    u = torch.bmm(h, a.unsqueeze(2)).squeeze(2)
    s = norm2 - torch.linalg.vecdot(a, u)
    # False for NaN and inf, for a zero difference (0 > 0), and below MIN_SCHUR (P ~ 1 / s)
    stored = s > (const(min_pivot, norm2) * norm2).clamp_min(MIN_SCHUR)
    w = torch.where(stored, s, const(math.inf, s)).reciprocal()  # 1 / s, or 0: the slot stays empty
    v = torch.where(stored.unsqueeze(1), u, const(0.0, u)) - e  # (u overflows only with a pair not stored: 0 * inf)
    vw = (v * w.unsqueeze(1)).unsqueeze(1)
    if inplace:
        h.baddbmm_(v.unsqueeze(2), vw)
        return hinv
    return torch.baddbmm(h, v.unsqueeze(2), vw)


@dataclass
class AndersonState(SolverState):
    """State of :class:`Anderson`; all tensors batch-first.

    Attributes:
        dG: ``(B, m, n)`` ring buffer of residual differences ``g_{i+1} - g_i`` (a buffer).
        dX: ``(B, m, n)`` ring buffer of ``dz_i + beta * dg_i``, the update directions (a buffer).
        hinv: ``(B, m, m)`` float64 ``P = (dG^T dG + ridge diag(||dg_i||^2))^{-1}`` over the stored
            pairs, in slot order; rows and columns of empty slots are zero (a buffer: updated by
            two rank-one corrections per step).
        g: ``(B, n)`` the residual ``fz - z`` of the current iterate (cached for the step and
            the solve loop).
        dGg: ``(B, m)`` ``dG g`` for the current residual ``g = fz - z`` (cached: it is both the
            next right-hand side and, differenced, the next Gram column).
        slot: ring position the next difference is written to (shared by all rows).
        filled: slots written so far (``min(steps, m)``, shared by all rows): the history
            passes and the small products use only these, so a solve shorter than ``m`` steps
            (an inner solve of a few evaluations) never pays for the unused slots.
    """

    BUFFERS: ClassVar[tuple[str, ...]] = ("dG", "dX", "hinv")

    dG: Tensor
    dX: Tensor
    hinv: Tensor
    g: Tensor
    dGg: Tensor
    slot: int = 0
    filled: int = 0

    @property
    def valid(self) -> Tensor:
        """``(B, m)`` bool: the slots that hold a stored pair (the diagonal of ``P`` is positive there)."""
        return torch.diagonal(self.hinv, dim1=1, dim2=2) > 0


@dataclass(frozen=True)
class Anderson(Solver[AndersonState]):
    """Anderson acceleration with a relative ridge, column dropping and history restarts.

    Args:
        m: history size (number of stored differences). Memory is ``2 m`` iterates per row.
            Default 25: on ``benchmarks/solvers.py``'s problems the wall time changes little
            with ``m`` from 15 to 25 (geometric means within about 2%), while non-normal maps
            need fewer evaluations with a longer history
            (``benchmarks/results/anderson_history_wall.md``).
            Long histories suit contractive maps; on maps whose useful behaviour is a transient
            (eqsolve's shipped Sudoku reasoner) a short one is safer, because extrapolating over
            a long history lands on nearby unstable equilibria; the measurements are in
            ``benchmarks/results/bench_scaling.md``.
        beta: mixing in ``(0, 1]``; 1 mixes the images ``f(z_i)`` only (undamped).
        ridge: Tikhonov term relative to each column's squared norm (the Gram diagonal), ``>= 0``.
        max_cond: do not store a new difference whose Schur complement against the stored ones
            is below ``1 / max_cond`` of its (regularised) squared norm: it is numerically
            dependent on them. None picks ``1e-2 / eps`` of the dtype.
        delay: number of plain ``z + beta g`` steps a row takes before extrapolating (its history
            fills meanwhile): a warm start for maps whose early iterates are far from the
            fixed point sought. It is no cure for maps with many unstable fixed points, where
            the extrapolation still reaches nearby unstable equilibria after the plain steps
            (measured on the shipped Sudoku reasoner: ``benchmarks/results/bench_scaling.md``).
        compile: run the small m x m update of a step (:func:`_push`) through ``torch.compile``
            with this backend (``"inductor"``), with dynamic shapes. Off by default: on the CPU
            it did not pay for itself (measurements in ``benchmarks/results/solvers_compile.md``);
            the first call compiles, which takes seconds.

    Examples:
        >>> import torch
        >>> from eqsolve.solvers import solve
        >>> A = torch.diag(torch.linspace(-1.5, 0.9, 20, dtype=torch.float64))  # plain iteration diverges
        >>> sol = solve(lambda z: z @ A + 1.0, torch.zeros(4, 20, dtype=torch.float64),
        ...             solver=Anderson(m=20), tol=1e-8, max_iter=60)
        >>> bool(sol.converged.all())
        True
    """

    m: int = option(25, "history size: number of stored (dz, dg) differences per row")
    beta: float = option(1.0, "mixing in (0, 1]: z+ = z + beta g - (dZ + beta dG) gamma")
    ridge: float = option(1e-6, "Tikhonov ridge relative to the Gram diagonal (scale-free)")
    max_cond: float | None = option(None, "do not store differences dependent beyond this condition (None: 1e-2/eps)")
    delay: int = option(0, "plain (beta-damped) steps before extrapolating; history is recorded meanwhile")
    compile: str | None = option(None, "torch.compile backend for the small m x m update (e.g. 'inductor'); None: eager")

    def __post_init__(self) -> None:
        check_int("m", self.m, 1)
        check_real("beta", self.beta, 0.0, 1.0, low_open=True)
        check_real("ridge", self.ridge, 0.0)
        if self.max_cond is not None:
            check_real("max_cond", self.max_cond, 1.0, low_open=True)
        check_int("delay", self.delay, 0)
        check_backend("compile", self.compile)

    def sized_for(self, steps: int) -> Anderson:
        """A history of ``min(m, steps)`` differences: the ring never wraps within ``steps``."""
        return self if steps >= self.m else dataclasses.replace(self, m=max(1, int(steps)))

    def init(self, f: FlatMap, z0: Tensor, args: Sequence[Any]) -> AndersonState:
        """Evaluate ``f(z0)`` and allocate an empty history."""
        b, n = z0.shape
        fz = f(z0, *args)
        return AndersonState(
            z=z0, fz=fz, nfe=torch.ones(b, dtype=torch.int64, device=z0.device),
            dG=z0.new_zeros(b, self.m, n), dX=z0.new_zeros(b, self.m, n),
            hinv=z0.new_zeros(b, self.m, self.m, dtype=torch.float64), g=fz - z0,
            dGg=z0.new_zeros(b, self.m), slot=0, filled=0,
        )

    def coefficients(self, state: AndersonState, rhs: Tensor | None = None) -> Tensor:
        """The regularised least-squares coefficients ``gamma = argmin ||v - dG gamma||`` (+ ridge).

        One small product with the kept inverse: ``gamma = P rhs``. Only the ``k = state.filled``
        slots written so far take part.

        Args:
            state: the Anderson state.
            rhs: ``(B, k)`` ``dG v`` for the vector ``v`` to fit (default: the cached ``dG g`` of
                the state).

        Returns:
            ``(B, k)`` coefficients in the dtype of ``rhs`` (0 on empty slots).
        """
        k = state.filled
        full = k == state.hinv.shape[1]  # (no slicing: a few ops less per step once the ring is full)
        rhs = (state.dGg if full else state.dGg[:, :k]) if rhs is None else rhs
        if k == 0:
            return rhs.new_zeros(rhs.shape[0], 0)
        hinv = state.hinv if full else state.hinv[:, :k, :k]
        return torch.bmm(hinv, rhs.double().unsqueeze(2)).squeeze(2).to(rhs.dtype)

    def step(self, f: FlatMap, state: AndersonState, args: Sequence[Any]) -> AndersonState:
        """One Anderson step (one evaluation of ``f``), then push the new difference."""
        g, k = state.g, state.filled
        # z+ = z + beta g - dX gamma, where z + g = f(z) (one pass over the filled part of dX, fused)
        z = state.fz if self.beta == 1.0 else torch.add(state.z, g, alpha=self.beta)
        if k:
            gamma = self.coefficients(state)
            if self.delay:
                # rows still in their first `delay` steps move like plain iteration (per row, by the
                # row's own count, so rows refilled mid-solve wait too; no host sync)
                gamma = torch.where((state.nfe <= self.delay)[:, None], 0.0, gamma)
            dX = state.dX if k == self.m else state.dX[:, :k]
            z = torch.baddbmm(z.unsqueeze(1), gamma.unsqueeze(1), dX, alpha=-1.0).squeeze(1)
        fz = f(z, *args)
        g_new = fz - z
        # Push the new pair into the ring buffers (computed straight into the slot where the
        # buffers are written in place), then into the inverse Gram matrix.
        slot, inplace = state.slot, not builds_graph(state, fz)
        dG, dg = write_diff(state.dG, slot, g_new, g, inplace)
        if self.beta == 1.0:
            dX, _ = write_diff(state.dX, slot, fz, state.fz, inplace)  # dz + dg = f(z+) - f(z)
        else:
            dX = write_slot(state.dX, slot, torch.add(z - state.z, dg, alpha=self.beta), inplace)
        filled = min(k + 1, self.m)
        # the one pass over the (filled) history for the next step; zeros beyond it
        dGg = widen(batched_dot(dG if filled == self.m else dG[:, :filled], g_new), self.m)
        # The new Gram column dG^T dg = dG^T g_new - dG^T g (its own slot's entry is not used)
        # and the new pair's regularised squared norm.
        col = (dGg - state.dGg).double()
        norm2 = torch.linalg.vecdot(dg, dg).double()
        norm2 = norm2 * const(1.0 + self.ridge, norm2)
        # (whole tensors in a graph: no in-place writes into slices)
        e, keep = slot_masks(filled if inplace else self.m, slot, torch.float64, g.device)
        push = _push if self.compile is None else compiled(_push, self.compile)
        hinv = push(state.hinv, col, norm2, e, keep, slot, k == self.m, self._min_pivot(g.dtype), inplace)
        return AndersonState(
            z=z, fz=fz, nfe=state.nfe + const(1, state.nfe), dG=dG, dX=dX, hinv=hinv, g=g_new, dGg=dGg,
            slot=(slot + 1) % self.m, filled=filled,
        )

    def _min_pivot(self, dtype: torch.dtype) -> float:
        """``1 / max_cond`` (default ``eps / 1e-2`` of the iterates' dtype)."""
        return 1.0 / self.max_cond if self.max_cond is not None else 1e2 * torch.finfo(dtype).eps

    def inverse_jacobian_vp(self, state: AndersonState, v: Tensor) -> Tensor:
        """Apply the multisecant inverse-Jacobian approximation ``H`` of ``g`` to ``v`` (B, n).

        ``H v = -beta v + (dZ + beta dG) P dG^T v`` over the stored pairs; with ``ridge=0``,
        ``H dg_i = dz_i`` for every stored pair (the secant conditions).
        """
        k = state.filled
        gamma = self.coefficients(state, batched_dot(state.dG[:, :k], v))
        return -self.beta * v + batched_combine(gamma, state.dX[:, :k])

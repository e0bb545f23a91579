"""Limited-memory "good" Broyden method on ``g(z) = f(z) - z``, with per-row safeguards.

The good Broyden update of the inverse Jacobian ``H`` of ``g``,

    H+ = H + (s - H y) (s^T H) / (s^T H y),     s = dz, y = dg,

applied to ``H_0 = -I`` over the pairs ``(s_i, y_i)`` in time order has the compact form
(Byrd, Nocedal & Schnabel 1994, via Woodbury on the direct update)

    H = -I + W M^{-1} S^T,   W = S + Y,   M = S^T Y + strictly_lower(S^T S),

where ``strictly_lower`` keeps the entries ``s_i^T s_j`` with ``s_i`` newer than ``s_j``. The
newest pair ``k`` borders ``M`` with the row ``M_kj = s_k^T w_j``, the column ``M_ik = s_i^T
y_k`` and the corner ``s_k^T y_k``; the other entries keep their values, so dropping the oldest
pair yields exactly the Broyden matrix of the remaining pairs (a consistent limited-memory
method, like L-BFGS), and memory never grows with ``max_iter``.

**No factorisation per step.** The state keeps ``Q = M^{-1}`` over the stored pairs (float64,
zero rows and columns on empty slots), so ``H v = -v + W Q S^T v`` is one small product
between two history passes. A step updates ``Q`` like Anderson's kept inverse, with the
nonsymmetric rank-one formulas: the pair leaving the ring is removed (``Q - q_j r_j^T /
Q_jj``, with ``q_j``, ``r_j`` its column and row), and the new one is added by bordering:
with ``u = Q c``, ``v = Q^T r`` and the Schur complement ``sigma = s^T y - r^T Q c``,
``Q + (u - e)(v - e)^T / sigma``. That Schur complement is minus the Broyden denominator
``s^T H y`` of the remaining pairs, the quantity the update divides by anyway.

Safeguards, per row: the new pair always takes the oldest slot; it is stored only if its
Broyden denominator is finite and not tiny (``|s^T H y| > 1e-10 ||s||^2``: ``s^T H y / s^T s``
is the ratio of the determinants of the new and old Jacobian approximations), else the slot
stays empty; a removal whose update is not finite (the other pairs' ``M`` numerically singular)
clears the row's memory; a quasi-Newton step that grows the residual by more than
``reset_factor`` is rejected: the row keeps its previous iterate (the evaluation is spent, the
row is not thrown off), but the trial's pair is stored like any other (it is genuine secant
information, and the next step from the same iterate then differs); a second rejection in a
row clears the memory instead, so the next step is a plain fixed-point step, which is never
rejected (it would only repeat). Non-finite
values are not rejected: they end the row as NONFINITE. The optional backtracking line search
halves the step for the rows whose residual did not decrease enough; it evaluates ``f`` only
on those rows (rows must be independent) and costs one host sync per backtracking round.
"""

from __future__ import annotations

import dataclasses
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
)

__all__ = ["Broyden", "BroydenState"]

#: Store a pair only where ``|s^T H y| > _MIN_DENOM ||s||^2``: the update divides by ``s^T H y``,
#: and ``s^T H y / s^T s`` is the ratio of the determinants of the new and old Jacobian
#: approximations (Powell's measure), so a tiny one would make the new one nearly singular.
_MIN_DENOM = 1e-10


def _remove(qinv: Tensor, slot: int, keep: Tensor, occupied: Tensor, inplace: bool) -> tuple[Tensor, Tensor]:
    """``Q`` over the stored pairs but the one in ``slot`` (rank-one removal; its row and column zeroed).

    Args:
        qinv: ``(B, n, n)`` float64 ``Q = M^{-1}`` (zero rows and columns on empty slots).
        slot: the slot whose pair leaves.
        keep: the ``(n, n)`` mask of :func:`~eqsolve.solvers._base.slot_masks` (out of place).
        occupied: ``(B,)`` bool, rows whose ``slot`` holds a stored pair (``Q_jj != 0``: an empty
            slot's row and column are zero).
        inplace: update ``qinv`` in place; otherwise return a new tensor.

    Returns:
        ``(Q', singular)``: the inverse over the other pairs, and a ``(B,)`` mask of the rows whose
        update is not finite, the other pairs' ``M`` being numerically singular (``Q'`` is not
        updated there: the caller clears those rows).
    """
    col = qinv[:, :, slot].clone()  # (a copy: qinv is updated in place below)
    t = qinv[:, slot, :] / col[:, slot:slot + 1]  # Q_j. / Q_jj (inf or NaN where Q_jj = 0)
    fine = torch.isfinite(t.sum(dim=1))
    singular = occupied & ~fine
    t = torch.where((occupied & fine).unsqueeze(1), t, const(0.0, t))
    if inplace:
        qinv.baddbmm_(col.unsqueeze(2), t.unsqueeze(1), alpha=-1.0)
        qinv[:, slot].zero_()
        qinv[:, :, slot].zero_()
        return qinv, singular
    out = torch.baddbmm(qinv, col.unsqueeze(2), t.unsqueeze(1), alpha=-1.0)
    return out * keep, singular


def _border(qinv: Tensor, u: Tensor, v: Tensor, sigma: Tensor, stored: Tensor, e: Tensor,
            inplace: bool) -> Tensor:
    """``Q`` after the new pair is added in ``slot`` (empty) where ``stored``: ``Q + (u - e)(v - e)^T / sigma``."""
    mask, zero = stored.unsqueeze(1), const(0.0, u)
    # (zero factors where not stored: u or v may overflow there, and inf * 0 would spoil Q)
    left = torch.where(mask, u, zero) - e
    right = torch.where(mask, (v - e) / sigma.unsqueeze(1), zero)
    if inplace:
        return qinv.baddbmm_(left.unsqueeze(2), right.unsqueeze(1))
    return torch.baddbmm(qinv, left.unsqueeze(2), right.unsqueeze(1))


def _push(qinv: Tensor, col: Tensor, row: Tensor, corner: Tensor, scale: Tensor, clear: Tensor, fragile: Tensor,
          e: Tensor, keep: Tensor, slot: int, wrapped: bool, inplace: bool) -> tuple[Tensor, Tensor]:
    """``Q = M^{-1}`` after the pair in ``slot`` is replaced by a new one (the newest).

    Args:
        qinv: ``(B, n, n)`` float64 ``Q`` over the stored pairs of the first ``n`` slots.
        col: ``(B, n)`` float64 ``c = S^T y``, the new column of ``M`` (the entry of ``slot`` is
            not used).
        row: ``(B, n)`` float64 ``r = W^T s``, the new row of ``M`` (the entry of ``slot`` is not used).
        corner: ``(B,)`` float64 ``s^T y``.
        scale: ``(B,)`` float64 ``s^T s``: the pair is stored only where ``|sigma| > _MIN_DENOM
            * scale`` and ``> MIN_SCHUR`` (``sigma`` the Schur complement), and finite.
        clear: ``(B,)`` bool, rows whose memory is cleared (nothing is stored there).
        fragile: ``(B,)`` bool, rows whose memory is cleared unless the pair is stored.
        e, keep: :func:`~eqsolve.solvers._base.slot_masks` of ``slot`` for the ``n`` slots (made by
            the caller, outside a compiled region).
        slot: the ring position of the new pair.
        wrapped: whether ``slot`` may hold an older pair, to be removed first.
        inplace: update ``qinv`` in place (no graph is recorded); otherwise return a new tensor.

    Returns:
        ``(Q, stored)``: the updated ``(B, n, n)`` inverse (zero rows and columns on empty slots,
        all zero on cleared rows), and the ``(B,)`` mask of the rows that stored the pair.
    """
    # An empty slot may hold a non-finite pair (never stored): its entries count as 0 (Q's row
    # and column there are zero, but 0 * inf would spoil u and v).
    col = torch.nan_to_num(col, nan=0.0, posinf=0.0, neginf=0.0)
    row = torch.nan_to_num(row, nan=0.0, posinf=0.0, neginf=0.0)
    if wrapped:
        qinv, singular = _remove(qinv, slot, keep, qinv[:, slot, slot] != 0, inplace)
        clear = clear | singular
    u = torch.bmm(col.unsqueeze(1), qinv.mT).squeeze(1)  # Q c (in the row-vector form BLAS runs faster)
    v = torch.bmm(row.unsqueeze(1), qinv).squeeze(1)  # Q^T r
    sigma = corner - torch.linalg.vecdot(row, u)  # = -(s^T H y) over the remaining pairs
    stored = (sigma.abs() > (const(_MIN_DENOM, sigma) * scale).clamp_min(MIN_SCHUR)) & torch.isfinite(sigma)
    stored &= torch.isfinite(v.sum(dim=1)) & ~clear
    qinv = _border(qinv, u, v, sigma, stored, e, inplace)
    # Cleared rows forget their memory (Q is finite there: a failed removal was skipped).
    kept = ~(clear | (fragile & ~stored))[:, None, None]
    return (qinv.mul_(kept) if inplace else qinv * kept), stored


@dataclass
class BroydenState(SolverState):
    """State of :class:`Broyden`; all tensors batch-first.

    Attributes:
        S: ``(B, memory, n)`` steps ``s_i = z_{i+1} - z_i`` (ring buffer; a buffer).
        W: ``(B, memory, n)`` ``s_i + y_i = f(z_{i+1}) - f(z_i)`` with ``y_i = g_{i+1} - g_i`` (a buffer).
        qinv: ``(B, memory, memory)`` float64 ``Q = M^{-1}``, the inverse of the compact form's
            ``M`` over the stored pairs, in slot order; rows and columns of empty slots are zero
            (a buffer: updated by two rank-one corrections per step).
        g: ``(B, n)`` the residual ``fz - z`` of the current iterate (cached).
        stg: ``(B, memory)`` ``S^T g`` for the current residual (cached: the next step's
            right-hand side, and, differenced, the new column of ``M``; zeros beyond the slots
            written so far).
        rejected: ``(B,)`` bool, rows whose last trial step was rejected.
        count: number of steps taken (the next pair goes into slot ``count % memory``).
    """

    BUFFERS: ClassVar[tuple[str, ...]] = ("S", "W", "qinv")

    S: Tensor
    W: Tensor
    qinv: Tensor
    g: Tensor
    stg: Tensor
    rejected: Tensor
    count: int = 0

    @property
    def valid(self) -> Tensor:
        """``(B, memory)`` bool: the slots that hold a stored pair (``Q``'s diagonal is non-zero there)."""
        return torch.diagonal(self.qinv, dim1=1, dim2=2) != 0


@dataclass(frozen=True)
class Broyden(Solver[BroydenState]):
    """Limited-memory good Broyden (compact form, kept inverse) with per-row safeguards.

    Which quasi-Newton solver: Anderson (the default) needs as few or fewer evaluations on most of
    ``benchmarks/solvers.py``'s problems at a cheaper step. Broyden's step rejection makes it the
    safer one on maps with many unstable equilibria near the path: on eqsolve's shipped ``eqr``
    Sudoku reasoner it keeps 63% exact at 64 evaluations where Anderson lands on unstable
    equilibria (18%; plain iteration 70%: ``benchmarks/results/bench_scaling.md``).

    Args:
        memory: number of (step, residual change) pairs kept per row.
        line_search: backtrack the step per row until the residual decreases enough.
        max_backtracks: halvings of the step tried by the line search before accepting.
        reset_factor: reject a quasi-Newton step that grows a row's residual by more than this
            factor: the row stays at its previous iterate and stores the trial's pair; a second
            rejection in a row clears its memory (the next step is a plain one).
        compile: run the small m x m update of a step (:func:`_push`) through ``torch.compile``
            with this backend (``"inductor"``), with dynamic shapes. Off by default: on the CPU
            it did not pay for itself (``benchmarks/results/solvers_compile.md``); the first call
            compiles, which takes seconds.

    Examples:
        >>> import torch
        >>> from eqsolve.solvers import solve
        >>> A = torch.diag(torch.linspace(-1.5, 0.9, 20, dtype=torch.float64))
        >>> sol = solve(lambda z: z @ A + 1.0, torch.zeros(4, 20, dtype=torch.float64),
        ...             solver=Broyden(memory=40), tol=1e-8, max_iter=60)
        >>> bool(sol.converged.all())
        True
    """

    memory: int = option(60, "pairs (step, residual change) kept per row; the memory cap")
    line_search: bool = option(False, "per-row backtracking line search on the residual norm")
    max_backtracks: int = option(3, "halvings of the step tried by the line search")
    reset_factor: float = option(10.0, "reject a step that grows a row's residual by this factor (twice in a row: clear the memory)")
    compile: str | None = option(None, "torch.compile backend for the small m x m update (e.g. 'inductor'); None: eager")

    def __post_init__(self) -> None:
        check_int("memory", self.memory, 1)
        if not isinstance(self.line_search, bool):
            raise ValueError(f"option line_search={self.line_search!r} is invalid: must be a bool")
        check_int("max_backtracks", self.max_backtracks, 0)
        check_real("reset_factor", self.reset_factor, 1.0, low_open=True)
        check_backend("compile", self.compile)

    def sized_for(self, steps: int) -> Broyden:
        """A memory of ``min(memory, steps)`` pairs: the ring never wraps within ``steps``."""
        return self if steps >= self.memory else dataclasses.replace(self, memory=max(1, int(steps)))

    def init(self, f: FlatMap, z0: Tensor, args: Sequence[Any]) -> BroydenState:
        """Evaluate ``f(z0)``; start from ``H = -I`` (empty memory)."""
        b, n, m = z0.shape[0], z0.shape[1], self.memory
        fz = f(z0, *args)
        return BroydenState(
            z=z0, fz=fz, nfe=torch.ones(b, dtype=torch.int64, device=z0.device),
            S=z0.new_zeros(b, m, n), W=z0.new_zeros(b, m, n), qinv=z0.new_zeros(b, m, m, dtype=torch.float64),
            g=fz - z0, stg=z0.new_zeros(b, m), rejected=torch.zeros(b, dtype=torch.bool, device=z0.device),
        )

    def _filled(self, state: BroydenState) -> int:
        return min(state.count, self.memory)

    def apply_h(self, state: BroydenState, v: Tensor) -> Tensor:
        """``H v = -v + W Q S^T v`` for a ``(B, n)`` batch of vectors (the current approximation)."""
        k = self._filled(state)
        if k == 0:
            return -v
        coef = torch.bmm(state.qinv[:, :k, :k], batched_dot(state.S[:, :k], v).double().unsqueeze(2))
        return -v + batched_combine(coef.squeeze(2).to(v.dtype), state.W[:, :k])

    def _line_search(self, f: FlatMap, z: Tensor, p: Tensor, g_norm: Tensor, z_new: Tensor,
                     fz_new: Tensor, nfe: Tensor, args: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
        alpha = torch.ones_like(g_norm)
        for _ in range(self.max_backtracks):
            new_norm = torch.linalg.vector_norm(fz_new - z_new, dim=1)
            bad = ~(new_norm <= (1.0 - 1e-4 * alpha) * g_norm)  # sufficient decrease, finite
            rows = bad.nonzero().flatten()  # host sync: only failing rows are evaluated again
            if rows.numel() == 0:
                break
            alpha = torch.where(bad, 0.5 * alpha, alpha)
            z_try = z[rows] + alpha[rows, None] * p[rows]
            fz_try = f(z_try, *(a[rows] if isinstance(a, Tensor) else a for a in args))
            z_new, fz_new = z_new.index_copy(0, rows, z_try), fz_new.index_copy(0, rows, fz_try)
            nfe = nfe.index_add(0, rows, torch.ones_like(rows))
        return z_new, fz_new, nfe

    def step(self, f: FlatMap, state: BroydenState, args: Sequence[Any]) -> BroydenState:
        """One Broyden step (one evaluation of ``f``; more with the line search), then update ``Q``."""
        m, k = self.memory, self._filled(state)
        full = k == m  # (no slicing once the ring is full: a few ops less per step)
        g = state.g
        # p = -H g = g - W Q S^T g, with S^T g cached (one pass over the filled part of W, fused)
        if k:
            qinv = state.qinv if full else state.qinv[:, :k, :k]
            stg = state.stg if full else state.stg[:, :k]
            coef = torch.bmm(stg.double().unsqueeze(1), qinv.mT).to(g.dtype)
            W = state.W if full else state.W[:, :k]
            p = torch.baddbmm(g.unsqueeze(1), coef, W, alpha=-1.0).squeeze(1)
        else:
            p = g
        z = state.z + p
        fz = f(z, *args)
        nfe = state.nfe + const(1, state.nfe)
        g_norm = torch.linalg.vector_norm(g, dim=1)
        if self.line_search:
            z, fz, nfe = self._line_search(f, state.z, p, g_norm, z, fz, nfe, args)
        g_new = fz - z
        # Reject a quasi-Newton step that grew a row's residual by more than reset_factor: the row
        # stays at its previous iterate, but the trial's pair (s, y) is genuine secant
        # information: it is stored like any other, so the next step from the same iterate uses
        # a better H. (A plain step, from an empty memory, is never rejected: it would only repeat.)
        new_norm = torch.linalg.vector_norm(g_new, dim=1)
        reject = torch.isfinite(new_norm) & (new_norm > const(self.reset_factor, new_norm) * g_norm)
        reject &= torch.diagonal(qinv, dim1=1, dim2=2).any(dim=1) if k else False
        # The trial's pair goes into the oldest slot (written straight into the buffers in place):
        # s = z+ - z and w = s + y = f(z+) - f(z).
        slot, inplace = state.count % m, not builds_graph(state, fz)
        S, s = write_diff(state.S, slot, z, state.z, inplace)
        W, _ = write_diff(state.W, slot, fz, state.fz, inplace)
        y = g_new - g
        filled = min(k + 1, m)
        whole = filled == m
        # The one pass over S: S^T g_new is the next right-hand side, and S^T y = S^T g_new - S^T g
        # is the new column of M; the pass over W gives its new row W^T s. (Their entries of
        # `slot` belong to the new pair itself and are not used: Q's row and column there are
        # zero once the old pair is removed.)
        stg_new = widen(batched_dot(S if whole else S[:, :filled], g_new), m)
        col = (stg_new - state.stg)[:, :filled].double()
        row = batched_dot(W if whole else W[:, :filled], s).double()
        corner = torch.linalg.vecdot(s, y).double()
        qinv = state.qinv if whole else state.qinv[:, :filled, :filled]
        # A second rejection in a row clears the memory (the next step is a plain one), and so
        # does a rejected trial whose pair cannot be stored.
        push = _push if self.compile is None else compiled(_push, self.compile)
        qinv, _ = push(qinv, col, row, corner, torch.linalg.vecdot(s, s).double(), reject & state.rejected,
                        reject, *slot_masks(filled, slot, torch.float64, g.device), slot, k == m, inplace)
        if not whole:  # (the slots not written yet stay zero)
            qinv = state.qinv if inplace else torch.nn.functional.pad(qinv, (0, m - filled, 0, m - filled))
        # Rejected rows stay where they were, so their cached S^T g is the old one but in `slot`,
        # which now holds the trial's s: there s^T g = s^T g_trial - s^T y.
        keep_step = ~reject.unsqueeze(1)
        stg_trial, stg_new = stg_new, torch.where(keep_step, stg_new, state.stg)
        stg_new[:, slot] = stg_trial[:, slot] - torch.where(reject, corner, const(0.0, corner)).to(stg_new.dtype)
        z = torch.where(keep_step, z, state.z)
        fz = torch.where(keep_step, fz, state.fz)
        g_new = torch.where(keep_step, g_new, g)
        return BroydenState(z=z, fz=fz, nfe=nfe, S=S, W=W, qinv=qinv, g=g_new, stg=stg_new, rejected=reject,
                            count=state.count + 1)

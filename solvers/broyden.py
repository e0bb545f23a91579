"""Limited-memory "good" Broyden method on ``g(z) = f(z) - z``, with per-row safeguards.

The good Broyden update of the inverse Jacobian ``H`` of ``g``,

    H+ = H + (s - H y) (s^T H) / (s^T H y),     s = dz, y = dg,

applied to ``H_0 = -I`` over the pairs ``(s_i, y_i)`` in time order has the compact form
(Byrd, Nocedal & Schnabel 1994, via Woodbury on the direct update)

    H = -I + (S + Y) M^{-1} S^T,   M = S^T Y + strictly_lower(S^T S),

where ``strictly_lower`` keeps the entries ``s_i^T s_j`` with ``s_i`` newer than ``s_j``. We
store the last ``memory`` pairs and keep ``M`` up to date incrementally: the newest pair ``k``
adds the row ``M_kj = s_k^T (y_j + s_j) = s_k^T w_j`` and the column ``M_ik = s_i^T y_k``, and
the other entries keep their values.
Dropping the oldest pair therefore yields exactly the Broyden matrix of the remaining pairs
(a consistent limited-memory method, like L-BFGS), and memory never grows with ``max_iter``.

Safeguards, per row: a pair whose Broyden denominator ``s^T H y`` is tiny or non-finite is
not stored; a singular or non-finite ``M`` clears the row's memory; a step that grows the
residual by more than ``reset_factor`` is rejected (the row keeps its previous iterate, so the
evaluation is spent but the row is not thrown off) and clears the memory, so the next step is
a plain fixed-point step. Non-finite values are not rejected: they end the row as NONFINITE.
The optional backtracking line search halves the step for the rows whose residual did not
decrease enough; it evaluates ``f`` only on those rows (rows must be independent) and costs
one host sync per backtracking round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import (
    FlatMap,
    Solver,
    SolverState,
    batched_combine,
    batched_dot,
    builds_graph,
    check_int,
    check_real,
    option,
    widen,
    write_row_col,
    write_slot,
)

__all__ = ["Broyden", "BroydenState"]


@dataclass
class BroydenState(SolverState):
    """State of :class:`Broyden`; all tensors batch-first.

    Attributes:
        S: ``(B, memory, n)`` steps ``s_i = z_{i+1} - z_i`` (ring buffer; a buffer).
        W: ``(B, memory, n)`` ``s_i + y_i`` with ``y_i = g_{i+1} - g_i`` (a buffer).
        M: ``(B, memory, memory)`` float64, the compact form's ``M`` (entries of slots that are
            not in use are meaningless; a buffer: one row and column is written per step).
        stamp: ``(B, memory)`` int64 time a slot was written, -1 for an empty slot.
        g: ``(B, n)`` the residual ``fz - z`` of the current iterate (cached).
        count: number of steps taken (the time stamp of the next pair).
    """

    BUFFERS: ClassVar[tuple[str, ...]] = ("S", "W", "M")

    S: Tensor
    W: Tensor
    M: Tensor
    stamp: Tensor
    g: Tensor
    count: int = 0


@dataclass(frozen=True)
class Broyden(Solver[BroydenState]):
    """Limited-memory good Broyden (compact form) with per-row safeguards.

    Args:
        memory: number of (step, residual change) pairs kept per row.
        line_search: backtrack the step per row until the residual decreases enough.
        max_backtracks: halvings of the step tried by the line search before accepting.
        reset_factor: reject a step that grows a row's residual by more than this factor: the row
            returns to its previous iterate and clears its memory.

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
    reset_factor: float = option(10.0, "reject a step that grows a row's residual by this factor; clear its memory")

    def __post_init__(self) -> None:
        check_int("memory", self.memory, 1)
        if not isinstance(self.line_search, bool):
            raise ValueError(f"option line_search={self.line_search!r} is invalid: must be a bool")
        check_int("max_backtracks", self.max_backtracks, 0)
        check_real("reset_factor", self.reset_factor, 1.0, low_open=True)

    def sized_for(self, steps: int) -> Broyden:
        """A memory of ``min(memory, steps)`` pairs: the ring never wraps within ``steps``."""
        return self if steps >= self.memory else dataclasses.replace(self, memory=max(1, int(steps)))

    def init(self, f: FlatMap, z0: Tensor, args: Sequence[Any]) -> BroydenState:
        """Evaluate ``f(z0)``; start from ``H = -I`` (empty memory)."""
        b, n, m = z0.shape[0], z0.shape[1], self.memory
        fz = f(z0, *args)
        return BroydenState(
            z=z0, fz=fz, nfe=torch.ones(b, dtype=torch.int64, device=z0.device),
            S=z0.new_zeros(b, m, n), W=z0.new_zeros(b, m, n), M=z0.new_zeros(b, m, m, dtype=torch.float64),
            stamp=torch.full((b, m), -1, dtype=torch.int64, device=z0.device), g=fz - z0,
        )

    def factor(self, state: BroydenState) -> tuple[Tensor, Tensor, Tensor]:
        """LU-factor the small matrix ``M = P L U`` of every row (float64).

        Only the ``k = min(count, memory)`` slots visited so far take part (the others are
        empty), so a short run never pays for the unused memory.

        Returns:
            ``(P, LU, ok)``: the ``(B, k, k)`` permutation, ``L`` (unit lower) and ``U`` packed in
            one matrix, and a ``(B,)`` mask of rows whose ``M`` is non-singular and finite (the
            other rows use ``H = -I``). Solving by triangular solves, unlike
            ``torch.linalg.lu_solve``, never reads a value back to the host (no sync on an
            accelerator).
        """
        k = min(state.count, self.memory)
        valid = state.stamp[:, :k] >= 0
        eye = torch.eye(k, dtype=state.M.dtype, device=state.M.device)
        mat = torch.where(valid[:, :, None] & valid[:, None, :], state.M[:, :k, :k], eye)
        lu, piv, info = torch.linalg.lu_factor_ex(mat)
        ok = (info == 0) & torch.isfinite(lu.sum(dim=(1, 2)))
        perm = torch.lu_unpack(lu, piv, unpack_data=False)[0]
        return perm, lu, ok

    def apply_h(self, state: BroydenState, v: Tensor,
                factors: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """``H v`` for a ``(B, n)`` batch of vectors (pass ``factor(state)`` to reuse it)."""
        k = min(state.count, self.memory)
        return self._apply_h(state, v, batched_dot(state.S[:, :k], v), factors)

    def _apply_h(self, state: BroydenState, v: Tensor, stv: Tensor,
                 factors: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
        k = stv.shape[1]
        if k == 0:
            return -v
        perm, lu, ok = factors if factors is not None else self.factor(state)
        rhs = torch.bmm(perm.mT, stv.double()[:, :, None])
        y = torch.linalg.solve_triangular(lu, rhs, upper=False, unitriangular=True)
        coef = torch.linalg.solve_triangular(lu, y, upper=True)[:, :, 0]
        # a failed row's solution is garbage (or not finite): it takes the plain step
        coef = torch.where(ok[:, None] & (state.stamp[:, :k] >= 0), coef, 0.0).to(v.dtype)
        return -v + batched_combine(coef, state.W[:, :k])

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
        """One Broyden step (one evaluation of ``f``; more with the line search), then update."""
        k = min(state.count, self.memory)  # slots visited so far: the passes use only these
        factors = self.factor(state) if k else None
        g = state.g
        stg = batched_dot(state.S[:, :k], g)
        p = -self._apply_h(state, g, stg, factors)
        z = state.z + p
        fz = f(z, *args)
        nfe = state.nfe + 1
        g_norm = torch.linalg.vector_norm(g, dim=1)
        if self.line_search:
            z, fz, nfe = self._line_search(f, state.z, p, g_norm, z, fz, nfe, args)
        g_new = fz - z
        # Reject a step that grew a row's residual by more than reset_factor: the row goes back
        # to its previous iterate and forgets its memory (the next step is a plain one).
        new_norm = torch.linalg.vector_norm(g_new, dim=1)
        reject = torch.isfinite(new_norm) & (new_norm > self.reset_factor * g_norm)
        z = torch.where(reject[:, None], state.z, z)
        fz = torch.where(reject[:, None], state.fz, fz)
        g_new = torch.where(reject[:, None], g, g_new)
        s, y = z - state.z, g_new - g
        sty = batched_dot(state.S[:, :k], g_new) - stg  # S^T y without another pass
        h_y = self._apply_h(state, y, sty, factors)
        denom = torch.linalg.vecdot(s, h_y)
        scale = torch.linalg.vector_norm(s, dim=1) * torch.linalg.vector_norm(h_y, dim=1)
        store = torch.isfinite(denom) & (denom.abs() > 1e-10 * scale)
        store = store & torch.isfinite(s).all(dim=1) & torch.isfinite(y).all(dim=1) & ~reject
        slot, inplace = state.count % self.memory, not builds_graph(state, fz)
        keep = store[:, None]
        # The new pair's row and column of M (computed before the slot is overwritten): row
        # M_kj = s . w_j, column M_ik = s_i . y, corner s . y. Rows that skip this pair keep
        # their old slot content (and its time stamp).
        row = widen(batched_dot(state.W[:, :k], s).double(), self.memory)
        col = widen(sty.double(), self.memory)
        corner = torch.linalg.vecdot(s, y).double()
        row[:, slot] = corner
        col[:, slot] = corner
        M = write_row_col(state.M, slot, torch.where(keep, row, state.M[:, slot, :]),
                          torch.where(keep, col, state.M[:, :, slot]), inplace)
        S = write_slot(state.S, slot, torch.where(keep, s, state.S[:, slot]), inplace)
        W = write_slot(state.W, slot, torch.where(keep, s + y, state.W[:, slot]), inplace)
        stamp = torch.where(keep & (torch.arange(self.memory, device=z.device) == slot), state.count, state.stamp)
        failed = reject if factors is None else reject | ~factors[2]
        stamp = torch.where(failed[:, None], -1, stamp)
        return BroydenState(z=z, fz=fz, nfe=nfe, S=S, W=W, M=M, stamp=stamp, g=g_new, count=state.count + 1)

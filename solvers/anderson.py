"""Anderson acceleration (type II, difference form) with a scaled ridge and safeguards.

With ``g(z) = f(z) - z`` and the last ``m`` differences ``dG = [g_{i+1} - g_i]``,
``dZ = [z_{i+1} - z_i]``, one step solves the small least-squares problem
``gamma = argmin ||g_k - dG gamma||`` and moves to

    z_{k+1} = z_k + beta g_k - (dZ + beta dG) gamma,

i.e. ``z_{k+1} = z_k - H_k g_k`` with the multisecant inverse-Jacobian approximation
``H_k = -beta I + (dZ + beta dG)(dG^T dG)^{-1} dG^T`` that maps every stored ``dg_i`` to
``dz_i`` (Anderson's secant conditions). On linear maps with a long enough history this is
equivalent to GMRES on ``(I - A) z = b``.

Robustness, per row: the Gram matrix ``dG^T dG`` is kept up to date incrementally (one new
row and column per step), Jacobi-scaled, and regularised by a ridge relative to its diagonal
(so the ridge means the same on problems of any scale); history columns that are numerically
dependent on the others are dropped; a row whose Gram system is singular or whose
coefficients are non-finite restarts its history and takes a damped step ``z + beta g``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._base import FlatMap, Solver, SolverState, check_int, check_real, option, write_slot

__all__ = ["Anderson", "AndersonState"]


@dataclass
class AndersonState(SolverState):
    """State of :class:`Anderson`; all tensors batch-first.

    Attributes:
        dG: ``(B, m, n)`` ring buffer of residual differences ``g_{i+1} - g_i``.
        dX: ``(B, m, n)`` ring buffer of ``dz_i + beta * dg_i`` (the update directions).
        gram: ``(B, m, m)`` ``dG dG^T`` (entries of invalid slots are meaningless).
        valid: ``(B, m)`` bool, which slots hold usable history for the row.
        slot: ring position the next difference is written to (shared by all rows).
    """

    dG: Tensor
    dX: Tensor
    gram: Tensor
    valid: Tensor
    slot: int = 0


@dataclass(frozen=True)
class Anderson(Solver):
    """Anderson acceleration with a relative ridge, column dropping and history restarts.

    Args:
        m: history size (number of stored differences). Memory is ``2 m`` iterates per row.
        beta: mixing in ``(0, 1]``; 1 mixes the images ``f(z_i)`` only (undamped).
        ridge: Tikhonov term relative to the (Jacobi-scaled) Gram diagonal, ``>= 0``.
        max_cond: drop history columns whose Cholesky pivot of the scaled Gram matrix is below
            ``1 / max_cond`` (numerically dependent on the others); None picks
            ``1e-2 / eps`` of the dtype.

    Examples:
        >>> import torch
        >>> from eqsolve.solvers import solve
        >>> A = torch.diag(torch.linspace(-1.5, 0.9, 20))  # plain iteration diverges here
        >>> sol = solve(lambda z: z @ A + 1.0, torch.zeros(4, 20, dtype=torch.float64),
        ...             solver=Anderson(m=20), tol=1e-8, max_iter=60)
        >>> bool(sol.converged.all())
        True
    """

    m: int = option(20, "history size: number of stored (dz, dg) differences per row")
    beta: float = option(1.0, "mixing in (0, 1]: z+ = z + beta g - (dZ + beta dG) gamma")
    ridge: float = option(1e-7, "Tikhonov ridge relative to the Gram diagonal (scale-free)")
    max_cond: float | None = option(None, "drop dependent history columns beyond this condition (None: 1e-2/eps)")

    def __post_init__(self) -> None:
        check_int("m", self.m, 1)
        check_real("beta", self.beta, 0.0, 1.0, low_open=True)
        check_real("ridge", self.ridge, 0.0)
        if self.max_cond is not None:
            check_real("max_cond", self.max_cond, 1.0, low_open=True)

    def init(self, f: FlatMap, z0: Tensor, args: Sequence[Any]) -> AndersonState:
        """Evaluate ``f(z0)`` and allocate an empty history."""
        b, n = z0.shape
        fz = f(z0, *args)
        return AndersonState(
            z=z0, fz=fz, nfe=torch.ones(b, dtype=torch.int64, device=z0.device),
            dG=z0.new_zeros(b, self.m, n), dX=z0.new_zeros(b, self.m, n),
            gram=z0.new_zeros(b, self.m, self.m),
            valid=torch.zeros(b, self.m, dtype=torch.bool, device=z0.device), slot=0,
        )

    def coefficients(self, state: AndersonState) -> tuple[Tensor, Tensor]:
        """Solve the regularised least-squares problem for ``gamma``.

        Returns:
            ``(gamma, valid)``: ``(B, m)`` coefficients (0 on unused slots) and the ``(B, m)``
            history mask after dropping dependent columns and restarting singular rows.
        """
        g = state.fz - state.z
        valid = state.valid
        rhs = torch.einsum("bmn,bn->bm", state.dG, g)
        # The small m x m systems are solved in float64: cheap, and it keeps the pivots honest.
        gram, rhs = state.gram.double(), rhs.double()
        eps = torch.finfo(state.z.dtype).eps
        max_cond = self.max_cond if self.max_cond is not None else 1e-2 / eps
        for _ in range(2):  # second pass only matters for rows that dropped columns
            vv = valid[:, :, None] & valid[:, None, :]
            diag = torch.diagonal(gram, dim1=1, dim2=2)
            scale = torch.where(valid & (diag > 0), diag, 1.0).rsqrt()
            eye = torch.eye(self.m, dtype=gram.dtype, device=gram.device)
            scaled = torch.where(vv, gram * scale[:, :, None] * scale[:, None, :], 0.0)
            scaled = scaled + eye * torch.where(valid, self.ridge, 1.0)[:, None, :]
            chol, info = torch.linalg.cholesky_ex(scaled)
            pivots = torch.diagonal(chol, dim1=1, dim2=2) ** 2
            singular = (info != 0) | ~torch.isfinite(pivots).all(dim=1)
            dependent = valid & (pivots < (1.0 + self.ridge) / max_cond)
            valid = valid & ~dependent & ~singular[:, None]
        rhs_scaled = torch.where(valid, rhs * scale, 0.0)
        chol = torch.where(singular[:, None, None], eye, chol)
        y = torch.cholesky_solve(rhs_scaled[:, :, None], chol)[:, :, 0]
        gamma = torch.where(valid, y * scale, 0.0)
        ok = torch.isfinite(gamma).all(dim=1)
        valid = valid & ok[:, None]
        gamma = torch.where(valid, gamma, 0.0)
        return gamma.to(state.z.dtype), valid

    def step(self, f: FlatMap, state: AndersonState, args: Sequence[Any]) -> AndersonState:
        """One Anderson step (one evaluation of ``f``), then push the new difference."""
        g = state.fz - state.z
        gamma, valid = self.coefficients(state)
        z = state.z + self.beta * g - torch.einsum("bm,bmn->bn", gamma, state.dX)
        fz = f(z, *args)
        dg, dz = (fz - z) - g, z - state.z
        # Push the new pair into the ring buffer and its Gram row/column.
        hot = torch.arange(self.m, device=z.device) == state.slot
        dG = write_slot(state.dG, state.slot, dg)
        dX = write_slot(state.dX, state.slot, dz + self.beta * dg)
        col = torch.einsum("bmn,bn->bm", dG, dg)
        gram = torch.where(hot[None, :, None], col[:, None, :], state.gram)
        gram = torch.where(hot[None, None, :], col[:, :, None], gram)
        valid = valid | hot[None, :]
        return AndersonState(
            z=z, fz=fz, nfe=state.nfe + 1, dG=dG, dX=dX, gram=gram, valid=valid,
            slot=(state.slot + 1) % self.m,
        )

    def inverse_jacobian_vp(self, state: AndersonState, v: Tensor) -> Tensor:
        """Apply the multisecant inverse-Jacobian approximation ``H`` of ``g`` to ``v`` (B, n).

        ``H v = -beta v + (dZ + beta dG) (dG^T dG + ridge)^{-1} dG^T v`` over the usable history;
        with ``ridge=0``, ``H dg_i = dz_i`` for every stored pair (the secant conditions).
        """
        probe = type(state)(**{**state.__dict__, "z": state.z.new_zeros(state.z.shape), "fz": v})
        gamma, _ = self.coefficients(probe)
        return -self.beta * v + torch.einsum("bm,bmn->bn", gamma, state.dX)

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

import dataclasses
import functools
import math
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
    write_diff,
    write_slot,
    write_sym_slot,
)

__all__ = ["Anderson", "AndersonState"]


@functools.lru_cache(maxsize=64)
def _eye(m: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An m x m identity, made once per size, dtype and device (read only; an ordinary tensor,
    also when first asked for in inference mode, so that a graph may use it later)."""
    with torch.inference_mode(False):
        return torch.eye(m, dtype=dtype, device=device)


def _small_solve(gram: Tensor, scale: Tensor, valid: Tensor, rhs: Tensor, ridge: float,
                 min_pivot: float) -> tuple[Tensor, Tensor]:
    """The m x m solve of :meth:`Anderson.coefficients` (float64 ``gamma``, next history mask)."""
    m = gram.shape[-1]
    # The small m x m systems are solved in float64: cheap, and it keeps the pivots honest.
    # The Gram matrix is stored scaled, with the ridge on its diagonal (the ridge is relative
    # to each column's norm); slots without usable history form an identity block.
    vv = valid[:, :, None] & valid[:, None, :]
    scaled = torch.where(vv, gram, _eye(m, gram.dtype, gram.device))
    chol, info = torch.linalg.cholesky_ex(scaled)
    diag = torch.diagonal(chol, dim1=1, dim2=2)
    # A singular row's (partial) factor only spoils its own solution, which is zeroed below,
    # so it needs no replacing. On a regular row the unused slots form an identity block with
    # a zero right-hand side, so their coefficients come out exactly 0 without a mask.
    # (two triangular solves: torch.cholesky_solve would read its error flag back to the host)
    b = torch.where(valid, rhs.double() * scale, 0.0).unsqueeze(2)
    y = torch.linalg.solve_triangular(chol.mT, torch.linalg.solve_triangular(chol, b, upper=False), upper=True).squeeze(2)
    gamma = y * scale
    # A factor with a non-finite pivot gives a non-finite solution: one finiteness test does
    # for both (a sum is finite iff its terms are, short of overflow).
    ok = (info == 0) & (gamma.sum(dim=1).abs() < math.inf)  # False for NaN and inf (2 ops; isfinite is 4)
    gamma = torch.where(ok[:, None], gamma, 0.0)
    # Restart rows whose system failed; drop columns that are numerically dependent on the
    # others (tiny Cholesky pivot) from the next steps on. This step's solve is still sound:
    # the ridge bounds the pivots from below.
    keep = valid & ok[:, None] & (diag * diag >= min_pivot)
    return gamma.to(rhs.dtype), keep


_COMPILED: dict[str, Any] = {}


def _compiled(backend: str) -> Any:
    """:func:`_small_solve` through ``torch.compile`` (dynamic shapes: compaction shrinks the batch)."""
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(_small_solve, backend=backend, dynamic=True)
    return _COMPILED[backend]


@dataclass
class AndersonState(SolverState):
    """State of :class:`Anderson`; all tensors batch-first.

    Attributes:
        dG: ``(B, m, n)`` ring buffer of residual differences ``g_{i+1} - g_i`` (a buffer).
        dX: ``(B, m, n)`` ring buffer of ``dz_i + beta * dg_i``, the update directions (a buffer).
        gram: ``(B, m, m)`` float64, the Jacobi-scaled Gram matrix ``D dG dG^T D`` with the ridge
            on its diagonal, ``D = diag(scale)``; entries of slots that are not ``valid`` are
            meaningless (a buffer: one row and column is written per step).
        scale: ``(B, m)`` float64, ``1 / ||dg_i||`` of every slot (a buffer).
        valid: ``(B, m)`` bool, which slots hold usable history for the row.
        g: ``(B, n)`` the residual ``fz - z`` of the current iterate (cached for the step and
            the solve loop).
        dGg: ``(B, m)`` ``dG g`` for the current residual ``g = fz - z`` (cached: it is both the
            next right-hand side and, differenced, the next Gram column).
        slot: ring position the next difference is written to (shared by all rows).
        filled: slots written so far (``min(steps, m)``, shared by all rows): the history
            passes and the small solve use only these, so a solve shorter than ``m`` steps
            (an inner solve of a few evaluations) never pays for the unused slots.
    """

    BUFFERS: ClassVar[tuple[str, ...]] = ("dG", "dX", "gram", "scale")

    dG: Tensor
    dX: Tensor
    gram: Tensor
    scale: Tensor
    valid: Tensor
    g: Tensor
    dGg: Tensor
    slot: int = 0
    filled: int = 0


@dataclass(frozen=True)
class Anderson(Solver[AndersonState]):
    """Anderson acceleration with a relative ridge, column dropping and history restarts.

    Args:
        m: history size (number of stored differences). Memory is ``2 m`` iterates per row.
            Long histories suit contractive maps; on maps whose useful behaviour is a transient
            (eqsolve's shipped Sudoku reasoner) a short one is safer, because extrapolating over
            a long history lands on nearby unstable equilibria; the measurements are in
            ``benchmarks/results/bench_scaling.md``.
        beta: mixing in ``(0, 1]``; 1 mixes the images ``f(z_i)`` only (undamped).
        ridge: Tikhonov term relative to the (Jacobi-scaled) Gram diagonal, ``>= 0``.
        max_cond: drop history columns whose Cholesky pivot of the scaled Gram matrix is below
            ``1 / max_cond`` (numerically dependent on the others); None picks
            ``1e-2 / eps`` of the dtype.
        delay: number of plain ``z + beta g`` steps a row takes before extrapolating (its history
            fills meanwhile): a warm start for maps whose early iterates are far from the
            fixed point sought. It is no cure for maps with many unstable fixed points, where
            the extrapolation still reaches nearby unstable equilibria after the plain steps
            (measured on the shipped Sudoku reasoner: ``benchmarks/results/bench_scaling.md``).
        compile: run the small m x m solve and its safeguards through ``torch.compile`` with this
            backend (``"inductor"``), with dynamic shapes. Off by default: on the CPU it did not
            pay for itself (measurements in ``benchmarks/results/solvers_compile.md``); the first
            call compiles, which takes seconds.

    Examples:
        >>> import torch
        >>> from eqsolve.solvers import solve
        >>> A = torch.diag(torch.linspace(-1.5, 0.9, 20, dtype=torch.float64))  # plain iteration diverges
        >>> sol = solve(lambda z: z @ A + 1.0, torch.zeros(4, 20, dtype=torch.float64),
        ...             solver=Anderson(m=20), tol=1e-8, max_iter=60)
        >>> bool(sol.converged.all())
        True
    """

    m: int = option(20, "history size: number of stored (dz, dg) differences per row")
    beta: float = option(1.0, "mixing in (0, 1]: z+ = z + beta g - (dZ + beta dG) gamma")
    ridge: float = option(1e-6, "Tikhonov ridge relative to the Gram diagonal (scale-free)")
    max_cond: float | None = option(None, "drop dependent history columns beyond this condition (None: 1e-2/eps)")
    delay: int = option(0, "plain (beta-damped) steps before extrapolating; history is recorded meanwhile")
    compile: str | None = option(None, "torch.compile backend for the small solve (e.g. 'inductor'); None: eager")

    def __post_init__(self) -> None:
        check_int("m", self.m, 1)
        check_real("beta", self.beta, 0.0, 1.0, low_open=True)
        check_real("ridge", self.ridge, 0.0)
        if self.max_cond is not None:
            check_real("max_cond", self.max_cond, 1.0, low_open=True)
        check_int("delay", self.delay, 0)
        if self.compile is not None and not isinstance(self.compile, str):
            raise ValueError(f"option compile={self.compile!r} is invalid: must be a torch.compile backend name or None")

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
            gram=z0.new_zeros(b, self.m, self.m, dtype=torch.float64),
            scale=z0.new_zeros(b, self.m, dtype=torch.float64),
            valid=torch.zeros(b, self.m, dtype=torch.bool, device=z0.device), g=fz - z0,
            dGg=z0.new_zeros(b, self.m), slot=0, filled=0,
        )

    def coefficients(self, state: AndersonState, rhs: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Solve the regularised least-squares problem ``min ||g - dG gamma||`` for ``gamma``.

        Only the ``k = state.filled`` slots written so far take part.

        Args:
            state: the Anderson state.
            rhs: ``(B, k)`` ``dG v`` for the vector to fit (default: the cached ``dG g`` of the
                state).

        Returns:
            ``(gamma, valid)``: ``(B, k)`` coefficients (0 on unused slots, all 0 for a row whose
            system is singular or non-finite) and the ``(B, m)`` history mask for the next steps:
            without numerically dependent columns, empty for rows that restart.
        """
        k = state.filled
        rhs = state.dGg[:, :k] if rhs is None else rhs
        if k == 0:
            return rhs.new_zeros(rhs.shape[0], 0), state.valid.clone()
        eps = torch.finfo(state.z.dtype).eps
        max_cond = self.max_cond if self.max_cond is not None else 1e-2 / eps
        solve_small = _small_solve if self.compile is None else _compiled(self.compile)
        gamma, keep = solve_small(state.gram[:, :k, :k], state.scale[:, :k], state.valid[:, :k], rhs, self.ridge,
                                  (1.0 + self.ridge) / max_cond)
        valid = keep if k == self.m else torch.cat((keep, state.valid[:, k:]), dim=1)
        return gamma, valid  # in the dtype of rhs, the iterates' dtype

    def step(self, f: FlatMap, state: AndersonState, args: Sequence[Any]) -> AndersonState:
        """One Anderson step (one evaluation of ``f``), then push the new difference."""
        g = state.g
        gamma, valid = self.coefficients(state)
        if self.delay:
            # rows still in their first `delay` steps move like plain iteration (per row, by the
            # row's own count, so rows refilled mid-solve wait too; no host sync)
            gamma = torch.where((state.nfe <= self.delay)[:, None], 0.0, gamma)
        # z+ = z + beta g - dX gamma, where z + g = f(z) (one pass over the filled part of dX, fused)
        k = state.filled
        base = state.fz if self.beta == 1.0 else torch.add(state.z, g, alpha=self.beta)
        z = torch.baddbmm(base.unsqueeze(1), gamma.unsqueeze(1), state.dX[:, :k], alpha=-1.0).squeeze(1) if k else base
        fz = f(z, *args)
        g_new = fz - z
        # Push the new pair into the ring buffers (computed straight into the slot where the
        # buffers are written in place) and its row/column of the scaled Gram matrix.
        slot, inplace = state.slot, not builds_graph(state, fz)
        dG, dg = write_diff(state.dG, slot, g_new, g, inplace)
        if self.beta == 1.0:
            dX, _ = write_diff(state.dX, slot, fz, state.fz, inplace)  # dz + dg = f(z+) - f(z)
        else:
            dX = write_slot(state.dX, slot, torch.add(z - state.z, dg, alpha=self.beta), inplace)
        filled = min(k + 1, self.m)
        # the one pass over the (filled) history for the next step; zeros beyond it
        dGg = widen(batched_dot(dG[:, :filled], g_new), self.m)
        # The new Gram column dG dg = dG g_new - dG g (old slots), with its own entry dg . dg.
        col = dGg - state.dGg
        col[:, slot] = torch.linalg.vecdot(dg, dg)  # col is a fresh tensor
        col = col.double()
        diag = col[:, slot]
        scale_new = torch.where(diag > 0, diag, 1.0).rsqrt()
        scale = write_slot(state.scale, slot, scale_new, inplace)
        row = col * (scale_new[:, None] * scale)  # its own entry: diag * scale_new**2 (1 if diag > 0)
        row[:, slot] += self.ridge
        gram = write_sym_slot(state.gram, slot, row, inplace)
        valid[:, slot] = True  # a fresh mask from coefficients(), never recorded by autograd
        return AndersonState(
            z=z, fz=fz, nfe=state.nfe + 1, dG=dG, dX=dX, gram=gram, scale=scale, valid=valid, g=g_new, dGg=dGg,
            slot=(slot + 1) % self.m, filled=filled,
        )

    def inverse_jacobian_vp(self, state: AndersonState, v: Tensor) -> Tensor:
        """Apply the multisecant inverse-Jacobian approximation ``H`` of ``g`` to ``v`` (B, n).

        ``H v = -beta v + (dZ + beta dG) (dG^T dG + ridge)^{-1} dG^T v`` over the usable history;
        with ``ridge=0``, ``H dg_i = dz_i`` for every stored pair (the secant conditions).
        """
        k = state.filled
        gamma, _ = self.coefficients(state, batched_dot(state.dG[:, :k], v))
        return -self.beta * v + batched_combine(gamma, state.dX[:, :k])

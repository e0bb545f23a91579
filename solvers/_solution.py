"""The result of a solve: per-row :class:`Solution` record and the :class:`Status` codes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import Tensor

__all__ = ["SolveError", "Solution", "Status"]


class Status(IntEnum):
    """Why a row stopped. Stored as int64 in :attr:`Solution.status`.

    Examples:
        >>> Status.CONVERGED.message
        'converged: residual <= tol'
        >>> Status(3).name
        'NONFINITE'
    """

    CONVERGED = 0
    MAX_ITER = 1
    DIVERGED = 2
    NONFINITE = 3
    STAGNATED = 4

    @property
    def message(self) -> str:
        """A one-line, human-readable explanation of the status."""
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "converged: residual <= tol",
    Status.MAX_ITER: "not converged: max_iter reached",
    Status.DIVERGED: ("diverged: absolute residual grew by more than diverge_factor over the best seen, "
                      "or ||f(z)|| beyond diverge_factor times its starting scale"),
    Status.NONFINITE: "non-finite value (NaN/inf) in z or f(z)",
    Status.STAGNATED: "stagnated: best residual made no progress for stall_window steps",
}


class SolveError(RuntimeError):
    """Raised by ``solve(..., throw=True)`` when some rows did not converge."""


@dataclass
class Solution:
    """Per-row result of :func:`eqsolve.solvers.solve`.

    Attributes:
        z: ``(B, ...)`` best iterate seen (lowest residual of the ``stop`` kind). It is finite
            whenever a finite iterate was seen (``z0`` itself counts).
        abs_residual: ``(B,)`` ``||f(z) - z||_2`` of the flattened row, for the returned ``z``.
        rel_residual: ``(B,)`` ``abs_residual / (||f(z)||_2 + 1e-8)``.
        nfe: ``(B,)`` int64, evaluations of ``f`` spent on the row while it was being solved.
        nstep: ``(B,)`` int64, solver steps taken by the row (the first evaluation is step 0).
        status: ``(B,)`` int64 values of :class:`Status`.
        trace: ``(B, T)`` residual of the ``stop`` kind after each step (column 0 is ``z0``),
            NaN after the row stopped; ``None`` unless ``trace=True``.
        stop: ``"rel"`` or ``"abs"``, the residual kind used to stop.
        tol: the tolerance used to stop.
        abs_trace: ``(B, T)`` like ``trace`` for the absolute residual (None unless ``trace``).
        rel_trace: ``(B, T)`` like ``trace`` for the relative residual (None unless ``trace``).
        snapshots: best iterates ``(B, ...)`` after each step listed in ``solve(snapshots=...)``.

    Examples:
        >>> import torch
        >>> from eqsolve.solvers import solve
        >>> sol = solve(lambda z: 0.5 * z + 1.0, torch.zeros(3, 2, dtype=torch.float64), tol=1e-10)
        >>> bool(sol.converged.all()), sol.z[0].round(decimals=6).tolist(), sol.status.tolist()
        (True, [2.0, 2.0], [0, 0, 0])
    """

    z: Tensor
    abs_residual: Tensor
    rel_residual: Tensor
    nfe: Tensor
    nstep: Tensor
    status: Tensor
    trace: Tensor | None
    stop: str
    tol: float
    abs_trace: Tensor | None = None
    rel_trace: Tensor | None = None
    snapshots: list[Tensor] = field(default_factory=list)

    @property
    def residual(self) -> Tensor:
        """``(B,)`` residual of the kind used to stop (``rel_residual`` or ``abs_residual``)."""
        return self.rel_residual if self.stop == "rel" else self.abs_residual

    @property
    def converged(self) -> Tensor:
        """``(B,)`` bool mask of rows whose status is ``CONVERGED``."""
        return self.status == int(Status.CONVERGED)

    def copied(self) -> Solution:
        """A copy with every tensor cloned (ordinary tensors, also from ``torch.inference_mode``)."""
        def c(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.clone()

        return dataclasses.replace(
            self, z=self.z.clone(), abs_residual=self.abs_residual.clone(), rel_residual=self.rel_residual.clone(),
            nfe=self.nfe.clone(), nstep=self.nstep.clone(), status=self.status.clone(), trace=c(self.trace),
            abs_trace=c(self.abs_trace), rel_trace=c(self.rel_trace), snapshots=[t.clone() for t in self.snapshots],
        )

    def failed_rows(self) -> list[int]:
        """Indices of the rows that did not converge (host sync)."""
        return (~self.converged).nonzero().flatten().tolist()

    def summary(self) -> dict[str, float]:
        """Batch statistics as plain floats (host sync): convergence rate, NFE, residuals.

        Returns:
            dict with ``converged`` (fraction), ``nfe_mean``, ``nfe_max``, ``nstep_mean``,
            ``residual_mean``, ``residual_max`` (of the ``stop`` kind, over finite rows),
            ``abs_residual_mean``, ``rel_residual_mean`` and ``status_<name>`` (fraction of
            rows per status).
        """
        res = self.residual.double()
        finite = torch.isfinite(res)
        finite_res = res[finite] if bool(finite.any()) else res.new_full((1,), float("nan"))
        out = {
            "converged": self.converged.double().mean().item(),
            "nfe_mean": self.nfe.double().mean().item(),
            "nfe_max": float(self.nfe.max().item()),
            "nstep_mean": self.nstep.double().mean().item(),
            "residual_mean": finite_res.mean().item(),
            "residual_max": finite_res.max().item(),
            "abs_residual_mean": self.abs_residual.double().mean().item(),
            "rel_residual_mean": self.rel_residual.double().mean().item(),
        }
        for s in Status:
            out[f"status_{s.name.lower()}"] = (self.status == int(s)).double().mean().item()
        return out

    def describe_failures(self, limit: int = 10) -> str:
        """A multi-line report of the rows that did not converge (host sync)."""
        rows = self.failed_rows()
        if not rows:
            return "all rows converged"
        lines = [f"{len(rows)} of {self.status.shape[0]} rows did not converge (stop={self.stop!r}, tol={self.tol:g}):"]
        for r in rows[:limit]:
            s = Status(int(self.status[r]))
            lines.append(
                f"  row {r}: {s.name} ({s.message}); residual={float(self.residual[r]):.3e}, "
                f"nstep={int(self.nstep[r])}, nfe={int(self.nfe[r])}"
            )
        if len(rows) > limit:
            lines.append(f"  ... and {len(rows) - limit} more: {rows[limit:]}")
        return "\n".join(lines)

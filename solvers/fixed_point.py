"""Damped fixed-point (Picard / Krasnosel'skii-Mann) iteration: ``z <- (1 - tau) z + tau f(z)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._base import FlatMap, Solver, SolverState, check_real, const, option

__all__ = ["FixedPointIteration"]


@dataclass(frozen=True)
class FixedPointIteration(Solver[SolverState]):
    """Damped fixed-point iteration, one evaluation of ``f`` per step.

    Converges linearly at rate ``max |1 - tau + tau * lambda|`` over the eigenvalues
    ``lambda`` of the Jacobian of ``f`` at the fixed point; ``tau < 1`` can tame eigenvalues
    near -1 at the price of slower progress elsewhere.

    Args:
        tau: damping in ``(0, 1]``; 1 is plain iteration ``z <- f(z)``.

    Examples:
        >>> import torch
        >>> from eqsolve.solvers import solve
        >>> sol = solve(torch.cos, torch.zeros(4, 1), solver=FixedPointIteration(), tol=1e-6, max_iter=200)
        >>> round(sol.z[0, 0].item(), 4)
        0.7391
    """

    tau: float = option(1.0, "damping in (0, 1]: z <- (1 - tau) z + tau f(z)")

    def __post_init__(self) -> None:
        check_real("tau", self.tau, 0.0, 1.0, low_open=True)

    def init(self, f: FlatMap, z0: Tensor, args: Sequence[Any]) -> SolverState:
        """Evaluate ``f(z0)``."""
        nfe = torch.ones(z0.shape[0], dtype=torch.int64, device=z0.device)
        return SolverState(z=z0, fz=f(z0, *args), nfe=nfe)

    def step(self, f: FlatMap, state: SolverState, args: Sequence[Any]) -> SolverState:
        """One damped step, one evaluation of ``f``."""
        z = state.fz if self.tau == 1.0 else torch.lerp(state.z, state.fz, self.tau)
        return SolverState(z=z, fz=f(z, *args), nfe=state.nfe + const(1, state.nfe))

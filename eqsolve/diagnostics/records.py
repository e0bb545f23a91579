"""Records of an attractor census: the system protocol, attractors, per-problem censuses.

Kept apart from the census algorithm (`eqsolve.diagnostics.census`) so that reports, modes and
plots depend on the records only.

Example:
    >>> import numpy as np
    >>> a = Attractor("fixed_point", 1, np.arange(3), 0.75, 1e-5, True, 1.0, 0.4, 0)
    >>> a.to_dict()["basin_fraction"]
    0.75
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

OUTCOMES = ("converged", "cycle", "oscillating", "not_converged", "diverged")


@dataclass(frozen=True)
class FixedPointSystem:
    """A fixed-point map with a start distribution and an optional answer check.

    Attributes:
        map: `map(s, x) -> s'` on batch-first states; rows independent.
        init_state: `init_state(n, generator) -> (n, ...)` random starting states.
        decode: optional `decode(s) -> (n, ...)` discrete answer (e.g. digits); equal answers
            are one attractor candidate.
        is_correct: optional `is_correct(answer, target) -> (n,) bool`, where `answer` is
            `decode(s)` (or `s` without a decoder) and `target` the per-row target (or None).
    """

    map: Callable[[Tensor, Tensor], Tensor]
    init_state: Callable[[int, torch.Generator | None], Tensor]
    decode: Callable[[Tensor], Tensor] | None = None
    is_correct: Callable[[Tensor, Any], Tensor] | None = None


@dataclass
class Attractor:
    """One attractor of one problem, as seen by the starts.

    Attributes:
        kind: "fixed_point", "cycle" (period p >= 2) or "oscillation" (a bounded orbit that
            revisits itself without an exact period, residual flat).
        period: 1 for a fixed point, p for a p-cycle, 0 for an oscillation.
        members: indices of the starts that ended in it.
        basin_fraction: len(members) / n_starts.
        mean_residual: mean end residual (of the solve's `stop` kind) over members.
        correct: majority correctness of members (None without `is_correct`).
        correct_fraction: fraction of members whose answer is correct (None without check).
        spectral_radius: max |eig| of the Jacobian of the (p-fold) map at `representative`
            (None for oscillations, which have no local linear stability).
        representative: member with the lowest residual.
    """

    kind: str
    period: int
    members: np.ndarray
    basin_fraction: float
    mean_residual: float
    correct: bool | None
    correct_fraction: float | None
    spectral_radius: float | None
    representative: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (members as a count)."""
        return {
            "kind": self.kind, "period": self.period, "n_members": int(self.members.size),
            "basin_fraction": self.basin_fraction, "mean_residual": self.mean_residual,
            "correct": self.correct, "correct_fraction": self.correct_fraction,
            "spectral_radius": self.spectral_radius, "representative": self.representative,
            # locally attracting: spectral radius below 1 (None when not measured)
            "stable": None if self.spectral_radius is None else self.spectral_radius < 1.0,
        }


@dataclass
class Census:
    """Per-problem census: outcome of every start and the attractors found.

    Attributes:
        attractors: sorted by basin fraction, largest first.
        outcome: (S,) outcome names (see `OUTCOMES`).
        period: (S,) 1 for converged, p for cycles, 0 otherwise.
        label: (S,) index into `attractors`, -1 when the start reached none.
        residual: (S,) end residual of the solve's stop kind.
        nfe: (S,) map evaluations spent by the solve (probes excluded).
        correct: (S,) answer correctness of the end state, or None.
        trace: (S, T) residual traces (NaN after a row stopped), or None.
        end_states: (S, n) flattened end states on CPU, or None.
    """

    attractors: list[Attractor]
    outcome: np.ndarray
    period: np.ndarray
    label: np.ndarray
    residual: np.ndarray
    nfe: np.ndarray
    correct: np.ndarray | None
    trace: np.ndarray | None = None
    end_states: Tensor | None = None

    @property
    def n_starts(self) -> int:
        """Number of starting points."""
        return int(self.outcome.size)

    def outcome_fractions(self) -> dict[str, float]:
        """Fraction of starts per outcome (all outcomes present, summing to 1)."""
        return {o: float(np.mean(self.outcome == o)) for o in OUTCOMES}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no states or traces)."""
        return {
            "n_starts": self.n_starts,
            "n_attractors": len(self.attractors),
            "attractors": [a.to_dict() for a in self.attractors],
            "outcomes": self.outcome_fractions(),
            "accuracy": None if self.correct is None else float(self.correct.mean()),
        }


@dataclass
class CensusRun:
    """Censuses of a batch of problems plus residual/correctness recorded at checkpoints.

    Attributes:
        censuses: one `Census` per problem.
        checkpoint_nfe: (K, N, S) cumulative solve NFE at each checkpoint.
        checkpoint_residual: (K, N, S) residual at each checkpoint.
        checkpoint_correct: (K, N, S) correctness at each checkpoint, or None.
        probe_nfe: map evaluations spent on cycle probes and stability (diagnostic overhead).
    """

    censuses: list[Census]
    checkpoint_nfe: np.ndarray
    checkpoint_residual: np.ndarray
    checkpoint_correct: np.ndarray | None
    probe_nfe: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

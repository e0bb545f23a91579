"""Landscape modes: why a problem fails or succeeds, from its attractor census.

The rule (applied in this order to one problem's `Census`; thresholds in `ModeRule`):

1. ``not_converged`` — no start reached an attractor (no converged start, no cycle, no
   oscillation).
2. ``a_no_correct`` — attractors exist but none is correct (majority of its members decode to
   the right answer). Neither depth nor breadth helps; the model lacks the answer.
3. ``b_spurious`` — a correct attractor exists and so does a *spurious low-residual* one: an
   incorrect fixed point with basin fraction >= `min_spurious_basin` whose mean residual is at
   most `spurious_residual_factor` x the best correct attractor's. A verifier-free selector can
   be fooled; breadth with residual-based selection helps.
4. ``c_narrow`` — the correct attractors' total basin fraction is below `broad_basin`; other
   starts end in high-residual states, cycles or nowhere. Breadth helps (some start lands in
   the basin), depth only weakly.
5. ``d_broad`` — the correct basin holds at least `broad_basin` of the starts. Depth helps.

Limit cycles and oscillations never count as "low residual" (their residual stays at the step
size), so a problem whose only rival of the correct attractor is a cycle is (c) or (d), not (b).
An oscillation that decodes to the right answer at every probed point is a correct attractor.

Example:
    >>> import numpy as np
    >>> from eqsolve.diagnostics.records import Attractor
    >>> ok = Attractor("fixed_point", 1, np.arange(40), 0.625, 1e-6, True, 1.0, 0.8, 0)
    >>> bad = Attractor("fixed_point", 1, np.arange(24), 0.375, 1e-6, False, 0.0, 0.8, 1)
    >>> classify_attractors([ok, bad])
    'b_spurious'
    >>> classify_attractors([ok])
    'd_broad'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from eqsolve.diagnostics.records import Attractor, Census

MODES = ("a_no_correct", "b_spurious", "c_narrow", "d_broad", "not_converged")

MODE_DESCRIPTIONS = {
    "a_no_correct": "no correct attractor",
    "b_spurious": "correct and spurious low-residual attractors coexist",
    "c_narrow": "correct attractor with a narrow basin",
    "d_broad": "broad correct basin",
    "not_converged": "no start reached an attractor",
}


@dataclass(frozen=True)
class ModeRule:
    """Thresholds of the mode rule (see the module docstring).

    Attributes:
        min_spurious_basin: smallest basin fraction for an incorrect attractor to count.
        spurious_residual_factor: "low residual" = at most this times the best correct residual.
        broad_basin: correct basin fraction from which a basin is broad.
    """

    min_spurious_basin: float = 0.05
    spurious_residual_factor: float = 10.0
    broad_basin: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_spurious_basin", "broad_basin"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.spurious_residual_factor <= 0:
            raise ValueError(
                f"spurious_residual_factor must be > 0, got {self.spurious_residual_factor}")

    def to_dict(self) -> dict[str, float]:
        """The thresholds as a plain dict (for reports)."""
        return asdict(self)


def classify_attractors(attractors: Sequence[Attractor], rule: ModeRule | None = None) -> str:
    """Mode of one problem from its attractors.

    Args:
        attractors: the problem's attractors (with correctness set).
        rule: thresholds; default `ModeRule()`.

    Returns:
        One of `MODES`.

    Raises:
        ValueError: if an attractor's correctness is unknown (no answer check).
    """
    rule = rule or ModeRule()
    if not attractors:
        return "not_converged"
    if any(a.correct is None for a in attractors):
        raise ValueError("mode classification needs attractor correctness (system.is_correct)")
    correct = [a for a in attractors if a.correct]
    if not correct:
        return "a_no_correct"
    best = min(a.mean_residual for a in correct)
    spurious = [
        a for a in attractors
        if not a.correct and a.kind == "fixed_point"
        and a.basin_fraction >= rule.min_spurious_basin
        and a.mean_residual <= rule.spurious_residual_factor * best
    ]
    if spurious:
        return "b_spurious"
    if sum(a.basin_fraction for a in correct) >= rule.broad_basin:
        return "d_broad"
    return "c_narrow"


def classify(census: Census, rule: ModeRule | None = None) -> str:
    """Mode of one problem from its census (see `classify_attractors`).

    Args:
        census: the problem's census.
        rule: thresholds; default `ModeRule()`.

    Returns:
        One of `MODES`.
    """
    return classify_attractors(census.attractors, rule)


def mode_shares(modes: Iterable[str]) -> dict[str, float]:
    """Fraction of problems per mode (every mode present, summing to 1 unless empty).

    Args:
        modes: mode names, one per problem.

    Returns:
        Dict mode -> share.

    Example:
        >>> mode_shares(["d_broad", "d_broad", "a_no_correct", "c_narrow"])["d_broad"]
        0.5
    """
    modes = list(modes)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown modes {unknown}; valid: {MODES}")
    n = max(len(modes), 1)
    return {m: modes.count(m) / n for m in MODES}

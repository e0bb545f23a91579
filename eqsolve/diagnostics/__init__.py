"""Attractor diagnostics: see the landscape a fixed-point reasoner has learned.

The public entry points, re-exported here from the modules that implement them:

- `run_census` (`eqsolve.diagnostics.census`): many starts per problem, batched; outcomes
  (converged / cycle / oscillating / not converged / diverged), attractors with basin fraction,
  mean residual, correctness and spectral radius;
- `classify`, `mode_shares`, `ModeRule` (`eqsolve.diagnostics.modes`): the landscape modes
  (a) no correct attractor, (b) correct + spurious low-residual attractors, (c) narrow correct
  basin, (d) broad correct basin, plus "not converged";
- `auroc`, `residual_auroc`, `accuracy_vs_residual`, `halting_threshold`
  (`eqsolve.diagnostics.calibration`): the residual as a correctness signal;
- `spectral_radius` (`eqsolve.jacobian`, re-exported): matrix-free local stability;
- cycle / oscillation detection (`eqsolve.diagnostics.orbits`), the census records
  (`eqsolve.diagnostics.records`) and the figures (`eqsolve.diagnostics.plots`).

- `summarize` (census -> JSON report), `write_figures`, `eqr_system` (the EqR reasoner as a
  `FixedPointSystem`) and `run_diagnose`, the body of `eqsolve diagnose`
  (`eqsolve.diagnostics.report`).

Example:
    >>> import torch
    >>> well = FixedPointSystem(
    ...     map=lambda s, x: s - 0.1 * s * (s**2 - 1),
    ...     init_state=lambda n, g: 4 * torch.rand(n, 1, generator=g) - 1.5,
    ...     is_correct=lambda s, t: s[:, 0] > 0)
    >>> run = run_census(well, torch.zeros(3, 1), n_starts=64, max_iter=150, tol=1e-6,
    ...                  stop="abs", generator=torch.Generator().manual_seed(0))
    >>> summarize(run)["mode_shares"]["b_spurious"]
    1.0
"""

from __future__ import annotations

from eqsolve.diagnostics.calibration import (
    accuracy_vs_residual,
    auroc,
    halting_threshold,
    residual_auroc,
    threshold_curve,
)
from eqsolve.diagnostics.census import (
    OUTCOMES,
    Attractor,
    Census,
    CensusRun,
    FixedPointSystem,
    run_census,
)
from eqsolve.diagnostics.modes import MODE_DESCRIPTIONS, MODES, ModeRule, classify, mode_shares
from eqsolve.diagnostics.report import (
    SCHEMA,
    eqr_system,
    merge_runs,
    run_diagnose,
    summarize,
    write_figures,
)
from eqsolve.jacobian import spectral_radius

__all__ = [
    "MODES", "MODE_DESCRIPTIONS", "OUTCOMES", "SCHEMA", "Attractor", "Census", "CensusRun",
    "FixedPointSystem", "ModeRule", "accuracy_vs_residual", "auroc", "classify", "eqr_system",
    "halting_threshold", "merge_runs", "mode_shares", "residual_auroc", "run_census",
    "run_diagnose", "spectral_radius", "summarize", "threshold_curve", "write_figures",
]

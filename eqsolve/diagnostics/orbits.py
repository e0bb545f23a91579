"""Limit cycles and oscillation: what an unconverged start is doing.

A start that did not converge is probed by plain iteration of the map for P steps (a limit
cycle is a property of the map, whatever solver ran before). From the probe trajectory
s_0..s_P and its step sizes |s_{t+1} - s_t| (typical size delta = median over the second half):

- ``cycle`` with period p (2 <= p <= P // 2, smallest such p): the last p states repeat the p
  before them point by point, within `cycle_rtol` x delta;
- ``oscillating``: no exact period, but the residual stopped falling (last step >= `stagnation`
  x first step) and the state revisits an earlier point (two states at least 2 steps apart
  closer than `revisit_rtol` x delta);
- ``diverged``: a non-finite state or step;
- ``not_converged``: anything else (still converging slowly, drifting...).

Long states are compared through a fixed random projection (Johnson-Lindenstrauss: distances
kept within a few per cent), so the probe stores (r, P+1, k) numbers, not whole trajectories.

Example:
    >>> import torch
    >>> flip = lambda s, x: -s  # every start is a 2-cycle
    >>> y, step, _, _ = probe_orbits(flip, torch.ones(3, 2), torch.zeros(3, 1), steps=8)
    >>> outcome, period = classify_orbits(y, step)
    >>> outcome.tolist(), period.tolist()
    (['cycle', 'cycle', 'cycle'], [2, 2, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor


def probe_orbits(
    f: Callable[[Tensor, Tensor], Tensor],
    z: Tensor,
    x: Tensor,
    steps: int,
    proj: Tensor | None = None,
    correct: Callable[[Tensor], Tensor | None] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Plain iteration of `f` from `z` for `steps` steps, recording what cycle detection needs.

    Args:
        f: the map `f(s, x)`.
        z: (r, ...) starting states.
        x: (r, ...) input injection.
        steps: number of map evaluations P.
        proj: optional (n, k) projection of flattened states.
        correct: optional `correct(s) -> (r,) bool` evaluated at every probe state.

    Returns:
        (projected states (r, P+1, k) on CPU, step norms (r, P) on CPU, correctness (r, P+1) or
        None, last state (r, ...)).
    """
    ys, step_norms, oks = [], [], []
    s = z
    for t in range(steps + 1):
        flat = s.reshape(s.shape[0], -1).float()
        ys.append((flat if proj is None else flat @ proj).cpu())
        oks.append(None if correct is None else correct(s))
        if t < steps:
            nxt = f(s, x)
            step_norms.append((nxt - s).reshape(s.shape[0], -1).float().norm(dim=1).cpu())
            s = nxt
    ok = None if oks[0] is None else torch.stack(oks, dim=1)
    return torch.stack(ys, dim=1), torch.stack(step_norms, dim=1), ok, s


def classify_orbits(
    y: Tensor,
    step: Tensor,
    cycle_rtol: float = 1e-2,
    revisit_rtol: float = 0.5,
    stagnation: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """Outcome and period of each probed row (see the module docstring for the rule).

    Args:
        y: (r, P+1, k) probe states.
        step: (r, P) step norms.
        cycle_rtol: period-repeat tolerance relative to the typical step.
        revisit_rtol: revisit distance relative to the typical step.
        stagnation: "residual stopped falling" when the last step is at least this times the
            first.

    Returns:
        (outcome names (r,) object array, periods (r,) int64 with 0 where no cycle).
    """
    r, n_pts, _ = y.shape
    delta = step[:, step.shape[1] // 2:].median(dim=1).values  # typical step, late in the probe
    outcome = np.full(r, "not_converged", dtype=object)
    period = np.zeros(r, dtype=np.int64)
    finite = torch.isfinite(y).all(dim=(1, 2)) & torch.isfinite(step).all(dim=1)
    found = torch.zeros(r, dtype=torch.bool)
    for p in range(2, (n_pts - 1) // 2 + 1):
        # the last period must repeat the one before it, point by point
        gap = (y[:, -p:] - y[:, -2 * p:-p]).norm(dim=2).max(dim=1).values
        hit = finite & ~found & (delta > 0) & (gap <= cycle_rtol * delta)
        period[hit.numpy()] = p
        found |= hit
    outcome[found.numpy()] = "cycle"
    lag = torch.arange(n_pts)
    apart = (lag[None, :] - lag[:, None]).abs() >= 2
    revisit = torch.where(apart, torch.cdist(y, y), torch.inf).flatten(1).min(dim=1).values
    flat_residual = step[:, -1] >= stagnation * step[:, 0]
    osc = finite & ~found & flat_residual & (revisit < revisit_rtol * delta)
    outcome[osc.numpy()] = "oscillating"
    outcome[(~finite).numpy()] = "diverged"
    return outcome, period


def random_projection(n: int, k: int, generator: torch.Generator | None, device: Any) -> Tensor | None:
    """(n, k) Gaussian projection scaled to keep norms on average; None when n <= k.

    Args:
        n: flattened state size.
        k: projected size.
        generator: draws the seed of the projection (reproducible runs).
        device: device of the states.

    Returns:
        The projection matrix, or None when states are short enough to compare directly.
    """
    if n <= k:
        return None
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g) / k**0.5).to(device)

"""Attractor census: where do many starting points of a fixed-point map end up?

For each problem (a row of the input injection `x`), `run_census` draws `n_starts` starting
states, solves all (problem, start) rows as one batched solve, and sorts every start into an
outcome:

- ``converged``: the solver's residual reached `tol`;
- ``cycle``: a periodic orbit of period p >= 2 (the state returns to within `cycle_rtol` x the
  step size of itself after p plain iterations, over a whole period);
- ``oscillating``: the residual stopped falling while the state revisits earlier points (closer
  than half a step) without an exact period within the probe;
- ``diverged``: non-finite or exploding residual;
- ``not_converged``: none of the above within the budget (e.g. still drifting).

Cycle detection probes the *map* with plain iteration from the solver's end state for
`probe_steps` steps, whatever solver was used (a limit cycle is a property of the map); periods
up to `probe_steps // 2` are detected. Long states are compared through a fixed random
projection to `proj_dim` dimensions (distances are preserved up to a few per cent, which the
relative thresholds tolerate).

Converged end states are clustered into attractors by decoded answer (when the system has a
decoder) and by latent distance (single linkage at `eps = max(latent_rtol x median end-state
norm, latent_atol)`); cycles are clustered likewise by their orbits. Each attractor gets its
basin fraction (members / starts), mean residual, correctness, and local stability: the spectral
radius of the Jacobian of the map (of the p-fold map for a p-cycle) at its lowest-residual member.

Example:
    >>> import torch
    >>> well = FixedPointSystem(
    ...     map=lambda s, x: s - 0.1 * s * (s**2 - 1),
    ...     init_state=lambda n, g: 4 * torch.rand(n, 1, generator=g) - 2)
    >>> run = run_census(well, torch.zeros(1, 1), n_starts=32, max_iter=200, tol=1e-6, stop="abs",
    ...                  generator=torch.Generator().manual_seed(0))
    >>> len(run.censuses[0].attractors)
    2
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from eqsolve.diagnostics_spectral import spectral_radius
from eqsolve.solvers import Status, solve

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
    """One attractor of one problem (fixed point or limit cycle), as seen by the starts.

    Attributes:
        kind: "fixed_point" or "cycle".
        period: 1 for a fixed point, p for a p-cycle.
        members: indices of the starts that ended in it.
        basin_fraction: len(members) / n_starts.
        mean_residual: mean end residual (of the solve's `stop` kind) over members.
        correct: majority correctness of members (None without `is_correct`).
        correct_fraction: fraction of members whose answer is correct (None without check).
        spectral_radius: max |eig| of the Jacobian of the (p-fold) map at `representative`.
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


def _answers(system: FixedPointSystem, s: Tensor, target: Any) -> tuple[Tensor | None, Tensor | None]:
    """(decoded answer, correctness) of states `s`, each None when unavailable."""
    answer = system.decode(s) if system.decode is not None else None
    if system.is_correct is None:
        return answer, None
    ok = system.is_correct(s if answer is None else answer, target)
    return answer, torch.as_tensor(ok, dtype=torch.bool).reshape(-1).cpu()


def _probe(system: FixedPointSystem, z: Tensor, x: Tensor, steps: int, proj: Tensor | None,
           target: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Plain iteration from z.

    Returns projected states (r, P+1, k), step norms (r, P), correctness (r, P+1) or None, and
    the last state (r, ...).
    """
    ys, steps_norm, oks = [], [], []
    s = z
    for t in range(steps + 1):
        flat = s.reshape(s.shape[0], -1).float()
        ys.append(flat if proj is None else flat @ proj)
        oks.append(_answers(system, s, target)[1])
        if t < steps:
            nxt = system.map(s, x)
            steps_norm.append((nxt - s).reshape(s.shape[0], -1).float().norm(dim=1))
            s = nxt
    correct = None if oks[0] is None else torch.stack(oks, dim=1)
    return torch.stack(ys, dim=1).cpu(), torch.stack(steps_norm, dim=1).cpu(), correct, s


def _classify_probe(y: Tensor, step: Tensor, cycle_rtol: float, revisit_rtol: float,
                    stagnation: float) -> tuple[np.ndarray, np.ndarray]:
    """Outcome names and periods for probed rows from their trajectories."""
    r, n_pts, _ = y.shape
    p_max = (n_pts - 1) // 2
    delta = step[:, step.shape[1] // 2:].median(dim=1).values  # typical step size, late probe
    outcome = np.full(r, "not_converged", dtype=object)
    period = np.zeros(r, dtype=np.int64)
    finite = torch.isfinite(y).all(dim=(1, 2)) & torch.isfinite(step).all(dim=1)
    found = torch.zeros(r, dtype=torch.bool)
    for p in range(2, p_max + 1):
        # the last period must repeat the one before it, point by point
        gap = (y[:, -p:] - y[:, -2 * p:-p]).norm(dim=2).max(dim=1).values
        hit = finite & ~found & (gap <= cycle_rtol * delta) & (delta > 0)
        period[hit.numpy()] = p
        found |= hit
    outcome[found.numpy()] = "cycle"
    dist = torch.cdist(y, y)  # (r, P+1, P+1)
    lag = torch.arange(n_pts)
    far_in_time = (lag[None, :] - lag[:, None]).abs() >= 2
    revisit = torch.where(far_in_time, dist, torch.inf).flatten(1).min(dim=1).values
    flat_res = step[:, -1] >= stagnation * step[:, 0]
    osc = finite & ~found & flat_res & (revisit < revisit_rtol * delta)
    outcome[osc.numpy()] = "oscillating"
    outcome[(~finite).numpy()] = "diverged"
    return outcome, period


def _cluster(points: Tensor, groups: list[Any], eps: float, orbits: Tensor | None) -> np.ndarray:
    """Single-linkage component labels of `points` (m, n), linking only equal `groups`."""
    m = points.shape[0]
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if orbits is None:
        d = torch.cdist(points.double(), points.double())
    else:  # distance of each end point to the nearest point of the other orbit
        flat_orbits = orbits.reshape(-1, orbits.shape[-1]).double()
        d = torch.cdist(points.double(), flat_orbits).reshape(m, m, -1).min(dim=-1).values
        d = torch.minimum(d, d.transpose(0, 1))
    keys = {k: i for i, k in enumerate(dict.fromkeys(groups))}
    g = torch.tensor([keys[k] for k in groups])
    adj = (d <= eps) & (g[:, None] == g[None, :])
    return connected_components(adj.numpy(), directed=False)[1]


def _repeat_map(f: Callable[[Tensor, Tensor], Tensor], p: int) -> Callable[[Tensor, Tensor], Tensor]:
    def fp(s: Tensor, x: Tensor) -> Tensor:
        for _ in range(p):
            s = f(s, x)
        return s
    return fp


def run_census(
    system: FixedPointSystem,
    x: Tensor,
    target: Tensor | None = None,
    *,
    n_starts: int = 64,
    solver: Any = "fixed_point",
    max_iter: int = 50,
    tol: float = 1e-4,
    stop: str = "rel",
    solver_options: dict[str, Any] | None = None,
    checkpoints: list[int] | None = None,
    probe_steps: int = 16,
    cycle_rtol: float = 1e-2,
    revisit_rtol: float = 0.5,
    stagnation: float = 0.5,
    latent_rtol: float = 0.05,
    latent_atol: float = 1e-3,
    cluster_by: str = "both",
    stability_iters: int = 20,
    stability_method: str = "vjp",
    proj_dim: int = 64,
    keep_states: bool = True,
    generator: torch.Generator | None = None,
) -> CensusRun:
    """Attractor census of every problem in `x` from `n_starts` random starts each.

    Args:
        system: the map, start sampler and optional decoder / answer check.
        x: (N, ...) input injection, one row per problem.
        target: (N, ...) per-problem target passed to `system.is_correct`, or None.
        n_starts: starting points per problem.
        solver: solver name or object for `eqsolve.solvers.solve`.
        max_iter: solver steps per start (the depth budget).
        tol: residual tolerance of a converged start.
        stop: residual kind, "rel" or "abs".
        solver_options: extra keyword options of the solve (solver options, `stall_window`...).
        checkpoints: depths at which residual and correctness are recorded (the solve is split
            into warm-started segments there; exact for plain iteration, a restart of the
            solver's history otherwise). Default: only `max_iter`.
        probe_steps: plain iterations on unconverged starts to detect cycles.
        cycle_rtol: period-p repeat tolerance, relative to the step size.
        revisit_rtol: "revisits an earlier point" when closer than this times the step size.
        stagnation: residual "stopped falling" when its probe end exceeds this times its start.
        latent_rtol: clustering distance relative to the median end-state norm.
        latent_atol: clustering distance floor.
        cluster_by: "answer", "latent" or "both" (answer needs `system.decode`).
        stability_iters: Jacobian products per attractor for the spectral radius (0: skip).
        stability_method: "vjp" or "jvp" (see `spectral_radius`).
        proj_dim: random-projection size for comparing long states along probes.
        keep_states: keep flattened end states (for PCA plots) in each `Census`.
        generator: seeds the starts (and the projection / power-iteration vectors).

    Returns:
        A `CensusRun` with one `Census` per problem.
    """
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be batch-first with at least one problem, got {tuple(x.shape)}")
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    if cluster_by not in ("answer", "latent", "both"):
        raise ValueError(f"cluster_by must be 'answer', 'latent' or 'both', got {cluster_by!r}")
    if probe_steps < 4:
        raise ValueError(f"probe_steps must be >= 4 to see a 2-cycle twice, got {probe_steps}")
    depths = sorted({int(d) for d in (checkpoints or []) if 0 < int(d) < max_iter} | {max_iter})
    if len(depths) > 1 and min(np.diff(depths)) < 1:
        raise ValueError(f"checkpoints must be distinct depths, got {depths}")
    n_prob, S = x.shape[0], n_starts
    x_rows = x.repeat_interleave(S, dim=0)
    t_rows = None if target is None else target.repeat_interleave(S, dim=0)
    z = system.init_state(n_prob * S, generator)
    if z.shape[0] != n_prob * S:
        raise ValueError(f"init_state({n_prob * S}) returned {z.shape[0]} rows")
    # the census judges stalls and divergence itself (a start escaping an unstable point
    # first grows its residual), so the solve's own early stops are off unless asked for
    opts = {"stall_window": None, "diverge_factor": None, **(solver_options or {})}

    nfe = torch.zeros(n_prob * S, dtype=torch.int64)
    traces, ck_nfe, ck_res, ck_ok = [], [], [], []
    done_before = torch.zeros(n_prob * S, dtype=torch.bool)
    # The solve returns each row's best iterate; cycles and warm starts need the latest one,
    # so the map records its last output per row (row ids ride along as a sliced argument).
    latest = z.detach().clone()
    row_ids = torch.arange(n_prob * S, device=z.device)

    def tracked_map(s: Tensor, x_in: Tensor, ids: Tensor) -> Tensor:
        out = system.map(s, x_in)
        latest[ids] = out.detach().to(latest.dtype)
        return out

    prev = 0
    for depth in depths:
        with torch.no_grad():  # the census never needs a graph; stability builds its own
            # after a segment, z is already the next iterate: one step fewer keeps the depth
            steps = depth - prev - (1 if prev else 0)
            sol = solve(tracked_map, z, x_rows, row_ids, solver=solver, tol=tol, stop=stop,
                        max_iter=steps, trace=True, **opts)
            ck_ok.append(_answers(system, sol.z, t_rows)[1])
        conv_dev = sol.converged
        # converged rows keep their fixed point; the others continue where they were
        z = torch.where(conv_dev.view(-1, *([1] * (z.dim() - 1))), sol.z, latest)
        prev = depth
        nfe += sol.nfe.cpu()
        tr = sol.trace.cpu().float()
        tr[done_before] = float("nan")  # rows finished in an earlier segment add nothing
        traces.append(tr if not traces else tr[:, 1:])
        done_before |= sol.converged.cpu()
        ck_nfe.append(nfe.clone())
        ck_res.append(sol.residual.detach().cpu().float())
    z = sol.z  # end state of each start: the solver's answer (best iterate)
    with torch.no_grad():
        answer, correct = _answers(system, z, t_rows)
    residual = sol.residual.detach().cpu().double()
    status = sol.status.cpu()

    # outcomes: converged from the solve, the rest from a probe of the map
    outcome = np.full(n_prob * S, "not_converged", dtype=object)
    period = np.zeros(n_prob * S, dtype=np.int64)
    conv = sol.converged.cpu()
    outcome[conv.numpy()] = "converged"
    period[conv.numpy()] = 1
    bad = (status == int(Status.NONFINITE)) | (status == int(Status.DIVERGED))
    outcome[bad.numpy()] = "diverged"
    flat_dim = z[0].numel()
    proj = None
    if flat_dim > proj_dim:  # fixed random projection, reproducible from the generator
        pg = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        proj = (torch.randn(flat_dim, proj_dim, generator=pg) / proj_dim**0.5).to(z.device)
    probe_rows = (~conv & ~bad).nonzero().flatten()
    orbit: dict[int, Tensor] = {}
    probe_ok: dict[int, bool] = {}
    probe_nfe = 0
    if probe_rows.numel():
        dev_rows = probe_rows.to(z.device)
        with torch.no_grad():
            y, step, p_ok, s_end = _probe(system, latest[dev_rows], x_rows[dev_rows], probe_steps, proj,
                                   None if t_rows is None else t_rows[dev_rows])
        probe_nfe += probe_rows.numel() * probe_steps
        p_out, p_per = _classify_probe(y, step, cycle_rtol, revisit_rtol, stagnation)
        on_orbit = torch.as_tensor(p_out == "cycle")
        if on_orbit.any():  # a cycle's end state and residual are taken on its orbit
            rows_c = dev_rows[on_orbit.to(z.device)]
            z = z.clone()
            z[rows_c] = s_end[on_orbit.to(z.device)].to(z.dtype)
            last = step[on_orbit, -1].double()
            residual[rows_c.cpu()] = last if stop == "abs" else last / (
                z[rows_c].reshape(rows_c.numel(), -1).double().norm(dim=1).cpu() + 1e-8)
        for j, row in enumerate(probe_rows.tolist()):
            outcome[row], period[row] = p_out[j], p_per[j]
            if p_out[j] == "cycle":
                orbit[row] = y[j, -p_per[j]:]
                if p_ok is not None:
                    probe_ok[row] = bool(p_ok[j, -p_per[j]:].all())
                    correct[row] = probe_ok[row]

    flat = z.detach().reshape(n_prob * S, -1).float().cpu()
    norms = flat.norm(dim=1)
    censuses: list[Census] = []
    reps: list[tuple[int, int, Attractor]] = []  # (row, period, attractor) for stability
    for i in range(n_prob):
        rows = np.arange(i * S, (i + 1) * S)
        label = np.full(S, -1, dtype=np.int64)
        eps = max(latent_rtol * float(norms[rows].median()), latent_atol)
        attractors: list[Attractor] = []
        for kind in ("fixed_point", "cycle"):
            sel = rows[outcome[rows] == ("converged" if kind == "fixed_point" else "cycle")]
            if sel.size == 0:
                continue
            use_answer = cluster_by != "latent" and answer is not None and kind == "fixed_point"
            groups = ([answer[r].cpu().numpy().tobytes() for r in sel] if use_answer
                      else [int(period[r]) for r in sel])
            if cluster_by == "answer" and use_answer:
                comp = np.unique(groups, return_inverse=True)[1]
            elif kind == "fixed_point":
                comp = _cluster(flat[sel], groups, eps, None)
            else:
                pts = flat[sel] if proj is None else flat[sel] @ proj.cpu()
                orb = [orbit[r] for r in sel]
                width = max(o.shape[0] for o in orb)
                orb_t = torch.stack([torch.cat([o, o[-1:].expand(width - o.shape[0], -1)]) for o in orb])
                comp = _cluster(pts, groups, eps, orb_t)
            for c in np.unique(comp):
                members = sel[comp == c]
                rep = int(members[np.argmin(residual[members].numpy())])
                if correct is None:
                    ok_frac = None
                elif kind == "cycle" and probe_ok:
                    ok_frac = float(np.mean([probe_ok[r] for r in members]))
                else:
                    ok_frac = float(correct[members].double().mean())
                attractors.append(Attractor(
                    kind=kind, period=int(period[rep]), members=members - i * S,
                    basin_fraction=members.size / S,
                    mean_residual=float(residual[members].mean()),
                    correct=None if ok_frac is None else ok_frac >= 0.5,
                    correct_fraction=ok_frac, spectral_radius=None, representative=rep - i * S))
        attractors.sort(key=lambda a: (-a.basin_fraction, a.mean_residual))
        for k, a in enumerate(attractors):
            label[a.members] = k
            reps.append((i * S + a.representative, a.period, a))
        censuses.append(Census(
            attractors=attractors, outcome=outcome[rows], period=period[rows], label=label,
            residual=residual[rows].numpy(), nfe=nfe[rows].numpy(),
            correct=None if correct is None else correct[rows].numpy(),
            trace=torch.cat(traces, dim=1)[rows].numpy(),
            end_states=flat[rows].clone() if keep_states else None))

    if stability_iters > 0 and reps:
        for p in sorted({p for _, p, _ in reps}):
            group = [(r, a) for r, q, a in reps if q == p]
            idx = torch.tensor([r for r, _ in group], device=z.device)
            rho = spectral_radius(_repeat_map(system.map, p), z[idx].detach(), x_rows[idx],
                                  n_iter=stability_iters, method=stability_method,
                                  generator=generator)
            probe_nfe += len(group) * (stability_iters + 1) * p
            for (_, a), v in zip(group, rho.tolist()):
                a.spectral_radius = float(v)

    K = len(depths)
    return CensusRun(
        censuses=censuses,
        checkpoint_nfe=torch.stack(ck_nfe).reshape(K, n_prob, S).numpy(),
        checkpoint_residual=torch.stack(ck_res).reshape(K, n_prob, S).numpy(),
        checkpoint_correct=None if ck_ok[0] is None else torch.stack(ck_ok).reshape(K, n_prob, S).numpy(),
        probe_nfe=probe_nfe,
        settings={"n_starts": S, "max_iter": max_iter, "tol": tol, "stop": stop,
                  "checkpoints": depths, "probe_steps": probe_steps, "latent_rtol": latent_rtol,
                  "latent_atol": latent_atol, "cycle_rtol": cycle_rtol, "cluster_by": cluster_by},
    )

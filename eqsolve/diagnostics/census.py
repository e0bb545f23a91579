"""Attractor census: where do many starting points of a fixed-point map end up?

For each problem (a row of the input injection `x`), `run_census` draws `n_starts` starting
states, solves all (problem, start) rows as one batched solve, and sorts every start into an
outcome:

- ``converged``: the solver's residual reached `tol`;
- ``cycle``, ``oscillating``, ``diverged`` or ``not_converged``: decided for the other starts by
  probing the map itself with plain iteration (`eqsolve.diagnostics.orbits`), so a limit cycle
  (with its period) or an oscillation is reported as such, not as "not converged".

Converged end states are clustered into attractors by decoded answer (when the system has a
decoder) and by latent distance (single linkage at `eps = max(latent_rtol x median end-state
norm, latent_atol)`); cycles and oscillations are clustered likewise by their orbits (an
oscillating start whose decoded answer stays put is, for a reasoner, an attractor too, only not
a low-residual one). Each attractor gets its basin fraction (members / starts), mean residual
(on the orbit for cycles and oscillations), correctness (at every orbit point), and local
stability: the spectral radius of the Jacobian of the map (of the p-fold map for a p-cycle) at
its lowest-residual member.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqsolve.diagnostics.orbits import classify_orbits, probe_orbits, random_projection
from eqsolve.diagnostics.records import OUTCOMES, Attractor, Census, CensusRun, FixedPointSystem
from eqsolve.jacobian import spectral_radius
from eqsolve.residual import relative_residual
from eqsolve.solvers import Status, solve

__all__ = ["OUTCOMES", "Attractor", "Census", "CensusRun", "FixedPointSystem", "run_census"]


def _answers(system: FixedPointSystem, s: Tensor, target: Any) -> tuple[Tensor | None, Tensor | None]:
    """(decoded answer, correctness on CPU) of states `s`, each None when unavailable."""
    answer = system.decode(s) if system.decode is not None else None
    if system.is_correct is None:
        return answer, None
    ok = system.is_correct(s if answer is None else answer, target)
    return answer, torch.as_tensor(ok, dtype=torch.bool).reshape(-1).cpu()


@dataclass
class _Rows:
    """Per-row state of a census while it is being built (all N * S rows, problem-major)."""

    z: Tensor  # end state (best iterate; on the orbit for cycles)
    latest: Tensor  # last map output (where plain iteration would continue)
    residual: Tensor  # (R,) float64 CPU, stop kind
    nfe: Tensor  # (R,) int64 CPU
    trace: Tensor  # (R, T) CPU
    converged: Tensor  # (R,) bool CPU
    diverged: Tensor  # (R,) bool CPU
    answer: Tensor | None
    correct: Tensor | None  # (R,) bool CPU
    checkpoints: tuple[list, list, list]  # per checkpoint: nfe, residual, correctness


def _solve_in_segments(system: FixedPointSystem, z: Tensor, x_rows: Tensor, t_rows: Any,
                       depths: list[int], solve_kwargs: dict[str, Any]) -> _Rows:
    """One batched solve of every row, split at the checkpoint depths."""
    n_rows = z.shape[0]
    nfe = torch.zeros(n_rows, dtype=torch.int64)
    traces, ck_nfe, ck_res, ck_ok = [], [], [], []
    done_before = torch.zeros(n_rows, dtype=torch.bool)
    # The solve returns each row's best iterate; cycles and warm starts need the latest one,
    # so the map records its last output per row (row ids ride along as a sliced argument).
    latest = z.detach().clone()

    def tracked_map(s: Tensor, x_in: Tensor, ids: Tensor) -> Tensor:
        out = system.map(s, x_in)
        latest[ids] = out.detach().to(latest.dtype)
        return out

    row_ids = torch.arange(n_rows, device=z.device)
    prev = 0
    for depth in depths:
        # after a segment, z is already the next iterate: one step fewer keeps the depth
        steps = depth - prev - (1 if prev else 0)
        with torch.no_grad():  # the census never needs a graph; stability builds its own
            sol = solve(tracked_map, z, x_rows, row_ids, max_iter=steps, trace=True,
                        **solve_kwargs)
            ck_ok.append(_answers(system, sol.z, t_rows)[1])
        # converged rows keep their fixed point; the others continue where they were
        z = torch.where(sol.converged.view(-1, *([1] * (z.dim() - 1))), sol.z, latest)
        prev = depth
        nfe += sol.nfe.cpu()
        tr = sol.trace.cpu().float()
        tr[done_before] = float("nan")  # rows finished in an earlier segment add nothing
        traces.append(tr)  # segments continue exactly: z_0..z_d1, then z_(d1+1)..z_d2
        done_before |= sol.converged.cpu()
        ck_nfe.append(nfe.clone())
        ck_res.append(sol.residual.detach().cpu().float())
    with torch.no_grad():
        answer, correct = _answers(system, sol.z, t_rows)
    status = sol.status.cpu()
    return _Rows(
        z=sol.z.detach(), latest=latest, residual=sol.residual.detach().cpu().double(),
        nfe=nfe, trace=torch.cat(traces, dim=1), converged=sol.converged.cpu(),
        diverged=(status == int(Status.NONFINITE)) | (status == int(Status.DIVERGED)),
        answer=answer, correct=correct, checkpoints=(ck_nfe, ck_res, ck_ok))


@dataclass
class _Probe:
    """Outcome, period and (for cycles) orbit of every row after probing the unconverged."""

    outcome: np.ndarray
    period: np.ndarray
    orbit: dict[int, Tensor]  # row -> (p, k) projected orbit points
    orbit_correct: dict[int, bool]  # row -> all orbit points decode correctly
    proj: Tensor | None
    nfe: int


def _probe_unconverged(system: FixedPointSystem, rows: _Rows, x_rows: Tensor, t_rows: Any,
                       stop: str, options: dict[str, Any], generator: torch.Generator | None) -> _Probe:
    """Sorts unconverged rows into cycle / oscillating / ...; moves those onto their orbit."""
    n_rows = rows.z.shape[0]
    outcome = np.full(n_rows, "not_converged", dtype=object)
    period = np.zeros(n_rows, dtype=np.int64)
    outcome[rows.converged.numpy()] = "converged"
    period[rows.converged.numpy()] = 1
    outcome[rows.diverged.numpy()] = "diverged"
    proj = random_projection(rows.z[0].numel(), options["proj_dim"], generator, rows.z.device)
    out = _Probe(outcome, period, {}, {}, proj, 0)
    todo = (~rows.converged & ~rows.diverged).nonzero().flatten()
    if todo.numel() == 0:
        return out
    dev = todo.to(rows.z.device)
    target = None if t_rows is None else t_rows[dev]
    check = None if system.is_correct is None else (lambda s: _answers(system, s, target)[1])
    with torch.no_grad():
        y, step, ok, s_end = probe_orbits(system.map, rows.latest[dev], x_rows[dev],
                                          options["probe_steps"], proj, check)
    out.nfe = todo.numel() * options["probe_steps"]
    p_out, p_per = classify_orbits(y, step, options["cycle_rtol"], options["revisit_rtol"],
                                   options["stagnation"])
    half = options["probe_steps"] // 2
    moved = []
    for j, row in enumerate(todo.tolist()):
        outcome[row], period[row] = p_out[j], p_per[j]
        if p_out[j] not in ("cycle", "oscillating"):
            continue
        # an orbit is its last period (cycle) or the second half of the probe (oscillation);
        # its end state, residual and correctness are taken on the orbit
        first = -p_per[j] if p_out[j] == "cycle" else half
        out.orbit[row] = y[j, first:]
        rows.z[row] = s_end[j].to(rows.z.dtype)
        moved.append(j)
        size = float(step[j, -1] if p_out[j] == "cycle" else step[j, half:].median())
        # relative residual of an orbit point, with |s| standing in for |f(s)| (same orbit)
        rows.residual[row] = size if stop == "abs" else relative_residual(size, float(s_end[j].norm()))
        if ok is not None:
            out.orbit_correct[row] = bool(ok[j, first:].all())
            rows.correct[row] = out.orbit_correct[row]
    if moved and rows.answer is not None:
        with torch.no_grad():
            idx = torch.tensor(moved, device=rows.z.device)
            rows.answer[dev[idx]] = system.decode(s_end[idx]).to(rows.answer.dtype)
    return out


def _cluster(points: Tensor, groups: list[Any], eps: float, orbits: Tensor | None) -> np.ndarray:
    """Single-linkage component labels of `points` (m, n), linking only equal `groups`.

    With `orbits` (m, p, n), the distance of two rows is that of each end point to the nearest
    point of the other row's orbit.
    """
    m = points.shape[0]
    if orbits is None:
        d = torch.cdist(points.double(), points.double())
    else:
        flat_orbits = orbits.reshape(-1, orbits.shape[-1]).double()
        d = torch.cdist(points.double(), flat_orbits).reshape(m, m, -1).min(dim=-1).values
        d = torch.minimum(d, d.transpose(0, 1))
    keys = {k: i for i, k in enumerate(dict.fromkeys(groups))}
    g = torch.tensor([keys[k] for k in groups])
    adj = ((d <= eps) & (g[:, None] == g[None, :])).numpy()
    return _components(adj | adj.T)


def _components(adj: np.ndarray) -> np.ndarray:
    """Connected-component labels 0..k-1 of a symmetric boolean adjacency with self-loops.

    Label propagation (each node takes the smallest label among its neighbours) converges in
    at most diameter + 1 sweeps; m is a census's start count, so this stays small.
    """
    m = adj.shape[0]
    labels = np.arange(m)
    while True:
        new = np.where(adj, labels[None, :], m).min(axis=1)
        if np.array_equal(new, labels):
            return np.unique(labels, return_inverse=True)[1]
        labels = new


# attractor kind <- start outcome; an oscillation is a bounded, revisiting orbit without a period
_KINDS = (("fixed_point", "converged"), ("cycle", "cycle"), ("oscillation", "oscillating"))


def _attractors_of_problem(rows: _Rows, probe: _Probe, sel_rows: np.ndarray, flat: Tensor,
                           eps: float, cluster_by: str) -> list[Attractor]:
    """Clusters one problem's converged and cycling starts into attractors."""
    first, n_starts = int(sel_rows[0]), sel_rows.size
    attractors = []
    for kind, outcome in _KINDS:
        sel = sel_rows[probe.outcome[sel_rows] == outcome]
        if sel.size == 0:
            continue
        by_answer = cluster_by != "latent" and rows.answer is not None and kind != "cycle"
        groups = ([rows.answer[r].cpu().numpy().tobytes() for r in sel] if by_answer
                  else [int(probe.period[r]) for r in sel])
        if by_answer and cluster_by == "answer":
            comp = np.unique(groups, return_inverse=True)[1]
        elif kind == "fixed_point":
            comp = _cluster(flat[sel], groups, eps, None)
        else:
            pts = flat[sel] if probe.proj is None else flat[sel] @ probe.proj.cpu()
            orbits = [probe.orbit[r] for r in sel]
            width = max(o.shape[0] for o in orbits)  # pad short orbits with their last point
            padded = torch.stack([torch.cat([o, o[-1:].expand(width - o.shape[0], -1)])
                                  for o in orbits])
            comp = _cluster(pts, groups, eps, padded)
        for c in np.unique(comp):
            members = sel[comp == c]
            rep = int(members[np.argmin(rows.residual[members].numpy())])
            ok_frac = None
            if rows.correct is not None:
                ok_frac = float(rows.correct[members].double().mean())
            attractors.append(Attractor(
                kind=kind, period=int(probe.period[rep]), members=members - first,
                basin_fraction=members.size / n_starts,
                mean_residual=float(rows.residual[members].mean()),
                correct=None if ok_frac is None else ok_frac >= 0.5, correct_fraction=ok_frac,
                spectral_radius=None, representative=rep - first))
    attractors.sort(key=lambda a: (-a.basin_fraction, a.mean_residual))
    return attractors


def _repeat_map(f: Callable[[Tensor, Tensor], Tensor], p: int) -> Callable[[Tensor, Tensor], Tensor]:
    """The p-fold composition s -> f(...f(s, x)..., x)."""
    def fp(s: Tensor, x: Tensor) -> Tensor:
        for _ in range(p):
            s = f(s, x)
        return s
    return fp


def _attach_stability(system: FixedPointSystem, z: Tensor, x_rows: Tensor,
                      reps: list[tuple[int, Attractor]], n_iter: int, method: str,
                      generator: torch.Generator | None) -> int:
    """Sets each attractor's spectral radius (of the p-fold map for p-cycles); returns NFE."""
    nfe = 0
    for p in sorted({a.period for _, a in reps}):
        group = [(r, a) for r, a in reps if a.period == p]
        idx = torch.tensor([r for r, _ in group], device=z.device)
        rho = spectral_radius(_repeat_map(system.map, p), z[idx], x_rows[idx], n_iter=n_iter,
                              method=method, generator=generator)
        nfe += len(group) * (n_iter + 1) * p
        for (_, a), v in zip(group, rho.tolist()):
            a.spectral_radius = float(v)
    return nfe


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
    stagnation: float = 0.8,
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
        max_iter: depth budget: the solve sees iterates z_0 .. z_max_iter (max_iter + 1 NFE).
        tol: residual tolerance of a converged start.
        stop: residual kind, "rel" or "abs".
        solver_options: extra keyword options of the solve (solver options, `stall_window`,
            `diverge_factor`; the last two are off by default: a start escaping an unstable
            point first grows its residual, which is not divergence).
        checkpoints: depths at which residual and correctness are recorded (the solve is split
            into warm-started segments there; exact for plain iteration, a restart of the
            solver's history otherwise). Default: only `max_iter`.
        probe_steps: plain iterations on unconverged starts to detect cycles (periods up to
            probe_steps // 2).
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
    n_prob, n_rows = x.shape[0], x.shape[0] * n_starts
    x_rows = x.repeat_interleave(n_starts, dim=0)
    t_rows = None if target is None else target.repeat_interleave(n_starts, dim=0)
    z0 = system.init_state(n_rows, generator)
    if z0.shape[0] != n_rows:
        raise ValueError(f"init_state({n_rows}) returned {z0.shape[0]} rows")

    solve_kwargs = {"solver": solver, "tol": tol, "stop": stop, "stall_window": None,
                    "diverge_factor": None, **(solver_options or {})}
    rows = _solve_in_segments(system, z0, x_rows, t_rows, depths, solve_kwargs)
    options = {"probe_steps": probe_steps, "cycle_rtol": cycle_rtol, "proj_dim": proj_dim,
               "revisit_rtol": revisit_rtol, "stagnation": stagnation}
    probe = _probe_unconverged(system, rows, x_rows, t_rows, stop, options, generator)

    flat = rows.z.reshape(n_rows, -1).float().cpu()
    norms = flat.norm(dim=1)
    censuses, reps = [], []
    for i in range(n_prob):
        sel = np.arange(i * n_starts, (i + 1) * n_starts)
        eps = max(latent_rtol * float(norms[sel].median()), latent_atol)
        attractors = _attractors_of_problem(rows, probe, sel, flat, eps, cluster_by)
        label = np.full(n_starts, -1, dtype=np.int64)
        for k, a in enumerate(attractors):
            label[a.members] = k
            if a.kind != "oscillation":  # no local stability for an aperiodic orbit
                reps.append((i * n_starts + a.representative, a))
        censuses.append(Census(
            attractors=attractors, outcome=probe.outcome[sel], period=probe.period[sel],
            label=label, residual=rows.residual[sel].numpy(), nfe=rows.nfe[sel].numpy(),
            correct=None if rows.correct is None else rows.correct[sel].numpy(),
            trace=rows.trace[sel].numpy(), end_states=flat[sel].clone() if keep_states else None))

    extra = probe.nfe
    if stability_iters > 0 and reps:
        extra += _attach_stability(system, rows.z, x_rows, reps, stability_iters,
                                   stability_method, generator)
    ck_nfe, ck_res, ck_ok = rows.checkpoints
    shape = (len(depths), n_prob, n_starts)
    return CensusRun(
        censuses=censuses,
        checkpoint_nfe=torch.stack(ck_nfe).reshape(shape).numpy(),
        checkpoint_residual=torch.stack(ck_res).reshape(shape).numpy(),
        checkpoint_correct=None if ck_ok[0] is None else torch.stack(ck_ok).reshape(shape).numpy(),
        probe_nfe=extra,
        settings={"n_starts": n_starts, "max_iter": max_iter, "tol": tol, "stop": stop,
                  "checkpoints": depths, "probe_steps": probe_steps, "latent_rtol": latent_rtol,
                  "latent_atol": latent_atol, "cycle_rtol": cycle_rtol, "cluster_by": cluster_by},
    )

"""The report of ``eqsolve diagnose``: census -> JSON, figures, and the command's body.

:func:`summarize` turns a census run into the JSON report (modes, calibration, attractors),
:func:`write_figures` draws it, :func:`eqr_system` wraps an EqR reasoner as a
:class:`~eqsolve.diagnostics.census.FixedPointSystem` and :func:`run_diagnose` is the body of
``eqsolve diagnose``.

The worked example is in :mod:`eqsolve.diagnostics`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqsolve.diagnostics.calibration import (
    accuracy_vs_residual,
    halting_threshold,
    residual_auroc,
    threshold_curve,
)
from eqsolve.diagnostics.census import (
    OUTCOMES,
    CensusRun,
    FixedPointSystem,
    run_census,
)
from eqsolve.diagnostics.modes import MODE_DESCRIPTIONS, ModeRule, classify, mode_shares

__all__ = ["SCHEMA", "eqr_system", "merge_runs", "run_diagnose", "summarize", "write_figures"]

SCHEMA = "eqsolve.diagnostics/1"
log = logging.getLogger(__name__)


def merge_runs(runs: list[CensusRun]) -> CensusRun:
    """Concatenate census runs over disjoint problem chunks (same settings and checkpoints).

    Args:
        runs: runs in problem order.

    Returns:
        One `CensusRun` covering all problems.
    """
    if not runs:
        raise ValueError("merge_runs needs at least one run")
    ok = None if runs[0].checkpoint_correct is None else np.concatenate(
        [r.checkpoint_correct for r in runs], axis=1)
    return CensusRun(
        censuses=[c for r in runs for c in r.censuses],
        checkpoint_nfe=np.concatenate([r.checkpoint_nfe for r in runs], axis=1),
        checkpoint_residual=np.concatenate([r.checkpoint_residual for r in runs], axis=1),
        checkpoint_correct=ok,
        probe_nfe=sum(r.probe_nfe for r in runs),
        settings=runs[0].settings,
    )


def _finite(residual: np.ndarray) -> np.ndarray:
    """Residuals with NaN/inf (diverged starts) replaced by a value above every finite one."""
    r = np.asarray(residual, dtype=np.float64).copy()
    bad = ~np.isfinite(r)
    if bad.any():
        top = r[~bad].max() if (~bad).any() else 1.0
        r[bad] = 10.0 * max(top, 1e-30)
    return r


def _signal(residual: np.ndarray, correct: np.ndarray, target_accuracy: float) -> dict[str, Any]:
    """AUROC, binned accuracy and implied halting threshold of one residual/correct set."""
    r = _finite(residual)
    out: dict[str, Any] = {"n": int(r.size), "accuracy": float(np.mean(correct)),
                           "auroc": residual_auroc(r, correct)}
    out["bins"] = accuracy_vs_residual(r, correct, n_bins=min(10, max(r.size // 5, 1)))
    out["halting"] = halting_threshold(r, correct, target_accuracy)
    # calibration of "residual <= t => correct": accuracy / coverage at <= 20 thresholds
    curve = threshold_curve(r, correct)
    keep = np.unique(np.linspace(0, len(curve["threshold"]) - 1, 20).round().astype(int))
    out["calibration"] = {k: [v[i] for i in keep] for k, v in curve.items()}
    return out


def summarize(run: CensusRun, rule: ModeRule | None = None,
              target_accuracy: float = 0.95) -> dict[str, Any]:
    """JSON-ready report of a census run: modes, attractors, residual signal, depth curve.

    Args:
        run: the census (with correctness for modes and the residual signal).
        rule: mode thresholds (default `ModeRule()`).
        target_accuracy: accuracy that the reported halting threshold must reach.

    Returns:
        Dict with `schema`, `settings`, `mode_rule`, `n_problems`, `modes`, `mode_shares`,
        `outcomes`, `problems` (per-problem census summaries), `stability`, `nfe`, and, with
        correctness, `residual_signal` (per start and per problem) and `depth`.
    """
    rule = rule or ModeRule()
    has_check = run.censuses[0].correct is not None
    modes = [classify(c, rule) for c in run.censuses] if has_check else None
    outcomes = np.concatenate([c.outcome for c in run.censuses])
    rhos = {"correct": [], "incorrect": [], "cycle": []}
    for c in run.censuses:
        for a in c.attractors:
            if a.spectral_radius is not None:
                key = "cycle" if a.kind == "cycle" else ("correct" if a.correct else "incorrect")
                rhos[key].append(a.spectral_radius)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "settings": dict(run.settings),
        "mode_rule": rule.to_dict(),
        "mode_descriptions": MODE_DESCRIPTIONS,
        "n_problems": len(run.censuses),
        "modes": modes,
        "mode_shares": mode_shares(modes) if modes is not None else None,
        "outcomes": {o: float(np.mean(outcomes == o)) for o in OUTCOMES},
        "attractors_per_problem": float(np.mean([len(c.attractors) for c in run.censuses])),
        "stability": {
            **{f"spectral_radius_{k}_mean": (float(np.mean(v)) if v else None)
               for k, v in rhos.items()},
            "stable_fraction": (float(np.mean([v < 1.0 for v in sum(rhos.values(), [])]))
                                if any(rhos.values()) else None),
        },
        "nfe": {"solve_total": int(sum(int(c.nfe.sum()) for c in run.censuses)),
                "diagnostic_overhead": int(run.probe_nfe)},
        "problems": [{"index": i, "mode": None if modes is None else modes[i], **c.to_dict()}
                     for i, c in enumerate(run.censuses)],
    }
    if not has_check:
        return report
    res = np.concatenate([c.residual for c in run.censuses])
    ok = np.concatenate([c.correct for c in run.censuses])
    best = [int(np.argmin(_finite(c.residual))) for c in run.censuses]
    best_res = np.array([c.residual[b] for c, b in zip(run.censuses, best)])
    best_ok = np.array([c.correct[b] for c, b in zip(run.censuses, best)])
    report["residual_signal"] = {
        "per_start": _signal(res, ok, target_accuracy),
        "per_problem_min_residual": _signal(best_res, best_ok, target_accuracy),
        "accuracy_any_start": float(np.mean([c.correct.any() for c in run.censuses])),
    }
    depth = []
    for k, d in enumerate(run.settings.get("checkpoints", [])):
        r_k, ok_k = run.checkpoint_residual[k].reshape(-1), run.checkpoint_correct[k].reshape(-1)
        depth.append({"depth": int(d), "nfe_mean": float(run.checkpoint_nfe[k].mean()),
                      "residual_median": float(np.median(_finite(r_k))),
                      "accuracy": float(ok_k.mean()), "auroc": residual_auroc(_finite(r_k), ok_k)})
    report["depth"] = depth
    return report


def write_figures(run: CensusRun, modes: list[str] | None, run_dir: str | Path) -> dict[str, str]:
    """Write the four diagnostic figures into `run_dir`.

    Args:
        run: the census.
        modes: per-problem modes (None: no correctness, so only traces and PCA are drawn).
        run_dir: output folder.

    Returns:
        Dict figure name -> file path.
    """
    from eqsolve.diagnostics import plots

    run_dir = Path(run_dir)
    out = {"residual_traces": plots.plot_residual_traces(run, run_dir / "residual_traces.png")}
    if run.censuses[0].end_states is not None:
        out["pca_end_states"] = plots.plot_pca_end_states(run, run_dir / "pca_end_states.png")
    if modes is not None:
        out["accuracy_vs_residual"] = plots.plot_accuracy_vs_residual(
            run, run_dir / "accuracy_vs_residual.png")
        out["basin_fractions"] = plots.plot_basin_fractions(run, modes,
                                                            run_dir / "basin_fractions.png")
    return {k: str(v) for k, v in out.items()}


def eqr_system(model: torch.nn.Module, noise: float = 0.0, task: Any = "sudoku-extreme") -> FixedPointSystem:
    """The EqR reasoner as a `FixedPointSystem` (state (B, 2, L, d), answer in the task's space).

    Args:
        model: an `eqsolve.models.eqr.EqR` (anything with `map`, `init_state`, `decode`).
        noise: path-noise scale inside the map (0: deterministic, as a census needs).
        task: task name or object; its `predict` decodes answers (Sudoku: digits).

    Returns:
        A system whose `is_correct(predictions, answers)` compares with the (N, L) answers.
    """
    from eqsolve.tasks.base import get_task

    return FixedPointSystem(
        map=lambda s, x: model.map(s, x, noise=noise),
        init_state=lambda n, g: model.init_state(n, generator=g),
        decode=get_task(task).predictor(model),
        is_correct=lambda digits, answers: (digits == answers).all(dim=1),
    )


def _opt(node: Any, key: str, default: Any) -> Any:
    """`node.key` when present and not None, else `default` (configs may lack newer keys)."""
    value = node.get(key, None) if hasattr(node, "get") else getattr(node, key, None)
    return default if value is None else value


def run_diagnose(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """`eqsolve diagnose`: census of the reasoner on a puzzle subset; JSON report + figures.

    Reads `cfg.checkpoint`, `cfg.task`, `cfg.solver` (`name`, `tol`, `stop`, `options`),
    `cfg.seed`, `cfg.device` and `cfg.diagnose` (`starts` or `breadth`, `depth`, `limit`,
    `checkpoints`, `probe_steps`, `spectral_iters`, `latent_rtol`, `tol`, `target_accuracy`,
    `min_spurious_basin`, `spurious_residual_factor`, `broad_basin`, `batch_rows`, `threads`).
    A solver `tol` of 0 (the bench default: never stop early) would make nothing "converge",
    so the census then uses `diagnose.tol` (default 1e-2, relative residual).

    Args:
        cfg: composed `config_diagnose` config.
        run_dir: existing run folder; `diagnostics.json` and PNG figures are written there.

    Returns:
        Small dict of summary numbers (mode shares, AUROC, accuracy, figure paths).
    """
    from eqsolve._io import atomic_write_json
    from eqsolve.bench.grid import load_model, load_puzzles
    from eqsolve.runs import progress_bar

    run_dir = Path(run_dir)
    d = cfg.diagnose
    for key, flag in (("starts", "--starts"), ("depth", "--depth"), ("batch_rows", None), ("threads", None)):
        value = _opt(d, key, 1)
        if value is not None and int(value) < 1:  # checked before any work (starts=0 divided by zero)
            name = f"{flag} {value} (diagnose.{key})" if flag else f"diagnose.{key}={value}"
            raise ValueError(f"{name}: must be an integer >= 1")
    torch.set_num_threads(int(_opt(d, "threads", 2)))
    t0, cpu0 = time.perf_counter(), time.process_time()
    model = load_model(cfg)
    limit = _opt(cfg.task, "limit", _opt(d, "limit", 8))
    data = load_puzzles(cfg, int(limit))
    starts = int(_opt(d, "starts", _opt(d, "breadth", 16)))
    depth = int(_opt(d, "depth", _opt(cfg.solver, "max_iter", 16)))
    tol = float(cfg.solver.tol) if float(cfg.solver.tol or 0) > 0 else float(_opt(d, "tol", 1e-2))
    rule = ModeRule(min_spurious_basin=float(_opt(d, "min_spurious_basin", 0.05)),
                    spurious_residual_factor=float(_opt(d, "spurious_residual_factor", 10.0)),
                    broad_basin=float(_opt(d, "broad_basin", 0.5)))
    checkpoints = [int(c) for c in _opt(d, "checkpoints", [1, 2, 4, 8, 16, 32]) if int(c) < depth]
    from eqsolve.bench.grid import get_task

    task = get_task(cfg.task.name)
    device = next(model.parameters()).device
    from eqsolve.bench.grid import assign_solver, solves_inner
    from eqsolve.solvers._registry import resolve_solver

    inner = solves_inner(model)
    if inner:
        model.config.inner_grad = "implicit"  # Jacobian products of the outer map are then exact (IFT)
    outer = assign_solver(model, resolve_solver(str(cfg.solver.name), dict(_opt(cfg.solver, "options", {}))))
    system = eqr_system(model, task=task)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    per_chunk = max(1, int(_opt(d, "batch_rows", 512)) // starts)
    runs = []
    with progress_bar(len(data.questions), "diagnose", unit="puzzle") as bar:
        for lo in range(0, len(data.questions), per_chunk):
            q = data.questions[lo:lo + per_chunk]
            with torch.no_grad():
                x = model.embed(task.encode(q).to(device))
            target = torch.as_tensor(data.answers[lo:lo + per_chunk], device=device)
            runs.append(run_census(
                system, x, target, n_starts=starts, solver=outer, max_iter=depth, tol=tol,
                stop=str(_opt(cfg.solver, "stop", "rel")),
                checkpoints=checkpoints,
                probe_steps=int(_opt(d, "probe_steps", 16)),
                latent_rtol=float(_opt(d, "latent_rtol", 0.05)),
                stability_iters=int(_opt(d, "spectral_iters", 20)), generator=generator))
            bar.update(len(q))
            log.info("diagnose: %d/%d puzzles (%.0f s)", min(lo + per_chunk, len(data.questions)),
                     len(data.questions), time.perf_counter() - t0)
    run = merge_runs(runs)
    report = summarize(run, rule, float(_opt(d, "target_accuracy", 0.95)))
    report["settings"].update(task=task.name, solver=str(cfg.solver.name),
                              solver_solves="inner equilibrium" if inner else "outer map", checkpoint=cfg.checkpoint,
                              data=cfg.task.data, seed=int(cfg.seed), n_puzzles=len(data.questions))
    by_bucket: dict[str, list[str]] = {}
    ratings = np.asarray(data.ratings).tolist()
    for problem, rating, name in zip(report["problems"], ratings, task.bucket(ratings)):
        problem["rating"] = rating  # difficulty (Sudoku: backtrack count; Maze: path length)
        by_bucket.setdefault(name, []).append(problem["mode"])
    report["mode_shares_by_difficulty"] = {
        b: {"n": len(m), **mode_shares(m)} for b, m in sorted(by_bucket.items())}
    report["seconds"] = time.perf_counter() - t0
    report["cpu_seconds"] = time.process_time() - cpu0  # all threads of this process
    # the measurements first: a plotting error must not cost the run
    report["figures"] = {}
    atomic_write_json(run_dir / "diagnostics.json", report)
    try:
        report["figures"] = write_figures(run, report["modes"], run_dir)
    except Exception as exc:
        raise RuntimeError(f"the diagnose figures failed ({type(exc).__name__}: {exc}); the "
                           f"measurements are in {run_dir / 'diagnostics.json'}") from exc
    atomic_write_json(run_dir / "diagnostics.json", report)  # now with the figure names
    signal = report["residual_signal"]
    return {
        "n_puzzles": report["n_problems"], "starts": starts, "depth": depth, "tol": tol,
        "mode_shares": report["mode_shares"], "outcomes": report["outcomes"],
        "auroc_per_start": signal["per_start"]["auroc"],
        "auroc_per_puzzle": signal["per_problem_min_residual"]["auroc"],
        "accuracy_per_start": signal["per_start"]["accuracy"],
        "accuracy_min_residual": signal["per_problem_min_residual"]["accuracy"],
        "accuracy_any_start": signal["accuracy_any_start"],
        "report": str(run_dir / "diagnostics.json"), "figures": report["figures"],
        "seconds": report["seconds"], "cpu_seconds": report["cpu_seconds"],
    }

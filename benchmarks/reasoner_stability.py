"""Why accelerated solvers lose accuracy on the shipped reasoner: the stability of what they find.

For a seeded subset of the shipped evaluation set, solve the reasoner's map (noise off) from the
same random starts with plain iteration, Anderson and Broyden; decode the answer from ``F(z)``;
and estimate the spectral radius ρ of the map's Jacobian at each end state (matrix-free, by
:func:`eqsolve.jacobian.spectral_radius`). Plain iteration can only settle where
ρ ≤ 1; Anderson and Broyden converge to unstable equilibria (ρ > 1) as readily as to stable ones.

Run: ``python benchmarks/reasoner_stability.py --limit 24`` → ``benchmarks/results/reasoner_stability.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from eqsolve._io import atomic_write_json, atomic_write_text
from eqsolve.jacobian import spectral_radius
from eqsolve.models.loading import load_checkpoint as load_model
from eqsolve.solvers import Anderson, solve
from eqsolve.tasks.sudoku import check_batch, default_eval_set, encode_tokens

RESULTS = Path(__file__).resolve().parent / "results"
# (label, solver, depth): plain iteration, the accelerated solvers with defaults, and Anderson
# started after 16 plain steps (``delay``: it then converges inside the basin plain iteration is in)
CASES = [("fixed_point", "fixed_point", 32), ("fixed_point", "fixed_point", 256),
         ("anderson", "anderson", 32), ("anderson", "anderson", 128),
         ("anderson(delay=16)", Anderson(delay=16), 32), ("broyden", "broyden", 32),
         ("broyden", "broyden", 64)]


def _median(t: torch.Tensor) -> float:
    return float(t.median()) if t.numel() else float("nan")


def main(limit: int, threads: int, seed: int) -> list[dict]:
    torch.set_num_threads(threads)
    model = load_model(str(Path(__file__).resolve().parents[1] / "eqsolve/assets/reasoner.pt"))
    model.eval()
    puzzles = default_eval_set()
    questions = puzzles.questions[:limit]
    rows = []
    with torch.no_grad():
        x = model.embed(encode_tokens(questions))
        s0 = model.init_state(limit, generator=torch.Generator().manual_seed(seed))

        def f(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return model.map(z, x, noise=0.0)

        for name, solver, depth in CASES:
            sol = solve(f, s0, x, solver=solver, tol=1e-6, max_iter=depth - 1,
                        stall_window=None, diverge_factor=None)
            correct = torch.as_tensor(check_batch(model.predict_digits(f(sol.z, x)).numpy(), questions))
            # (a seeded start vector: the 20-product estimate is then the same in every run)
            rho = spectral_radius(f, sol.z, x, n_iter=20, generator=torch.Generator().manual_seed(seed))
            rows.append({
                "solver": name, "depth": depth, "accuracy": float(correct.float().mean()),
                "rel_residual_median": _median(sol.rel_residual),
                "rho_median": _median(rho), "rho_median_correct": _median(rho[correct]),
                "rho_median_wrong": _median(rho[~correct]),
                "share_unstable": float((rho > 1.05).float().mean()),
            })
            print(rows[-1], flush=True)
    return rows


def write(rows: list[dict], limit: int, threads: int, seed: int) -> None:
    meta = {"limit": limit, "threads": threads, "seed": seed, "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    # (a median over no rows is NaN: written as null, strict JSON)
    atomic_write_json(RESULTS / "reasoner_stability.json", {"schema": "eqsolve.reasoner_stability/1", "meta": meta,
                                                           "rows": rows})
    lines = [
        "# Stability of the end states each solver finds on the shipped reasoner",
        "",
        f"Command: `python benchmarks/reasoner_stability.py --limit {limit} --threads {threads} --seed {seed}`  ",
        f"{limit} puzzles of the shipped eval set, same random starts for every solver, noise 0, answer decoded "
        "from F(z); ρ = spectral radius of the map's Jacobian at the end state (20 matrix-free products from a start vector seeded with --seed). "
        f"torch {torch.__version__}, {threads} thread(s).",
        "",
        "| solver | depth (NFE) | exact | median rel. residual | median ρ | median ρ, correct | median ρ, wrong | share ρ > 1.05 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['solver']} | {r['depth']} | {100 * r['accuracy']:.1f}% | {r['rel_residual_median']:.2e} | "
                     f"{r['rho_median']:.2f} | {r['rho_median_correct']:.2f} | {r['rho_median_wrong']:.2f} | "
                     f"{100 * r['share_unstable']:.0f}% |")
    lines += [
        "",
        "ρ < 1: the end state is an attractor of plain iteration; ρ > 1: an unstable equilibrium, which "
        "plain iteration cannot settle at. The interpretation of these numbers for the shipped reasoner is "
        "in the README (\"The main job\").",
    ]
    atomic_write_text(RESULTS / "reasoner_stability.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write(main(args.limit, args.threads, args.seed), args.limit, args.threads, args.seed)

"""The equilibrium-native reasoner against the shipped one: accuracy per compute, per solver.

Compute is counted in applications of one block of the weight-tied stack ("blocks"), inner and
outer together (``EqR.blocks_per_map()`` per outer step): 8 per outer step for the ``eqr``
reasoner (1 H-cycle × (3 plain inner updates + 1) × 2 layers), 18 for the ``deq`` reasoner
(1 × (8 inner solver evaluations + 1) × 2). Rows with equal blocks spent equal compute.

Sections (each writes its part of ``benchmarks/results/reasoner_deq.json`` and the markdown):

* ``accuracy``: exact accuracy (binomial standard error) against blocks and against wall time
  on a seeded subset of the shipped eval set, breadth 1, noise off, from the same random starts.
  Every row is one :func:`eqsolve.solvers.solve` of the outer map (``tol=0``: every row spends
  the whole budget, no per-row stopping); the answer at depth ``d`` is decoded from the best
  iterate after ``d`` outer steps (``snapshots``). For ``deq`` the named solver solves each
  outer step's inner equilibrium (the outer steps are plain iteration, as in ``eqsolve bench``);
  for ``eqr`` it runs the outer map.
* ``stability``: at the inner equilibria that Anderson reaches (tolerance 1e-5) on the
  accuracy subset after the deepest Anderson run, the spectral radius of the inner map's
  Jacobian (undamped, and damped as plain iteration would need), split by right/wrong answers.
* ``gradients``: at the trained model's solutions (the end states after 28 outer steps of eval
  puzzles it solves), the cosine between the parameter gradient of the loss through one more
  outer step with each inner gradient strategy and the exact implicit gradient (IFT with a
  200-step Anderson adjoint); plus the implicit gradient against unrolling damped plain iteration
  to convergence, all in float64.
* ``hard``: the real hard lists (``../shared/data/sudoku/``, skipped when absent) at depth 64
  with breadth 1 and 16 (lowest-residual start), Anderson inner solver.

Run (repository root): ``python benchmarks/reasoner_deq.py --sections accuracy,stability,gradients``
and ``--sections hard``; 1 torch thread by default.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqsolve._io import atomic_write, atomic_write_json
from eqsolve.models.loading import load_checkpoint as load_model
from eqsolve.solvers import get_solver, solve
from eqsolve.tasks.sudoku import check_batch, default_eval_set, encode_tokens, load_any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ASSETS = ROOT / "eqsolve" / "assets"
HARD = {"magictour_top1465": "magictour_top1465.txt", "forum_hardest_1905_11plus": "forum_hardest_1905_11plus.txt"}

#: (reasoner, label, solver name, solver options, inner damping override, outer depths)
CASES: list[tuple[str, str, str, dict, float | None, list[int]]] = [
    ("eqr", "plain (outer)", "fixed_point", {}, None, [8, 16, 32, 64]),
    ("eqr", "anderson m=1 (outer)", "anderson", {"m": 1}, None, [8, 16, 32, 64]),
    ("deq", "anderson (inner)", "anderson", {}, None, [4, 8, 16, 28]),
    ("deq", "broyden (inner)", "broyden", {}, None, [4, 8, 16, 28]),
    ("deq", "plain (inner)", "fixed_point", {}, None, [4, 8, 16, 28]),
    ("deq", "plain, damping 0.5 (inner)", "fixed_point", {}, 0.5, [4, 8, 16, 28]),
    ("deq", "plain, damping 0.3 (inner)", "fixed_point", {}, 0.3, [4, 8, 16, 28]),
]


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` puzzles."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def load_reasoner(name: str, deq_path: Path) -> torch.nn.Module:
    path = deq_path if name == "deq" else ASSETS / "reasoner.pt"
    return load_model(str(path)).eval()


def outer_solve(model: torch.nn.Module, tokens: torch.Tensor, solver: Any, depths: list[int],
                seed: int) -> tuple[dict[int, np.ndarray], dict[int, float], Any]:
    """Predictions and cumulative wall seconds after each depth, one solve of ``max(depths)`` steps."""
    x = model.embed(tokens)
    s0 = model.init_state(len(tokens), generator=torch.Generator().manual_seed(seed))
    steps = [d - 1 for d in depths]
    began = time.perf_counter()
    sol = solve(lambda s, xr: model.map(s, xr, noise=0.0), s0, x, solver=solver, tol=0.0,
                max_iter=max(depths) - 1, stall_window=None, diverge_factor=None, snapshots=steps)
    total = time.perf_counter() - began
    # sol.snapshots[i] is the best iterate after steps[i] steps (steps ascending, like depths)
    preds = {d: model.predict_digits(sol.snapshots[i]).numpy() for i, d in enumerate(depths)}
    # one solve gives the time of the deepest budget; shallower ones scale with their steps
    seconds = {d: total * d / max(depths) for d in depths}
    return preds, seconds, sol


def section_accuracy(deq_path: Path, n: int, seed: int) -> tuple[list[dict], dict]:
    data = default_eval_set()
    idx = np.sort(np.random.default_rng(seed).choice(len(data), size=min(n, len(data)), replace=False))
    data = data.subset(idx)
    tokens = encode_tokens(data.questions)
    rows, keep = [], {}
    with torch.no_grad():
        for reasoner, label, name, options, damping, depths in CASES:
            model = load_reasoner(reasoner, deq_path)
            solver = get_solver(name, **options)
            if model.inner_solver is not None:
                model.inner_solver, outer = solver, get_solver("fixed_point")
                if damping is not None:
                    model.config.inner_damping = damping
            else:
                outer = solver
            blocks = model.blocks_per_map()
            preds, seconds, sol = outer_solve(model, tokens, outer, depths, seed)
            for d in depths:
                correct = check_batch(preds[d], data.questions)
                acc = float(np.mean(correct))
                rows.append({"reasoner": reasoner, "solver": label, "depth": d, "blocks": d * blocks,
                             "n": len(correct), "accuracy": acc, "se": binomial_se(acc, len(correct)),
                             "seconds_per_puzzle": seconds[d] / len(correct)})
                print(f"{reasoner:4s} {label:28s} depth {d:3d} blocks {d * blocks:4d} "
                      f"acc {100 * acc:5.1f} ± {100 * rows[-1]['se']:.1f}%  {seconds[d]:.1f}s", flush=True)
            if reasoner == "deq" and name == "anderson":
                keep = {"state": sol.snapshots[-1], "tokens": tokens, "correct": np.asarray(correct, dtype=bool)}
    return rows, keep


def section_stability(deq_path: Path, keep: dict) -> dict:
    """Spectral radius of the inner map at Anderson's inner equilibria of the final states."""
    from eqsolve.jacobian import spectral_radius

    model = load_reasoner("deq", deq_path)
    cfg = model.config
    with torch.no_grad():
        x = model.embed(keep["tokens"])
        s = keep["state"]
        inj = s[:, 0] + x

        def inner(damping: float):
            return lambda z, i: (1 - damping) * z + damping * model.L_level(z + i, model.rotary, model.attn_mask)

        sol = solve(inner(cfg.lambda_), s[:, 1], inj, solver="anderson", tol=1e-5, max_iter=200,
                    stall_window=None)
    out: dict[str, Any] = {"inner_converged": float(sol.converged.float().mean()),
                           "inner_rel_residual_median": float(sol.rel_residual.median())}
    ok = torch.as_tensor(keep["correct"])
    for damping in (cfg.lambda_, 0.5, 0.3):
        rho = spectral_radius(inner(damping), sol.z, inj, n_iter=40)
        key = f"damping_{damping:g}"
        out[key] = {
            "rho_median_right": float(rho[ok].median()) if ok.any() else None,
            "rho_median_wrong": float(rho[~ok].median()) if (~ok).any() else None,
            "frac_below_1_right": float((rho[ok] < 1).float().mean()) if ok.any() else None,
            "frac_below_1_wrong": float((rho[~ok] < 1).float().mean()) if (~ok).any() else None,
        }
        print(key, out[key], flush=True)
    return out


def section_gradients(deq_path: Path, n: int, seed: int) -> dict:
    """Cosine of each inner gradient strategy with the exact implicit gradient, float64."""
    from eqsolve.training.losses import reasoning_loss

    data = default_eval_set()
    idx = np.random.default_rng(seed + 1).choice(len(data), size=4 * n, replace=False)
    tokens_all = encode_tokens(data.questions[idx])
    base = load_reasoner("deq", deq_path).double()
    with torch.no_grad():  # the trained model's solutions: end states after 28 outer steps
        x = base.embed(tokens_all)
        s = base.init_state(len(idx), generator=torch.Generator().manual_seed(seed))
        for _ in range(28):
            s = base.map(s, x, noise=0.0)
        solved = np.asarray(check_batch(base.predict_digits(s).numpy(), data.questions[idx]), dtype=bool)
    keep = np.flatnonzero(solved)[:n]  # the puzzles it solved: their inner equilibria are attractors
    s, tokens = s[keep], tokens_all[keep]
    labels = encode_tokens(data.answers[idx][keep])
    n = len(keep)

    def gradient(inner_grad: str, k: int = 2, solver: Any = "anderson", iters: int = 8,
                 damping: float | None = None) -> torch.Tensor:
        model = load_reasoner("deq", deq_path).double()
        model.config.inner_grad, model.config.inner_grad_k, model.config.inner_iter = inner_grad, k, iters
        model.config.inner_backward_iter = iters  # the adjoint gets the forward's budget
        model.config.inner_damping = damping
        model.inner_solver = solver
        model.zero_grad()
        s_new = model.map(s, model.embed(tokens), noise=0.0)
        loss, _ = reasoning_loss(model.decode(s_new), labels, None, kind="stablemax", blank_mask=tokens == 1)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.L_level.parameters()])

    exact = gradient("implicit", iters=200)
    modes = {"implicit (8 Anderson steps forward)": gradient("implicit"),
             "phantom k=2 (the recipe)": gradient("phantom", 2),
             "unrolled k=2": gradient("unrolled", 2),
             "onestep": gradient("onestep"),
             "unrolled damped plain to convergence (k=all, 400 steps, damping 0.3)":
                 gradient("unrolled", 400, solver="fixed_point", iters=400, damping=0.3)}
    out = {}
    for name, g in modes.items():
        out[name] = float(torch.nn.functional.cosine_similarity(g, exact, dim=0))
        print(f"cosine with implicit (200-step forward): {name}: {out[name]:.4f}", flush=True)
    return {"n": n, "state": "end states after 28 outer steps, solved puzzles",
            "cosine_with_exact_implicit": out}


def section_hard(deq_path: Path, n: int, seed: int) -> list[dict]:
    from eqsolve.scaling import solve_many

    folder = ROOT.parent / "shared" / "data" / "sudoku"
    rows = []
    for name, filename in HARD.items():
        path = folder / filename
        if not path.is_file():
            print(f"skipped {name}: {path} is absent")
            continue
        data = load_any(path)
        idx = np.sort(np.random.default_rng(seed).choice(len(data), size=min(n, len(data)), replace=False))
        data = data.subset(idx)
        tokens = encode_tokens(data.questions)
        model = load_reasoner("deq", deq_path)
        for breadth in (1, 16):
            began = time.perf_counter()
            with torch.no_grad():
                result = solve_many(model, tokens, depth=64, breadth=breadth, solver="fixed_point", noise=0.0,
                                    seed=seed, predict=model.predict_digits)
            acc = float(np.mean(check_batch(result.predictions.numpy(), data.questions)))
            rows.append({"list": name, "n": len(data), "depth": 64, "breadth": breadth, "solver": "anderson (inner)",
                         "blocks_per_puzzle": 64 * breadth * model.blocks_per_map(), "accuracy": acc,
                         "se": binomial_se(acc, len(data)), "seconds": time.perf_counter() - began})
            print(rows[-1], flush=True)
    return rows


def plot(document: dict, path: Path) -> None:
    """Accuracy (± binomial SE) against block applications and against wall time, every row group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["accuracy"]["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in dict.fromkeys((r["reasoner"], r["solver"]) for r in rows):
        group = [r for r in rows if (r["reasoner"], r["solver"]) == key]
        style = "-" if key[0] == "deq" else "--"
        acc = [100 * r["accuracy"] for r in group]
        err = [100 * r["se"] for r in group]
        label = f"{key[0]}: {key[1]}"
        axes[0].errorbar([r["blocks"] for r in group], acc, yerr=err, marker="o", ls=style, capsize=3, label=label)
        axes[1].errorbar([1e3 * r["seconds_per_puzzle"] for r in group], acc, yerr=err, marker="o", ls=style,
                         capsize=3, label=label)
    axes[0].set_xlabel("block applications per puzzle (inner + outer)")
    axes[1].set_xlabel("wall time per puzzle (ms, 1 CPU thread, batch of all puzzles)")
    for ax in axes:
        ax.set_ylabel("exact accuracy (%)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Sudoku, shipped eval set, {rows[0]['n']} puzzles, breadth 1 (± binomial SE)")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deq", default=str(ASSETS / "reasoner_deq.pt"), help="the deq reasoner's file")
    parser.add_argument("--sections", default="accuracy,stability,gradients")
    parser.add_argument("--limit", type=int, default=256, help="eval puzzles for the accuracy section")
    parser.add_argument("--hard-limit", type=int, default=100, help="puzzles per real list")
    parser.add_argument("--grad-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "reasoner_deq.json"))
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the figure (--out with .png) from the results JSON; measure nothing")
    args = parser.parse_args()
    if args.plot_only:
        out = Path(args.out)
        if not out.is_file():
            raise SystemExit(f"--plot-only: no results file {out}")
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
        return
    torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    out = Path(args.out)
    document = json.loads(out.read_text()) if out.is_file() else {"schema": "eqsolve.reasoner_deq/1"}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = {"torch": torch.__version__, "threads": args.threads, "device": "cpu", "machine": platform.machine(),
            "commit": commit, "deq": Path(args.deq).name, "seed": args.seed}
    deq_path = Path(args.deq)
    if "accuracy" in sections or "stability" in sections:
        rows, keep = section_accuracy(deq_path, args.limit, args.seed)
        document["accuracy"] = {"meta": {**meta, "limit": args.limit}, "rows": rows}
        if "stability" in sections:
            document["stability"] = {"meta": meta, **section_stability(deq_path, keep)}
    if "gradients" in sections:
        document["gradients"] = {"meta": meta, **section_gradients(deq_path, args.grad_batch, args.seed)}
    if "hard" in sections:
        document["hard"] = {"meta": {**meta, "limit": args.hard_limit}, "rows": section_hard(deq_path, args.hard_limit, args.seed)}
    atomic_write_json(out, document)  # a crash never leaves half a results file
    print(f"wrote {out}")
    if "accuracy" in document:  # after the results: a plotting error loses nothing
        plot(document, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

"""Anderson's history length on the solver benchmark's problems: NFE against plain iteration.

For each problem of ``benchmarks/solvers.py`` named in ``--problems``, eqsolve's Anderson with
every history length in ``--m`` and plain iteration solve to the benchmark's tolerance (relative
residual 1e-5, float32, z0 = 0, no per-row stopping differences: the same ``solve`` call as the
benchmark); the report gives NFE per row, whether every row reached the tolerance (recomputed in
float64), and the Anderson / plain NFE ratio that issue 14 targets (≤ 0.5). NFE counts are exact;
nothing here is timed, unless ``--wall``: then each history length is also timed (round-robin,
median of ``--runs``, 1 thread, the benchmark's harness) and the report gives the wall time
relative to the default ``m`` and its geometric mean over the problems: the trade-off a default
``m`` has to strike (a longer history saves evaluations and costs more per step).

Run (repository root): ``python benchmarks/anderson_history.py`` →
``benchmarks/results/anderson_history.{json,md}``;
``python benchmarks/anderson_history.py --wall --m 15,20,25,30 --problems all`` →
``benchmarks/results/anderson_history_wall.{json,md}``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import solvers as bench  # noqa: E402  (the sibling benchmark script: same problems)
from eqsolve._io import atomic_write_json, atomic_write_text  # noqa: E402
from eqsolve.solvers import get_solver, solve  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PROBLEMS = "tanh_rho0.99;tanh_slow_rho0.999;mixer_block;linear_[-0.95,0.95];small_tanh_rho0.99"


def nfe(problem: bench.Problem, solver: object, max_iter: int) -> tuple[float, bool]:
    fm = bench.CountingMap(problem.f)
    with torch.no_grad():
        sol = solve(fm, torch.zeros(problem.z_star.shape), *problem.args, solver=solver, tol=bench.TOL,
                    stop="rel", max_iter=max_iter)
    solved = bool((bench.residuals(problem, sol.z) <= 1.01 * bench.TOL).all())
    return fm.rows / problem.z_star.shape[0], solved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", default="5,10,20,30,40", help="history lengths")
    parser.add_argument("--problems", default=DEFAULT_PROBLEMS, help="names separated by ; (they contain commas)")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--out", default=None,
                        help="results JSON (default: results/anderson_history.json, _wall.json with --wall)")
    parser.add_argument("--wall", action="store_true", help="also time every history length (round-robin)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs with --wall (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problems = {p.name: p for p in bench.make_problems(512, 64, small_d=32, small_batch=4)}
    ms = [int(m) for m in args.m.split(",")]
    if args.wall:
        return wall(problems, ms, args)
    if args.problems == "all":
        args.problems = ";".join(problems)
    rows = []
    for name in args.problems.split(";"):
        p = problems[name]
        plain, plain_ok = nfe(p, "fixed_point", args.max_iter)
        row = {"problem": name, "plain_nfe": plain, "plain_solved": plain_ok, "anderson": {}}
        for m in ms:
            value, ok = nfe(p, get_solver("anderson", m=m), args.max_iter)
            row["anderson"][str(m)] = {"nfe": value, "solved": ok, "ratio_to_plain": value / plain if plain_ok else None}
        rows.append(row)
        print(name, plain, {m: round(v["nfe"], 1) for m, v in row["anderson"].items()}, flush=True)
    out = Path(args.out or RESULTS / "anderson_history.json")
    atomic_write_json(out, {"schema": "eqsolve.anderson_history/1", "tol": bench.TOL, "threads": 1,
                            "torch": torch.__version__, "rows": rows})
    head = "| problem | plain NFE | " + " | ".join(f"m = {m}" for m in ms) + " |"
    lines = ["# Anderson's history length: NFE per row and Anderson / plain NFE", "",
             "Command: `python benchmarks/anderson_history.py` (CPU, 1 thread; NFE exact, nothing timed). "
             "Problems and tolerance of `benchmarks/solvers.py` (relative residual 1e-5, float32). "
             "A cell: Anderson NFE per row (Anderson / plain; `*`: some row missed the tolerance).", "",
             head, "|---|---:|" + "---:|" * len(ms)]
    for r in rows:
        cells = []
        for m in ms:
            a = r["anderson"][str(m)]
            ratio = "" if a["ratio_to_plain"] is None else f" ({a['ratio_to_plain']:.2f})"
            cells.append(f"{a['nfe']:.1f}{ratio}{'' if a['solved'] else '*'}")
        plain = f"{r['plain_nfe']:.1f}" + ("" if r["plain_solved"] else " (not converged)")
        lines.append(f"| {r['problem']} | {plain} | " + " | ".join(cells) + " |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out}")


def wall(problems: dict, ms: list[int], args: argparse.Namespace) -> None:
    """Time Anderson(m) for every m on every problem (the ``--wall`` report)."""
    names = list(problems) if args.problems == "all" else args.problems.split(";")
    ref = 20 if 20 in ms else ms[0]
    rows, logs = [], {m: [] for m in ms}
    for name in names:
        p = problems[name]
        fns = {m: (lambda m=m, p=p: bench.run_eqsolve(p, get_solver("anderson", m=m), args.max_iter)) for m in ms}
        r = bench.measure(fns, p, args.runs)
        base = r[ref]["wall_s_median"]
        row = {"problem": name, "anderson": {str(m): {"nfe": r[m]["nfe_per_row"], "solved": r[m]["solved"],
                                                       "wall_s": r[m]["wall_s_median"],
                                                       "wall_vs_ref": r[m]["wall_s_median"] / base} for m in ms}}
        rows.append(row)
        for m in ms:
            logs[m].append(math.log(r[m]["wall_s_median"] / base))
        print(name, {m: (round(v["nfe"], 1), round(v["wall_vs_ref"], 3)) for m, v in row["anderson"].items()},
              flush=True)
    geo = {str(m): math.exp(sum(v) / len(v)) for m, v in logs.items()}
    out = Path(args.out or RESULTS / "anderson_history_wall.json")
    atomic_write_json(out, {"schema": "eqsolve.anderson_history_wall/1", "tol": bench.TOL, "threads": 1,
                            "runs": args.runs, "ref_m": ref, "torch": torch.__version__, "commit": bench._git_commit(),
                            "rows": rows, "geomean_wall_vs_ref": geo})
    lines = ["# Anderson's history length: NFE per row and wall time", "",
             f"Command: `python benchmarks/anderson_history.py --wall --m {args.m} --problems {args.problems}` "
             f"(CPU, 1 thread, commit {bench._git_commit()}; median of {args.runs} round-robin runs after a warm-up; "
             f"problems, tolerance and harness of `benchmarks/solvers.py`). A cell: NFE per row, wall time "
             f"relative to m = {ref} (`*`: some row missed the tolerance).", "",
             "| problem | " + " | ".join(f"m = {m}" for m in ms) + " |", "|---|" + "---:|" * len(ms)]
    for r in rows:
        cells = [f"{a['nfe']:.1f}, {a['wall_vs_ref']:.3f}{'' if a['solved'] else '*'}"
                 for a in (r["anderson"][str(m)] for m in ms)]
        lines.append(f"| {r['problem']} | " + " | ".join(cells) + " |")
    lines.append("| geometric mean of the wall ratios | " + " | ".join(f"{geo[str(m)]:.3f}" for m in ms) + " |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

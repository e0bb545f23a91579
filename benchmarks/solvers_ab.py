"""A/B wall time of eqsolve's solvers: this working tree against the ``solvers/`` of a git revision.

Run (about a minute on one thread):

    python benchmarks/solvers_ab.py --rev 7d21854          # -> benchmarks/results/solvers_ab.{json,md}

The old ``solvers/`` folder is extracted with ``git archive`` into a temporary directory and
imported as a separate package, so both versions run in one process on the problems of
``benchmarks/solvers.py``, with the same harness: the same map, start, tolerance and iteration
cap, timed in alternation (median of ``--runs`` after one warm-up; a burst of load from other
processes hits both alike), threads pinned. Each timed pair of runs follows an untimed run of the
same solver, and which version goes first alternates between rounds: a run right after another
solver starts with cold caches, which made the version always timed second look up to 22% faster
than the same code (measured: the tree against its own HEAD gave Anderson 0.78-0.93x before). Each solver is timed with autograd off (how
``benchmarks/solvers.py`` calls it) and on (how a user who calls ``solve`` without
``torch.no_grad()`` calls it: nothing requires grad, so no graph is recorded). NFE and the
returned residuals must agree between the versions where the algorithm is unchanged.
"""

from __future__ import annotations

import os
import sys

_THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import argparse  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import solvers as bench  # noqa: E402  (benchmarks/solvers.py: the problems and helpers)
from eqsolve._io import atomic_write_text  # noqa: E402
from eqsolve.solvers import solve as new_solve  # noqa: E402

SOLVERS = ("fixed_point", "anderson", "broyden")


def old_package(rev: str, where: Path):
    """Import ``solvers/`` at ``rev`` as the package ``eqsolve_solvers_<rev>``."""
    name = f"eqsolve_solvers_{rev}".replace("-", "_").replace(".", "_")
    tar = subprocess.run(["git", "archive", rev, "solvers"], cwd=HERE.parent, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            t.extractall(where, filter="data")
        else:  # our own repository's archive
            t.extractall(where)  # noqa: S202
    (where / "solvers").rename(where / name)
    sys.path.insert(0, str(where))
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="git revision whose solvers/ is the baseline (A)")
    ap.add_argument("--runs", type=int, default=7, help="timed runs per version (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    ap.add_argument("--quick", action="store_true", help="two small problems, 2 runs (a smoke test)")
    ap.add_argument("--note", default="", help="a note on the machine's load, stored in the results")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default="solvers_ab", help="file stem of the results (<out>/<name>.{json,md})")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rev = subprocess.run(["git", "rev-parse", "--short", a.rev], cwd=HERE.parent, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        old = old_package(rev, Path(tmp))
        problems = bench.make_problems(512, 64, 32, 4)
        if a.quick:
            problems, a.runs = [p for p in problems if p.name.startswith("small")][:2], 2
        rows = []
        for p in problems:
            z0 = torch.zeros(p.z_star.shape, dtype=torch.float32)
            runs = {}
            for grad in (False, True):
                for s in SOLVERS:
                    for tag, fn in (("A", old.solve), ("B", new_solve)):
                        runs[(s, grad, tag)] = (lambda fn=fn, s=s, grad=grad, p=p, z0=z0: _run(fn, p, z0, s, grad))
            first = {k: r() for k, r in runs.items()}
            times: dict = {k: [] for k in runs}
            for i in range(a.runs):
                for s in SOLVERS:
                    for grad in (False, True):
                        # A run right after another solver is slower (cold caches): each pair is
                        # warmed up untimed, and the version timed first alternates between rounds
                        order = ("A", "B") if i % 2 == 0 else ("B", "A")
                        runs[(s, grad, order[0])]()
                        for tag in order:
                            t = time.perf_counter()
                            runs[(s, grad, tag)]()
                            times[(s, grad, tag)].append(time.perf_counter() - t)
            for s in SOLVERS:
                for grad in (False, True):
                    (za, na), (zb, nb) = first[(s, grad, "A")], first[(s, grad, "B")]
                    ta, tb = statistics.median(times[(s, grad, "A")]), statistics.median(times[(s, grad, "B")])
                    rows.append({"problem": p.name, "solver": s, "autograd": grad, "nfe_A": na, "nfe_B": nb,
                                 "max_rel_residual_A": float(bench.residuals(p, za).max()),
                                 "max_rel_residual_B": float(bench.residuals(p, zb).max()),
                                 "wall_s_A": ta, "wall_s_B": tb, "ratio_B_over_A": tb / ta})
                    print(f"{p.name:26s} {s:11s} grad={'on ' if grad else 'off'} NFE {na:6.1f} -> {nb:6.1f}   "
                          f"wall {ta * 1e3:7.1f} -> {tb * 1e3:7.1f} ms  ({tb / ta:.2f}x)", flush=True)
    meta = {"command": "python benchmarks/solvers_ab.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "A": rev, "B": bench._git_commit() + " (working tree)", "torch": torch.__version__,
            "python": platform.python_version(), "threads": a.threads, "runs": a.runs, "note": a.note,
            "load_avg_after": list(os.getloadavg())}
    out = {"meta": meta, "rows": rows}
    if not a.quick:
        atomic_write_text(a.out / f"{a.name}.json", json.dumps(out, indent=1))
        atomic_write_text(a.out / f"{a.name}.md", to_markdown(out))
    return out


def _run(solve_fn, p, z0, solver: str, grad: bool):
    fm = bench.CountingMap(p.f)
    with torch.set_grad_enabled(grad):
        sol = solve_fn(fm, z0, *p.args, solver=solver, tol=bench.TOL, stop="rel", max_iter=300)
    return sol.z.detach(), fm.rows / p.z_star.shape[0]


def to_markdown(out: dict) -> str:
    m = out["meta"]
    lines = [
        "# eqsolve solvers: A/B wall time against an earlier revision",
        "",
        f"Command: `{m['command']}`  ",
        f"A = solvers/ at {m['A']}, B = {m['B']}; torch {m['torch']}, python {m['python']}, CPU, "
        f"torch threads {m['threads']}; median of {m['runs']} runs after a warm-up, each pair of runs after an "
        "untimed one of the same solver, the version timed first alternating"
        + (f"; {m['note']}" if m["note"] else "") + ".",
        "autograd on: `solve` called without `torch.no_grad()` (nothing requires grad).",
        "",
        "| problem | solver | autograd | NFE A | NFE B | wall A (ms) | wall B (ms) | B / A |",
        "|---|---|:---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        lines.append(f"| {r['problem']} | {r['solver']} | {'on' if r['autograd'] else 'off'} | {r['nfe_A']:.1f} | "
                     f"{r['nfe_B']:.1f} | {r['wall_s_A'] * 1e3:.1f} | {r['wall_s_B'] * 1e3:.1f} | "
                     f"{r['ratio_B_over_A']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

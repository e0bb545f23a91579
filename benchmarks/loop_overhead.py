"""What a solve costs besides ``f``: ops and host syncs per evaluation, and plain iteration's floor.

Issue 14 asks for eqsolve's fastest solver at <= 0.6x the wall time of torchdeq's fastest. On
two problems of ``benchmarks/solvers.py`` (tanh_rho0.99, mixer_block) the fastest of both
libraries is plain iteration, so the question is what a step of the loop costs besides ``f``.
This script answers it twice:

1. **Counts** (exact, machine-independent; no timing). Every solver of eqsolve (with the CPU
   default ``check_every=1`` and the accelerator default ``check_every=8``) and of torchdeq 0.1.0
   solves the same problems; a ``TorchDispatchMode`` counts every aten op dispatched *outside*
   ``f``, per evaluation of ``f`` (setup included), split into view ops (metadata only: no kernel
   on a GPU), host syncs (a value or a data-dependent shape read back:
   ``_local_scalar_dense``, ``nonzero``, ...) and the rest, each a kernel launch on a GPU and
   about 3-5 us of host time on this CPU. On a GPU at small sizes these launches, not the
   arithmetic, are the time.
2. **Wall** (CPU): plain iteration on the two problems, eqsolve's ``solve`` against torchdeq's
   ``fixed_point_iter`` and against a *bare loop* written here: ``z <- f(z)`` with the same
   per-row stopping test and compaction of finished rows, and nothing else (no best iterate, no
   divergence or stall tests, no statuses or NFE records). The bare loop is the floor of any
   solver that stops rows one by one; its ratio to torchdeq is the best eqsolve's loop could do
   with every feature free. Round-robin, median of ``--runs``, threads pinned.

Run (repository root; about a minute):

    python benchmarks/loop_overhead.py   # -> benchmarks/results/loop_overhead.{json,md}
    python benchmarks/loop_overhead.py --quick   # smaller problems, 1 run: a smoke test
"""

from __future__ import annotations

import os
import sys

# Pin BLAS threads before numpy/torch load (--threads N, default 1).
_THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name  # noqa: E402

import solvers as bench  # noqa: E402  (the sibling benchmark: same problems, tolerance and torchdeq harness)
from eqsolve._io import atomic_write_text  # noqa: E402
from eqsolve.solvers import solve  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COUNT_PROBLEMS = ("tanh_rho0.99", "mixer_block", "small_tanh_rho0.99")
WALL_PROBLEMS = ("tanh_rho0.99", "mixer_block")
#: ops that make the host wait for the device (what ``torch.cuda.set_sync_debug_mode`` reports)
SYNC_OPS = frozenset(("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.item", "aten.equal",
                      "aten.masked_select", "aten.unique", "aten._unique2"))


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while ``active`` (the map wrapped by :meth:`wrap` switches it off)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = self.views = self.syncs = self.calls = 0
        self.active = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.active:
            if str(func.overloadpacket) in SYNC_OPS:
                self.syncs += 1
            elif func.is_view:
                self.views += 1
            else:
                self.kernels += 1
        return func(*args, **(kwargs or {}))

    def wrap(self, f: Callable) -> Callable:
        """``f`` with its own ops left out of the counts, and its calls counted."""

        def counted(*args):
            self.calls += 1
            self.active = False
            try:
                return f(*args)
            finally:
                self.active = True

        return counted


def bare_plain_iteration(p: bench.Problem, max_iter: int) -> tuple[torch.Tensor, int]:
    """``z <- f(z)`` with per-row stopping at the benchmark's relative tolerance and compaction of
    the finished rows; a row's answer is its last ``f(z)``. Nothing else: the floor of a loop
    that stops rows one by one. Returns the answers and the rows passed to ``f``."""
    f = bench.CountingMap(p.f)
    with torch.inference_mode():
        z = torch.zeros(p.z_star.shape, dtype=p.dtype, device=p.device)
        args, out = p.args, z.clone()
        idx = torch.arange(z.shape[0], device=z.device)
        fz = f(z, *args)
        for k in range(max_iter + 1):  # (as eqsolve's solve: max_iter steps after f(z0))
            rel = torch.linalg.vector_norm(fz - z, dim=1) / (torch.linalg.vector_norm(fz, dim=1) + 1e-8)
            going = rel > p.tol
            keep = going.nonzero().flatten()  # the one host sync of a step
            if keep.numel() < idx.numel():
                out[idx[~going]] = fz[~going]
                if keep.numel() == 0:
                    break
                idx, fz = idx[keep], fz[keep]
                args = tuple(a[keep] if isinstance(a, torch.Tensor) else a for a in args)
            if k == max_iter:
                out[idx] = fz
                break
            z, fz = fz, f(fz, *args)
    bench._done(p)
    return out.clone(), f.rows


def count(p: bench.Problem, library: str, solver: str, max_iter: int, check_every: int | None = None) -> dict:
    """Ops outside ``f`` per evaluation of ``f`` for one solve (setup included)."""
    counter = OpCounter()
    fm = bench.CountingMap(p.f)
    f = counter.wrap(fm)
    z0 = torch.zeros(p.z_star.shape, dtype=p.dtype, device=p.device)
    with torch.no_grad(), counter:
        if library == "eqsolve":
            solve(f, z0, *p.args, solver=solver, tol=p.tol, stop="rel", max_iter=max_iter, check_every=check_every)
        else:
            bench.torchdeq_get_solver(solver)(lambda z: f(z, *p.args), z0, max_iter=max_iter, tol=p.tol,
                                              stop_mode="rel")
    calls = counter.calls
    return {
        "library": library, "solver": solver, "check_every": check_every, "f_calls": calls,
        "nfe_per_row": fm.rows / p.z_star.shape[0],
        "kernels_per_call": counter.kernels / calls, "views_per_call": counter.views / calls,
        "syncs_per_call": counter.syncs / calls,
    }


def counts(problems: list[bench.Problem], max_iter: int) -> dict:
    out = {}
    for p in problems:
        rows = []
        for s in bench.EQSOLVE:
            for every in (1, 8):
                rows.append(count(p, "eqsolve", s, max_iter, every))
        for s in bench.TORCHDEQ:
            rows.append(count(p, "torchdeq", s, max_iter))
        out[p.name] = rows
    return out


def walls(problems: list[bench.Problem], max_iter: int, runs: int) -> dict:
    out = {}
    for p in problems:
        fns = {
            "eqsolve.fixed_point": lambda p=p: bench.run_eqsolve(p, "fixed_point", max_iter),
            "eqsolve.anderson": lambda p=p: bench.run_eqsolve(p, "anderson", max_iter),
            "torchdeq.fixed_point_iter": lambda p=p: bench.run_torchdeq(p, "fixed_point_iter", max_iter),
            "bare plain iteration": lambda p=p: bare_plain_iteration(p, max_iter),
        }
        r = bench.measure(fns, p, runs)
        ref = r["torchdeq.fixed_point_iter"]["wall_s_median"]
        for v in r.values():
            v["wall_vs_torchdeq_plain"] = v["wall_s_median"] / ref
            v.pop("wall_s_runs", None)
        out[p.name] = r
    return out


def to_markdown(results: dict) -> str:
    m = results["meta"]
    lines = [
        "# The solve loop's cost besides `f`: ops per evaluation, and plain iteration's floor", "",
        f"Command: `{m['command']}`  ",
        f"Device: {m['device_name']}; torch {m['torch']}, torchdeq {m['torchdeq']}, python {m['python']}; "
        f"torch threads {m['torch_threads']}; commit {m['commit']}; {m['date']}.  ",
        f"Problems of `benchmarks/solvers.py` (batch {m['batch']}, d {m['d']}; the small one: batch 4, d 32), "
        f"relative tolerance {m['tol']:g}, float32, z0 = 0.", "",
        "## Ops dispatched outside `f`, per evaluation of `f` (exact counts, setup included)", "",
        "`kernels`: ops that launch a kernel on a GPU (on this CPU each costs about 3-5 us of host "
        "time); `views`: metadata-only ops; `syncs`: reads of a device value by the host. eqsolve "
        "with the CPU default (`check_every=1`, compaction at every step) and the accelerator "
        "default (`check_every=8`: finished rows are frozen in place between looks).", "",
    ]
    for name, rows in results["counts"].items():
        lines += [f"### {name}", "", "| solver | check_every | NFE/row | f calls | kernels | views | syncs |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            every = "" if r["check_every"] is None else str(r["check_every"])
            lines.append(f"| {r['library']}.{r['solver']} | {every} | {r['nfe_per_row']:.1f} | {r['f_calls']} | "
                         f"{r['kernels_per_call']:.1f} | {r['views_per_call']:.1f} | {r['syncs_per_call']:.2f} |")
        lines.append("")
    lines += ["## Plain iteration's wall time against its floor (CPU)", "",
              f"Median of {m['runs']} round-robin runs after a warm-up; `vs torchdeq` divides by "
              "torchdeq's `fixed_point_iter` (the fastest torchdeq solver on both problems in "
              "`solvers.md`) in the same run. The bare loop: per-row stopping and compaction only.", ""]
    for name, r in results["walls"].items():
        lines += [f"### {name}", "", "| loop | NFE/row | wall (ms) | vs torchdeq | solved |", "|---|---:|---:|---:|:---:|"]
        for label, v in r.items():
            lines.append(f"| {label} | {v['nfe_per_row']:.1f} | {1e3 * v['wall_s_median']:.1f} | {v['wall_vs_torchdeq_plain']:.3f} | "
                         f"{'yes' if v['solved'] else 'NO'} |")
        lines.append("")
    lines.append(f"Load average {m['loadavg_before']} before, {m['loadavg_after']} after ({m['cpus']} CPUs).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="timed runs per loop (median reported)")
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 run (smoke test)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    d, batch = (64, 8) if a.quick else (512, 64)
    runs = 1 if a.quick else a.runs
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    problems = {p.name: p for p in bench.make_problems(d, batch, small_d=32, small_batch=4)}
    results = {"meta": {
        "command": " ".join(["python benchmarks/loop_overhead.py", *(sys.argv[1:] if argv is None else argv)]),
        "torch": torch.__version__, "torchdeq": getattr(bench.torchdeq, "__version__", "0.1.0"),
        "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
        "device_name": device_name(torch.device("cpu")), "commit": bench._git_commit(), "batch": batch, "d": d,
        "tol": bench.TOL, "runs": runs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }}
    results["counts"] = counts([problems[n] for n in COUNT_PROBLEMS], a.max_iter)
    results["walls"] = walls([problems[n] for n in WALL_PROBLEMS], a.max_iter, runs)
    results["meta"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    stem = "loop_overhead_quick" if a.quick else "loop_overhead"
    atomic_write_text(a.out / f"{stem}.json", json.dumps(results, indent=1))
    atomic_write_text(a.out / f"{stem}.md", to_markdown(results))
    for name, r in results["walls"].items():
        print(name, "  ".join(f"{k}: {v['wall_vs_torchdeq_plain']:.3f}" for k, v in r.items()))
    return results


if __name__ == "__main__":
    main()

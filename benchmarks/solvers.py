"""Solver benchmark: eqsolve vs torchdeq 0.1.0 vs scipy.optimize, same problems, same tolerance.

Run (about 3-5 minutes on one thread):

    nice -n 5 python benchmarks/solvers.py            # -> benchmarks/results/solvers.{json,md}
    nice -n 5 python benchmarks/solvers.py --threads 2  # -> benchmarks/results/solvers_2threads.{json,md}
    python benchmarks/solvers.py --quick               # smaller, 1 run: a smoke test

Method. Every solver gets the same map, start (zeros), relative tolerance (1e-5, the
eqsolve/torchdeq definition ``||f(z) - z|| / ||f(z)||``) and iteration cap. f-evaluations are
counted by a wrapper around ``f`` (rows passed to f, divided by the batch size), never taken
from a solver's own report. Residuals of the returned ``z`` are recomputed here, in float64. A
solver "solves" a problem when every row's recomputed residual is within the tolerance (1%
slack for float32 round-off) and ``z`` is finite. Wall time is the median of ``--runs`` runs after
one warm-up, the solvers of a problem timed round-robin (so load from other processes hits
them alike); threads are pinned (torch and BLAS, ``--threads``, default 1). The physical limit on the linear problems
is the number of matrix-vector products scipy's GMRES (no restart) needs per row on
``(I - A) z = b`` to the same absolute residual. The issue's target ratios are computed at the
end and printed as pass/fail.
"""

from __future__ import annotations

import os
import sys

# Pin BLAS threads before numpy/scipy/torch load (--threads N, default 1).
_THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.sparse.linalg  # noqa: E402
import torch  # noqa: E402
import torchdeq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, also when imported by path
from _common import device_name  # noqa: E402
from torchdeq.solver import get_solver as torchdeq_get_solver  # noqa: E402

from eqsolve._io import atomic_write_text  # noqa: E402
from eqsolve.solvers import solve  # noqa: E402

TOL = 1e-5
SLACK = 1.01
RESULTS = Path(__file__).resolve().parent / "results"
EQSOLVE = ("fixed_point", "anderson", "broyden")
TORCHDEQ = ("fixed_point_iter", "anderson", "broyden")
SCIPY = ("anderson", "broyden1")


@dataclass
class Problem:
    name: str
    f: Callable  # f(z, *args) on (B, d)
    args: tuple
    z_star: torch.Tensor  # float64 reference
    f64: Callable  # the same map in float64 on the whole batch, for recomputing residuals
    linear: tuple | None = None  # (A, b) when f(z) = z A^T + b
    jacobian: Callable | None = None  # row -> Jacobian of f at z* (float64), for nonlinear maps
    plain_works: bool = True
    small: bool = False
    info: dict = field(default_factory=dict)
    # the numeric setting every solver gets on this problem
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    tol: float = TOL
    slack: float = SLACK


class CountingMap:
    """Wraps f and counts the rows it is evaluated on."""

    def __init__(self, f: Callable):
        self.f, self.rows = f, 0

    def __call__(self, z, *args):
        self.rows += z.shape[0] if z.dim() > 1 else 1
        return self.f(z, *args)


def _sym(d: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (q * torch.linspace(lo, hi, d, dtype=torch.float64)) @ q.T


def default_tol(dtype: torch.dtype) -> tuple[float, float]:
    """``(tol, slack)`` for iterates of ``dtype``: 1e-5 in float32; in bfloat16 (8 bits of
    mantissa, relative rounding 4e-3) 1e-2, and 25% slack on the float64 recheck, since the
    solvers' own residuals are computed in bfloat16."""
    if dtype == torch.bfloat16:
        return 1e-2, 1.25
    if dtype == torch.float64:
        return 1e-10, SLACK
    return TOL, SLACK


def make_problems(d: int, batch: int, small_d: int, small_batch: int, seed: int = 0,
                  dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                  tol: float | None = None) -> list[Problem]:
    """The problems, built in float64 on the CPU (the same for every device and dtype), then
    moved: each map runs in ``dtype`` on ``device``; the float64 reference ``z*`` and the
    float64 map for the residual recheck live on ``device`` too."""
    g = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    tol_, slack = default_tol(dtype)
    setting = {"dtype": dtype, "device": device, "tol": tol_ if tol is None else tol, "slack": slack}
    out = []

    def on(*ts, dt=dtype):
        return tuple(t.to(device=device, dtype=dt) for t in ts)

    def tanh_problem(name, dd, bb, small, scale=None, rho=0.99):
        w = torch.randn(dd, dd, generator=g, dtype=torch.float64)
        w = rho * w / torch.linalg.eigvals(w).abs().max()
        x = torch.randn(bb, dd, generator=g, dtype=torch.float64)
        c = torch.ones(bb, 1, dtype=torch.float64) if scale is None else scale
        wl, xl, cl = on(w, x, c)
        w64, x64, c64 = on(w, x, c, dt=torch.float64)
        f = lambda z, x, c: torch.tanh(c * (z @ wl.T) + 0.1 * x)  # noqa: E731
        f64 = lambda z: torch.tanh(c64 * (z @ w64.T) + 0.1 * x64)  # noqa: E731
        ref = solve(f64, torch.zeros(bb, dd, dtype=torch.float64, device=device), solver="anderson", tol=1e-13,
                    stop="abs", max_iter=3000, stall_window=None, compact=False)
        assert bool(ref.converged.all()), "reference solve failed"
        # f = tanh(u) and f(z*) = z*, so the Jacobian at z* is diag(1 - z*^2) c W.
        z_cpu = ref.z.cpu()
        jac = lambda i: ((1 - z_cpu[i] ** 2)[:, None] * (c[i] * w)).numpy()  # noqa: E731
        return Problem(name, f, (xl, cl), ref.z, f64, jacobian=jac, small=small, **setting,
                       info={"map": "tanh(c * W z + 0.1 x)", "W": "Gaussian, spectral radius 0.99", "d": dd, "batch": bb})

    def linear_problem(name, dd, bb, lo, hi, small):
        a = _sym(dd, lo, hi, g)
        b = torch.randn(bb, dd, generator=g, dtype=torch.float64)
        al, bl = on(a, b)
        a64, b64 = on(a, b, dt=torch.float64)
        z_star = torch.linalg.solve(torch.eye(dd, dtype=torch.float64) - a, b.T).T
        plain = max(abs(lo), abs(hi)) < 1
        return Problem(name, lambda z, b: z @ al.T + b, (bl,), *on(z_star, dt=torch.float64),
                       lambda z: z @ a64.T + b64, linear=(a, b), plain_works=plain, **setting,
                       small=small, info={"map": "A z + b", "A": f"symmetric, eigenvalues uniform on [{lo}, {hi}]",
                                          "d": dd, "batch": bb})

    def slow_problem(name, dd, bb, rho):
        p = tanh_problem(name, dd, bb, False, rho=rho)
        p.info["W"] = f"Gaussian, spectral radius {rho}"
        return p

    def mixer_problem(name, tokens, channels, hidden, bb, rho):
        """Token-and-channel MLP mixing as in the EqR map (non-normal Jacobian); x is built so
        that a random z* is the fixed point, and the gain so that the largest spectral radius of
        the Jacobian at z* (over the first 8 rows) is rho."""
        def w(rows, cols):
            return torch.randn(rows, cols, generator=g, dtype=torch.float64) / cols**0.5

        t1, t2, w1, w2 = w(hidden, tokens), w(tokens, hidden), w(hidden, channels), w(channels, hidden)
        dd = tokens * channels

        def block(z, t1, t2, w1, w2):
            z = z.view(-1, tokens, channels)
            u = z + t2 @ torch.tanh(t1 @ z)
            return (u + torch.tanh(u @ w1.T) @ w2.T).reshape(z.shape[0], dd)

        z_star = torch.rand(bb, dd, generator=g, dtype=torch.float64) - 0.5
        ws = (t1, t2, w1, w2)
        jac1 = lambda i: torch.autograd.functional.jacobian(lambda z: block(z[None], *ws)[0], z_star[i])  # noqa: E731
        gain = rho / max(torch.linalg.eigvals(jac1(i)).abs().max().item() for i in range(min(bb, 8)))
        x = z_star - gain * block(z_star, *ws)
        wsl, (xl,) = on(*ws), on(x)
        ws64, x64 = on(*ws, dt=torch.float64), on(x, dt=torch.float64)[0]
        f = lambda z, x: gain * block(z, *wsl) + x  # noqa: E731
        f64 = lambda z: gain * block(z, *ws64) + x64  # noqa: E731
        jac = lambda i: (gain * jac1(i)).numpy()  # noqa: E731
        return Problem(name, f, (xl,), *on(z_star, dt=torch.float64), f64, jacobian=jac, **setting,
                       info={"map": "gain (u + tanh(u W1^T) W2^T) + x, u = z + T2 tanh(T1 z) on (tokens, channels)",
                             "tokens x channels": f"{tokens} x {channels}", "hidden": hidden,
                             "Jacobian at z*": f"non-normal, spectral radius {rho} (gain {gain:.3f})",
                             "d": dd, "batch": bb})

    out.append(tanh_problem("tanh_rho0.99", d, batch, False))
    out.append(linear_problem("linear_[-0.95,0.95]", d, batch, -0.95, 0.95, False))
    out.append(linear_problem("linear_[-1.5,0.9]", d, batch, -1.5, 0.9, False))
    out.append(tanh_problem("small_tanh_rho0.99", small_d, small_batch, True))
    out.append(linear_problem("small_linear_[-0.95,0.95]", small_d, small_batch, -0.95, 0.95, True))
    out.append(linear_problem("small_linear_[-1.5,0.9]", small_d, small_batch, -1.5, 0.9, True))
    # Mixed batch: 3 in 4 rows are easy (c = 0.3), the rest hard (c = 1): what compaction is for.
    scale = torch.where(torch.arange(batch) % 4 == 3, 1.0, 0.3).to(torch.float64)[:, None]
    mixed = tanh_problem("mixed_easy_hard", d, batch, False, scale=scale)
    mixed.info["rows"] = "3/4 easy (c=0.3), 1/4 hard (c=1)"
    out.append(mixed)
    # Hard maps: a slowly contracting tanh map and a non-normal mixer block (tokens x channels).
    out.append(slow_problem("tanh_slow_rho0.999", d, batch, 0.999))
    out.append(mixer_problem("mixer_block", 16, d // 16, 64, batch, 0.95))
    return out


def residuals(p: Problem, z: torch.Tensor) -> torch.Tensor:
    """Relative residual per row, recomputed in float64."""
    z = z.double().reshape(p.z_star.shape)
    fz = p.f64(z)
    return torch.linalg.vector_norm(fz - z, dim=1) / (torch.linalg.vector_norm(fz, dim=1) + 1e-8)


def _done(p: Problem) -> None:
    """Wait for the device's queue (a solve's last kernels belong to its time)."""
    if p.device.type == "cuda":
        torch.cuda.synchronize(p.device)


def run_eqsolve(p: Problem, name: str, max_iter: int, compact: bool = True, **solve_options):
    fm = CountingMap(p.f)
    z0 = torch.zeros(p.z_star.shape, dtype=p.dtype, device=p.device)
    with torch.no_grad():
        sol = solve(fm, z0, *p.args, solver=name, tol=p.tol, stop="rel", max_iter=max_iter, compact=compact,
                    **solve_options)
    _done(p)
    return sol.z, fm.rows


def run_torchdeq(p: Problem, name: str, max_iter: int):
    fm = CountingMap(p.f)
    z0 = torch.zeros(p.z_star.shape, dtype=p.dtype, device=p.device)
    solver = torchdeq_get_solver(name)
    with torch.no_grad():
        z, _, _ = solver(lambda z: fm(z, *p.args), z0, max_iter=max_iter, tol=p.tol, stop_mode="rel")
    _done(p)
    return z, fm.rows


def run_scipy(p: Problem, name: str, max_iter: int):
    """scipy.optimize's nonlinear solvers work on one vector: solve row by row."""
    method = getattr(scipy.optimize, name)
    rows, zs = 0, []
    for i in range(p.z_star.shape[0]):
        args = tuple(a[i : i + 1] for a in p.args)
        fm = CountingMap(p.f)

        def residual(x, fm=fm, args=args):
            z = torch.from_numpy(np.asarray(x, dtype=np.float32)).view(1, -1)
            return (fm(z, *args) - z).double().numpy().ravel()

        # Same stopping rule: ||f(z) - z||_2 <= tol * ||f(z*)||_2 (the reference's norm).
        f_tol = p.tol * float(torch.linalg.vector_norm(p.z_star[i]))
        try:
            x = method(residual, np.zeros(p.z_star.shape[1]), f_tol=f_tol, tol_norm=np.linalg.norm,
                       maxiter=max_iter)
        except scipy.optimize.NoConvergence as e:
            x = e.args[0]
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            x = np.full(p.z_star.shape[1], np.nan)
        rows += fm.rows
        zs.append(torch.as_tensor(np.asarray(x, dtype=np.float64)))
    return torch.stack(zs), rows


def gmres_matvecs(p: Problem) -> float:
    """Mean matvecs per row scipy's GMRES (no restart) needs on (I - A) z = b to the same residual.

    For a nonlinear map, A is the Jacobian at the fixed point and b = (I - A) z*: the linear
    problem a solver faces near the solution, started from z0 = 0 (a lower bound, in practice,
    for secant methods such as Anderson and Broyden that only see f).
    """
    rows = p.z_star.shape[0]
    counts = []
    for i in range(min(rows, 16)):
        if p.linear is not None:
            a, b_i = p.linear[0].numpy(), p.linear[1][i].numpy()
        else:
            a = p.jacobian(i)
            b_i = p.z_star[i].cpu().numpy() - a @ p.z_star[i].cpu().numpy()
        d = a.shape[0]
        n = [0]

        def mv(v, n=n, a=a):
            n[0] += 1
            return v - a @ v

        op = scipy.sparse.linalg.LinearOperator((d, d), matvec=mv, dtype=np.float64)
        atol = p.tol * float(np.linalg.norm(p.z_star[i].cpu().numpy()))
        x, info = scipy.sparse.linalg.gmres(op, b_i, rtol=0.0, atol=atol, restart=d, maxiter=1)
        assert info == 0, f"GMRES did not reach the tolerance on row {i}"
        counts.append(n[0])
    return float(np.mean(counts))


def measure(runs_by_label: dict[str, Callable], p: Problem, runs: int) -> dict:
    """Warm up every solver once (that run gives the deterministic counts), then time them
    round-robin, so that a burst of load from other processes hits all solvers alike.

    A solver that raises (e.g. an op without a kernel for the dtype) is recorded with its
    error and left out of the timing."""
    first, errors = {}, {}
    for label, run in runs_by_label.items():
        try:
            first[label] = run()
        except (RuntimeError, ValueError, NotImplementedError) as e:
            errors[label] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    times: dict[str, list[float]] = {label: [] for label in first}
    for _ in range(runs):
        for label in first:
            t = time.perf_counter()
            runs_by_label[label]()
            times[label].append(time.perf_counter() - t)
    out = {}
    for label in runs_by_label:
        if label in errors:
            out[label] = {"error": errors[label], "nfe_per_row": None, "wall_s_median": None, "wall_s_runs": [],
                          "max_rel_residual": None, "finite_z": False, "solved": False}
            continue
        z, rows = first[label]
        res = residuals(p, z)
        finite = bool(torch.isfinite(z).all())
        max_res = float(res.max()) if finite else math.inf
        out[label] = {
            "nfe_per_row": rows / p.z_star.shape[0],
            "wall_s_median": statistics.median(times[label]),
            "wall_s_runs": times[label],
            "max_rel_residual": max_res if math.isfinite(max_res) else None,
            "finite_z": finite,
            "solved": finite and max_res <= p.tol * p.slack,
        }
    return out


def targets(results: dict) -> list[dict]:
    out = []

    def add(name, problem, value, threshold, note=""):
        out.append({"target": name, "problem": problem, "value": value, "threshold": threshold,
                    "pass": value is not None and value <= threshold, "note": note})

    for pname, pr in results["problems"].items():
        r = pr["results"]
        if pname == "mixed_easy_hard":
            for s in EQSOLVE:
                c, f = r[f"eqsolve.{s}"], r[f"eqsolve.{s}.compact=False"]
                ratio = c["wall_s_median"] / f["wall_s_median"] if c["solved"] and f["solved"] else None
                add(f"compact wall / frozen wall ({s})", pname, ratio, 0.6)
            continue
        solved = {k: v for k, v in r.items() if v["solved"]}
        eq = {k: v for k, v in solved.items() if k.startswith("eqsolve.")}
        td = {k: v for k, v in solved.items() if k.startswith("torchdeq.")}
        best_eq = min((v["nfe_per_row"] for v in eq.values()), default=None)
        best_td = min((v["nfe_per_row"] for v in td.values()), default=None)
        aa = r["eqsolve.anderson"]["nfe_per_row"] if r["eqsolve.anderson"]["solved"] else None
        if best_td is not None:
            # <= 1 everywhere, <= 0.7 where torchdeq's best is more than 1.5x the GMRES limit.
            # (without the GMRES limit, e.g. a run with --no-gmres, the looser bound)
            hard = pr.get("gmres_matvecs") is not None and best_td > 1.5 * pr["gmres_matvecs"]
            add("eqsolve best NFE / torchdeq best NFE", pname, None if best_eq is None else best_eq / best_td,
                0.7 if hard else 1.0, f"torchdeq's best {'>' if hard else '<='} 1.5x the GMRES limit"
                if pr.get("gmres_matvecs") is not None else "GMRES limit not computed")
        if pr.get("gmres_kind") == "exact" and pr.get("gmres_matvecs"):
            add("eqsolve Anderson NFE / GMRES matvecs", pname, None if aa is None else aa / pr["gmres_matvecs"], 1.3)
        if r["torchdeq.anderson"]["solved"]:
            add("eqsolve Anderson NFE / torchdeq Anderson NFE", pname,
                None if aa is None else aa / r["torchdeq.anderson"]["nfe_per_row"], 0.5)
        plain = [v["nfe_per_row"] for k, v in solved.items() if k in ("eqsolve.fixed_point", "torchdeq.fixed_point_iter")]
        if plain:
            add("eqsolve Anderson NFE / plain iteration NFE", pname, None if aa is None else aa / min(plain), 0.5,
                "plain iteration: the better of eqsolve's and torchdeq's")
        fast_eq = min((v["wall_s_median"] for v in eq.values()), default=None)
        fast_td = min((v["wall_s_median"] for v in td.values()), default=None)
        if fast_td is not None:
            add("eqsolve fastest wall / torchdeq fastest wall", pname, None if fast_eq is None else fast_eq / fast_td, 0.6)
        nonfinite = [k for k, v in r.items() if k.startswith("eqsolve.") and not v["finite_z"]]
        add("eqsolve solvers returning a non-finite z (or raising)", pname, float(len(nonfinite)), 0.0,
            ", ".join(nonfinite))
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def to_markdown(results: dict) -> str:
    m = results["meta"]
    device = m.get("device_name", "CPU")
    lines = [
        "# Solver benchmark: eqsolve vs torchdeq 0.1.0 vs scipy",
        "",
        f"Command: `{m['command']}`  ",
        f"Device: {device}. torch {m['torch']}, torchdeq {m['torchdeq']}, scipy {m['scipy']}, python {m['python']}, "
        f"{m['platform']}; torch threads {m['torch_threads']}, BLAS threads {m['blas_threads']}; commit {m['commit']}.  ",
        f"Relative tolerance {m['tol']} (`||f(z)-z|| / ||f(z)||`), {m.get('dtype', 'float32')}, start z0 = 0, "
        f"max_iter {m['max_iter']}; "
        f"wall time: median of {m['runs']} runs after a warm-up, the solvers of a problem timed round-robin. NFE = rows passed to f / batch (counted by a wrapper); "
        f"residuals recomputed by the harness in float64 (solved: within {m.get('slack', SLACK)}x the tolerance). "
        "Solvers run with their default options.",
        "",
    ]
    if not m.get("complete", True):
        lines += [f"(Partial: the run stopped after {len(results['problems'])} problems; the file is rewritten "
                  "after each one.)", ""]
    if m.get("report_regenerated"):
        lines += [f"(Measurements from the run above; {m['report_regenerated']}.)", ""]
    for pname, pr in results["problems"].items():
        info = ", ".join(f"{k}: {v}" for k, v in pr["info"].items() if not k.startswith("_"))
        lines += [f"## {pname}", "", info + ("  " if pr.get("gmres_matvecs") else ""), ]
        if pr.get("gmres_matvecs"):
            lines += [f"GMRES limit ({pr['gmres_kind']}, mean over the first 16 rows): "
                      f"{pr['gmres_matvecs']:.1f} matvecs per row."]
        lines += ["", "| solver | NFE/row | wall (s) | max rel residual | solved |", "|---|---:|---:|---:|:---:|"]
        for s, v in pr["results"].items():
            if v.get("error"):
                lines.append(f"| {s} | - | - | raised {v['error'].replace('|', '/')} | NO |")
                continue
            res = "non-finite" if v["max_rel_residual"] is None else f"{v['max_rel_residual']:.2e}"
            lines.append(f"| {s} | {v['nfe_per_row']:.1f} | {v['wall_s_median']:.4f} | {res} | {'yes' if v['solved'] else 'NO'} |")
        lines.append("")
    lines += ["## Targets (issue 14)", "", "| target | problem | value | threshold | result |", "|---|---|---:|---:|:---:|"]
    for t in results["targets"]:
        val = "n/a (not solved)" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"| {t['target']} | {t['problem']} | {val} | <= {t['threshold']} | {'pass' if t['pass'] else '**FAIL**'} |")
    notes = []
    for t in results["targets"]:
        pr = results["problems"][t["problem"]]
        limit = pr.get("gmres_matvecs")
        if t["pass"] or "NFE" not in t["target"] or not limit:
            continue
        kind = "GMRES" if pr.get("gmres_kind") == "exact" else "GMRES on the linearisation at z*"
        solved = [v["nfe_per_row"] for k, v in pr["results"].items() if v["solved"] and k.startswith("torchdeq.")]
        if t["target"].startswith("eqsolve best") and solved and t["threshold"] * min(solved) < limit:
            notes.append(f"- {t['problem']}: the target asks for <= {t['threshold'] * min(solved):.1f} NFE/row, below the "
                         f"{limit:.1f} matvecs/row that {kind} needs; methods that only evaluate f (Anderson, "
                         "Broyden: their iterates lie in the same Krylov space) are not expected to beat it.")
        elif "plain iteration" in t["target"]:
            plain = [v["nfe_per_row"] for k, v in pr["results"].items()
                     if v["solved"] and k in ("eqsolve.fixed_point", "torchdeq.fixed_point_iter")]
            if plain and 0.5 * min(plain) < limit:
                notes.append(f"- {t['problem']}: 0.5x plain iteration ({0.5 * min(plain):.1f} NFE/row) is below the "
                             f"{limit:.1f} matvecs/row that {kind} needs.")
    if any("wall" in t["target"] and not t["pass"] for t in results["targets"]):
        notes.append(f"- Wall times were measured on a shared machine (load average {m['loadavg_before']} before, "
                     f"{m['loadavg_after']} after the run on {m['cpus']} CPUs{'; ' + m['note'] if m.get('note') else ''}); "
                     "small-op overhead is inflated under load, so wall ratios are noisier than NFE ratios.")
    if notes:
        lines += ["", "### Notes on missed targets", "", *notes]
    n_fail = sum(not t["pass"] for t in results["targets"])
    lines += ["", f"{len(results['targets']) - n_fail} of {len(results['targets'])} targets met." +
              ("" if not n_fail else f" {n_fail} missed (marked FAIL above)."), ""]
    return "\n".join(lines)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def results_stem(device: str, dtype: str, threads: int, batch: int, d: int) -> str:
    """File name of a run's results: ``solvers`` (CPU, float32, 1 thread, as before), with
    ``_<n>threads`` for more threads; other devices and dtypes also name the sizes."""
    stem = "solvers"
    if device != "cpu" or dtype != "float32":
        stem += f"_{device}_{dtype}_b{batch}_d{d}"
    if device == "cpu" and threads != 1:
        stem += f"_{threads}threads"
    return stem


def compile_check(a) -> dict:
    """eqsolve eager vs through ``torch.compile`` (``--compile-backend``): does compiling pay here?

    Nine variants on three problems: the library's eager Anderson step; ``Anderson(compile=...)``
    (the small m x m update compiled, the library's option); the experiment of
    ``_anderson_compiled_step.py`` (the step's whole own work compiled), eager and compiled;
    Broyden eager and with ``Broyden(compile=...)`` (its m x m update compiled); and the loop's
    per-row bookkeeping compiled (``solve(compile_bookkeeping=...)``) under plain iteration and
    under Anderson, against eager plain iteration and eager Anderson. On the device, dtype and
    sizes of ``--device``/``--dtype``/``--batch``/``--d``.
    """
    from _anderson_compiled_step import CompiledStepAnderson

    from eqsolve.solvers import Anderson, Broyden, FixedPointIteration

    backend = a.compile_backend
    torch.set_num_threads(a.threads)
    device, dtype = torch.device(a.device), DTYPES[a.dtype]
    problems = {p.name: p for p in make_problems(a.d, a.batch, small_d=32, small_batch=4, dtype=dtype, device=device,
                                                 tol=a.tol)}
    stem = results_stem(device.type, a.dtype, a.threads, a.batch, a.d).replace("solvers", "solvers_compile", 1)
    command = " ".join(["python benchmarks/solvers.py", *a.argv])
    out = {"meta": {"command": command, "torch": torch.__version__, "backend": backend,
                    "threads": torch.get_num_threads(), "commit": _git_commit(), "runs": a.runs, "note": a.note,
                    "device": device.type, "device_name": device_name(device), "dtype": a.dtype, "batch": a.batch,
                    "d": a.d, "loadavg_before": [round(x, 2) for x in os.getloadavg()],
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, "problems": {}}
    variants = {"eager": (Anderson(), {}), "m x m update compiled": (Anderson(compile=backend), {}),
                "step, eager": (CompiledStepAnderson(), {}),
                "step compiled": (CompiledStepAnderson(step_backend=backend), {}),
                "broyden eager": (Broyden(), {}), "broyden m x m update compiled": (Broyden(compile=backend), {}),
                "plain eager": (FixedPointIteration(), {}),
                "plain, bookkeeping compiled": (FixedPointIteration(), {"compile_bookkeeping": backend}),
                "bookkeeping compiled": (Anderson(), {"compile_bookkeeping": backend})}
    compiled_labels = [label for label in variants if "compiled" in label]
    for name in ("tanh_rho0.99", "mixer_block", "small_tanh_rho0.99"):
        p = problems[name]
        fns = {label: (lambda p=p, s=s, kw=kw: run_eqsolve(p, s, a.max_iter, **kw)) for label, (s, kw) in variants.items()}
        first = {}
        for label in compiled_labels:
            t = time.perf_counter()
            fns[label]()
            first[label] = time.perf_counter() - t
        r = measure(fns, p, a.runs)
        out["problems"][name] = {"first_call_with_compile_s": first, "results": r}
        print(name, {k: round(v, 1) for k, v in first.items()},
              {k: round(v["wall_s_median"], 4) for k, v in r.items() if v["wall_s_median"] is not None}, flush=True)
    out["meta"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    m = out["meta"]
    lines = [f"# eqsolve through torch.compile ({backend}) vs eager, {m['device_name']}", "",
             f"Command: `{command}`; torch {m['torch']}, {a.dtype}, batch {a.batch}, d {a.d}, threads {m['threads']}, "
             f"commit {m['commit']}, {m['date']}; median of {a.runs} runs after a warm-up; "
             f"load average {m['loadavg_before']} before, {m['loadavg_after']} after"
             + (f"; {a.note}" if a.note else "") + ".", "",
             f"Variants: the library's eager step; `Anderson(compile=\"{backend}\")`, the library's option (the small "
             "m x m update of the inverse Gram matrix compiled); and the experiment of `benchmarks/_anderson_compiled_step.py`: all of the step's "
             "own work (coefficients, update, history push, inverse Gram update) compiled, `f` eager, timed also eagerly in the "
             "same formulation (slot as a tensor, all m slots) to isolate the compiler; Broyden eager and "
             f"`Broyden(compile=\"{backend}\")` (its m x m update of the inverse compact-form matrix compiled); and the solve "
             f"loop's per-row bookkeeping (residual norms, best iterates, health records, stop tests) compiled, "
             f"`solve(compile_bookkeeping=\"{backend}\")`, under plain iteration and under Anderson.", "",
             "| problem | NFE/row | Anderson eager (s) | m x m update compiled / eager | step (same formulation) eager (s) "
             "| step compiled / step eager | Broyden eager (s) | Broyden m x m update compiled / eager "
             "| plain eager (s) | plain, bookkeeping compiled / eager | Anderson, bookkeeping compiled / eager |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def wall(r: dict, label: str) -> float:
        return r[label]["wall_s_median"] or math.nan

    for name, pr in out["problems"].items():
        r = pr["results"]
        e, st_e, b_e, p_e = wall(r, "eager"), wall(r, "step, eager"), wall(r, "broyden eager"), wall(r, "plain eager")
        lines.append(f"| {name} | {r['eager']['nfe_per_row'] or math.nan:.1f} | {e:.4f} | "
                     f"{wall(r, 'm x m update compiled') / e:.3f} | {st_e:.4f} | {wall(r, 'step compiled') / st_e:.3f} | "
                     f"{b_e:.4f} | {wall(r, 'broyden m x m update compiled') / b_e:.3f} | {p_e:.4f} | "
                     f"{wall(r, 'plain, bookkeeping compiled') / p_e:.3f} | {wall(r, 'bookkeeping compiled') / e:.3f} |")
    lines += ["", "First calls, compilation included (s): " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in pr["first_call_with_compile_s"].items())
        for name, pr in out["problems"].items()) + ".", "",
        "Errors: " + ("; ".join(f"{name} / {label}: {v['error']}" for name, pr in out["problems"].items()
                                for label, v in pr["results"].items() if v.get("error")) or "none") + ".", "",
        "Defaults: eager (`Anderson(compile=None)`, `Broyden(compile=None)`, `solve(compile_bookkeeping=None)`); "
        "compiling is worth it only where a ratio above is below 1. The first compiled call of a process pays the "
        "compilation (later problems reuse part of it).", ""]
    atomic_write_text(a.out / f"{stem}.json", json.dumps(out, indent=1))
    atomic_write_text(a.out / f"{stem}.md", "\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per solver (median reported)")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 run (smoke test)")
    ap.add_argument("--note", default="", help="a note on the machine's load, stored in the results")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (results file gets a suffix)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--from-json", type=Path, default=None,
                    help="recompute targets and markdown from an existing results JSON (no solving)")
    ap.add_argument("--compile-check", action="store_true",
                    help="only time eqsolve eager vs compiled (-> results/solvers_compile[_<device>...].{json,md})")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend of --compile-check")
    ap.add_argument("--device", default="cpu", help="where the maps and solvers run (cpu, cuda, cuda:1, ...)")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="dtype of the iterates and maps")
    ap.add_argument("--tol", type=float, default=None,
                    help="relative tolerance (default: 1e-5 in float32, 1e-2 in bfloat16, 1e-10 in float64)")
    ap.add_argument("--problems", nargs="+", default=None,
                    help="names of the problems to run (default: all); e.g. to skip the small ones")
    ap.add_argument("--no-gmres", action="store_true",
                    help="skip the GMRES limits (CPU scipy work, slow at large d; the NFE targets fall back to <= 1)")
    a = ap.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else list(argv)
    if a.compile_check:
        return compile_check(a)
    if a.from_json is not None:
        results = json.loads(a.from_json.read_text())
        results["meta"]["report_regenerated"] = "targets and markdown recomputed from the JSON by --from-json"
        results["targets"] = targets(results)
        m = results["meta"]
        stem = results_stem(m.get("device", "cpu"), m.get("dtype", "float32"), m.get("torch_threads", 1),
                            m.get("batch", 64), m.get("d", 512))
        atomic_write_text(a.out / f"{stem}.json", json.dumps(results, indent=1))
        atomic_write_text(a.out / f"{stem}.md", to_markdown(results))
        return results
    if a.quick:
        a.runs, a.d, a.batch = 1, 64, 8
    t_start = time.perf_counter()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(a.device), DTYPES[a.dtype]
    stem = results_stem(device.type, a.dtype, a.threads, a.batch, a.d)
    problems = make_problems(a.d, a.batch, small_d=32, small_batch=4, dtype=dtype, device=device, tol=a.tol)
    if a.problems is not None:
        wanted = a.problems
        unknown = sorted(set(wanted) - {p.name for p in problems})
        if unknown:
            raise SystemExit(f"--problems: unknown {unknown}; valid: {[p.name for p in problems]}")
        problems = [p for p in problems if p.name in wanted]
    with_scipy = device.type == "cpu" and dtype == torch.float32
    results = {"meta": {
        "command": "python benchmarks/solvers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "torch": torch.__version__, "torchdeq": getattr(torchdeq, "__version__", "0.1.0"), "scipy": scipy.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "commit": _git_commit(), "tol": problems[0].tol,
        "slack": problems[0].slack, "dtype": a.dtype, "device": device.type, "device_name": device_name(device),
        "batch": a.batch, "d": a.d,
        "max_iter": a.max_iter, "runs": a.runs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(), "note": a.note, "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }, "problems": {}}
    for p in problems:
        t0 = time.perf_counter()
        fns: dict[str, Callable] = {}
        for s in EQSOLVE:
            fns[f"eqsolve.{s}"] = lambda s=s, p=p: run_eqsolve(p, s, a.max_iter)
            if p.name == "mixed_easy_hard":
                fns[f"eqsolve.{s}.compact=False"] = lambda s=s, p=p: run_eqsolve(p, s, a.max_iter, compact=False)
        for s in TORCHDEQ:
            fns[f"torchdeq.{s}"] = lambda s=s, p=p: run_torchdeq(p, s, a.max_iter)
        if p.small and with_scipy:
            for s in SCIPY:
                fns[f"scipy.{s}"] = lambda s=s, p=p: run_scipy(p, s, a.max_iter)
        r = measure(fns, p, a.runs)
        entry = {"info": {k: v for k, v in p.info.items() if not k.startswith("_")}, "results": r}
        entry["gmres_matvecs"] = None if a.no_gmres else gmres_matvecs(p)
        entry["gmres_kind"] = "exact" if p.linear is not None else "linearised at z*"
        results["problems"][p.name] = entry
        print(f"{p.name}: {time.perf_counter() - t0:.1f}s  " + "  ".join(
            f"{k}={'error' if v.get('error') else round(v['nfe_per_row'])}{'' if v['solved'] else '(x)'}"
            for k, v in r.items()), flush=True)
        # written after every problem: a run cut short (a time limit) keeps what it measured
        done = len(results["problems"]) == len(problems)
        results["meta"]["complete"] = done
        results["meta"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        results["meta"]["wall_s_total"] = round(time.perf_counter() - t_start, 1)
        results["targets"] = targets(results)
        atomic_write_text(a.out / f"{stem}.json", json.dumps(results, indent=1))
        atomic_write_text(a.out / f"{stem}.md", to_markdown(results))
    for t in results["targets"]:
        val = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']} [{t['problem']}]: {val} (<= {t['threshold']})")
    return results


if __name__ == "__main__":
    main()

"""The generic loop: statuses, best iterate, NFE accounting, compaction, options, dtypes, shapes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eqsolve.solvers import (
    Anderson,
    Broyden,
    FixedPointIteration,
    SolveError,
    Status,
    get_solver,
    solve,
)

SOLVERS = ("fixed_point", "anderson", "broyden")


def _contraction(d=6, q=0.5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=g, dtype=dtype)
    return q * w / torch.linalg.matrix_norm(w, ord=2)


class RowCounter:
    """Counts the rows f is evaluated on."""

    def __init__(self, f):
        self.f, self.rows, self.calls = f, 0, 0

    def __call__(self, z, *args):
        self.rows += z.shape[0]
        self.calls += 1
        return self.f(z, *args)


# ---- statuses ---------------------------------------------------------------------------------

def test_converged_and_max_iter():
    w = _contraction(q=0.9)
    x = torch.randn(4, 6, dtype=torch.float64)
    sol = solve(lambda z, x: torch.tanh(z @ w.T + x), torch.zeros(4, 6, dtype=torch.float64), x,
                solver="fixed_point", tol=1e-10, max_iter=3)
    assert (sol.status == Status.MAX_ITER).all()
    assert (sol.nstep == 3).all() and (sol.nfe == 4).all()
    sol = solve(lambda z, x: torch.tanh(z @ w.T + x), torch.zeros(4, 6, dtype=torch.float64), x,
                solver="fixed_point", tol=1e-10, max_iter=500)
    assert (sol.status == Status.CONVERGED).all()


def test_diverged_when_plain_iteration_blows_up():
    sol = solve(lambda z: -1.5 * z + 1.0, torch.zeros(3, 4), solver="fixed_point", max_iter=200)
    assert (sol.status == Status.DIVERGED).all()
    # 1.5^k first exceeds diverge_factor=1e4 over the smallest residual at k = 23.
    assert (sol.nstep == 23).all()
    sol = solve(lambda z: -1.5 * z + 1.0, torch.zeros(3, 4), solver="fixed_point", max_iter=200, diverge_factor=10.0)
    assert (sol.nstep == 6).all()
    assert torch.isfinite(sol.z).all()


def test_nonfinite_rows_stop_and_keep_their_best_finite_iterate():
    # Row 1 leaves the domain (NaN) once |z| > 10 while diverging; row 0 converges.
    def f(z, a):
        out = a * z + 1.0
        return torch.where(z.abs() > 10, torch.nan, out)

    a = torch.tensor([[0.5], [-1.8]], dtype=torch.float64)
    for solver in ("fixed_point", "anderson", "broyden"):
        sol = solve(f, torch.zeros(2, 3, dtype=torch.float64), a, solver=solver, tol=1e-10, max_iter=100,
                    diverge_factor=None, trace=True)
        if solver == "fixed_point":
            assert sol.status.tolist() == [Status.CONVERGED, Status.NONFINITE]
        assert torch.isfinite(sol.z).all()
        assert torch.isfinite(sol.abs_residual).all()
    # Plain iteration: the returned z of row 1 is the best finite iterate seen, not the last.
    sol = solve(f, torch.zeros(2, 3, dtype=torch.float64), a, solver="fixed_point", tol=1e-10, max_iter=100,
                diverge_factor=None, trace=True)
    finite_trace = sol.trace[1][torch.isfinite(sol.trace[1])]
    assert sol.rel_residual[1] == finite_trace.min()


def test_nan_from_the_first_evaluation_returns_z0():
    z0 = torch.randn(3, 5)
    sol = solve(lambda z: z * torch.nan, z0, solver="anderson")
    assert (sol.status == Status.NONFINITE).all()
    torch.testing.assert_close(sol.z, z0)
    assert (sol.nfe == 1).all() and (sol.nstep == 0).all()


def test_stagnated_on_a_two_cycle():
    # z -> -z + 2 has the fixed point 1 but plain iteration cycles 0, 2, 0, 2, ...
    sol = solve(lambda z: 2.0 - z, torch.zeros(2, 3), solver="fixed_point", max_iter=100, stall_window=7)
    assert (sol.status == Status.STAGNATED).all()
    assert (sol.nstep == 7).all()
    # Anderson solves it (a linear map) in two steps.
    sol = solve(lambda z: 2.0 - z, torch.zeros(2, 3), solver="anderson", max_iter=100, stall_window=7)
    assert (sol.status == Status.CONVERGED).all()
    torch.testing.assert_close(sol.z, torch.ones(2, 3))


def test_status_messages_and_summary():
    assert all(isinstance(s.message, str) and s.message for s in Status)
    sol = solve(lambda z: 0.5 * z, torch.ones(4, 2), solver="fixed_point", tol=1e-3, max_iter=3)
    summary = sol.summary()
    assert summary["converged"] == 0.0 and summary["status_max_iter"] == 1.0
    assert summary["nfe_mean"] == 4.0
    assert sol.failed_rows() == [0, 1, 2, 3]


def test_throw_lists_failed_rows():
    a = torch.tensor([[0.5], [-1.5], [0.5]])
    with pytest.raises(SolveError, match=r"1 of 3 rows did not converge(.|\n)*row 1: DIVERGED"):
        solve(lambda z, a: a * z + 1.0, torch.zeros(3, 2), a, solver="fixed_point", max_iter=100, throw=True)
    sol = solve(lambda z, a: 0.5 * z + 1.0, torch.zeros(3, 2), a, solver="fixed_point", max_iter=100, throw=True)
    assert sol.converged.all()


# ---- accounting and compaction -----------------------------------------------------------------

@pytest.mark.parametrize("solver", SOLVERS)
def test_compact_calls_f_on_fewer_rows_and_nfe_is_exact(solver):
    # Mixed batch: per-row contraction from 0.05 to 0.95.
    q = torch.tensor([0.05, 0.95, 0.05, 0.05, 0.5, 0.05], dtype=torch.float64)[:, None]
    w = _contraction(d=8, q=1.0)
    x = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = lambda z, q, x: torch.tanh(q * (z @ w.T) + x)  # noqa: E731
    counts = {}
    for compact in (True, False):
        fc = RowCounter(f)
        sol = solve(fc, torch.zeros(6, 8, dtype=torch.float64), q, x, solver=solver, tol=1e-10, max_iter=500,
                    compact=compact)
        assert sol.converged.all()
        counts[compact] = fc.rows
        if compact:
            assert fc.rows == int(sol.nfe.sum())  # NFE is exactly what f saw
        else:  # every row is computed until the slowest one stops
            assert fc.rows == 6 * fc.calls == 6 * int(sol.nfe.max())
    assert counts[True] < counts[False]
    if solver == "fixed_point":  # the hard row needs ~10x the steps of the easy ones
        assert counts[True] < 0.5 * counts[False]


def test_check_every_limits_host_checks_but_not_results():
    q = torch.tensor([0.1, 0.9, 0.3], dtype=torch.float64)[:, None]
    f = lambda z, q: q * z + 1.0  # noqa: E731
    a = solve(f, torch.zeros(3, 2, dtype=torch.float64), q, solver="fixed_point", tol=1e-8, max_iter=400)
    fc = RowCounter(f)
    b = solve(fc, torch.zeros(3, 2, dtype=torch.float64), q, solver="fixed_point", tol=1e-8, max_iter=400,
              check_every=10)
    assert a.nstep.tolist() == b.nstep.tolist() and a.nfe.tolist() == b.nfe.tolist()
    torch.testing.assert_close(a.z, b.z)
    # Rows leave only at checks, so f saw more rows than the NFE it reports, by < 10 steps per row.
    assert int(b.nfe.sum()) < fc.rows < int(b.nfe.sum()) + 3 * 10


def test_trace_records_residuals_and_nan_after_stop():
    q = torch.tensor([0.1, 0.8], dtype=torch.float64)[:, None]
    sol = solve(lambda z, q: q * z + 1.0, torch.zeros(2, 3, dtype=torch.float64), q, solver="fixed_point",
                tol=1e-6, stop="abs", max_iter=200, trace=True)
    t = sol.trace
    assert t.shape == (2, int(sol.nstep.max()) + 1)
    assert sol.abs_trace is t and sol.rel_trace.shape == t.shape
    torch.testing.assert_close(t[:, 0], torch.full((2,), math.sqrt(3), dtype=torch.float64))
    n0 = int(sol.nstep[0])
    assert torch.isfinite(t[0, : n0 + 1]).all() and torch.isnan(t[0, n0 + 1 :]).all()
    assert t[0, n0] <= 1e-6 < t[0, n0 - 1]
    assert solve(lambda z: 0.5 * z, torch.ones(2, 2)).trace is None


def test_snapshots_are_best_iterates_after_the_given_steps():
    sol = solve(lambda z: 0.5 * z + 1.0, torch.zeros(2, 1, dtype=torch.float64), solver="fixed_point",
                tol=1e-12, max_iter=100, snapshots=[0, 1, 3, 1000])
    values = [s[0, 0].item() for s in sol.snapshots]
    assert values[:3] == [0.0, 1.0, 1.75]
    torch.testing.assert_close(sol.snapshots[3], sol.z)


def test_best_iterate_is_returned_not_the_last():
    # Anderson on a map whose residual cannot go below 1: it returns the best, with matching residuals.
    sol = solve(lambda z: z + torch.cos(z).sign(), torch.zeros(3, 2), solver="anderson", max_iter=20,
                stall_window=None, diverge_factor=None, trace=True)
    assert torch.isfinite(sol.z).all()
    fz = sol.z + torch.cos(sol.z).sign()
    torch.testing.assert_close(sol.abs_residual, torch.linalg.vector_norm(fz - sol.z, dim=1))



@pytest.mark.parametrize("check_every", [1, 3], ids=["host_every_step", "frozen_between_looks"])
def test_the_best_iterate_is_kept_when_rows_stop_improving(check_every):
    # z_{k+1} = f(z_k) = z_k + r_k: the residual of z_k is |r_k|. Row 0 improves for 3 steps
    # and then worsens; row 1 improves at every step.
    r = torch.tensor([[4.0, 2.0, 1.0, 3.0, 5.0, 6.0], [4.0, 3.0, 2.0, 1.0, 0.9, 0.8]], dtype=torch.float64)
    calls = [0]

    def f(z):
        out = z + r[:, calls[0]:calls[0] + 1]
        calls[0] += 1
        return out

    sol = solve(f, torch.zeros(2, 1, dtype=torch.float64), solver="fixed_point", tol=1e-12, stop="abs",
                max_iter=5, stall_window=None, diverge_factor=None, check_every=check_every)
    assert sol.nstep.tolist() == [5, 5]
    torch.testing.assert_close(sol.abs_residual, torch.tensor([1.0, 0.8], dtype=torch.float64), rtol=0, atol=1e-12)
    # z_2 = 4 + 2 and z_5 = 4 + 3 + 2 + 1 + 0.9
    torch.testing.assert_close(sol.z[:, 0], torch.tensor([6.0, 10.9], dtype=torch.float64), rtol=0, atol=1e-12)

# ---- options and inputs ------------------------------------------------------------------------

def test_strict_options_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option 'mm' \(did you mean 'm'\?\) for solver 'anderson'; valid: beta, compile, delay, m, max_cond, ridge"):
        get_solver("anderson", mm=3)
    with pytest.raises(ValueError, match="unknown option 'memroy'.*did you mean 'memory'"):
        solve(lambda z: z, torch.zeros(1, 1), solver="broyden", memroy=3)
    with pytest.raises(ValueError, match="unknown solver 'andersen'.*did you mean 'anderson'.*valid: anderson, broyden, fixed_point, (.*, )?naive"):
        solve(lambda z: z, torch.zeros(1, 1), solver="andersen")
    with pytest.raises(ValueError, match="only be given with a solver name"):
        solve(lambda z: z, torch.zeros(1, 1), solver=Anderson(), m=3)
    with pytest.raises(TypeError):
        Anderson(mm=3)


@pytest.mark.parametrize("bad", [
    dict(stop="relative"), dict(tol=-1.0), dict(tol=float("nan")), dict(max_iter=-1), dict(max_iter=2.5),
    dict(check_every=0), dict(diverge_factor=0.5), dict(stall_window=0), dict(snapshots=[-1]),
])
def test_invalid_loop_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        solve(lambda z: 0.5 * z, torch.zeros(2, 2), **bad)


@pytest.mark.parametrize("make", [
    lambda: FixedPointIteration(tau=0.0), lambda: FixedPointIteration(tau=1.5), lambda: Anderson(m=0),
    lambda: Anderson(beta=0.0), lambda: Anderson(ridge=-1.0), lambda: Anderson(max_cond=0.5),
    lambda: Broyden(memory=0), lambda: Broyden(line_search="yes"), lambda: Broyden(reset_factor=1.0),
    lambda: Anderson(compile=True),
])
def test_invalid_option_values(make):
    with pytest.raises(ValueError, match="option"):
        make()


def test_invalid_inputs():
    with pytest.raises(TypeError, match="floating-point"):
        solve(lambda z: z, torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="tensor"):
        solve(lambda z: z, [[0.0]])
    with pytest.raises(ValueError, match="B >= 1"):
        solve(lambda z: z, torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"args\[0\] has shape \(3, 2\).*batch 2"):
        solve(lambda z, x: z, torch.zeros(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same shape as z"):
        solve(lambda z: z.sum(dim=1), torch.zeros(2, 2))


# ---- dtypes, shapes, devices, autograd ---------------------------------------------------------

@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 2, 3, 2)])
def test_dtypes_and_shapes(solver, dtype, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(dtype)
    f = lambda z, x: 0.5 * torch.tanh(z) + x  # noqa: E731
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    sol = solve(f, torch.zeros(shape, dtype=dtype), x, solver=solver, tol=tol, max_iter=100)
    assert sol.z.shape == shape and sol.z.dtype == dtype
    assert sol.abs_residual.dtype == dtype and sol.nfe.dtype == torch.int64 and sol.status.dtype == torch.int64
    assert sol.converged.all(), sol.describe_failures()
    torch.testing.assert_close(f(sol.z, x), sol.z, rtol=10 * tol, atol=10 * tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", SOLVERS)
def test_cuda(solver):
    w = _contraction(d=32, q=0.9).cuda().float()
    x = torch.randn(16, 32, device="cuda")
    sol = solve(lambda z, x: torch.tanh(z @ w.T + x), torch.zeros(16, 32, device="cuda"), x, solver=solver,
                tol=1e-5, max_iter=200)
    assert sol.z.is_cuda and sol.status.is_cuda and sol.converged.all()


@pytest.mark.parametrize("solver", [FixedPointIteration(tau=0.8), Anderson(m=3), Broyden(memory=3)])
def test_steps_are_differentiable_when_unrolled(solver):
    # Backpropagating through unrolled steps (grad enabled: buffers are updated out of place)
    # matches central finite differences of the same computation.
    from eqsolve.solvers import flat_map

    w = _contraction(d=4, q=0.7)
    x0 = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def unrolled(x):
        f = flat_map(lambda z: torch.tanh(z @ w.T + x), (4,))
        state = solver.init(f, torch.zeros(2, 4, dtype=torch.float64), ())
        for _ in range(6):
            state = solver.step(f, state, ())
        return state.z.sum()

    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(unrolled(x), x)
    eps = 1e-6
    fd = torch.zeros_like(x0)
    for i in range(x0.numel()):
        e = torch.zeros_like(x0).view(-1)
        e[i] = eps
        e = e.view_as(x0)
        with torch.no_grad():
            fd.view(-1)[i] = (unrolled(x0 + e) - unrolled(x0 - e)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", SOLVERS)
def test_host_syncs_at_most_once_per_check(solver):
    import warnings

    # a bounded map without a fixed point, so every row runs all 40 steps (a contraction can
    # reach an exact float32 fixed point, residual 0 <= tol 0, and stop early: seen on an H200)
    x = torch.randn(16, 32, device="cuda")
    f = lambda z, x: torch.where(z >= 0, -1.0, 1.0) * x.abs()  # noqa: E731
    kw = dict(solver=solver, tol=0.0, max_iter=40, check_every=10, stall_window=None, diverge_factor=None)
    solve(f, torch.zeros(16, 32, device="cuda"), x, **kw)  # warm-up: lazy CUDA/linalg initialisation
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sol = solve(f, torch.zeros(16, 32, device="cuda"), x, **kw)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert (sol.nstep == 40).all()
    syncs = [c for c in caught if "synchroniz" in str(c.message).lower()]
    assert len(syncs) <= 40 // 10 + 1, [str(c.message) for c in syncs]


@pytest.mark.parametrize("solver", [Anderson(m=3), Broyden(memory=3)])
def test_unrolling_from_a_state_computed_without_grad(solver):
    # Unrolled(k) gradients: the state comes from a no-grad solve, the last steps record a graph.
    from eqsolve.solvers import flat_map

    w = torch.nn.Parameter(_contraction(d=5, q=0.7))
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    f = flat_map(lambda z: torch.tanh(z @ w.T + x), (5,))
    with torch.no_grad():
        state = solver.init(f, torch.zeros(2, 5, dtype=torch.float64), ())
        for _ in range(4):
            state = solver.step(f, state, ())
    for _ in range(2):
        state = solver.step(f, state, ())
    state.z.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


# ---- runaway iterates: DIVERGED on the state's scale, not CONVERGED ------------------------------

def _no_root_maps(dtype):
    """Maps with ``g(z) = f(z) - z`` bounded away from 0 (no fixed point), and their argument."""
    c = torch.randn(16, 32, generator=torch.Generator().manual_seed(0)).abs().to(dtype) + 1
    return {
        "shift": lambda z, c: z + c,  # g = c: the relative residual -> 0 as ||z|| -> inf
        "shift_sin": lambda z, c: z + c + 0.5 * torch.sin(z),  # g >= 0.5 everywhere
    }, c


def _start_scale(f, z0, *args):
    """``||f(z0)|| + ||f(z0) - z0||`` per row: the scale the runaway test measures ``||f(z)||`` against."""
    fz0 = f(z0, *args).flatten(1)
    return torch.linalg.vector_norm(fz0, dim=1) + torch.linalg.vector_norm(fz0 - z0.flatten(1), dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ["shift", "shift_sin"])
def test_a_map_without_fixed_point_never_converges(name, solver, dtype):
    maps, c = _no_root_maps(dtype)
    f, z0 = maps[name], torch.zeros(16, 32, dtype=dtype)
    sol = solve(f, z0, c, solver=solver, tol=1e-6, max_iter=200)
    assert not sol.converged.any(), sol.status.tolist()
    if solver == "fixed_point":
        # Plain iteration creeps (||z_k|| ~ k ||c||): it never reaches 1e4 times its start in 200 steps.
        assert (sol.status == Status.MAX_ITER).all()
    elif dtype == torch.float32 or name == "shift_sin":
        # The secant methods throw z far out, where the relative residual is tiny (in float32,
        # f(z) - z even rounds to 0 on "shift"): without the runaway-state test they would
        # report CONVERGED.
        # (On "shift" in float64 their differences vanish and they fall back to plain steps.)
        assert (sol.status == Status.DIVERGED).all(), sol.status.tolist()
        assert (sol.nstep < 200).all()
    # The returned iterate is the best one within the row's scale, with its own residuals.
    fz = f(sol.z, c)
    assert (torch.linalg.vector_norm(fz, dim=1) <= 1e4 * _start_scale(f, z0, c)).all()
    torch.testing.assert_close(sol.abs_residual, torch.linalg.vector_norm(fz - sol.z, dim=1))


@pytest.mark.parametrize("solver", SOLVERS)
def test_runaway_rows_stop_alike_whatever_the_host_check_and_compaction(solver):
    # Per-row semantics: a batch mixing rows without a fixed point (a = 1) and contractive rows
    # (a = 0.5) of very different scales ends the same for every check_every and compaction.
    gen = torch.Generator().manual_seed(1)
    a = torch.tensor([1.0, 0.5, 1.0, 0.5, 0.5, 1.0])[:, None]
    c = (torch.rand(6, 8, generator=gen) + 1) * torch.tensor([1e-3, 1e-3, 1.0, 1e3, 1e6, 1e6])[:, None]
    f = lambda z, a, c: a * z + c  # noqa: E731
    runs = [solve(f, torch.zeros(6, 8), a, c, solver=solver, tol=1e-5, max_iter=100, check_every=every,
                  compact=compact) for every in (1, 4) for compact in (True, False)]
    for sol in runs:
        assert sol.converged[a[:, 0] == 0.5].all(), sol.describe_failures()
        assert not sol.converged[a[:, 0] == 1.0].any(), sol.status.tolist()
        assert sol.status.tolist() == runs[0].status.tolist() and sol.nstep.tolist() == runs[0].nstep.tolist()
        torch.testing.assert_close(sol.z, runs[0].z)
    if solver != "fixed_point":
        assert (runs[0].status[a[:, 0] == 1.0] == Status.DIVERGED).all()


def test_a_far_fixed_point_from_zero_converges():
    # f(z) = 0.5 z + c: z* = 2c of norm 1e3 (and 1e6), from z0 = 0, in float32 and float64.
    for dtype in (torch.float32, torch.float64):
        for norm in (1e3, 1e6):
            c = torch.randn(4, 16, generator=torch.Generator().manual_seed(2)).to(dtype)
            c = c * (norm / 2 / torch.linalg.vector_norm(c, dim=1, keepdim=True))
            for solver in SOLVERS:
                sol = solve(lambda z, c: 0.5 * z + c, torch.zeros(4, 16, dtype=dtype), c, solver=solver,
                            tol=1e-5, max_iter=100)
                assert sol.converged.all(), (dtype, norm, solver, sol.describe_failures())
                torch.testing.assert_close(sol.z, 2 * c, rtol=1e-4, atol=0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    q=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999]),
    log_c=st.integers(-3, 6),
    log_z0=st.sampled_from([None, -3, 0, 4]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_contractions_with_far_fixed_points_still_converge(q, log_c, log_z0, dtype, seed):
    # f(z) = q z Q^T + c with Q orthogonal: a q-contraction whose fixed point can lie up to
    # 1/(1-q) = 1000 times ||c|| away, at any scale of c, from 0 or from a start of any size. The
    # state test (diverge_factor 1e4 times ||f(z0)|| + ||f(z0) - z0||) must never fire on it.
    gen = torch.Generator().manual_seed(seed)
    d = 8
    rot, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    a = (q * rot).to(dtype)
    c = (10.0**log_c * torch.randn(3, d, generator=gen, dtype=torch.float64)).to(dtype)
    z0 = torch.zeros(3, d, dtype=dtype) if log_z0 is None else \
        (10.0**log_z0 * torch.randn(3, d, generator=gen, dtype=torch.float64)).to(dtype)
    f = lambda z, c: z @ a.T + c  # noqa: E731
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    solvers = SOLVERS if q <= 0.5 else ("anderson", "broyden")  # plain iteration would take too long
    for solver in solvers:
        # Anderson with a full history terminates like GMRES; Broyden within 2d steps.
        opts = {"m": d} if solver == "anderson" else {"memory": 2 * d} if solver == "broyden" else {}
        sol = solve(f, z0, c, solver=solver, tol=tol, max_iter=300, stall_window=None, **opts)
        assert not (sol.status == Status.DIVERGED).any(), (solver, sol.describe_failures())
        # The divergence tests never fired: the run is the one without them, step for step.
        ref = solve(f, z0, c, solver=solver, tol=tol, max_iter=300, stall_window=None, diverge_factor=None, **opts)
        assert sol.status.tolist() == ref.status.tolist() and sol.nstep.tolist() == ref.nstep.tolist()
        torch.testing.assert_close(sol.z, ref.z, rtol=0, atol=0)
        # (Broyden converges here too since a rejected trial's pair is kept: 2,560 cases at q = 0.99
        # and 0.999 checked, where clearing the memory on every rejection left 15 stalled.)
        assert sol.converged.all(), (solver, sol.describe_failures())


def test_a_nearly_non_contracting_map_needs_a_larger_diverge_factor():
    # q = 1 - 1e-5: z* = 1e5 c lies beyond 1e4 times the start's scale (2 ||c||). Anderson gets
    # there in two steps; by default the state test calls it DIVERGED (documented), a larger
    # factor or None accepts it.
    c = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    f = lambda z, c: (1 - 1e-5) * z + c  # noqa: E731
    z0 = torch.zeros(3, 4, dtype=torch.float64)
    sol = solve(f, z0, c, solver="anderson", tol=1e-8)
    assert (sol.status == Status.DIVERGED).all()
    for factor in (1e6, None):
        sol = solve(f, z0, c, solver="anderson", tol=1e-8, diverge_factor=factor)
        assert sol.converged.all(), sol.describe_failures()
        torch.testing.assert_close(sol.z, 1e5 * c, rtol=1e-6, atol=0)


def test_anderson_delay_takes_plain_steps_first_then_extrapolates():
    # With delay=k the first k steps of every row are exactly plain iteration (history still
    # recorded), after which the acceleration kicks in and needs far fewer steps than plain.
    w = _contraction(d=16, q=0.95).double()
    x = torch.randn(4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = lambda z, x: torch.tanh(z @ w.T + x)  # noqa: E731
    z0 = torch.zeros(4, 16, dtype=torch.float64)
    kw = dict(tol=0.0, stall_window=None, diverge_factor=None)
    delayed = solve(f, z0, x, solver=Anderson(delay=5), max_iter=5, **kw)
    plain = solve(f, z0, x, solver="fixed_point", max_iter=5, **kw)
    torch.testing.assert_close(delayed.z, plain.z, rtol=0, atol=1e-14)  # z + (f(z) - z) vs f(z)
    fast = solve(f, z0, x, solver=Anderson(delay=5), tol=1e-10, max_iter=300)
    slow = solve(f, z0, x, solver="fixed_point", tol=1e-10, max_iter=300)
    assert fast.converged.all() and slow.converged.all()
    assert fast.nstep.max() < slow.nstep.min()
    with pytest.raises(ValueError, match="delay"):
        Anderson(delay=-1)


def _energy_map(c):
    """f(z) = z - 0.5 grad E(z), E = ||z - c||^2 / 2: a map that uses autograd inside."""

    def f(z):
        with torch.enable_grad():
            zz = z.detach().requires_grad_()
            (g,) = torch.autograd.grad(0.5 * ((zz - c) ** 2).sum(), zz)
        return z - 0.5 * g

    return f


@pytest.mark.parametrize("solver", SOLVERS)
def test_inference_mode_changes_no_result_and_returns_ordinary_tensors(solver):
    w = _contraction(d=6, q=0.8)
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    f = lambda z, x: torch.tanh(z @ w.T + x)  # noqa: E731
    kw = dict(solver=solver, tol=1e-9, max_iter=80, trace=True, snapshots=(2,))
    with torch.no_grad():
        fast = solve(f, torch.zeros(5, 6, dtype=torch.float64), x, **kw)  # inference mode (the default here)
        slow = solve(f, torch.zeros(5, 6, dtype=torch.float64), x, inference=False, **kw)
    for name in ("z", "abs_residual", "rel_residual", "nfe", "nstep", "status", "trace"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=0, atol=0, equal_nan=True,
                                   msg=name)
    tensors = [fast.z, fast.abs_residual, fast.rel_residual, fast.nfe, fast.nstep, fast.status, fast.trace,
               *fast.snapshots]
    assert not any(t.is_inference() for t in tensors)
    # the result takes part in a graph later, as a DEQ's f(z*) does
    wp = torch.nn.Parameter(w.clone())
    torch.tanh(fast.z @ wp.T + x).sum().backward()
    assert wp.grad is not None and torch.isfinite(wp.grad).all()
    fast.z.add_(1.0)  # and may be changed in place


def test_a_map_using_autograd_inside_needs_inference_false():
    c = torch.randn(4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = _energy_map(c)
    with torch.no_grad():
        with pytest.raises(RuntimeError) as info:
            solve(f, torch.zeros(4, 8, dtype=torch.float64), tol=1e-8)
        # the hint is a note on the original error (its type kept), or in its message before 3.11
        assert "inference=False" in str(info.value) + "".join(getattr(info.value, "__notes__", []))
        assert type(info.value) is RuntimeError
        sol = solve(f, torch.zeros(4, 8, dtype=torch.float64), tol=1e-8, inference=False)
    assert sol.converged.all()
    torch.testing.assert_close(sol.z, c)
    # with autograd on, inference mode is off by default: nothing to pass
    assert solve(f, torch.zeros(4, 8, dtype=torch.float64), tol=1e-8).converged.all()


def test_inference_option_is_checked():
    with pytest.raises(ValueError, match="inference"):
        solve(lambda z: 0.5 * z, torch.zeros(2, 3), inference="yes")


@pytest.mark.parametrize("inference", [None, True, False])
def test_the_grad_mode_f_sees_is_the_callers_under_no_grad(inference):
    # torch.inference_mode(False) would switch autograd back on: the history would then be
    # recorded in a graph (a DEQ's forward solve, which passes inference=False, kept it all)
    seen = []
    w = torch.nn.Parameter(_contraction(d=4, q=0.5))

    def f(z):
        seen.append(torch.is_grad_enabled())
        return torch.tanh(z @ w.T + 1.0)

    with torch.no_grad():
        sol = solve(f, torch.zeros(3, 4, dtype=torch.float64), solver="anderson", tol=1e-8, inference=inference)
    assert seen and not any(seen)
    assert not sol.z.requires_grad and sol.z.grad_fn is None


def test_with_autograd_on_f_runs_with_autograd_on():
    seen = []

    def f(z):
        seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
        return 0.5 * z + 1.0

    solve(f, torch.zeros(3, 4, dtype=torch.float64), tol=1e-8)
    assert seen and all(s == (True, False) for s in seen)

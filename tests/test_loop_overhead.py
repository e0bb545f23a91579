"""benchmarks/loop_overhead.py: its op counter, its bare loop, and the per-evaluation op counts it reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def lo():
    pytest.importorskip("torchdeq")
    pytest.importorskip("scipy")
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("loop_overhead", BENCH / "loop_overhead.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="module")
def problems(lo):
    torch.manual_seed(0)
    return {p.name: p for p in lo.bench.make_problems(64, 8, small_d=16, small_batch=4)}


def test_the_counter_splits_kernels_views_and_syncs_and_leaves_f_out(lo):
    x = torch.ones(3)
    counter = lo.OpCounter()
    f = counter.wrap(lambda v: (v * 2).exp().sum())
    with counter:
        y = x + 1  # a kernel
        y.view(3, 1)  # a view
        f(y)  # three kernels, not counted
        f(y)
        bool(y.sum() > 0)  # two kernels and a sync
    assert (counter.kernels, counter.views, counter.syncs, counter.calls) == (3, 1, 1, 2)


def test_the_bare_loop_solves_with_the_evaluations_of_eqsolves_plain_iteration(lo, problems):
    p = problems["mixer_block"]
    z, rows = lo.bare_plain_iteration(p, 300)
    assert (lo.bench.residuals(p, z) <= p.tol * p.slack).all()
    _, eq_rows = lo.bench.run_eqsolve(p, "fixed_point", 300)
    # the same stopping test on the same iterates (a row may round differently in another batch)
    assert abs(rows - eq_rows) <= 0.01 * eq_rows


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden"])
def test_the_loop_reads_the_device_only_when_it_looks(lo, problems, solver):
    # A look every `every` steps (and the last one) reads the stop mask; when rows leave, moving
    # the history buffers' tail rows into the holes reads their positions (a second read while
    # the queue is already drained). Nothing in between.
    p = problems["tanh_rho0.99"]
    for every in (1, 8):
        r = lo.count(p, "eqsolve", solver, 300, every)
        looks = (r["f_calls"] - 1) // every + 2
        assert r["syncs_per_call"] * r["f_calls"] <= 2 * looks, (every, r)
        if solver == "fixed_point":  # no history buffers: one read per look
            assert r["syncs_per_call"] * r["f_calls"] <= looks, (every, r)


def test_a_step_of_plain_iteration_dispatches_fewer_kernels_than_torchdeqs(lo):
    # Per evaluation of f while no row stops (a slow contraction, tolerance out of reach: no
    # compaction), on the CPU path: the cost of a step besides f, on the host of a CPU and in
    # launches on a GPU, with eqsolve's best iterate, health tests and per-row stopping.
    # Measured against the peer in the same process.
    from torchdeq.solver import get_solver

    w = torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    w = 0.99 * w / torch.linalg.matrix_norm(w, ord=2)
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(1))
    f = lambda z: z @ w.T + x  # noqa: E731
    z0 = torch.zeros(16, 32)
    counts = {}
    for name in ("eqsolve", "torchdeq"):
        counter = lo.OpCounter()
        g = counter.wrap(f)
        with torch.no_grad(), counter:
            if name == "eqsolve":
                sol = lo.solve(g, z0, solver="fixed_point", tol=1e-12, max_iter=40)
            else:
                get_solver("fixed_point_iter")(g, z0, max_iter=40, tol=1e-12, stop_mode="rel")
        if name == "eqsolve":
            assert (sol.nstep == 40).all()  # no row stopped early
        counts[name] = (counter.kernels / counter.calls, counter.syncs / counter.calls)
    assert counts["eqsolve"][0] < counts["torchdeq"][0], counts
    assert counts["eqsolve"][1] <= counts["torchdeq"][1], counts

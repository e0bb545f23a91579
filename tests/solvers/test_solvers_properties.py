"""Properties from the mathematics: secant conditions, finite termination, contraction bounds,
and the equivalence of compact and frozen batches."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solver_problems import SOLVERS, by_name

from eqsolve.solvers import Anderson, Broyden, FixedPointIteration, Status, flat_map, solve


def _linear(d: int, batch: int, seed: int, spread: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    a = spread * torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    b = torch.randn(batch, d, generator=g, dtype=torch.float64)
    return a, b


def test_anderson_satisfies_its_secant_conditions():
    # H dg_i = dz_i for every stored pair (ridge 0): Anderson is a multisecant method.
    g = torch.Generator().manual_seed(0)
    w = 0.9 * torch.randn(12, 12, generator=g, dtype=torch.float64) / math.sqrt(12)
    x = torch.randn(3, 12, generator=g, dtype=torch.float64)
    f = flat_map(lambda z: torch.tanh(z @ w.T + x), (12,))
    solver = Anderson(m=5, ridge=0.0)
    state = solver.init(f, torch.zeros(3, 12, dtype=torch.float64), ())
    for step in range(8):
        state = solver.step(f, state, ())
        used = state.valid[0].nonzero().flatten().tolist()
        assert len(used) == min(step + 1, 5)
        for i in used:
            dg = state.dG[:, i]
            dz = state.dX[:, i] - solver.beta * dg
            torch.testing.assert_close(solver.inverse_jacobian_vp(state, dg), dz, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("n", [3, 6, 10])
def test_broyden_solves_a_linear_system_in_at_most_2n_steps(n):
    a, b = _linear(n, 4, seed=n, spread=0.9)
    z_star = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - a, b.T).T
    # Gay's theorem is about full Broyden steps: the step-rejection safeguard is switched off.
    solver = Broyden(memory=2 * n, reset_factor=math.inf)
    sol = solve(lambda z, b: z @ a.T + b, torch.zeros(4, n, dtype=torch.float64), b, solver=solver,
                tol=1e-9, stop="abs", max_iter=2 * n, diverge_factor=None, stall_window=None)
    assert sol.converged.all(), sol.describe_failures()
    assert (sol.nstep <= 2 * n).all()
    torch.testing.assert_close(sol.z, z_star, rtol=0, atol=1e-7)


def test_anderson_with_full_history_matches_gmres_step_count_on_a_linear_map():
    # With a history as long as the dimension, Anderson terminates like GMRES (<= n + 1 steps).
    n = 8
    a, b = _linear(n, 3, seed=1, spread=0.9)
    sol = solve(lambda z, b: z @ a.T + b, torch.zeros(3, n, dtype=torch.float64), b, solver=Anderson(m=n, ridge=0.0),
                tol=1e-9, stop="abs", max_iter=n + 1)
    assert sol.converged.all(), sol.describe_failures()


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("check_every", [1, 5])
def test_compact_and_frozen_batches_give_the_same_rows(solver, check_every):
    p = by_name("mixed_easy_hard")
    kw = dict(solver=solver, tol=p.tol, stop=p.stop, max_iter=p.max_iter[solver], check_every=check_every)
    a = solve(p.f, p.z0, *p.args, compact=True, **kw)
    b = solve(p.f, p.z0, *p.args, compact=False, **kw)
    assert a.status.tolist() == b.status.tolist()
    assert a.nstep.tolist() == b.nstep.tolist()
    assert a.nfe.tolist() == b.nfe.tolist()
    torch.testing.assert_close(a.z, b.z, rtol=1e-9, atol=1e-11)
    # And the host-check period does not change any row's result either.
    c = solve(p.f, p.z0, *p.args, compact=True, **{**kw, "check_every": 1})
    assert a.nstep.tolist() == c.nstep.tolist()
    torch.testing.assert_close(a.z, c.z, rtol=1e-9, atol=1e-11)


@st.composite
def contractive_maps(draw):
    d = draw(st.integers(2, 12))
    batch = draw(st.integers(1, 5))
    q = draw(st.floats(0.1, 0.9))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    w = q * w / torch.linalg.matrix_norm(w, ord=2)
    z_star = 0.9 * (2 * torch.rand(batch, d, generator=g, dtype=torch.float64) - 1)
    x = torch.atanh(z_star) - z_star @ w.T  # so that z_star is the fixed point
    z0 = 2 * torch.randn(batch, d, generator=g, dtype=torch.float64)
    return (lambda z, x: torch.tanh(z @ w.T + x)), z0, z_star, q, x


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contractive_maps())
def test_fixed_point_iteration_obeys_the_contraction_bound(problem):
    # tanh is 1-Lipschitz and ||W|| = q, so ||z_k - z*|| <= q^k ||z_0 - z*||.
    f, z0, z_star, q, x = problem
    solver = FixedPointIteration()
    state = solver.init(f, z0, (x,))
    err0 = torch.linalg.vector_norm(z0 - z_star, dim=1)
    for k in range(1, 25):
        state = solver.step(f, state, (x,))
        err = torch.linalg.vector_norm(state.z - z_star, dim=1)
        assert (err <= q**k * err0 * (1 + 1e-9) + 1e-12).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contractive_maps(), st.sampled_from(SOLVERS))
def test_random_contractive_maps_converge_within_the_theoretical_bound(problem, solver):
    # Plain iteration reaches ||f(z) - z|| <= (1 + q) q^k ||z_0 - z*|| <= tol by step k_max;
    # every solver must converge, to the known fixed point, within that many steps.
    f, z0, z_star, q, x = problem
    tol = 1e-7
    err0 = torch.linalg.vector_norm(z0 - z_star, dim=1).max().item()
    k_max = max(1, math.ceil(math.log(tol / ((1 + q) * err0)) / math.log(q)))
    sol = solve(f, z0, x, solver=solver, tol=tol, stop="abs", max_iter=k_max)
    assert sol.converged.all(), sol.describe_failures()
    assert (sol.nstep <= k_max).all()
    # ||z - z*|| <= ||f(z) - z|| / (1 - q) for a q-contraction.
    assert (torch.linalg.vector_norm(sol.z - z_star, dim=1) <= tol / (1 - q) * (1 + 1e-6)).all()
    assert (sol.status == Status.CONVERGED).all()

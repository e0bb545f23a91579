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


_KINDS = st.sampled_from(["random", "random", "random", "dup", "zero", "inf", "tiny"])


# derandomized: the same 60 examples every run (10,000 random ones passed locally), so that the
# rounding bound below can never make CI flaky
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(m=st.integers(1, 5), ridge=st.sampled_from([0.0, 1e-6, 0.1]), seed=st.integers(0, 2**16),
       kinds=st.lists(_KINDS, min_size=1, max_size=14))
def test_andersons_kept_inverse_under_any_sequence_of_differences(m, ridge, seed, kinds):
    # Anderson's _push, driven directly with differences in R^3 that may be random, repeated
    # (dependent), zero, tiny (norm 1e-150) or infinite: P stays finite, is zero outside the
    # stored slots and is the inverse of the regularised Gram matrix on them; a zero, tiny or
    # non-finite difference is never stored and a clearly independent one always is; in place
    # and out of place agree. (With ridge 0 a difference dependent on an ill-conditioned set can
    # be stored, its Schur complement being rounding of ~eps * cond: as with a factorisation.)
    from eqsolve.solvers._base import slot_masks
    from eqsolve.solvers.anderson import _push

    n, g = 3, torch.Generator().manual_seed(seed)
    max_cond = 1e-2 / torch.finfo(torch.float64).eps
    dG = torch.zeros(1, m, n, dtype=torch.float64)
    p_in = torch.zeros(1, m, m, dtype=torch.float64)
    p_out = p_in.clone()
    seen: list[torch.Tensor] = []
    worst = 1.0
    for k, kind in enumerate(kinds):
        if kind == "dup" and seen:
            dg = seen[int(torch.randint(len(seen), (1,), generator=g))].clone()
        elif kind == "zero":
            dg = torch.zeros(n, dtype=torch.float64)
        elif kind == "inf":
            dg = torch.tensor([1.0, math.inf, 0.0], dtype=torch.float64)
        else:
            dg = torch.randn(n, generator=g, dtype=torch.float64) * (1e-150 if kind == "tiny" else 1.0)
        seen.append(dg)
        slot, filled, wrapped = k % m, min(k + 1, m), k >= m
        # the reference Schur complement against the pairs stored in the other slots
        others = (torch.diagonal(p_in[0]) > 0) & (torch.arange(m) != slot)
        dG[0, slot] = dg
        col = (dG[0] @ dg).unsqueeze(0)
        norm2 = (dg @ dg * (1.0 + ridge)).reshape(1)
        s_ref = None
        if torch.isfinite(dg).all() and norm2.item() > 0:
            gram = dG[0, others] @ dG[0, others].T
            a_ref = gram + ridge * torch.diag(torch.diagonal(gram))
            c = dG[0, others] @ dg
            s_ref = (norm2 - c @ torch.linalg.solve(a_ref, c)).item() / norm2.item() if others.any() else 1.0
        e, keep = slot_masks(filled, slot, torch.float64, torch.device("cpu"))
        p_in = _push(p_in, col, norm2, e, keep, slot, wrapped, 1.0 / max_cond, inplace=True)
        e, keep = slot_masks(m, slot, torch.float64, torch.device("cpu"))
        p_out = _push(p_out, col, norm2, e, keep, slot, wrapped, 1.0 / max_cond, inplace=False)

        assert torch.isfinite(p_in).all()
        torch.testing.assert_close(p_out, p_in, rtol=1e-9, atol=1e-12 * p_in.abs().max().item())
        stored = torch.diagonal(p_in[0]) > 0
        if s_ref is None or norm2.item() < 1e-200:  # tiny: |dg|^2 ~ 1e-300, P ~ 1 / s would overflow
            assert not stored[slot], (kind, dg)
        elif s_ref > 1e-6:
            assert stored[slot], (kind, s_ref)
        assert (p_in[0][~stored] == 0).all() and (p_in[0][:, ~stored] == 0).all()
        if stored.any():
            # In the Jacobi-scaled space (unit diagonal) the rounding of the updates stays below
            # ~eps * cond^2 of the worst system seen (removing a pair from an ill-conditioned set
            # cancels); checked where that bound is informative.
            gram = dG[0, stored] @ dG[0, stored].T
            d = torch.diagonal(gram).rsqrt()
            a = (gram + ridge * torch.diag(torch.diagonal(gram))) * d[:, None] * d[None, :]
            worst = max(worst, torch.linalg.cond(a).item())
            if worst < 1e6:
                p_scaled = p_in[0][stored][:, stored] / (d[:, None] * d[None, :])
                eye = torch.eye(int(stored.sum()), dtype=torch.float64)
                torch.testing.assert_close(p_scaled @ a, eye, rtol=0, atol=1e-9 + 1e-13 * worst**2)


# derandomized like the test above (10,000 random examples passed locally)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(m=st.integers(1, 5), seed=st.integers(0, 2**16), kinds=st.lists(_KINDS, min_size=1, max_size=14))
def test_broydens_kept_inverse_under_any_sequence_of_pairs(m, seed, kinds):
    # Broyden's _push, driven directly with pairs (s, y) in R^3 that may be random, repeated,
    # zero, tiny (norm 1e-150) or infinite, written into the ring as the solver does (an
    # unstored pair stays in its slot's buffers): Q stays finite, is zero outside the stored slots
    # and is the inverse of the compact form's M over them (in time order); a zero, tiny or
    # non-finite pair is never stored and one whose Schur complement is clearly non-zero always
    # is; a cleared memory is empty; in place and out of place agree.
    from eqsolve.solvers._base import slot_masks
    from eqsolve.solvers.broyden import _MIN_DENOM, _push

    n, g = 3, torch.Generator().manual_seed(seed)
    S = torch.zeros(m, n, dtype=torch.float64)
    Y = torch.zeros(m, n, dtype=torch.float64)
    written = torch.full((m,), -1)
    q_in = torch.zeros(1, m, m, dtype=torch.float64)
    q_out = q_in.clone()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def compact_m(idx):
        s_, y_ = S[idx], Y[idx]
        newer = written[idx][:, None] > written[idx][None, :]
        return s_ @ y_.T + torch.where(newer, s_ @ s_.T, 0.0)

    for k, kind in enumerate(kinds):
        if kind == "dup" and seen:
            s, y = (t.clone() for t in seen[int(torch.randint(len(seen), (1,), generator=g))])
        elif kind == "zero":
            s, y = torch.zeros(n, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
        elif kind == "inf":
            s, y = torch.randn(n, generator=g, dtype=torch.float64), torch.tensor([1.0, math.inf, 0.0], dtype=torch.float64)
        else:
            size = 1e-150 if kind == "tiny" else 1.0
            s, y = (torch.randn(n, generator=g, dtype=torch.float64) * size for _ in range(2))
        seen.append((s, y))
        slot, filled, wrapped = k % m, min(k + 1, m), k >= m
        others = (torch.diagonal(q_in[0]) != 0) & (torch.arange(m) != slot)
        S[slot], Y[slot], written[slot] = s, y, k
        col, row = (S @ y).unsqueeze(0), ((S + Y) @ s).unsqueeze(0)
        corner, scale = (s @ y).reshape(1), (s @ s).reshape(1)
        sigma_ref = None  # the Schur complement against the pairs stored in the other slots
        if torch.isfinite(s).all() and torch.isfinite(y).all():
            idx = others.nonzero().flatten()
            a = compact_m(idx)
            sigma_ref = (corner - row[0, idx] @ torch.linalg.solve(a, col[0, idx])).item() if idx.numel() else corner.item()
        # now and then the step asks to clear the memory (a second rejection), or to clear it
        # unless the pair is stored (a rejected trial)
        draw = torch.rand(1, generator=g).item()
        clear, fragile = torch.tensor([draw < 0.08]), torch.tensor([0.08 <= draw < 0.2])
        q_in_view = q_in[:, :filled, :filled]
        cpu = torch.device("cpu")
        q_new, stored_in = _push(q_in_view, col[:, :filled], row[:, :filled], corner, scale, clear, fragile,
                                 *slot_masks(filled, slot, torch.float64, cpu), slot, wrapped, True)
        q_out, stored_out = _push(q_out, col, row, corner, scale, clear, fragile,
                                  *slot_masks(m, slot, torch.float64, cpu), slot, wrapped, False)

        assert torch.isfinite(q_in).all() and stored_in.tolist() == stored_out.tolist()
        torch.testing.assert_close(q_out, q_in, rtol=1e-9, atol=1e-12 * q_in.abs().max().item())
        stored = torch.diagonal(q_in[0]) != 0
        assert bool(stored[slot]) == bool(stored_in[0])
        if clear or (fragile and not stored_in):
            assert (q_in == 0).all()  # the memory is empty
        elif sigma_ref is None or scale.item() < 1e-200:  # (a tiny pair: Q ~ 1 / sigma would overflow)
            assert not stored[slot], (kind, s, y)
        elif abs(sigma_ref) > 1e3 * _MIN_DENOM * scale.item() and (not stored.any() or torch.linalg.cond(compact_m(stored.nonzero().flatten())) < 1e8):
            assert stored[slot], (kind, sigma_ref)
        assert (q_in[0][~stored] == 0).all() and (q_in[0][:, ~stored] == 0).all()
        if stored.any():
            idx = stored.nonzero().flatten()
            a = compact_m(idx)
            cond = torch.linalg.cond(a).item()
            if cond < 1e6:
                eye = torch.eye(idx.numel(), dtype=torch.float64)
                torch.testing.assert_close(q_in[0][idx][:, idx] @ a, eye, rtol=0, atol=1e-8)

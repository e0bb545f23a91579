"""Attractor census and mode classification on synthetic maps with known landscapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eqsolve.diagnostics.census import FixedPointSystem, run_census
from eqsolve.diagnostics.modes import ModeRule, classify, mode_shares
from eqsolve.jacobian import spectral_radius


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def binomial_ok(observed: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    """Observed fraction within `sigmas` binomial standard errors of p."""
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n)


# --- landscapes ----------------------------------------------------------------------------
def double_well(right_is_correct: bool = True) -> FixedPointSystem:
    """Gradient flow on V = (s^2 - 1)^2 / 4, starts uniform on [-1.5, 2.5]: P(right) = 0.625."""
    return FixedPointSystem(
        map=lambda s, x: s - 0.1 * s * (s**2 - 1),
        init_state=lambda n, g: 4 * torch.rand(n, 1, generator=g) - 1.5,
        decode=lambda s: torch.sign(s).long(),
        is_correct=lambda a, t: a[:, 0] == (1 if right_is_correct else 5),
    )


def k_wells(k: int) -> FixedPointSystem:
    """Gradient flow on -log sum_i exp(-|s - c_i|^2 / 2 sigma^2), wells evenly on a circle."""
    angles = torch.arange(k) * 2 * math.pi / k
    centres = 2 * torch.stack([angles.cos(), angles.sin()], dim=1)

    def step(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        diff = s[:, None, :] - centres[None]
        w = torch.softmax(-(diff**2).sum(-1) / (2 * 0.25), dim=1)
        return s - 0.1 * (w[..., None] * diff).sum(1) / 0.25

    # standard normal starts are rotation invariant, so each basin holds 1/k of them
    return FixedPointSystem(map=step, init_state=lambda n, g: torch.randn(n, 2, generator=g),
                            is_correct=lambda a, t: a[:, 0] > 1.0)


def rotation_cycle(p: int) -> FixedPointSystem:
    """Rotation by 2 pi / p with attraction to the unit circle and to the p-gon vertices."""

    def step(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r, th = s.norm(dim=1), torch.atan2(s[:, 1], s[:, 0])
        r = r + 0.5 * (1 - r)  # radial multiplier 0.5
        th = th - 0.3 * torch.sin(p * th) / p + 2 * math.pi / p  # angular multiplier 0.7
        return torch.stack([r * th.cos(), r * th.sin()], dim=1)

    return FixedPointSystem(map=step, init_state=lambda n, g: torch.randn(n, 2, generator=g),
                            is_correct=lambda a, t: a.norm(dim=1) < 0.1)


def contraction() -> FixedPointSystem:
    """s -> A s + x with ||A|| < 1: one fixed point (I - A)^-1 x, always correct."""
    a = torch.tensor([[0.5, 0.3], [-0.2, 0.4]])
    return FixedPointSystem(map=lambda s, x: s @ a.T + x,
                            init_state=lambda n, g: 3 * torch.randn(n, 2, generator=g),
                            is_correct=lambda a_, t: (a_ - t).norm(dim=1) < 1e-3)


def narrow_basin() -> FixedPointSystem:
    """Contraction to 0 on |s| < 0.2, elsewhere a jump onto the 2-cycle {-1, +1}."""
    return FixedPointSystem(
        map=lambda s, x: torch.where(s.abs() < 0.2, 0.5 * s, -torch.sign(s)),
        init_state=lambda n, g: 2 * torch.rand(n, 1, generator=g) - 1,
        is_correct=lambda a, t: a[:, 0].abs() < 1e-2,
    )


def drift() -> FixedPointSystem:
    """s -> s + 1: no fixed point, nothing repeats."""
    return FixedPointSystem(map=lambda s, x: s + 1.0,
                            init_state=lambda n, g: torch.randn(n, 3, generator=g),
                            is_correct=lambda a, t: torch.zeros(a.shape[0], dtype=torch.bool))


def census(system: FixedPointSystem, n: int, x: torch.Tensor | None = None, **kw):
    x = torch.zeros(1, 1) if x is None else x
    kw = {"max_iter": 200, "tol": 1e-6, "stop": "abs", "generator": gen(), **kw}
    return run_census(system, x, n_starts=n, **kw)


# --- census ---------------------------------------------------------------------------------
def test_double_well_two_attractors_with_basin_fractions_and_stability():
    c = census(double_well(), 256).censuses[0]
    assert len(c.attractors) == 2
    right, left = c.attractors  # sorted by basin
    assert right.correct and not left.correct
    assert binomial_ok(right.basin_fraction, 0.625, 256)
    assert right.basin_fraction + left.basin_fraction == pytest.approx(1.0)
    # f'(+-1) = 1 - 0.1 * 2 = 0.8
    assert right.spectral_radius == pytest.approx(0.8, abs=1e-3)
    assert left.spectral_radius == pytest.approx(0.8, abs=1e-3)
    assert right.mean_residual <= 1e-6
    assert set(c.outcome) == {"converged"}
    assert classify(c) == "b_spurious"


@pytest.mark.parametrize("k", [3, 4])
def test_k_wells_equal_basins(k):
    c = census(k_wells(k), 256, cluster_by="latent").censuses[0]
    assert len(c.attractors) == k
    for a in c.attractors:
        assert binomial_ok(a.basin_fraction, 1 / k, 256)
        assert a.kind == "fixed_point" and a.period == 1
        assert 0.0 < a.spectral_radius < 1.0
    assert (c.label >= 0).all()


def test_rotation_limit_cycle_is_detected_with_its_period_and_stability():
    c = census(rotation_cycle(5), 64, max_iter=60).censuses[0]
    assert (c.outcome == "cycle").all()
    assert (c.period == 5).all()
    assert len(c.attractors) == 1  # every start lands on the same orbit
    cyc = c.attractors[0]
    assert cyc.kind == "cycle" and cyc.period == 5 and cyc.basin_fraction == 1.0
    # residual on the orbit is the chord of the unit circle: 2 sin(pi / 5)
    assert cyc.mean_residual == pytest.approx(2 * math.sin(math.pi / 5), rel=1e-3)
    # stability of the 5-fold map: the angular multiplier 0.7 per step dominates
    assert cyc.spectral_radius == pytest.approx(0.7**5, rel=2e-2)
    assert classify(c) == "a_no_correct"


def test_contraction_single_fixed_point_broad_mode():
    x = torch.tensor([[1.0, -2.0], [0.5, 0.5]])
    a = torch.tensor([[0.5, 0.3], [-0.2, 0.4]])
    target = torch.linalg.solve(torch.eye(2) - a, x.T).T
    run = census(contraction(), 32, x=x, target=target)
    for c, t in zip(run.censuses, target):
        assert len(c.attractors) == 1
        assert c.attractors[0].basin_fraction == 1.0 and c.attractors[0].correct
        assert c.attractors[0].spectral_radius == pytest.approx(
            float(torch.linalg.eigvals(a).abs().max()), rel=1e-3)
        assert torch.allclose(c.end_states, t.expand(32, 2), atol=1e-5)
        assert classify(c) == "d_broad"


def test_narrow_basin_next_to_a_two_cycle():
    c = census(narrow_basin(), 256).censuses[0]
    kinds = {a.kind: a for a in c.attractors}
    assert set(kinds) == {"fixed_point", "cycle"}
    assert binomial_ok(kinds["fixed_point"].basin_fraction, 0.2, 256)
    assert kinds["cycle"].period == 2 and kinds["cycle"].mean_residual == pytest.approx(2.0)
    assert kinds["fixed_point"].correct and not kinds["cycle"].correct
    assert classify(c) == "c_narrow"  # the cycle is not a low-residual rival


def test_drift_is_not_converged_and_quasi_periodic_rotation_oscillates():
    c = census(drift(), 16, max_iter=30).censuses[0]
    assert (c.outcome == "not_converged").all() and not c.attractors
    assert classify(c) == "not_converged"
    turn = torch.tensor([[math.cos(0.9), -math.sin(0.9)], [math.sin(0.9), math.cos(0.9)]])
    rot = FixedPointSystem(map=lambda s, x: s @ turn.T,
                           init_state=lambda n, g: torch.randn(n, 2, generator=g) + 3)
    c = census(rot, 16, max_iter=30, probe_steps=32).censuses[0]
    assert (c.outcome == "oscillating").all()  # irrational angle: no exact period


def test_mode_shares_over_a_data_set_and_rule_thresholds():
    modes = [classify(census(s, 128).censuses[0])
             for s in (double_well(), double_well(False), narrow_basin(), drift())]
    assert modes == ["b_spurious", "a_no_correct", "c_narrow", "not_converged"]
    shares = mode_shares(modes)
    assert shares["b_spurious"] == 0.25 and shares["d_broad"] == 0.0
    assert sum(shares.values()) == pytest.approx(1.0)
    # a spurious basin below the threshold no longer counts: the right well is then broad
    c = census(double_well(), 128).censuses[0]
    assert classify(c, ModeRule(min_spurious_basin=0.5)) == "d_broad"
    with pytest.raises(ValueError, match="broad_basin"):
        ModeRule(broad_basin=1.5)


def test_checkpoints_record_depth_and_match_a_single_solve():
    # starts where the residual falls monotonically, so that the best iterate is the last one
    sys = FixedPointSystem(map=double_well().map,
                           init_state=lambda n, g: 0.6 + 1.9 * torch.rand(n, 1, generator=g))
    one = census(sys, 64, max_iter=40)
    split = census(sys, 64, max_iter=40, checkpoints=[5, 10, 20])
    assert split.checkpoint_residual.shape == (4, 1, 64)
    # plain iteration warm-started at the checkpoints follows the same trajectory
    np.testing.assert_allclose(split.censuses[0].residual, one.censuses[0].residual, rtol=1e-4,
                               atol=1e-9)
    # the traces of the segments join into the single solve's trace, iterate by iterate
    assert split.censuses[0].trace.shape == one.censuses[0].trace.shape == (64, 41)
    np.testing.assert_allclose(split.censuses[0].trace, one.censuses[0].trace, rtol=1e-4,
                               equal_nan=True)
    assert (np.diff(split.checkpoint_nfe, axis=0) >= 0).all()
    np.testing.assert_array_equal(split.checkpoint_nfe[-1], one.checkpoint_nfe[-1])
    # residuals fall with depth on a double well
    assert np.median(split.checkpoint_residual[-1]) < np.median(split.checkpoint_residual[0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_starts"):
        run_census(double_well(), torch.zeros(1, 1), n_starts=0)
    with pytest.raises(ValueError, match="cluster_by"):
        run_census(double_well(), torch.zeros(1, 1), cluster_by="kmeans")


# --- spectral radius ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vjp", "jvp"])
@pytest.mark.parametrize("n", [2, 5, 12])
def test_spectral_radius_matches_dense_eigvals(method, n):
    torch.manual_seed(n)
    b = 6
    w = torch.randn(b, n, n) / n**0.5
    bias, z = torch.randn(b, n), torch.randn(b, n)

    def f(z_, w_, bias_):
        return torch.tanh(torch.einsum("bij,bj->bi", w_, z_) + bias_)

    est = spectral_radius(f, z, w, bias, n_iter=40, method=method, generator=gen(1))
    pre = torch.einsum("bij,bj->bi", w, z) + bias
    dense = (1 - torch.tanh(pre) ** 2)[:, :, None] * w  # d tanh(W z + b) / dz, per row
    torch.testing.assert_close(dense[0], torch.func.jacrev(lambda v: f(v[None], w[:1], bias[:1])[0])(z[0]))
    ref = torch.linalg.eigvals(dense).abs().max(dim=1).values
    torch.testing.assert_close(est, ref, rtol=1e-3, atol=1e-5)


def test_spectral_radius_rotation_and_chunks_and_structured_state():
    # a pure rotation scaled by 0.9: complex pair, plain power iteration never settles
    th = 0.7
    r = 0.9 * torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    rho = spectral_radius(lambda z: z @ r.T, torch.zeros(4, 2), n_iter=10)
    torch.testing.assert_close(rho, torch.full((4,), 0.9))
    # (B, 2, 3, 4) states, per-row scale: the radius is each row's own scale
    scale = torch.tensor([0.1, 0.5, 0.9, 1.2, 0.3])
    z = torch.randn(5, 2, 3, 4)
    f = lambda s, c: c.view(-1, 1, 1, 1) * torch.roll(s, 1, dims=3)  # noqa: E731
    rho = spectral_radius(f, z, scale, n_iter=12, chunk_size=2)
    torch.testing.assert_close(rho, scale)
    with pytest.raises(ValueError, match="method"):
        spectral_radius(f, z, scale, method="dense")


@pytest.mark.parametrize("contraction,expected", [(0.97, "not_converged"), (0.999, "oscillating")])
def test_damped_spiral_is_still_converging_unless_the_residual_is_flat(contraction, expected):
    from eqsolve.diagnostics.orbits import classify_orbits, probe_orbits

    th = 0.9  # irrational turn: no exact period
    turn = contraction * torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    y, step, _, _ = probe_orbits(lambda s, x: s @ turn.T, torch.ones(2, 2), torch.zeros(2, 1),
                                 steps=32)
    outcome, period = classify_orbits(y, step)
    assert outcome.tolist() == [expected] * 2 and period.tolist() == [0, 0]


def test_oscillation_that_keeps_the_right_answer_is_a_correct_attractor():
    # neutral rotation about (3, 0): orbits never settle but stay in x > 0, the "answer"
    th = 0.9
    turn = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    centre = torch.tensor([3.0, 0.0])
    system = FixedPointSystem(
        map=lambda s, x: (s - centre) @ turn.T + centre,
        init_state=lambda n, g: centre + 0.5 * torch.randn(n, 2, generator=g).clamp(-3, 3) / 3,
        decode=lambda s: (s[:, :1] > 0).long(),
        is_correct=lambda a, t: a[:, 0] == 1,
    )
    c = census(system, 32, max_iter=20, probe_steps=32).censuses[0]
    assert (c.outcome == "oscillating").all()
    assert {a.kind for a in c.attractors} == {"oscillation"}
    assert all(a.correct and a.period == 0 and a.spectral_radius is None for a in c.attractors)
    assert sum(a.basin_fraction for a in c.attractors) == pytest.approx(1.0)
    assert classify(c) == "d_broad"


def test_connected_components_match_scipy():
    csgraph = pytest.importorskip("scipy.sparse.csgraph")
    from eqsolve.diagnostics.census import _components

    rng = np.random.default_rng(0)
    for _ in range(100):
        m = int(rng.integers(1, 40))
        adj = rng.random((m, m)) < rng.random() * 0.15
        adj = adj | adj.T | np.eye(m, dtype=bool)
        ours = _components(adj)
        ref = csgraph.connected_components(adj, directed=False)[1]
        # the same partition: labels correspond one to one
        assert len(set(zip(ours, ref))) == len(set(ours)) == len(set(ref))
        assert set(ours) == set(range(len(set(ours))))

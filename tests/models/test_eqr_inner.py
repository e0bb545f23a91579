"""The equilibrium-native EqR: each outer step solves ``z_L = U(z_L, z_H + x)`` with a solver."""

from __future__ import annotations

import pytest
import torch

from eqsolve.models import EqR, EqRConfig
from eqsolve.models.eqr_config import SOLVE_FIELDS

TINY = dict(hidden_size=8, H_cycles=1, L_cycles=2, L_layers=1, expansion=2.0, mixer="sudoku_pool")


def tiny(**options) -> EqR:
    torch.manual_seed(0)
    return EqR(EqRConfig(**TINY, **options)).double()


def inputs(model: EqR, batch: int = 3):
    tokens = torch.randint(1, 11, (batch, 81), generator=torch.Generator().manual_seed(1))
    x = model.embed(tokens)
    s = model.init_state(batch, generator=torch.Generator().manual_seed(2))
    return s, x


def inner_residual(model: EqR, s: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Relative residual of the returned z_L as a fixed point of U(·, z_H + x) (z_H of the input)."""
    z = out[:, 1]
    fz = model._update(z, s[:, 0] + x, 0.0, None)
    return (fz - z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1)


def test_the_map_returns_the_inner_fixed_point():
    model = tiny(inner_solver="anderson", inner_iter=80)
    s, x = inputs(model)
    with torch.no_grad():
        out = model.map(s, x, noise=0.0)
        assert inner_residual(model, s, x, out).max() < 1e-6
        plain = EqR(model.config).double()
        plain.load_state_dict(model.state_dict())
        plain.inner_solver = None  # the release's plain L-cycles stop short of it
        assert inner_residual(plain, s, x, plain.map(s, x, noise=0.0)).min() > 1e-3


def test_inner_solver_is_swappable_and_the_budget_is_the_compute():
    model = tiny(inner_solver="anderson", inner_iter=5)
    assert model.blocks_per_map() == 1 * (5 + 1) * 1
    model.inner_solver = None
    assert model.blocks_per_map() == 1 * (2 + 1) * 1  # L_cycles plain updates
    calls = []
    model.inner_solver = "fixed_point"
    original = model.L_level.forward
    model.L_level.forward = lambda *a: calls.append(1) or original(*a)
    s, x = inputs(model)
    with torch.no_grad():
        model.map(s, x, noise=0.0)
    assert len(calls) == 5 + 1  # inner_iter evaluations of U, then the H-update


@pytest.mark.parametrize("grad", ["phantom", "implicit", "onestep", "unrolled"])
def test_every_inner_gradient_reaches_the_weights_and_the_input(grad):
    model = tiny(inner_solver="anderson", inner_iter=30, inner_grad=grad)
    s, x = inputs(model)
    x = x.detach().requires_grad_(True)
    model.map(s, x, noise=0.0).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    weights = model.L_level.layers[0].mlp
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights.parameters())


def test_implicit_inner_gradient_passes_gradcheck():
    """float64 gradcheck of the map w.r.t. the input injection, with the implicit inner gradient."""
    model = tiny(inner_solver="anderson", inner_iter=60, inner_grad="implicit", inner_backward_iter=200)
    s, x = inputs(model, batch=1)
    gen = torch.Generator().manual_seed(3)
    directions = torch.randn(4, *x.shape[1:], dtype=x.dtype, generator=gen)  # x moves in a 4-D subspace
    probe = torch.randn(s.shape, dtype=s.dtype, generator=gen)
    a = torch.zeros(4, dtype=x.dtype, requires_grad=True)

    def f(coords):
        x_in = x.detach() + torch.einsum("k,kld->ld", coords, directions)
        return (model.map(s, x_in, noise=0.0) * probe).sum()

    assert torch.autograd.gradcheck(f, (a,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_implicit_and_long_phantom_gradients_agree_at_a_converged_inner_solution():
    """At the inner fixed point, IFT and a long unroll from it give the same gradient."""
    grads = {}
    for grad, k in (("implicit", 2), ("phantom", 200)):
        model = tiny(inner_solver="anderson", inner_iter=60, inner_grad=grad, inner_grad_k=k,
                     inner_backward_iter=200)
        s, x = inputs(model)
        model.map(s, x, noise=0.0).square().sum().backward()
        grads[grad] = torch.cat([p.grad.flatten() for p in model.L_level.parameters()])
    cosine = torch.nn.functional.cosine_similarity(grads["implicit"], grads["phantom"], dim=0)
    assert cosine > 0.999


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="inner_grad"):
        EqRConfig(inner_solver="anderson", inner_grad="ift2")
    with pytest.raises(ValueError, match="inner_tol"):
        EqRConfig(inner_solver="anderson", inner_tol=1.5)
    with pytest.raises(ValueError, match="inner_iter"):
        EqRConfig(inner_solver="anderson", inner_iter=0)


def test_weights_move_between_configs_that_differ_only_in_how_they_are_solved(tmp_path):
    from eqsolve.training.loop import _load_initial_weights

    source = EqR(EqRConfig(**TINY))
    source.save_checkpoint(tmp_path / "plain.pt")
    target = EqR(EqRConfig(**TINY, inner_solver="anderson", inner_iter=4))
    assert {"inner_solver", "inner_iter", "L_cycles"} <= SOLVE_FIELDS
    _load_initial_weights(target, str(tmp_path / "plain.pt"))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    wider = EqR(EqRConfig(**{**TINY, "hidden_size": 16}))
    with pytest.raises(ValueError, match="hidden_size"):
        _load_initial_weights(wider, str(tmp_path / "plain.pt"))


def test_inner_damping_moves_no_fixed_point_but_stabilises_plain_iteration():
    """The damped and undamped inner maps share their fixed points (z = Blocks(z + inj))."""
    model = tiny(inner_solver="anderson", inner_iter=80, inner_damping=0.5)
    s, x = inputs(model)
    with torch.no_grad():
        damped = model.map(s, x, noise=0.0)
        solved = inner_residual(model, s, x, damped) < 1e-10
        model.config.inner_damping = None  # lambda_ = 0.95: the map's own update
        assert solved.sum() >= 2
        # a fixed point of the undamped map too
        assert inner_residual(model, s, x, damped)[solved].max() < 1e-9
    with pytest.raises(ValueError, match="inner_damping"):
        EqRConfig(inner_solver="anderson", inner_damping=0.0)


def test_inner_jacobian_terms_estimate_the_inner_map_jacobian():
    """One Hutchinson term per inner solve, unbiased for ||J||_F^2 / n of the (damped) inner map."""
    model = tiny(inner_solver="anderson", inner_iter=60, inner_damping=0.5)
    s, x = inputs(model, batch=1)
    estimates = []
    for seed in range(300):
        model.inner_jacobian_terms = []
        model.map(s, x, noise=0.0, generator=torch.Generator().manual_seed(seed))
        (term,) = model.inner_jacobian_terms
        assert term.requires_grad  # a penalty on it trains the weights
        estimates.append(term.detach())
    with torch.no_grad():
        z_star = model.map(s, x, noise=0.0)[:, 1]
    inj = (s[:, 0] + x).detach()

    def inner(z):
        return 0.5 * z + 0.5 * model.L_level(z + inj, None, None)

    dense = torch.autograd.functional.jacobian(inner, z_star).reshape(z_star.numel(), -1)
    exact = dense.square().sum() / z_star.numel()
    assert abs(torch.stack(estimates).mean() / exact - 1) < 0.1


def test_training_with_an_inner_jacobian_penalty_logs_and_lowers_it(tmp_path):
    from eqsolve.training.config import TrainConfig
    from eqsolve.training.data import build_pool
    from eqsolve.training.loop import Trainer

    config = EqRConfig(**TINY, inner_solver="anderson", inner_iter=6, inner_damping=0.5)
    pool = build_pool(None, limit=None, gen_easy=16, gen_hard=0, seed=0)
    values = {}
    for weight in (0.0, 50.0):
        cfg = TrainConfig(steps=25, batch_size=4, lr=3e-3, warmup_steps=1, inner_jac_weight=weight,
                          gen_easy=16, ema_decay=0.0, halt_weight=0.0, out=str(tmp_path / f"w{weight}"))
        trainer = Trainer(config, cfg, pool)
        metrics = [trainer.train_step() for _ in range(cfg.steps)]
        values[weight] = metrics
    assert all("inner_jac" not in m for m in values[0.0])
    penalised = [m["inner_jac"] for m in values[50.0]]
    assert penalised[-1] < 0.5 * penalised[0]

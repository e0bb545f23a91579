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
    model = tiny(inner_solver="anderson", inner_iter=60, inner_grad="implicit")
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
        model = tiny(inner_solver="anderson", inner_iter=60, inner_grad=grad, inner_grad_k=k)
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
    from eqsolve.training_loop import _load_initial_weights

    source = EqR(EqRConfig(**TINY))
    source.save_checkpoint(tmp_path / "plain.pt")
    target = EqR(EqRConfig(**TINY, inner_solver="anderson", inner_iter=4))
    assert {"inner_solver", "inner_iter", "L_cycles"} <= SOLVE_FIELDS
    _load_initial_weights(target, str(tmp_path / "plain.pt"))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    wider = EqR(EqRConfig(**{**TINY, "hidden_size": 16}))
    with pytest.raises(ValueError, match="hidden_size"):
        _load_initial_weights(wider, str(tmp_path / "plain.pt"))

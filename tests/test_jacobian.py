"""Hutchinson Jacobian regulariser and power-iteration spectral radius vs dense Jacobians."""

from __future__ import annotations

import math

import pytest
import torch

from eqsolve.jacobian import jac_reg, spectral_radius

D = torch.float64


def dense_jacobians(f, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.autograd.functional.jacobian(lambda r, i=i: f(r[None], x[i:i + 1])[0], z[i])
                        for i in range(z.shape[0])])


def tanh_cell(n: int, seed: int, symmetric: bool):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=gen, dtype=D) / math.sqrt(n)
    if symmetric:
        w = (w + w.T) / 2
    return (lambda z, x: torch.tanh(z @ w.T + x)), gen


def test_spectral_radius_matches_eigvals_real_spectrum() -> None:
    f, gen = tanh_cell(8, seed=0, symmetric=True)  # J = diag(d) W with W symmetric: real eigenvalues
    x = torch.randn(5, 8, generator=gen, dtype=D)
    z = torch.randn(5, 8, generator=gen, dtype=D)
    exact = torch.linalg.eigvals(dense_jacobians(f, z, x)).abs().max(dim=1).values
    est = spectral_radius(f, z, x, n_iter=400, generator=torch.Generator().manual_seed(3))
    assert est.shape == (5,)
    assert torch.allclose(est, exact, rtol=2e-3), (est, exact)


def test_spectral_radius_complex_dominant_pair() -> None:
    """A rotation-like dominant pair (|λ| = 0.9) makes single growth factors oscillate."""
    gen = torch.Generator().manual_seed(1)
    block = torch.tensor([[0.9 * math.cos(1.0), -0.9 * math.sin(1.0)], [0.9 * math.sin(1.0), 0.9 * math.cos(1.0)]], dtype=D)
    a = torch.block_diag(block, torch.diag(torch.tensor([0.3, -0.2, 0.1], dtype=D)))
    basis = torch.randn(5, 5, generator=gen, dtype=D) + 3 * torch.eye(5, dtype=D)
    jac = basis @ a @ torch.linalg.inv(basis)
    f = lambda z, x: z @ jac.T + x  # noqa: E731
    z, x = torch.zeros(3, 5, dtype=D), torch.randn(3, 5, generator=gen, dtype=D)
    exact = torch.linalg.eigvals(jac).abs().max().item()
    est = spectral_radius(f, z, x, n_iter=400, generator=torch.Generator().manual_seed(0))
    assert exact == pytest.approx(0.9)
    assert torch.allclose(est, torch.full((3,), exact, dtype=D), rtol=1e-2), est


def test_hutchinson_is_unbiased_for_frobenius_norm() -> None:
    f, gen = tanh_cell(6, seed=2, symmetric=False)
    x = torch.randn(3, 6, generator=gen, dtype=D)
    z = torch.randn(3, 6, generator=gen, dtype=D, requires_grad=True)
    jac = dense_jacobians(f, z.detach(), x)
    exact = jac.pow(2).sum(dim=(1, 2))
    n_probes = 4000
    est = jac_reg(f(z, x), z, vecs=n_probes, create_graph=False, generator=torch.Generator().manual_seed(5))
    # Var ||Jᵀv||² = 2 ||J Jᵀ||_F² for Gaussian v: compare within 4 standard errors.
    stderr = (2 * (jac @ jac.transpose(1, 2)).pow(2).sum(dim=(1, 2)) / n_probes).sqrt()
    assert ((est - exact).abs() < 4 * stderr).all(), (est, exact, stderr)
    # A single probe is noisy: it is an estimate, not the exact value.
    one = jac_reg(f(z, x), z, vecs=1, create_graph=False, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(one, exact, rtol=1e-3)


def test_jac_reg_is_differentiable_and_validates() -> None:
    w = torch.tensor([[0.5, 0.0], [0.0, 2.0]], dtype=D, requires_grad=True)
    z = torch.ones(4, 2, dtype=D, requires_grad=True)
    reg = jac_reg(z @ w.T, z, vecs=2)  # linear map: every probe is exact in expectation
    (grad_w,) = torch.autograd.grad(reg.sum(), w)
    assert grad_w.abs().sum() > 0
    with pytest.raises(ValueError, match="vecs"):
        jac_reg(z @ w.T, z, vecs=0)
    with pytest.raises(ValueError, match="shape"):
        jac_reg((z @ w.T)[:, :1], z)
    with pytest.raises(ValueError, match="n_iter"):
        spectral_radius(lambda z: z, z.detach(), n_iter=1)

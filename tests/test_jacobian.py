"""Hutchinson Jacobian regulariser and the matrix-free spectral radius vs dense Jacobians."""

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
        spectral_radius(lambda z: z, z.detach(), n_iter=0)
    with pytest.raises(ValueError, match="n_arnoldi"):
        spectral_radius(lambda z: z, z.detach(), n_arnoldi=0)
    with pytest.raises(ValueError, match="method"):
        spectral_radius(lambda z: z, z.detach(), method="dense")
    with pytest.raises(ValueError, match="shape"):
        spectral_radius(lambda z: z[:, :1], z.detach())


# --- the one implementation (eqsolve.diagnostics re-exports it) ----------------------------------
ENTRY_POINTS = {"jacobian": spectral_radius}


def non_normal_map(n: int = 20):
    """tanh(A z + x) with A = Q T Qᵀ, T upper triangular: eigenvalues 0.9 ... -0.5, far from normal."""
    gen = torch.Generator().manual_seed(11)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D))
    t = torch.diag(torch.linspace(0.9, -0.5, n, dtype=D)) + torch.triu(torch.randn(n, n, generator=gen, dtype=D), 1)
    a = q @ t @ q.T
    x = 0.3 * torch.randn(4, n, generator=gen, dtype=D)
    z = 0.3 * torch.randn(4, n, generator=gen, dtype=D)
    return (lambda z, x: torch.tanh(z @ a.T + x)), z, x


def complex_pair_map(n: int = 12):
    """tanh(A z + x) whose Jacobians' dominant eigenvalues are a complex pair (a damped rotation)."""
    gen = torch.Generator().manual_seed(12)
    rot = 0.95 * torch.tensor([[math.cos(0.8), -math.sin(0.8)], [math.sin(0.8), math.cos(0.8)]], dtype=D)
    core = torch.block_diag(rot, torch.diag(torch.linspace(0.6, -0.6, n - 2, dtype=D)))
    basis = torch.randn(n, n, generator=gen, dtype=D) + 3 * torch.eye(n, dtype=D)
    a = basis @ core @ torch.linalg.inv(basis)
    x = 0.02 * torch.randn(4, n, generator=gen, dtype=D)
    z = 0.02 * torch.randn(4, n, generator=gen, dtype=D)
    return (lambda z, x: torch.tanh(z @ a.T + x)), z, x


def converged_start_non_normal_map(n: int = 30):
    """Linear, ρ = 0.5 from an isolated eigenvector; the rest is 0.1 plus a large nilpotent part.

    Power iteration converges to the 0.5 direction; the Krylov space beyond it explores the
    non-normal rest, whose Ritz values (field of values) reach ~0.7 > ρ.
    """
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D))
    t = torch.diag(torch.cat([torch.tensor([0.5], dtype=D), torch.full((n - 1,), 0.1, dtype=D)]))
    t[1:, 1:] += torch.triu(torch.randn(n - 1, n - 1, generator=gen, dtype=D), 1)
    a = q @ t @ q.T
    return (lambda z, x: z @ a.T + x), torch.zeros(2, n, dtype=D), torch.ones(2, n, dtype=D)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("method", ["vjp", "jvp"])
@pytest.mark.parametrize("case", ["non_normal", "complex_pair", "converged_start_non_normal"])
def test_both_entry_points_match_dense_eigvals_float64(entry, method, case) -> None:
    f, z, x = {"non_normal": non_normal_map, "complex_pair": complex_pair_map,
               "converged_start_non_normal": converged_start_non_normal_map}[case]()
    jac = dense_jacobians(f, z, x)
    eig = torch.linalg.eigvals(jac)
    exact = eig.abs().max(dim=1).values
    if case == "non_normal":  # departure from normality: ||J Jᵀ - Jᵀ J||_F is of the order of ||J||²
        comm = jac @ jac.transpose(1, 2) - jac.transpose(1, 2) @ jac
        assert (comm.norm(dim=(1, 2)) > 0.5 * jac.norm(dim=(1, 2)) ** 2).all()
    if case == "complex_pair":  # the two largest |λ| are a conjugate pair, not real
        top = eig.gather(1, eig.abs().argsort(dim=1, descending=True)[:, :2])
        assert (top.imag.abs() > 0.1).all() and torch.allclose(top[:, 0], top[:, 1].conj())
    est = ENTRY_POINTS[entry](f, z, x, n_iter=100, method=method, generator=torch.Generator().manual_seed(0))
    assert est.dtype == torch.float64 and est.shape == exact.shape
    torch.testing.assert_close(est, exact, rtol=1e-9, atol=0)


def test_one_implementation_and_its_budget() -> None:
    from eqsolve import diagnostics

    f, z, x = complex_pair_map()
    assert diagnostics.spectral_radius is spectral_radius
    assert spectral_radius(lambda s: 0.5 * s, torch.ones(2, 3), n_iter=4).dtype == torch.float32
    # The cost callers rely on: one forward and n_iter backward passes with vjp, n_iter forward-mode
    # products with jvp; by default n_iter=100.
    counts = {"forward": 0, "backward": 0}

    class Counted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s):
            counts["forward"] += 1
            return s.clone()

        @staticmethod
        def backward(ctx, grad):
            counts["backward"] += 1
            return grad

    def counted(s, x):
        return f(Counted.apply(s), x)

    def calls(s, x):
        counts["forward"] += 1
        return f(s, x)

    for fn, n_iter in ((spectral_radius, 100),):
        counts.update(forward=0, backward=0)
        fn(counted, z, x)
        assert counts == {"forward": 1, "backward": n_iter}
        counts.update(forward=0, backward=0)
        fn(calls, z, x, method="jvp")
        assert counts == {"forward": n_iter, "backward": 0}

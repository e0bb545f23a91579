"""Local stability of a fixed point: spectral radius of the map's Jacobian, matrix-free.

The Jacobian J = df/dz at an end state is never formed. Power iteration runs on Jacobian-vector
products (`method="vjp"`: one forward pass with a graph, then one backward pass per product on
J^T, which has the same spectrum; `method="jvp"`: forward-mode `torch.func.jvp`, which keeps no
graph and so uses less memory). After the power iterations, a few Arnoldi steps from the
converged direction give Ritz values; their largest modulus is the estimate. The Arnoldi
finish matters when the dominant eigenvalues are a complex pair (rotations, cycles): plain power
iteration then never settles on one direction.

Rows are independent (the DEQ contract), so one batched product gives every row its own
J_i v_i; the estimate is per row, shape (B,).

Example:
    >>> import torch
    >>> A = torch.tensor([[0.5, 0.2], [0.0, -0.8]])
    >>> f = lambda z: z @ A.T
    >>> rho = spectral_radius(f, torch.zeros(3, 2), n_iter=30)
    >>> torch.allclose(rho, torch.full((3,), 0.8), atol=1e-4)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _product_fn(
    f: Callable[..., Tensor], z: Tensor, args: tuple, method: str
) -> Callable[[Tensor], Tensor]:
    """Returns v -> J v (jvp) or v -> J^T v (vjp) at z, both acting on z-shaped tensors."""
    if method == "vjp":
        with torch.enable_grad():
            z_in = z.detach().requires_grad_(True)
            fz = f(z_in, *args)
        if fz.shape != z.shape:
            raise ValueError(f"f(z) has shape {tuple(fz.shape)}, expected {tuple(z.shape)}")

        def product(v: Tensor) -> Tensor:
            (g,) = torch.autograd.grad(fz, z_in, v, retain_graph=True, allow_unused=True)
            return torch.zeros_like(v) if g is None else g

        return product
    if method == "jvp":

        def product(v: Tensor) -> Tensor:
            try:
                return torch.func.jvp(lambda s: f(s, *args), (z.detach(),), (v,))[1].detach()
            except NotImplementedError as err:  # e.g. CPU scaled_dot_product_attention
                raise NotImplementedError(
                    f"method='jvp' needs forward-mode AD for every op of f; use method='vjp' "
                    f"({err})") from err

        return product
    raise ValueError(f"method must be 'vjp' or 'jvp', got {method!r}")


def _spectral_radius_rows(
    product: Callable[[Tensor], Tensor],
    z: Tensor,
    n_iter: int,
    n_arnoldi: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Power iteration + Arnoldi finish for one chunk of rows; returns (B,) float32."""
    b = z.shape[0]
    v = torch.randn(z.shape, generator=generator, dtype=z.dtype, device="cpu").to(z.device)
    v = v / v.reshape(b, -1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (z.dim() - 1)))
    shape = (-1, *([1] * (z.dim() - 1)))
    for _ in range(max(n_iter - n_arnoldi, 0)):
        w = product(v)
        nrm = w.reshape(b, -1).norm(dim=1)
        # a row whose Jacobian kills v (nilpotent direction) restarts from noise
        dead = nrm <= 1e-30
        if dead.any():
            w = torch.where(dead.view(shape), torch.randn_like(w), w)
            nrm = w.reshape(b, -1).norm(dim=1)
        v = w / nrm.view(shape)
    # Arnoldi with modified Gram-Schmidt: basis q_0..q_m, Hessenberg h (B, m+1, m)
    m = max(n_arnoldi, 1)
    q = [v.reshape(b, -1)]
    h = torch.zeros(b, m + 1, m, dtype=torch.float64, device=z.device)
    for j in range(m):
        w = product(q[j].view_as(z)).reshape(b, -1)
        for i in range(j + 1):
            c = (q[i] * w).sum(dim=1)
            h[:, i, j] = c.double()
            w = w - c[:, None] * q[i]
        nrm = w.norm(dim=1)
        h[:, j + 1, j] = nrm.double()
        q.append(w / nrm.clamp_min(1e-30)[:, None])
    # Krylov space may be invariant early (h[j+1, j] == 0): Ritz values are then exact
    ritz = torch.linalg.eigvals(h[:, :m, :m])
    return ritz.abs().max(dim=1).values.float()


def spectral_radius(
    f: Callable[..., Tensor],
    z: Tensor,
    *args: Tensor,
    n_iter: int = 30,
    n_arnoldi: int = 8,
    method: str = "vjp",
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Spectral radius of the Jacobian of `f` at `z`, per batch row, without a dense Jacobian.

    Args:
        f: map `f(z, *args) -> same shape as z`, rows independent.
        z: (B, ...) points (typically end states of a solve).
        *args: batch-first tensors sliced together with `z` (e.g. the input injection x).
        n_iter: Jacobian products per row in total (power iteration + Arnoldi).
        n_arnoldi: trailing Arnoldi steps (Krylov dimension of the final Ritz problem).
        method: "vjp" (reverse mode, one forward; works for any differentiable f) or "jvp"
            (forward mode, no stored graph; needs forward-AD support of every op, which e.g.
            CPU scaled-dot-product attention lacks in torch 2.x).
        chunk_size: rows per batched product (bounds memory); default all rows at once.
        generator: seeds the random start vector.

    Returns:
        (B,) float32 estimates of max |eigenvalue| of df/dz at each row (no graph).

    Example:
        >>> f = lambda z, x: torch.tanh(0.5 * z + x)
        >>> rho = spectral_radius(f, torch.zeros(2, 4), torch.zeros(2, 4), n_iter=10)
        >>> torch.allclose(rho, torch.full((2,), 0.5))
        True
    """
    if z.dim() < 2 or z.shape[0] == 0:
        raise ValueError(f"z must be batch-first with at least one row, got {tuple(z.shape)}")
    if n_iter < 1 or n_arnoldi < 1:
        raise ValueError(f"n_iter and n_arnoldi must be >= 1, got {n_iter}, {n_arnoldi}")
    n_arnoldi = min(n_arnoldi, n_iter, z[0].numel())
    step = chunk_size or z.shape[0]
    out = []
    for lo in range(0, z.shape[0], step):
        rows = slice(lo, lo + step)
        chunk_args = tuple(a[rows] if isinstance(a, Tensor) else a for a in args)
        product = _product_fn(f, z[rows], chunk_args, method)
        out.append(_spectral_radius_rows(product, z[rows], n_iter, n_arnoldi, generator))
    return torch.cat(out).detach()

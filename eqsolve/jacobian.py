"""Jacobian regularisation and spectral radius of a fixed-point map at ``z*``, batched.

Both work row by row for maps whose rows are independent (the DEQ contract), using one graph
``f(z)`` and vector-Jacobian products, so they never form the ``n × n`` Jacobian.

Examples:
    >>> import torch
    >>> from eqsolve.jacobian import jac_reg, spectral_radius
    >>> A = 0.5 * torch.eye(3)
    >>> f = lambda z: z @ A.T
    >>> z = torch.randn(2, 3, requires_grad=True)
    >>> jac_reg(f(z), z, vecs=200).shape          # unbiased estimate of ||J||_F^2 = 0.75 per row
    torch.Size([2])
    >>> spectral_radius(f, z.detach(), n_iter=20)
    tensor([0.5000, 0.5000])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["jac_reg", "spectral_radius"]


def jac_reg(f_out: Tensor, z: Tensor, vecs: int = 1, create_graph: bool = True,
            generator: torch.Generator | None = None) -> Tensor:
    """Hutchinson estimate of ``||∂f/∂z||_F^2`` per row (the DEQ Jacobian regulariser).

    Uses ``E_v ||vᵀ J||² = tr(J Jᵀ) = ||J||_F²`` for ``v ~ N(0, I)``, averaged over ``vecs``
    probes. Unlike torchdeq's ``jac_reg`` it is not divided by the state size and comes back
    per row, so callers choose the reduction.

    Args:
        f_out: ``(B, ...)`` output of ``f(z, ...)`` with a graph to ``z``.
        z: ``(B, ...)`` input that requires grad.
        vecs: number of Gaussian probes (>= 1).
        create_graph: keep the graph so the estimate can be minimised (set False to only measure).
        generator: optional RNG for the probes.

    Returns:
        ``(B,)`` unbiased estimate of the squared Frobenius norm of each row's Jacobian.

    Raises:
        ValueError: ``vecs < 1`` or shapes that do not match.

    Examples:
        >>> z = torch.randn(4, 5, requires_grad=True)
        >>> jac_reg(2 * z, z, vecs=3).shape
        torch.Size([4])
    """
    if not (isinstance(vecs, int) and vecs >= 1):
        raise ValueError(f"jac_reg: vecs must be an int >= 1, got {vecs!r}")
    if f_out.shape != z.shape:
        raise ValueError(f"jac_reg: f_out shape {tuple(f_out.shape)} != z shape {tuple(z.shape)}")
    if not z.requires_grad:
        raise ValueError("jac_reg: z must require grad and f_out must be computed from it")
    total = f_out.new_zeros(f_out.shape[0])
    for i in range(vecs):
        v = torch.randn(f_out.shape, dtype=f_out.dtype, device=f_out.device, generator=generator)
        (vjp,) = torch.autograd.grad(f_out, z, v, retain_graph=create_graph or i < vecs - 1,
                                     create_graph=create_graph)
        total = total + vjp.reshape(vjp.shape[0], -1).pow(2).sum(1)
    return total / vecs


def spectral_radius(f: Callable[..., Tensor], z: Tensor, *args: Tensor, n_iter: int = 100,
                    generator: torch.Generator | None = None) -> Tensor:
    """Spectral radius of ``∂f/∂z`` at ``z`` per row, by batched power iteration.

    Iterates ``v ← Jᵀ v / ||Jᵀ v||`` (``Jᵀ`` has the eigenvalues of ``J``) on one graph of
    ``f(z)``. The estimate is the geometric mean of the growth factors ``||Jᵀ v||`` over the
    second half of the iterations, which converges to ``ρ(J)`` also when the dominant
    eigenvalues are a complex pair (where single growth factors oscillate).

    Args:
        f: the map, ``f(z, *args)``; rows independent.
        z: ``(B, ...)`` point, typically the fixed point ``z*``.
        *args: batch-first tensors passed to ``f``.
        n_iter: power iterations (>= 2).
        generator: optional RNG for the start vector.

    Returns:
        ``(B,)`` spectral-radius estimates (no graph).

    Examples:
        >>> f = lambda z: torch.stack([0.9 * z[:, 0], -0.3 * z[:, 1]], 1)
        >>> spectral_radius(f, torch.zeros(1, 2), n_iter=50)
        tensor([0.9000])
    """
    if not (isinstance(n_iter, int) and n_iter >= 2):
        raise ValueError(f"spectral_radius: n_iter must be an int >= 2, got {n_iter!r}")
    z_in = z.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z_in, *args)
    v = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    v = v / _row_norm(v).clamp_min(1e-30).view(-1, *[1] * (v.dim() - 1))
    log_growth = []
    for _ in range(n_iter):
        (jv,) = torch.autograd.grad(fz, z_in, v, retain_graph=True)
        norm = _row_norm(jv)
        log_growth.append(norm.clamp_min(1e-300).log())
        # A row with J v = 0 stays at 0 and reports radius ~0 (J is nilpotent along v).
        v = jv / norm.clamp_min(1e-30).view(-1, *[1] * (jv.dim() - 1))
    tail = torch.stack(log_growth[n_iter // 2:], 0)
    return tail.mean(0).exp().detach()


def _row_norm(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).norm(dim=1)

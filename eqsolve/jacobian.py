"""Jacobian regularisation and spectral radius of a fixed-point map at ``z*``, batched.

Both work row by row for maps whose rows are independent (the DEQ contract), using one graph
``f(z)`` and vector-Jacobian products (``spectral_radius`` can also use forward-mode products),
so they never form the ``n × n`` Jacobian. ``spectral_radius`` is the one implementation of the
spectral radius in eqsolve (:mod:`eqsolve.diagnostics` re-exports it).

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

import numbers
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["jac_reg", "spectral_radius"]

# Ritz values with a residual above this fraction of their modulus do not count as converged.
_CREDIBLE = 0.1


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
                    n_arnoldi: int = 8, method: str = "vjp", chunk_size: int | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
    """Spectral radius of ``∂f/∂z`` at ``z`` per row, matrix-free: power iteration + Arnoldi.

    ``n_iter - n_arnoldi`` power iterations on Jacobian products pull a random start vector
    towards the dominant invariant subspace; ``n_arnoldi`` Arnoldi steps from there (modified
    Gram-Schmidt, applied twice) give a small Hessenberg matrix whose Ritz values approximate
    the outer eigenvalues. The Arnoldi finish makes the estimate exact up to rounding once the
    dominant eigenvalues' subspace is reached, also when they are a complex pair (rotations,
    cycles), where plain power iteration never settles on one direction. The estimate is the
    largest Ritz value modulus, guarded for non-normal Jacobians, whose unconverged Ritz values
    can exceed ``ρ`` (they lie in the field of values): Ritz values with a residual above 10%
    of their modulus are passed over when a converged one exists, and where the first ``k``
    Arnoldi vectors already span an invariant subspace (to ``sqrt(eps)``: the power iteration
    has converged), the Ritz value matching that subspace's dominant eigenvalue is taken. The
    Jacobian is never formed: every row gets its own product from one batched call (rows are
    independent, the DEQ contract).

    Args:
        f: the map, ``f(z, *args)`` with the shape of ``z``; rows independent.
        z: ``(B, ...)`` points, typically fixed points ``z*`` or end states of a solve.
        *args: batch-first tensors passed to ``f`` (sliced with ``z`` when chunking); other
            objects are passed unchanged.
        n_iter: Jacobian products per row in total (power iteration + Arnoldi), >= 1; with
            ``method="vjp"`` the cost is one forward pass of ``f`` plus ``n_iter`` backward passes.
        n_arnoldi: trailing Arnoldi steps (Krylov dimension of the final Ritz problem), >= 1;
            capped at ``n_iter`` and at the number of elements per row.
        method: ``"vjp"`` (reverse mode on one graph of ``f(z)``, with products ``Jᵀ v``; ``Jᵀ``
            has the eigenvalues of ``J``; works for any differentiable ``f``) or ``"jvp"``
            (forward mode ``torch.func.jvp``, no stored graph, less memory; needs forward-AD
            support of every op, which e.g. CPU scaled-dot-product attention lacks in torch 2.x).
        chunk_size: rows per batched product (bounds memory); default all rows at once.
        generator: seeds the random start vector (drawn on the generator's device, CPU when
            none is given, then moved to ``z``'s device).

    Returns:
        ``(B,)`` estimates of ``max |eigenvalue|`` of each row's Jacobian, no graph; float64
        for float64 ``z``, float32 otherwise.

    Raises:
        ValueError: bad ``n_iter``/``n_arnoldi``/``method``, ``z`` without rows, or
            ``f(z)`` not shaped like ``z``.

    Examples:
        >>> f = lambda z: torch.stack([0.9 * z[:, 0], -0.3 * z[:, 1]], 1)
        >>> spectral_radius(f, torch.zeros(1, 2), n_iter=50)
        tensor([0.9000])
        >>> rot = 0.9 * torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)  # ρ = 0.9
        >>> spectral_radius(lambda z, x: z @ rot.T + x, torch.zeros(3, 2, dtype=torch.float64),
        ...                 torch.ones(3, 2, dtype=torch.float64), n_iter=10)
        tensor([0.9000, 0.9000, 0.9000], dtype=torch.float64)
    """
    for name, value in (("n_iter", n_iter), ("n_arnoldi", n_arnoldi)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"spectral_radius: {name} must be an int >= 1, got {value!r}")
    if method not in ("vjp", "jvp"):
        raise ValueError(f"spectral_radius: method must be 'vjp' or 'jvp', got {method!r}")
    if z.dim() < 1 or z.shape[0] == 0:
        raise ValueError(f"spectral_radius: z must be batch-first with at least one row, "
                         f"got shape {tuple(z.shape)}")
    m = min(int(n_arnoldi), int(n_iter), max(z[0].numel(), 1))
    out_dtype = torch.promote_types(z.dtype, torch.float32)
    step = chunk_size or z.shape[0]
    out = []
    for lo in range(0, z.shape[0], step):
        rows = slice(lo, lo + step)
        chunk_args = tuple(a[rows] if isinstance(a, Tensor) else a for a in args)
        product = _jacobian_product(f, z[rows].detach(), chunk_args, method)
        out.append(_power_arnoldi(product, z[rows].detach(), int(n_iter) - m, m, generator))
    return torch.cat(out).to(out_dtype)


def _jacobian_product(f: Callable[..., Tensor], z: Tensor, args: tuple,
                      method: str) -> Callable[[Tensor], Tensor]:
    """``v ↦ Jᵀ v`` (vjp, on one graph of ``f(z)``) or ``v ↦ J v`` (jvp) at ``z``, z-shaped."""
    if method == "jvp":
        def jvp_product(v: Tensor) -> Tensor:
            try:
                return torch.func.jvp(lambda s: f(s, *args), (z,), (v,))[1].detach()
            except NotImplementedError as err:  # e.g. CPU scaled_dot_product_attention
                raise NotImplementedError(
                    f"spectral_radius: method='jvp' needs forward-mode AD for every op of f; "
                    f"use method='vjp' ({err})") from err
        return jvp_product
    z_in = z.requires_grad_()
    with torch.enable_grad():
        fz = f(z_in, *args)
    if fz.shape != z.shape:
        raise ValueError(f"spectral_radius: f(z) has shape {tuple(fz.shape)}, expected "
                         f"{tuple(z.shape)}")

    def product(v: Tensor) -> Tensor:
        if not fz.requires_grad:  # f does not depend on z at all
            return torch.zeros_like(v)
        (g,) = torch.autograd.grad(fz, z_in, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if g is None else g
    return product


def _power_arnoldi(product: Callable[[Tensor], Tensor], z: Tensor, n_power: int, m: int,
                   generator: torch.Generator | None) -> Tensor:
    """``n_power`` power steps, then an ``m``-step Arnoldi; ``(B,)`` float64 estimates of ``ρ``."""
    b = z.shape[0]
    eps = torch.finfo(z.dtype).eps

    def apply(v: Tensor) -> Tensor:  # (B, n) -> (B, n)
        return product(v.view_as(z)).reshape(b, -1)

    def unit_noise() -> Tensor:
        device = generator.device if generator is not None else torch.device("cpu")
        v = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=device)
        return _unit(v.to(z.device).reshape(b, -1))[0]

    v = unit_noise()
    if n_power:
        restart = unit_noise()  # for rows whose Jacobian kills v (nilpotent direction)
    for _ in range(n_power):
        v, nrm = _unit(apply(v))
        v = torch.where((nrm == 0)[:, None], restart, v)  # no host sync
    # Arnoldi from the power-iterated vector: orthonormal q_0..q_{m-1}, Hessenberg h = QᵀJQ
    q = [v]
    h = torch.zeros(b, m, m, dtype=torch.float64, device=z.device)
    rel_residual = torch.ones(b, m - 1, dtype=torch.float64, device=z.device)  # h[j+1,j]/|Jq_j|
    for j in range(m):
        w = apply(q[j])
        w_norm = _unit(w)[1]
        for _ in range(2):  # modified Gram-Schmidt, twice: orthogonal to working precision
            for i in range(j + 1):
                c = (q[i] * w).sum(dim=1)
                h[:, i, j] += c.double()
                w = w - c[:, None] * q[i]
        q_next, beta = _unit(w)  # a zero residual gives q = 0: later columns of h are 0
        if j + 1 < m:
            h[:, j + 1, j] = beta
            rel_residual[:, j] = torch.where(w_norm > 0, beta / w_norm, torch.zeros_like(beta))
            q.append(q_next)
    h, rel_residual, beta = h.cpu(), rel_residual.cpu(), beta.cpu()  # tiny problems: host LAPACK
    ritz, vecs = torch.linalg.eig(h)
    size = ritz.abs()
    # A Ritz pair (θ, y = Q s) has residual |J y - θ y| = beta |s_{m-1}|. For a non-normal J, Ritz
    # values of a Krylov space that has not converged lie in the field of values and can exceed
    # ρ, with large residuals; so take the largest Ritz value whose residual is below
    # _CREDIBLE |θ| (the dominant one converges first from a power-iterated start), or the
    # largest of all where none is.
    credible = beta[:, None] * vecs[:, -1, :].abs() <= _CREDIBLE * size
    est = torch.where(credible.any(dim=1), torch.where(credible, size, 0.0).amax(dim=1),
                      size.amax(dim=1))
    # Where span(q_0..q_j) is invariant to within sqrt(eps), the power iteration has reached the
    # dominant invariant subspace and the leading (j+1) block holds the dominant eigenvalues;
    # the later Ritz values come from the rest of J. Take the Ritz value of the full h nearest to
    # the leading block's dominant one (the full h, not the truncated block, for accuracy).
    small = rel_residual <= eps**0.5
    first = (torch.where(small.any(dim=1), small.to(torch.int8).argmax(dim=1), -1) if m > 1
             else torch.full((b,), -1))
    for j in range(m - 1):
        lead = torch.linalg.eigvals(h[:, :j + 1, :j + 1])
        theta = lead.gather(1, lead.abs().argmax(dim=1, keepdim=True))
        nearest = ritz.gather(1, (ritz - theta).abs().argmin(dim=1, keepdim=True))[:, 0]
        est = torch.where(first == j, nearest.abs(), est)
    return est.to(z.device)


def _unit(w: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of ``w`` (B, n) scaled to unit norm (0 for zero rows), and their float64 norms.

    Scales by the largest entry first, so tiny rows neither underflow to a zero norm nor come
    back longer than 1.
    """
    scale = w.abs().amax(dim=1, keepdim=True)
    u = w / torch.where(scale > 0, scale, torch.ones_like(scale))
    u_norm = u.norm(dim=1, keepdim=True)  # >= 1 where scale > 0
    unit = u / torch.where(u_norm > 0, u_norm, torch.ones_like(u_norm))
    return unit, (scale.double() * u_norm.double())[:, 0]

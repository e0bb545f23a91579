"""Local stability of a fixed point: spectral radius of the map's Jacobian, matrix-free.

Kept for the attractor diagnostics' imports: the implementation is
:func:`eqsolve.jacobian.spectral_radius` (power iteration, then an Arnoldi finish whose largest
Ritz value modulus is the estimate; exact for complex dominant pairs too). The only difference
here is the default budget, ``n_iter=30`` Jacobian products per row.

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

from eqsolve import jacobian as _jacobian

__all__ = ["spectral_radius"]


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
    """:func:`eqsolve.jacobian.spectral_radius` with ``n_iter=30`` by default (see there).

    Example:
        >>> f = lambda z, x: torch.tanh(0.5 * z + x)
        >>> rho = spectral_radius(f, torch.zeros(2, 4), torch.zeros(2, 4), n_iter=10)
        >>> torch.allclose(rho, torch.full((2,), 0.5))
        True
    """
    return _jacobian.spectral_radius(f, z, *args, n_iter=n_iter, n_arnoldi=n_arnoldi,
                                     method=method, chunk_size=chunk_size, generator=generator)

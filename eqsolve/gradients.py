"""Gradient strategies for fixed points: how a DEQ's output gets its backward pass.

A strategy is orthogonal to the solver that found ``z*``. Each one is a small object with
one entry point, ``strategy(f, z0, *args, solver=..., tol=..., ...) -> (z, sol)``: it finds the
fixed point of ``f(z, *args)`` (or borrows one) and returns ``z`` carrying the chosen graph,
plus a :class:`GradSolution` (the forward :class:`~eqsolve.solvers.Solution` extended with a
``backward`` record filled in during ``backward()``).

- :class:`Implicit`: implicit differentiation. Forward solve without a graph, one extra ``f``
  call at ``z*`` attaches the graph, and the backward solves the adjoint fixed point
  ``g = Jᵀ g + ∂L/∂z*`` with any registered solver (per-row stopping and status). It is an
  ``autograd.Function``, so it is correct when a DEQ is called several times before one
  ``backward()`` and under ``DistributedDataParallel`` (no tensor hooks).
- :class:`Phantom`: ``k`` damped steps ``z ← (1-τ) z + τ f(z)`` from ``z*`` with a graph.
- :class:`OneStep`: the Jacobian-free gradient, one step ``f(z*)`` (biased; cheap).
- :class:`Unrolled`: backprop through the solver's own iterations, all (``k=None``) or the
  last ``k`` (per row, replayed from the stored solver state).

Strategies are picked by name for configs: ``get_gradient("implicit", tol=1e-8)``.

The code lives in package-private modules, all re-exported here (import from this module):
``eqsolve._grad_base`` (:class:`GradientStrategy`, :class:`GradSolution`,
:class:`BackwardStats`, :class:`ConvergenceWarning`), ``eqsolve._grad_implicit``
(:class:`Implicit` and its ``autograd.Function``) and ``eqsolve._grad_unrolled``
(:class:`Phantom`, :class:`OneStep`, :class:`Unrolled`), as ``eqsolve.solvers`` keeps its
classes in private modules; import them from here. The classes also stay reachable as
``eqsolve.gradients.<Class>``, the name that pickles of strategy objects record, so they load.

Examples:
    >>> import torch
    >>> from eqsolve.gradients import Implicit
    >>> _ = torch.manual_seed(0)
    >>> W = torch.nn.Linear(4, 4)
    >>> f = lambda z, x: torch.tanh(0.5 * W(z) + x)
    >>> x = torch.randn(3, 4, requires_grad=True)
    >>> z, sol = Implicit(solver="fixed_point", tol=1e-5)(f, torch.zeros(3, 4), x, tol=1e-6, max_iter=200)
    >>> z.sum().backward()
    >>> bool(sol.backward.converged.all()), x.grad.shape
    (True, torch.Size([3, 4]))
"""

from __future__ import annotations

from typing import Any

from eqsolve._grad_base import (
    BackwardStats,
    ConvergenceWarning,
    GradientStrategy,
    GradSolution,
)
from eqsolve._grad_implicit import Implicit
from eqsolve._grad_unrolled import OneStep, Phantom, Unrolled

__all__ = [
    "BackwardStats",
    "ConvergenceWarning",
    "GradSolution",
    "GradientStrategy",
    "Implicit",
    "OneStep",
    "Phantom",
    "Unrolled",
    "available_gradients",
    "get_gradient",
]



_REGISTRY: dict[str, type[GradientStrategy]] = {
    "implicit": Implicit, "ift": Implicit,
    "phantom": Phantom,
    "onestep": OneStep, "one_step": OneStep, "jfb": OneStep,
    "unrolled": Unrolled, "bptt": Unrolled,
}


def available_gradients() -> dict[str, type[GradientStrategy]]:
    """Names accepted by :func:`get_gradient` (aliases included) and their classes."""
    return dict(_REGISTRY)


def get_gradient(name: str | GradientStrategy, **options: Any) -> GradientStrategy:
    """Build a gradient strategy by name, e.g. from a config.

    Args:
        name: ``"implicit"`` (``"ift"``), ``"phantom"``, ``"onestep"`` (``"jfb"``),
            ``"unrolled"`` (``"bptt"``), or a strategy object (returned as is; no options).
        **options: constructor arguments of that strategy.

    Returns:
        The strategy object.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones).

    Examples:
        >>> get_gradient("phantom", k=3, tau=0.7)
        Phantom(k=3, tau=0.7)
    """
    if isinstance(name, GradientStrategy):
        if options:
            raise ValueError(f"get_gradient: options {sorted(options)} given with a strategy object")
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown gradient {name!r}; valid: {sorted(_REGISTRY)}")
    cls = _REGISTRY[key]
    try:
        return cls(**options)
    except TypeError as err:  # unexpected keyword: name the valid ones
        import inspect

        valid = [p for p in inspect.signature(cls).parameters if p != "solver_options"]
        raise ValueError(f"gradient {key!r}: {err}; valid options: {valid}") from err

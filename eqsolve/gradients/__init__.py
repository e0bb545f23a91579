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

Strategies are built like solvers: frozen dataclasses whose fields are their options (a
strategy holds no per-call state; what a call did is in the returned ``sol``), picked by name
for configs with ``get_gradient("implicit", tol=1e-8)``, and extended with
``register_gradient(name, cls)``; an unknown name or option is the solver registry's error.

Modules: :mod:`~eqsolve.gradients.base` (:class:`GradientStrategy`, :class:`GradSolution`,
:class:`BackwardStats`, :class:`ConvergenceWarning`), :mod:`~eqsolve.gradients.implicit`
(:class:`Implicit` and its ``autograd.Function``), :mod:`~eqsolve.gradients.unrolled`
(:class:`Phantom`, :class:`OneStep`, :class:`Unrolled`) and :mod:`~eqsolve.gradients.registry`
(:func:`get_gradient`, :func:`register_gradient`, :func:`available_gradients`). Everything public is re-exported here;
import it from ``eqsolve.gradients``.

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

from eqsolve.gradients.base import (
    BackwardStats,
    ConvergenceWarning,
    GradientStrategy,
    GradSolution,
)
from eqsolve.gradients.implicit import Implicit
from eqsolve.gradients.registry import (
    available_gradients,
    describe_gradients,
    get_gradient,
    register_gradient,
)
from eqsolve.gradients.unrolled import OneStep, Phantom, Unrolled

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
    "describe_gradients",
    "get_gradient",
    "register_gradient",
]

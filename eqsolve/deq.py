"""The DEQ layer: solve ``z = f(z, *args)`` without a graph, then attach the chosen gradient.

Examples:
    >>> import torch
    >>> from eqsolve.deq import DEQ
    >>> from eqsolve.gradients import Implicit
    >>> _ = torch.manual_seed(0)
    >>> cell = torch.nn.Linear(8, 8)
    >>> f = lambda z, x: torch.tanh(0.5 * cell(z) + x)
    >>> deq = DEQ(f, solver="anderson", grad=Implicit(tol=1e-5), max_iter=40, tol=1e-5)
    >>> x = torch.randn(4, 8)
    >>> z, sol = deq(torch.zeros(4, 8), x)
    >>> z.pow(2).sum().backward()
    >>> bool(sol.converged.all()), bool(sol.backward.converged.all())
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from eqsolve.gradients import GradientStrategy, GradSolution, OneStep, Unrolled, get_gradient
from eqsolve.solvers import solve
from eqsolve.solvers._registry import resolve_solver

__all__ = ["DEQ", "correction_loss"]


class DEQ(nn.Module):
    """A deep-equilibrium layer: ``z, sol = deq(z0, *args)`` returns ``z ≈ f(z, *args)``.

    In training (module in train mode and grad enabled) the fixed point gets the gradient of
    ``grad``; otherwise it is a plain solve with no graph and the eval budget (test-time depth:
    ``eval_max_iter`` / ``eval_tol`` override the training ones). Eval mode therefore returns
    no gradient by default (as in torchdeq); ``grad_in_eval=True`` attaches ``grad`` in eval
    mode too (with grad enabled), for inputs' gradients, attacks or sensitivity analysis on a
    frozen model. The eval budget still applies there, and only ``z`` gets the gradient
    (``sol.states`` is a training-only supervision).

    Trajectory supervision (fixed-point correction, Bai et al. 2022): with ``n_states = s > 1``,
    ``sol.states`` holds ``s`` iterates with a graph — ``s - 1`` taken at evenly spaced points of
    each row's own forward trajectory (each attached with ``state_grad``, default
    :class:`OneStep`) and, last, the returned ``z``. Supervise them all, e.g. with
    :func:`correction_loss`.

    Args:
        f: the map ``f(z, *args)``; an ``nn.Module`` is registered as a submodule so its
            parameters move with the DEQ (``.to``, ``.parameters()``, DDP).
        solver: forward solver: a registered name (default options) or a solver object, e.g.
            ``get_solver("anderson", m=5)`` or ``Anderson(m=5)``; resolved once, here.
        grad: gradient strategy object or name (see :func:`eqsolve.gradients.get_gradient`).
        max_iter: forward budget in training.
        tol: forward tolerance in training.
        stop: ``"rel"`` or ``"abs"`` forward residual.
        eval_max_iter: forward budget in eval (None: ``max_iter``).
        eval_tol: forward tolerance in eval (None: ``tol``).
        n_states: number of supervised states in training (1: only ``z``).
        state_grad: gradient attached to the intermediate states (default ``OneStep()``).
        grad_in_eval: attach ``grad`` in eval mode as well (default ``False``: no graph in
            eval). An attribute: ``deq.grad_in_eval = True`` switches an existing layer.

    Examples:
        >>> deq = DEQ(lambda z, x: 0.5 * z + x, solver="fixed_point", eval_max_iter=100)
        >>> _ = deq.eval()
        >>> z, sol = deq(torch.zeros(2, 3), torch.ones(2, 3))
        >>> round(z[0, 0].item(), 3), z.requires_grad
        (2.0, False)
        >>> x = torch.ones(2, 3, requires_grad=True)
        >>> deq.grad_in_eval = True
        >>> z, _ = deq(torch.zeros(2, 3), x)
        >>> z.sum().backward()
        >>> round(x.grad[0, 0].item(), 3)  # dz*/dx = 1 / (1 - 0.5)
        2.0
    """

    def __init__(self, f: Callable[..., Tensor], solver: Any = "anderson",
                 grad: GradientStrategy | str = "implicit", max_iter: int = 50, tol: float = 1e-4,
                 stop: str = "rel", eval_max_iter: int | None = None, eval_tol: float | None = None,
                 n_states: int = 1,
                 state_grad: GradientStrategy | None = None, grad_in_eval: bool = False) -> None:
        super().__init__()
        for name, value in (("max_iter", max_iter), ("eval_max_iter", eval_max_iter), ("n_states", n_states)):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"DEQ: {name} must be an int >= 1, got {value!r}")
        for name, level in (("tol", tol), ("eval_tol", eval_tol)):
            if level is not None and not level > 0:
                raise ValueError(f"DEQ: {name} must be > 0, got {level!r}")
        if stop not in ("rel", "abs"):
            raise ValueError(f"DEQ: stop must be 'rel' or 'abs', got {stop!r}")
        self.grad = get_gradient(grad)
        if n_states > 1 and isinstance(self.grad, Unrolled):
            raise ValueError("DEQ: n_states > 1 needs a strategy that attaches at z* (not Unrolled)")
        self.f = f  # an nn.Module assigned here is registered as a submodule
        self.solver = resolve_solver(solver, {})  # the one place a name becomes a solver
        self.stop, self.n_states = stop, n_states
        self.max_iter, self.tol = max_iter, tol
        self.eval_max_iter = eval_max_iter or max_iter
        self.eval_tol = eval_tol or tol
        self.state_grad = state_grad or OneStep()
        self.grad_in_eval = bool(grad_in_eval)

    def extra_repr(self) -> str:
        return (f"solver={self.solver!r}, grad={self.grad!r}, max_iter={self.max_iter}, tol={self.tol:g}, "
                f"eval_max_iter={self.eval_max_iter}, eval_tol={self.eval_tol:g}, n_states={self.n_states}"
                + (", grad_in_eval=True" if self.grad_in_eval else ""))

    def forward(self, z0: Tensor, *args: Tensor) -> tuple[Tensor, GradSolution]:
        """Solve from ``z0`` and return ``(z, sol)``.

        Args:
            z0: ``(B, ...)`` initial state.
            *args: batch-first tensors passed to ``f`` (e.g. the injected input).

        Returns:
            ``z`` (with the strategy's graph in training, or in eval with ``grad_in_eval``) and
            a :class:`GradSolution`
            (``sol.backward`` is filled by ``backward()`` for ``Implicit``; ``sol.states`` with
            ``n_states > 1``).
        """
        options: dict[str, Any] = dict(solver=self.solver, stop=self.stop)
        if not (torch.is_grad_enabled() and (self.training or self.grad_in_eval)):
            with torch.no_grad():
                # inference=False: a module that builds a cache in its first call must not get an
                # inference tensor it would later save for backward in training
                sol = solve(self.f, z0, *args, tol=self.eval_tol, max_iter=self.eval_max_iter, inference=False,
                            **options)
            return sol.z, GradSolution.extend(sol)
        if not self.training:  # grad_in_eval: the eval budget, the gradient on z only
            return self.grad(self.f, z0, *args, **options, tol=self.eval_tol, max_iter=self.eval_max_iter)
        options.update(tol=self.tol, max_iter=self.max_iter)
        if self.n_states == 1:
            return self.grad(self.f, z0, *args, **options)
        recorder = _TrajectoryRecorder(self.f)
        rows = torch.arange(z0.shape[0], device=z0.device)
        with torch.no_grad():
            sol = solve(recorder, z0.detach(), *args, rows, inference=False, **options)
        z, stats = self.grad.attach(self.f, sol.z, args)
        states = [self.state_grad.attach(self.f, s, args)[0] for s in recorder.sample(self.n_states - 1, z0)]
        return z, GradSolution.extend(sol, backward=stats, states=[*states, z])


class _TrajectoryRecorder:
    """Wraps ``f`` to keep every input it sees, by row, during a compacted solve.

    The solver passes the active rows' indices as the last argument (``solve`` slices it with
    ``z``), so each row's own sequence of iterates can be rebuilt afterwards. Memory is the sum
    of all evaluated rows (at most ``max_iter × B`` rows of ``z``).
    """

    def __init__(self, f: Callable[..., Tensor]) -> None:
        self.f = f
        self.calls: list[tuple[Tensor, Tensor]] = []

    def __call__(self, z: Tensor, *args: Tensor) -> Tensor:
        *inner, rows = args
        self.calls.append((rows, z.detach().clone()))  # a copy: solvers may reuse buffers in place
        return self.f(z, *inner)

    def sample(self, count: int, like: Tensor) -> list[Tensor]:
        """``count`` iterates per row at evenly spaced points of that row's trajectory."""
        if count == 0:
            return []
        batch = like.shape[0]
        seen = torch.zeros(batch, dtype=torch.long, device=like.device)
        for rows, _ in self.calls:
            seen.index_add_(0, rows, torch.ones_like(rows))
        # Call 0 of a row is z0; evenly spaced positions in 1..seen-1 (clamped for short rows).
        picks = [((seen * j) // (count + 1)).clamp(min=1).minimum((seen - 1).clamp(min=0))
                 for j in range(1, count + 1)]
        out = [torch.zeros_like(like) for _ in range(count)]
        position = torch.zeros_like(seen)
        for rows, z in self.calls:
            pos = position[rows]
            for j in range(count):
                hit = pos == picks[j][rows]
                if bool(hit.any()):
                    out[j][rows[hit]] = z[hit]
            position[rows] += 1
        return out


def correction_loss(states: Sequence[Tensor], loss_fn: Callable[[Tensor], Tensor],
                    gamma: float = 0.8) -> Tensor:
    """Fixed-point correction loss: ``Σ_i γ^(s-1-i) loss_fn(states[i])`` (last state weight 1).

    Args:
        states: ``sol.states`` from a DEQ with ``n_states > 1`` (in trajectory order).
        loss_fn: maps one state to a scalar loss.
        gamma: decay for earlier states, in ``(0, 1]``.

    Returns:
        The weighted sum (a scalar with a graph).

    Examples:
        >>> states = [torch.tensor(2.0, requires_grad=True), torch.tensor(1.0, requires_grad=True)]
        >>> correction_loss(states, lambda s: s ** 2, gamma=0.5)
        tensor(3., grad_fn=<AddBackward0>)
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"correction_loss: gamma must be in (0, 1], got {gamma!r}")
    if not states:
        raise ValueError("correction_loss: states is empty (use a DEQ with n_states > 1)")
    last = len(states) - 1
    total = loss_fn(states[last])
    for i in range(last - 1, -1, -1):
        total = total + gamma ** (last - i) * loss_fn(states[i])
    return total


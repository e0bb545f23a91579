"""One optimizer step's forward pass for each gradient mode, as modules DDP can wrap.

* :class:`SotSegment` — the paper's recipe (``grad="sot"``, supervised outer steps: deep
  supervision): one supervised outer step
  ``s' = F(s; x)`` with the graph kept for the last H-cycle only; the caller detaches the carry.
* :class:`DeqForward` — ``implicit`` / ``phantom`` / ``onestep`` / ``unrolled``: solve the fixed
  point of the outer map ``F(·; x)`` from ``s0`` with an eqsolve solver, gradient by the chosen
  :mod:`eqsolve.gradients` strategy.

Both return ``(state, logits, halt_logit, info)`` where ``info`` holds NFE and residual per row,
and with ``jacobian=True`` also ``jac``: a one-probe Hutchinson estimate of ``||J||_F^2 / n`` per
row of the outer map's Jacobian (Bai et al., 2021), with a graph, for the caller to penalise. sot
takes it at the input of the segment's last H-cycle (where its graph begins), the DEQ modes at the
solution. All parameter use happens inside ``forward`` so ``DistributedDataParallel`` sees it.

Examples:
    >>> import torch
    >>> from eqsolve.models.eqr import EqR, EqRConfig
    >>> model = EqR(EqRConfig(hidden_size=16, num_heads=2, H_cycles=1, L_cycles=1, L_layers=1,
    ...                       mixer="sudoku_attention"))
    >>> tokens = torch.ones(2, 81, dtype=torch.long)
    >>> s, logits, halt, info = SotSegment(model)(model.init_state(2), tokens, 0.0)
    >>> tuple(logits.shape), tuple(info["nfe"].shape)
    ((2, 81, 11), (2,))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from eqsolve.jacobian import jac_reg
from eqsolve.residual import relative_residual
from eqsolve.solvers._registry import resolve_solver
from eqsolve.training.config import TrainConfig

__all__ = ["SotSegment", "DeqForward", "make_strategy", "rel_change", "jacobian_estimate"]


def rel_change(new: Tensor, old: Tensor) -> Tensor:
    """Per-row ``||new - old|| / (||new|| + 1e-8)`` (the fixed-point residual of one step)."""
    diff = (new - old).flatten(1).norm(dim=1)
    return relative_residual(diff, new.flatten(1).norm(dim=1))


def jacobian_estimate(out: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-row ``||d out / d s||_F^2 / n`` (one Gaussian probe, graph kept), ``n`` = state size."""
    return jac_reg(out, s, vecs=1, create_graph=True, generator=generator) / s[0].numel()


def make_strategy(cfg: TrainConfig) -> Any:
    """The :mod:`eqsolve.gradients` strategy for a DEQ gradient mode of ``cfg``.

    Args:
        cfg: training config with ``grad`` in implicit / phantom / onestep / unrolled.

    Returns:
        A gradient strategy object.

    Examples:
        >>> make_strategy(TrainConfig(grad="phantom", phantom_k=3))
        Phantom(k=3, tau=0.5)
    """
    from eqsolve.gradients import get_gradient

    if cfg.grad == "implicit":
        return get_gradient("implicit", solver=cfg.solver, tol=cfg.tol,
                            max_iter=cfg.backward_max_iter)
    if cfg.grad == "phantom":
        return get_gradient("phantom", k=cfg.phantom_k, tau=cfg.phantom_tau)
    if cfg.grad == "onestep":
        return get_gradient("onestep")
    if cfg.grad == "unrolled":
        return get_gradient("unrolled", k=cfg.unroll_k)
    raise ValueError(f"grad={cfg.grad!r} is not a DEQ gradient mode")


class SotSegment(nn.Module):
    """One deep-supervision segment: ``s' = F(s; embed(tokens))``, grad on the last H-cycle.

    Args:
        model: an :class:`~eqsolve.models.eqr.EqR`.
        jacobian: also return ``info["jac"]``, the Jacobian estimate of the last H-cycle (the map
            is then run as its first ``H_cycles - 1`` cycles without a graph, then the last one:
            the same noise draws and the same state as one call).
    """

    def __init__(self, model: nn.Module, jacobian: bool = False) -> None:
        super().__init__()
        self.model = model
        self.jacobian = jacobian

    def forward(self, s: Tensor, tokens: Tensor, noise: float | None,
                generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        x = self.model.embed(tokens)
        info: dict[str, Tensor] = {"nfe": torch.ones(s.shape[0], device=s.device)}
        if self.jacobian:
            cycles = self.model.config.H_cycles
            s_last = s
            if cycles > 1:
                with torch.no_grad():
                    s_last = self.model.map(s, x, noise, generator=generator, h_cycles=cycles - 1)
            s_last = s_last.detach().requires_grad_(True)
            s_new = self.model.map(s_last, x, noise, generator=generator, h_cycles=1)
            info["jac"] = jacobian_estimate(s_new, s_last, generator)
        else:
            s_new = self.model.map(s, x, noise, generator=generator, grad_last_h_cycle=True)
        info["residual"] = rel_change(s_new.detach(), s)
        return s_new, self.model.decode(s_new), self.model.halt_logit(s_new), info


class DeqForward(nn.Module):
    """Fixed point of the outer map from ``s0`` with a gradient strategy (one NFE = one map).

    Args:
        model: an :class:`~eqsolve.models.eqr.EqR`.
        strategy: gradient strategy (see :func:`make_strategy`).
        solver: forward solver name.
        tol: forward relative tolerance.
        depth: forward iteration budget.
        jacobian: also return ``info["jac"]``, the Jacobian estimate at the (detached) solution,
            from one more evaluation of the map.
    """

    def __init__(self, model: nn.Module, strategy: Any, *, solver: str, tol: float,
                 depth: int, jacobian: bool = False) -> None:
        super().__init__()
        self.model = model
        self.strategy = strategy
        self.solver = resolve_solver(solver, {})  # resolved once: a name becomes its solver
        self.tol, self.depth = tol, depth
        self.jacobian = jacobian

    def forward(self, s0: Tensor, tokens: Tensor, noise: float | None,
                generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        x = self.model.embed(tokens)

        def outer_map(s: Tensor, x_rows: Tensor) -> Tensor:
            return self.model.map(s, x_rows, noise, generator=generator)

        z, sol = self.strategy(outer_map, s0, x, solver=self.solver, tol=self.tol,
                               max_iter=self.depth)
        info = {"nfe": sol.nfe.float(), "residual": sol.rel_residual.float()}
        if self.jacobian:
            z_star = z.detach().requires_grad_(True)
            info["jac"] = jacobian_estimate(outer_map(z_star, x), z_star, generator)
        return z, self.model.decode(z), self.model.halt_logit(z), info

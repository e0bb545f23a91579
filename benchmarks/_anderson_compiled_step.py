"""An experiment for ``benchmarks/solvers.py --compile-check``: Anderson's whole step but ``f``
through ``torch.compile``.

The library's ``Anderson(compile=...)`` compiles only the small m x m solve. This module asks
whether compiling *all* of the step's own work pays on the CPU: the small solve and the update
``z+ = f(z) - dX gamma`` (one region, before ``f``), and the history push, the ``dG g`` pass and
the Gram row/column (a second region, after ``f``). ``f`` itself stays eager (it is the user's).

To compile without one recompilation per ring position, the second region takes the slot as a
tensor (``index_copy_`` and a one-hot mask instead of Python-int indexing) and always works on
all ``m`` slots; the eager run of the same formulation is timed too, so the comparison isolates
the compiler. Only the setting of the benchmark is supported (``beta=1``, no ``delay``,
autograd off): this is a measurement, not a solver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from eqsolve.solvers.anderson import Anderson, AndersonState, _small_solve


def _extrapolate(fz: Tensor, gram: Tensor, scale: Tensor, valid: Tensor, rhs: Tensor, dX: Tensor, ridge: float,
                 min_pivot: float) -> tuple[Tensor, Tensor]:
    gamma, keep = _small_solve(gram, scale, valid, rhs, ridge, min_pivot)
    return torch.baddbmm(fz.unsqueeze(1), gamma.unsqueeze(1), dX, alpha=-1.0).squeeze(1), keep


def _push(dG: Tensor, dX: Tensor, gram: Tensor, scale: Tensor, slot: Tensor, onehot: Tensor, z: Tensor, fz: Tensor,
          fz_old: Tensor, g_old: Tensor, dGg_old: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    g_new = fz - z
    dg = g_new - g_old
    dG.index_copy_(1, slot, dg.unsqueeze(1))
    dX.index_copy_(1, slot, (fz - fz_old).unsqueeze(1))
    dGg = torch.bmm(g_new.unsqueeze(1), dG.transpose(1, 2)).squeeze(1)
    col = torch.where(onehot, torch.linalg.vecdot(dg, dg)[:, None], dGg - dGg_old).double()
    diag = (col * onehot).sum(1)
    scale_new = torch.where(diag > 0, diag, 1.0).rsqrt()
    scale.index_copy_(1, slot, scale_new[:, None])
    row = col * (scale_new[:, None] * scale) + ridge * onehot
    gram.index_copy_(1, slot, row.unsqueeze(1))
    gram.index_copy_(2, slot, row.unsqueeze(2))
    return g_new, dGg


@dataclasses.dataclass(frozen=True)
class CompiledStepAnderson(Anderson):
    """Anderson whose step (all but ``f``) runs through ``torch.compile(backend=step_backend)``;
    ``step_backend=None`` runs the same formulation eagerly."""

    step_backend: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta != 1.0 or self.delay:
            raise ValueError("the experiment supports beta=1 and delay=0 only")
        pre, post = _extrapolate, _push
        if self.step_backend is not None:
            pre = torch.compile(pre, backend=self.step_backend, dynamic=True)
            post = torch.compile(post, backend=self.step_backend, dynamic=True)
        object.__setattr__(self, "_regions", (pre, post))

    def step(self, f: Any, state: AndersonState, args: Sequence[Any]) -> AndersonState:
        if torch.is_grad_enabled():
            raise RuntimeError("the experiment runs with autograd off")
        pre, post = self._regions  # type: ignore[attr-defined]
        k = state.filled
        max_cond = self.max_cond if self.max_cond is not None else 1e-2 / torch.finfo(state.z.dtype).eps
        if k:
            z, keep = pre(state.fz, state.gram[:, :k, :k], state.scale[:, :k], state.valid[:, :k], state.dGg[:, :k],
                          state.dX[:, :k], self.ridge, (1.0 + self.ridge) / max_cond)
            valid = keep if k == self.m else torch.cat((keep, state.valid[:, k:]), dim=1)
        else:
            z, valid = state.fz, state.valid.clone()
        fz = f(z, *args)
        slot = torch.tensor([state.slot], device=z.device)
        onehot = torch.arange(self.m, device=z.device) == state.slot
        g_new, dGg = post(state.dG, state.dX, state.gram, state.scale, slot, onehot, z, fz, state.fz, state.g,
                          state.dGg, self.ridge)
        valid[:, state.slot] = True
        return dataclasses.replace(state, z=z, fz=fz, nfe=state.nfe + 1, valid=valid, g=g_new, dGg=dGg,
                                   slot=(state.slot + 1) % self.m, filled=min(k + 1, self.m))

"""An experiment for ``benchmarks/solvers.py --compile-check``: Anderson's whole step but ``f``
through ``torch.compile``.

The library's ``Anderson(compile=...)`` compiles only the small m x m update of the inverse
Gram matrix. This module asks whether compiling *all* of the step's own work pays on the CPU:
the coefficients and the update ``z+ = f(z) - dX gamma`` (one region, before ``f``), and the
history push, the ``dG g`` pass and the update of the inverse (a second region, after ``f``).
``f`` itself stays eager (it is the user's).

To compile without one recompilation per ring position, the second region takes the slot as a
tensor (``index_copy_``/``index_select`` and one-hot masks instead of Python-int indexing) and
always works on all ``m`` slots (removing an empty slot's pair is a no-op); the eager run of the
same formulation is timed too, so the comparison isolates the compiler. Only the setting of the
benchmark is supported (``beta=1``, no ``delay``, autograd off): this is a measurement, not a
solver.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from eqsolve.solvers.anderson import Anderson, AndersonState


def _extrapolate(fz: Tensor, hinv: Tensor, rhs: Tensor, dX: Tensor) -> Tensor:
    gamma = torch.bmm(hinv, rhs.double().unsqueeze(2)).squeeze(2).to(fz.dtype)
    return torch.baddbmm(fz.unsqueeze(1), gamma.unsqueeze(1), dX, alpha=-1.0).squeeze(1)


def _push(dG: Tensor, dX: Tensor, hinv: Tensor, slot: Tensor, e: Tensor, keep: Tensor, z: Tensor, fz: Tensor,
          fz_old: Tensor, g_old: Tensor, dGg_old: Tensor, ridge: float, min_pivot: float) -> tuple[Tensor, Tensor]:
    g_new = fz - z
    dg = g_new - g_old
    dG.index_copy_(1, slot, dg.unsqueeze(1))
    dX.index_copy_(1, slot, (fz - fz_old).unsqueeze(1))
    dGg = torch.bmm(g_new.unsqueeze(1), dG.transpose(1, 2)).squeeze(1)
    a = (dGg - dGg_old).double()
    norm2 = torch.linalg.vecdot(dg, dg).double() * (1.0 + ridge)
    pj = hinv.index_select(2, slot).squeeze(2)
    pjj = (pj * e).sum(1, keepdim=True)
    hinv.sub_(pj.unsqueeze(2) * (pj / torch.where(pjj > 0, pjj, 1.0)).unsqueeze(1)).mul_(keep)
    u = torch.bmm(hinv, a.unsqueeze(2)).squeeze(2)
    s = norm2 - torch.linalg.vecdot(a, u)
    stored = s > min_pivot * norm2
    w = torch.where(stored, s, math.inf).reciprocal()
    v = torch.where(stored.unsqueeze(1), u, 0.0) - e
    hinv.baddbmm_(v.unsqueeze(2), (v * w.unsqueeze(1)).unsqueeze(1))
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
        z = pre(state.fz, state.hinv[:, :k, :k], state.dGg[:, :k], state.dX[:, :k]) if k else state.fz
        fz = f(z, *args)
        slot = torch.tensor([state.slot], device=z.device)
        e = (torch.arange(self.m, device=z.device) == state.slot).double()
        keep = (1.0 - e)[:, None] * (1.0 - e)[None, :]
        g_new, dGg = post(state.dG, state.dX, state.hinv, slot, e, keep, z, fz, state.fz, state.g, state.dGg,
                          self.ridge, self._min_pivot(z.dtype))
        return dataclasses.replace(state, z=z, fz=fz, nfe=state.nfe + 1, g=g_new, dGg=dGg,
                                   slot=(state.slot + 1) % self.m, filled=min(k + 1, self.m))

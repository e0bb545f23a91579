"""Adapter: eqsolve's solvers inside torchdeq 0.1.0.

Importing this module registers ``"eqsolve_fixed_point"``, ``"eqsolve_anderson"`` and
``"eqsolve_broyden"`` in torchdeq's solver registry, with torchdeq's call and return
conventions, so an existing torchdeq model switches solvers by name only::

    import eqsolve.solvers.torchdeq  # noqa: F401  (registers the solvers)
    deq = torchdeq.get_deq(f_solver="eqsolve_anderson", f_max_iter=30, f_tol=1e-4)

Conventions translated here:

- torchdeq's ``max_iter`` counts evaluations of ``f``; eqsolve's counts steps after ``f(z0)``.
- ``indexing`` (torchdeq counts evaluations) becomes eqsolve ``snapshots`` of the best iterate.
- The returned ``info`` is a ``torchdeq.solver.stat.SolverStat`` with ``abs_lowest``,
  ``rel_lowest``, ``abs_trace``, ``rel_trace`` (NaN after a row stopped) and ``nstep`` (the
  evaluations of ``f`` spent per row), plus eqsolve's per-row ``status``.
- torchdeq's ``func`` maps the whole batch (it reshapes to fixed shapes), so rows are
  stopped and frozen per row but still computed (eqsolve's ``compact=False``).
- Options: eqsolve's option names, or torchdeq's where they mean the same thing (``tau`` of
  the fixed-point iteration, ``m`` and ``tau`` (mixing) of Anderson, ``ls`` and
  ``LBFGS_thres`` of Broyden). An option neither knows is a ValueError, not ignored.

torchdeq is imported lazily by :func:`register`; eqsolve itself does not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ._loop import solve
from ._registry import get_solver

__all__ = ["NAMES", "register", "torchdeq_solver"]

#: torchdeq registry name -> (eqsolve solver name, torchdeq option name -> eqsolve option name)
NAMES: dict[str, tuple[str, dict[str, str]]] = {
    "eqsolve_fixed_point": ("fixed_point", {}),
    "eqsolve_anderson": ("anderson", {"tau": "beta"}),
    "eqsolve_broyden": ("broyden", {"ls": "line_search", "LBFGS_thres": "memory"}),
}
_LOOP_OPTIONS = ("check_every", "diverge_factor", "stall_window", "inference")


def torchdeq_solver(
    func: Callable[[Tensor], Tensor],
    x0: Tensor,
    max_iter: int = 50,
    tol: float = 1e-3,
    stop_mode: str = "abs",
    indexing: list[int] | None = None,
    *,
    solver: str = "anderson",
    return_final: bool = False,
    **kwargs: Any,
) -> tuple[Tensor, list[Tensor], Any]:
    """Run an eqsolve solver with torchdeq's solver signature and return convention.

    Args:
        func: torchdeq's fixed-point function of ``x0``'s shape (the whole batch).
        x0: initial estimate, ``(B, ...)`` (a 0-d or 1-d tensor counts its elements as rows).
        max_iter: maximum evaluations of ``func`` (torchdeq's meaning).
        tol: stopping tolerance of kind ``stop_mode``.
        stop_mode: ``"abs"`` or ``"rel"``.
        indexing: evaluation counts at which to return the best iterate so far.
        solver: the eqsolve solver name (bound by :func:`register`).
        return_final: must be False (eqsolve always returns the best iterate).
        **kwargs: solver options (eqsolve or torchdeq names) and the loop options
            ``check_every``, ``diverge_factor``, ``stall_window``, ``inference`` (default False
            here: ``func`` is a torchdeq model's module, trained after the no-grad solve, so a
            tensor it caches must not be an inference tensor; see :func:`~eqsolve.solvers.solve`).

    Returns:
        ``(z, indexing_list, info)`` as torchdeq's solvers do.

    Examples:
        >>> import torch
        >>> z, _, info = torchdeq_solver(lambda z: 0.5 * z + 1.0, torch.zeros(3, 4), tol=1e-6)
        >>> bool(info["abs_lowest"].max() < 1e-6), round(z[0, 0].item(), 5)
        (True, 2.0)
    """
    from torchdeq.solver.stat import SolverStat

    if return_final:
        raise ValueError("return_final=True is not supported: eqsolve returns the best iterate per row")
    renames = next((r for n, r in NAMES.values() if n == solver), {})
    loop = {"inference": False, **{k: kwargs.pop(k) for k in _LOOP_OPTIONS if k in kwargs}}
    options = {renames.get(k, k): v for k, v in kwargs.items()}
    algo = get_solver(solver, **options)  # ValueError on an unknown option

    shape = x0.shape
    rows = x0.reshape(-1) if x0.dim() < 2 else x0
    f = func if x0.dim() >= 2 else (lambda z: func(z.view(shape)).reshape(-1))
    snaps = [i - 1 for i in indexing] if indexing else []
    sol = solve(
        f, rows, solver=algo, tol=float(tol), stop=stop_mode, max_iter=max(int(max_iter) - 1, 0),
        compact=False, trace=True, snapshots=snaps, **loop,
    )
    z = sol.z.view(shape)
    trajectory = [s.view(shape) for s in sol.snapshots]
    if indexing and not trajectory:
        trajectory = [z]
    info = SolverStat(
        abs_lowest=sol.abs_residual, rel_lowest=sol.rel_residual, abs_trace=sol.abs_trace,
        rel_trace=sol.rel_trace, nstep=sol.nfe.to(torch.float32),
    )
    info["status"] = sol.status
    return z, trajectory, info


def register() -> list[str]:
    """Register eqsolve's solvers in torchdeq's registry (idempotent).

    Returns:
        The registered names.

    Examples:
        >>> from torchdeq.solver import get_solver as torchdeq_get_solver
        >>> "eqsolve_anderson" in register()
        True
        >>> torchdeq_get_solver("eqsolve_broyden").func is torchdeq_solver
        True
    """
    from torchdeq.solver import register_solver as torchdeq_register

    for key, (name, _) in NAMES.items():
        torchdeq_register(key, partial(torchdeq_solver, solver=name))
    return list(NAMES)


register()

"""Named fixed-point problems with known solutions, and which solvers must (not) solve them.

Scipy-style: every problem lists ``MUST_WORK`` solvers (every row that can converge must)
and ``KNOWN_BAD`` solvers with the status they are expected to end with. Problems are small
(float64, d <= 40) so the whole suite runs in seconds on one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from eqsolve.solvers import Status

SOLVERS = ("fixed_point", "anderson", "broyden")


@dataclass
class Problem:
    """A batch of fixed-point problems ``z = f(z, *args)`` with known solutions ``z_star``."""

    name: str
    f: Callable[..., Tensor]
    z0: Tensor
    args: tuple
    z_star: Tensor
    max_iter: dict[str, int]
    must_work: tuple[str, ...]
    known_bad: dict[str, Status] = field(default_factory=dict)
    bad_rows: dict[int, Status] = field(default_factory=dict)  # rows that fail for every solver
    tol: float = 1e-8
    stop: str = "abs"
    options: dict = field(default_factory=dict)  # extra keyword arguments of solve()
    err_factor: float = 1.0  # ||z - z*|| <= err_factor * ||f(z) - z|| (1/(1-q), or ||(I-A)^-1||)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(d: int, g: torch.Generator) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def _scaled(w: Tensor, norm: float) -> Tensor:
    return w * (norm / torch.linalg.matrix_norm(w, ord=2))


def linear(name: str, a: Tensor, batch: int, seed: int, **kw) -> Problem:
    """``f(z, b) = z A^T + b`` with ``z* = (I - A)^{-1} b`` per row."""
    g = _gen(seed)
    d = a.shape[0]
    b = torch.randn(batch, d, generator=g, dtype=torch.float64)
    z_star = torch.linalg.solve(torch.eye(d, dtype=a.dtype) - a, b.T).T
    inv_norm = torch.linalg.matrix_norm(torch.linalg.inv(torch.eye(d, dtype=a.dtype) - a), ord=2).item()
    return Problem(name, lambda z, b: z @ a.T + b, torch.zeros(batch, d, dtype=torch.float64), (b,), z_star,
                   err_factor=inv_norm, **kw)


def tanh_map(name: str, w: Tensor, batch: int, seed: int, scale: Tensor | None = None, **kw) -> Problem:
    """``f(z, x, c) = tanh(c * z W^T + x)`` with ``x`` built so that a random ``z*`` is the fixed point."""
    g = _gen(seed)
    d = w.shape[0]
    c = torch.ones(batch, 1, dtype=torch.float64) if scale is None else scale[:, None]
    z_star = 0.8 * (2 * torch.rand(batch, d, generator=g, dtype=torch.float64) - 1)
    x = torch.atanh(z_star) - c * (z_star @ w.T)
    f = lambda z, x, c: torch.tanh(c * (z @ w.T) + x)  # noqa: E731
    q = float(c.max()) * torch.linalg.matrix_norm(w, ord=2).item()  # Lipschitz constant of f
    return Problem(name, f, torch.zeros(batch, d, dtype=torch.float64), (x, c), z_star, err_factor=1 / (1 - q), **kw)


def problems() -> list[Problem]:
    """The named suite."""
    g = _gen(0)
    out = []
    d = 24
    out.append(tanh_map(
        "tanh_contractive", _scaled(torch.randn(d, d, generator=g, dtype=torch.float64), 0.8), 6, 1,
        max_iter={"fixed_point": 150, "anderson": 40, "broyden": 40}, must_work=SOLVERS,
    ))
    q = _orthogonal(40, g)
    sym = (q * torch.linspace(-0.95, 0.95, 40, dtype=torch.float64)) @ q.T
    out.append(linear(
        "linear_sym_0.95", sym, 6, 2,
        max_iter={"fixed_point": 500, "anderson": 60, "broyden": 90}, must_work=SOLVERS,
    ))
    # Non-normal: a Jordan-like block; spectral radius 0.5 but ||A|| = 1.2 and ||A^k|| up to 142.
    # Plain iteration's residual grows for ~40 steps before it falls, which the stall heuristic
    # would call STAGNATED: the problem turns it off. Its minimal polynomial has degree 20, so
    # histories shorter than that (m=20, memory=30) lose information and need many steps.
    jordan = 0.5 * torch.eye(20, dtype=torch.float64) + 0.7 * torch.diag(torch.ones(19, dtype=torch.float64), 1)
    out.append(linear(
        "linear_nonnormal", jordan, 6, 3,
        max_iter={"fixed_point": 150, "anderson": 250, "broyden": 300}, must_work=SOLVERS,
        options={"stall_window": None},
    ))
    neg = (q * torch.linspace(-1.5, 0.9, 40, dtype=torch.float64)) @ q.T
    out.append(linear(
        "linear_below_-1", neg, 6, 4,
        max_iter={"fixed_point": 200, "anderson": 80, "broyden": 90}, must_work=("anderson", "broyden"),
        known_bad={"fixed_point": Status.DIVERGED},
    ))
    # Rows 1 and 4 return NaN from the first evaluation on: NONFINITE for every solver.
    base = tanh_map("nan_rows", _scaled(torch.randn(d, d, generator=g, dtype=torch.float64), 0.7), 6, 5,
                    max_iter={"fixed_point": 120, "anderson": 40, "broyden": 40}, must_work=SOLVERS)
    poison = torch.zeros(6, 1, dtype=torch.float64)
    poison[[1, 4]] = float("nan")
    inner = base.f
    base.f = lambda z, x, c, p: inner(z, x, c) + p  # noqa: E731
    base.args = (*base.args, poison)
    base.bad_rows = {1: Status.NONFINITE, 4: Status.NONFINITE}
    out.append(base)
    # Mixed batch: per-row contraction from 0.05 (a few steps) to 0.95 (hundreds for plain iteration).
    mixed_scale = torch.tensor([0.05, 0.95, 0.1, 0.9, 0.05, 0.5, 0.05, 0.97], dtype=torch.float64)
    out.append(tanh_map(
        "mixed_easy_hard", _scaled(torch.randn(d, d, generator=g, dtype=torch.float64), 1.0), 8, 6,
        scale=mixed_scale, max_iter={"fixed_point": 700, "anderson": 60, "broyden": 60}, must_work=SOLVERS,
    ))
    return out


def by_name(name: str) -> Problem:
    """One problem of the suite by name."""
    return next(p for p in problems() if p.name == name)

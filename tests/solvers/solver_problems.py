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


def _err_factor(f: Callable[..., Tensor], z_star: Tensor, args: tuple, slack: float = 2.0) -> float:
    """``slack * max_rows ||(I - J(z*))^{-1}||``: bounds ``||z - z*|| / ||f(z) - z||`` near ``z*``."""
    worst = 0.0
    for i in range(z_star.shape[0]):
        row_args = tuple(a[i : i + 1] for a in args)
        jac = torch.autograd.functional.jacobian(lambda z, a=row_args: f(z[None], *a)[0], z_star[i])
        eye = torch.eye(jac.shape[0], dtype=jac.dtype)
        worst = max(worst, torch.linalg.matrix_norm(torch.linalg.inv(eye - jac), ord=2).item())
    return slack * worst


def mixer(name: str, tokens: int, channels: int, hidden: int, rho: float, batch: int, seed: int, **kw) -> Problem:
    """A token-and-channel MLP-mixing block, as in the EqR map: non-normal Jacobian.

    ``f(z, x) = gain * (u + tanh(u W1^T) W2^T) + x`` with ``u = z + T2 tanh(T1 z)`` on ``z`` of
    shape ``(tokens, channels)`` (``T1, T2`` mix tokens, ``W1, W2`` channels), ``x`` built so that a
    random ``z*`` is the fixed point. Then ``J(z*)`` is ``gain`` times the block's Jacobian, and
    ``gain`` is set so that the largest spectral radius of ``J(z*)`` over the rows is ``rho``.
    """
    g = _gen(seed)

    def w(rows: int, cols: int) -> Tensor:
        return torch.randn(rows, cols, generator=g, dtype=torch.float64) / cols**0.5

    t1, t2, w1, w2 = w(hidden, tokens), w(tokens, hidden), w(hidden, channels), w(channels, hidden)

    def block(z: Tensor) -> Tensor:
        z = z.view(-1, tokens, channels)
        u = z + t2 @ torch.tanh(t1 @ z)
        return (u + torch.tanh(u @ w1.T) @ w2.T).reshape(z.shape[0], -1)

    z_star = torch.rand(batch, tokens * channels, generator=g, dtype=torch.float64) - 0.5
    radius = max(torch.linalg.eigvals(torch.autograd.functional.jacobian(lambda z: block(z[None])[0], z_star[i]))
                 .abs().max().item() for i in range(batch))
    gain = rho / radius
    x = z_star - gain * block(z_star)
    f = lambda z, x: gain * block(z) + x  # noqa: E731
    return Problem(name, f, torch.zeros_like(z_star), (x,), z_star, err_factor=_err_factor(f, z_star, (x,)), **kw)


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
    # histories shorter than that (Anderson m=20) lose information and need many steps.
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
    # Hard, non-normal maps. A mixer block whose Jacobian is a product of non-commuting,
    # non-symmetric token and channel mixings, spectral radius 0.95 at z* (plain iteration: up
    # to ~310 steps, the secant methods 25-40).
    out.append(mixer(
        "mixer_nonnormal", 4, 6, 8, 0.95, 6, 7,
        max_iter={"fixed_point": 500, "anderson": 60, "broyden": 80}, must_work=SOLVERS,
    ))
    # A slowly contracting tanh map: Gaussian W with spectral radius 0.999 (||W|| is about twice
    # that, so f is not a contraction in the 2-norm; plain iteration converges, slowly).
    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    w = 0.999 * w / torch.linalg.eigvals(w).abs().max()
    slow = tanh_map("tanh_slow", w, 6, 8, max_iter={"fixed_point": 2000, "anderson": 80, "broyden": 80},
                    must_work=SOLVERS, options={"stall_window": None})
    slow.err_factor = _err_factor(slow.f, slow.z_star, slow.args)
    out.append(slow)
    return out


def by_name(name: str) -> Problem:
    """One problem of the suite by name."""
    return next(p for p in problems() if p.name == name)

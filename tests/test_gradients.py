"""Gradient strategies against exact gradients (dense (I - J) solves) and their definitions."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from eqsolve.gradients import (
    ConvergenceWarning,
    GradSolution,
    Implicit,
    OneStep,
    Phantom,
    Unrolled,
    available_gradients,
    get_gradient,
)
from eqsolve.solvers import Status, available_solvers, solve

D = torch.float64


class Cell(nn.Module):
    """f(z, x, s) = tanh(s * W z + U x + b): contractive for ||W||_2 = rho < 1 and |s| <= 1."""

    def __init__(self, n: int = 5, m: int = 3, rho: float = 0.6, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(n, n, generator=gen, dtype=D)
        self.W = nn.Parameter(rho * w / torch.linalg.matrix_norm(w, 2))
        self.U = nn.Parameter(torch.randn(n, m, generator=gen, dtype=D))
        self.b = nn.Parameter(0.1 * torch.randn(n, generator=gen, dtype=D))

    def forward(self, z: torch.Tensor, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        wz = z @ self.W.T
        return torch.tanh((wz if s is None else s * wz) + x @ self.U.T + self.b)


def make_batch(batch: int = 4, m: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, m, generator=gen, dtype=D, requires_grad=True)
    target = torch.randn(batch, 5, generator=gen, dtype=D)
    return x, target


def exact_fixed_point(cell: Cell, x: torch.Tensor) -> torch.Tensor:
    z = torch.zeros(x.shape[0], cell.W.shape[0], dtype=D)
    with torch.no_grad():
        for _ in range(500):
            z = cell(z, x)
    return z


def exact_grads(cell: Cell, x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """dL/d(params, x) for L = sum((z* - target)^2) from a dense solve of (I - J)^T g = v."""
    z_star = exact_fixed_point(cell, x)
    v = 2 * (z_star - target)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda z, i=i: cell(z, x[i:i + 1].detach())[0], z_star[i:i + 1])[:, 0]
                       for i in range(x.shape[0])])
    eye = torch.eye(z_star.shape[1], dtype=D)
    g = torch.linalg.solve(eye - jac.transpose(1, 2), v.unsqueeze(-1)).squeeze(-1)
    fz = cell(z_star, x)
    return list(torch.autograd.grad(fz, [*cell.parameters(), x], g))


def strategy_grads(strategy, cell: Cell, x: torch.Tensor, target: torch.Tensor, **fwd) -> list[torch.Tensor]:
    fwd = {"solver": "anderson", "tol": 1e-12, "max_iter": 200, **fwd}
    z, _ = strategy(cell, torch.zeros(x.shape[0], 5, dtype=D), x, **fwd)
    loss = (z - target).pow(2).sum()
    return list(torch.autograd.grad(loss, [*cell.parameters(), x]))


def flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def fidelity(approx: list[torch.Tensor], exact: list[torch.Tensor]) -> tuple[float, float]:
    a, e = flat(approx), flat(exact)
    cos = torch.nn.functional.cosine_similarity(a, e, dim=0).item()
    return cos, ((a - e).norm() / e.norm()).item()


@pytest.mark.parametrize("solver", [s for s in ("fixed_point", "anderson", "broyden") if s in available_solvers()])
def test_implicit_matches_dense_solve_float64(solver: str) -> None:
    cell, (x, target) = Cell(), make_batch()
    exact = exact_grads(cell, x, target)
    grads = strategy_grads(Implicit(solver=solver, tol=1e-12, max_iter=300), cell, x, target)
    cos, rel = fidelity(grads, exact)
    assert cos >= 0.99999 and rel <= 1e-6, (cos, rel)
    assert all(g.dtype == D for g in grads)
    # The input x (an arg of f) gets its gradient too, not only the parameters.
    assert torch.allclose(grads[-1], exact[-1], rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("strategy, fwd", [
    (Implicit(solver="anderson", tol=1e-13, max_iter=300), {"solver": "anderson", "tol": 1e-14, "max_iter": 300}),
    # A fixed number of steps (tol unreachable) makes the unrolled map exactly differentiable.
    (Unrolled(), {"solver": "anderson", "tol": 1e-30, "max_iter": 6}),
], ids=["implicit", "unrolled"])
def test_exact_strategies_gradcheck_float64(strategy, fwd) -> None:
    cell, (x, _) = Cell(n=3, m=2, rho=0.5), make_batch(batch=2, m=2)

    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        f = lambda z, x: torch.tanh(z @ w.T + x @ cell.U.T)  # noqa: E731
        z, _ = strategy(f, torch.zeros(2, 3, dtype=D), x, **fwd)
        return z

    w = cell.W.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x.detach().requires_grad_(), w), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy", [Phantom(k=3, tau=0.5), Phantom(k=2, tau=1.0), OneStep()], ids=repr)
def test_approximate_strategies_gradcheck_their_definition(strategy) -> None:
    """With z* held fixed, the attached graph is an exact function: gradcheck it."""
    cell, (x, _) = Cell(n=3, m=2), make_batch(batch=2, m=2)
    z_star = exact_fixed_point(cell, x)

    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        f = lambda z, x: torch.tanh(z @ w.T + x @ cell.U.T)  # noqa: E731
        return strategy.attach(f, z_star, (x,))[0]

    w = cell.W.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x.detach().requires_grad_(), w))


def test_phantom_error_falls_with_k_and_approaches_exact() -> None:
    cell, (x, target) = Cell(rho=0.8), make_batch()
    exact = exact_grads(cell, x, target)
    errors = [fidelity(strategy_grads(Phantom(k=k, tau=0.5), cell, x, target), exact)[1] for k in (1, 2, 4, 8, 16, 64)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.1 and errors[-1] < 1e-5, errors


def test_onestep_is_biased_and_equals_phantom_one_undamped() -> None:
    cell, (x, target) = Cell(rho=0.8), make_batch()
    exact = exact_grads(cell, x, target)
    one = strategy_grads(OneStep(), cell, x, target)
    cos, rel = fidelity(one, exact)
    assert rel > 0.05, "OneStep must not be mistaken for the exact gradient"
    assert cos > 0.5  # still a descent-ish direction on this contractive problem
    assert torch.allclose(flat(one), flat(strategy_grads(Phantom(k=1, tau=1.0), cell, x, target)), rtol=1e-12)


def test_unrolled_all_equals_autograd_through_python_loop() -> None:
    cell, (x, target) = Cell(), make_batch()
    n = 7  # steps after init; tol unreachable so every row runs them all
    z, sol = Unrolled()(cell, torch.zeros(4, 5, dtype=D), x, solver="fixed_point", tol=1e-30, max_iter=n)
    grads = torch.autograd.grad((z - target).pow(2).sum(), [*cell.parameters(), x])
    ref = torch.zeros(4, 5, dtype=D)
    for _ in range(n + 1):  # init evaluates f(z0), then n steps
        ref = cell(ref, x)
    ref_grads = torch.autograd.grad((ref - target).pow(2).sum(), [*cell.parameters(), x])
    assert torch.allclose(z, ref, rtol=0, atol=1e-14)
    assert torch.allclose(flat(grads), flat(ref_grads), rtol=1e-12, atol=1e-14)
    assert (sol.status == int(Status.MAX_ITER)).all() and (sol.nstep == n).all()


def test_unrolled_last_k_equals_truncated_python_loop() -> None:
    cell, (x, target) = Cell(), make_batch()
    n, k = 9, 3
    z, _ = Unrolled(k=k)(cell, torch.zeros(4, 5, dtype=D), x, solver="fixed_point", tol=1e-30, max_iter=n)
    grads = torch.autograd.grad((z - target).pow(2).sum(), [*cell.parameters(), x])
    ref = torch.zeros(4, 5, dtype=D)
    with torch.no_grad():
        for _ in range(n + 1 - k):
            ref = cell(ref, x)
    for _ in range(k):
        ref = cell(ref, x)
    ref_grads = torch.autograd.grad((ref - target).pow(2).sum(), [*cell.parameters(), x])
    assert torch.allclose(z, ref, rtol=0, atol=1e-14)
    assert torch.allclose(flat(grads), flat(ref_grads), rtol=1e-12, atol=1e-14)


def test_unrolled_stops_rows_independently_and_approaches_exact() -> None:
    cell, (x, target) = Cell(), make_batch()
    s = torch.tensor([[0.05], [1.0], [0.5], [1.0]], dtype=D)  # row 0 contracts much faster
    z, sol = Unrolled(k=None)(cell, torch.zeros(4, 5, dtype=D), x, s, solver="anderson", tol=1e-10, max_iter=100)
    assert sol.converged.all()
    assert sol.nstep[0] < sol.nstep[1], sol.nstep
    # Converged unrolling differentiates (almost) the fixed point: close to the implicit gradient.
    unrolled = torch.autograd.grad((z - target).pow(2).sum(), [*cell.parameters(), x])
    z_i, _ = Implicit(tol=1e-12)(cell, torch.zeros(4, 5, dtype=D), x, s, solver="anderson", tol=1e-12, max_iter=100)
    implicit = torch.autograd.grad((z_i - target).pow(2).sum(), [*cell.parameters(), x])
    assert fidelity(unrolled, implicit)[0] > 0.999


def test_implicit_backward_stops_per_row_and_reports_stats() -> None:
    cell, (x, target) = Cell(rho=0.9), make_batch()
    s = torch.tensor([[0.05], [1.0], [0.2], [1.0]], dtype=D)
    z, sol = Implicit(solver="fixed_point", tol=1e-10, max_iter=500)(
        cell, torch.zeros(4, 5, dtype=D), x, s, solver="anderson", tol=1e-12, max_iter=200)
    assert isinstance(sol, GradSolution) and not sol.backward.ran
    (z - target).pow(2).sum().backward()
    stats = sol.backward
    assert stats.ran and stats.converged.all()
    assert stats.nstep[0] < stats.nstep[1], stats.nstep  # the easy row stopped early
    assert (stats.rel_residual <= 1e-10).all()
    assert stats.summary()["converged_frac"] == 1.0


def test_unconverged_backward_warns_once_and_reports_status() -> None:
    cell, (x, target) = Cell(rho=0.95), make_batch()
    strategy = Implicit(solver="fixed_point", tol=1e-12, max_iter=2)
    sols = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            z, sol = strategy(cell, torch.zeros(4, 5, dtype=D), x, solver="anderson", tol=1e-12, max_iter=200)
            (z - target).pow(2).sum().backward()
            sols.append(sol)
    assert sum(issubclass(w.category, ConvergenceWarning) for w in caught) == 1
    for sol in sols:
        assert (sol.backward.status == int(Status.MAX_ITER)).all()
        assert (sol.backward.rel_residual > 1e-12).all()
    assert sols[0].backward is not sols[1].backward  # per-call stats; the strategy holds none
    z, _ = Implicit(solver="fixed_point", tol=1e-12, max_iter=2, throw=True)(
        cell, torch.zeros(4, 5, dtype=D), x, solver="anderson", tol=1e-12, max_iter=200)
    with pytest.raises(RuntimeError, match="did not converge"):
        z.sum().backward()


@pytest.mark.parametrize("strategy", [Implicit(tol=1e-12), Phantom(k=4), OneStep(), Unrolled(), Unrolled(k=3)], ids=repr)
def test_several_calls_before_one_backward(strategy) -> None:
    """Two calls (one on the same input twice) then one backward == sum of separate backwards."""
    cell, (x, target) = Cell(), make_batch()
    x2 = (x.detach() * 0.5).requires_grad_()
    fwd = {"solver": "anderson", "tol": 1e-12, "max_iter": 60}
    z0 = torch.zeros(4, 5, dtype=D)

    def loss_of(inp: torch.Tensor) -> torch.Tensor:
        return (strategy(cell, z0, inp, **fwd)[0] - target).pow(2).sum()

    params = [*cell.parameters(), x, x2]
    together = torch.autograd.grad(loss_of(x) + loss_of(x2) + loss_of(x), params, allow_unused=True)
    apart = [torch.autograd.grad(loss_of(inp), params, allow_unused=True) for inp in (x, x2, x)]
    for i, g in enumerate(together):
        parts = [a[i] for a in apart if a[i] is not None]
        assert torch.allclose(g, sum(parts), rtol=1e-10, atol=1e-12)


def test_registry_by_name_and_errors() -> None:
    assert isinstance(get_gradient("implicit", tol=1e-8), Implicit)
    assert get_gradient("phantom", k=3, tau=0.7) == Phantom(k=3, tau=0.7)
    assert isinstance(get_gradient("jfb"), OneStep) and get_gradient("unrolled", k=4).k == 4
    assert {"implicit", "phantom", "onestep", "unrolled"} <= set(available_gradients())
    with pytest.raises(ValueError, match="valid:.*implicit"):
        get_gradient("implicitt")
    with pytest.raises(ValueError, match="tau"):
        get_gradient("phantom", taus=0.5)
    with pytest.raises(ValueError):
        Implicit(solver="anderson", not_an_option=1)
    with pytest.raises(ValueError, match="k must be"):
        Phantom(k=0)
    with pytest.raises(ValueError, match="tau must be"):
        Phantom(tau=1.5)
    z0, x = torch.zeros(2, 5, dtype=D), torch.zeros(2, 3, dtype=D)
    with pytest.raises(ValueError, match="stop"):
        Unrolled()(Cell(), z0, x, stop="relative")
    with pytest.raises(ValueError, match="unknown option"):
        Unrolled()(Cell(), z0, x, solver="anderson", not_an_option=1)


def test_strategies_are_frozen_option_dataclasses() -> None:
    import dataclasses

    for strategy in (Implicit(solver="anderson", m=3), Phantom(k=2), OneStep(), Unrolled(k=3)):
        assert dataclasses.is_dataclass(strategy)
        field = dataclasses.fields(strategy)[0].name if dataclasses.fields(strategy) else "k"
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(strategy, field, 1)
        assert dataclasses.replace(strategy) == strategy and hash(dataclasses.replace(strategy)) == hash(strategy)
    assert Implicit(m=3) == Implicit(solver_options={"m": 3}) != Implicit(m=4)
    assert not hasattr(Implicit(), "last_backward") and not hasattr(Implicit(), "_warned")


def test_gradient_errors_have_the_solver_registry_wording() -> None:
    from eqsolve._errors import unknown_key
    from eqsolve.solvers import get_solver

    with pytest.raises(ValueError) as solver_err:
        get_solver("fixed_point", taus=0.5)
    assert str(solver_err.value) == unknown_key("option", "taus", ["tau"], " for solver 'fixed_point'")
    with pytest.raises(ValueError, match=r"^unknown gradient 'implicitt' \(did you mean 'implicit'\?\); valid: .*bptt.*unrolled"):
        get_gradient("implicitt")
    with pytest.raises(ValueError, match=r"^unknown option 'taus' \(did you mean 'tau'\?\) for gradient 'phantom'; valid: k, tau$"):
        get_gradient("phantom", taus=0.5)
    with pytest.raises(ValueError, match=r"unknown option 'max_iters' \(did you mean 'max_iter'\?\).*valid: .*\bm\b.*max_iter"):
        Implicit(max_iters=3)
    with pytest.raises(ValueError, match="unknown option 'max_iters'"):
        get_gradient("implicit", max_iters=3)
    with pytest.raises(ValueError, match="unknown solver 'andersen'"):
        Implicit(solver="andersen")
    with pytest.raises(ValueError, match="can only be given with a gradient name"):
        get_gradient(Phantom(), k=2)


def test_register_a_custom_gradient() -> None:
    import dataclasses

    from eqsolve.gradients import register_gradient
    from eqsolve.gradients.registry import _REGISTRY

    @dataclasses.dataclass(frozen=True)
    class Halfway(OneStep):
        """Half a step: z = (z* + f(z*)) / 2 with a graph."""

        weight: float = 0.5

        def attach(self, f, z_star, args):
            with torch.enable_grad():
                return (1 - self.weight) * z_star.detach() + self.weight * f(z_star.detach(), *args), None

    try:
        register_gradient("Halfway", Halfway)
        assert available_gradients()["halfway"] is Halfway
        strategy = get_gradient("HALFWAY", weight=0.25)
        assert strategy == Halfway(weight=0.25)
        with pytest.raises(ValueError, match=r"unknown option 'wieght' \(did you mean 'weight'\?\) for gradient 'halfway'; valid: weight"):
            get_gradient("halfway", wieght=0.1)
        cell, (x, target) = Cell(), make_batch()
        z, sol = strategy(cell, torch.zeros(4, 5, dtype=D), x, solver="anderson", tol=1e-10, max_iter=100)
        (z - target).pow(2).sum().backward()
        assert x.grad is not None and sol.backward is None
        with pytest.raises(ValueError, match="already registered"):
            register_gradient("halfway", Phantom)
        with pytest.raises(TypeError, match="frozen dataclass"):
            register_gradient("mutable", type("Mutable", (OneStep,), {"__init__": lambda self: None}) and
                              dataclasses.dataclass(type("Mutable", (), {})))
    finally:
        _REGISTRY.pop("halfway", None)


def test_forward_solution_is_reported() -> None:
    cell, (x, _) = Cell(), make_batch()
    z, sol = Implicit()(cell, torch.zeros(4, 5, dtype=D), x, solver="anderson", tol=1e-10, max_iter=100)
    ref = solve(cell, torch.zeros(4, 5, dtype=D), x.detach(), solver="anderson", tol=1e-10, max_iter=100)
    assert torch.equal(sol.nfe, ref.nfe) and sol.converged.all()
    assert torch.allclose(z, sol.z, atol=1e-9)  # the output is f(z*), one step from z*


def test_unrolled_last_k_replays_each_rows_own_last_steps() -> None:
    """Rows stop at different steps; each row's graph covers its own last min(k, n_r) steps."""
    cell, (x, target) = Cell(), make_batch()
    s = torch.tensor([[0.02], [1.0], [0.3], [0.6]], dtype=D)
    k = 5  # row 0 stops after 4 steps (< k), the others after more
    z, sol = Unrolled(k=k)(cell, torch.zeros(4, 5, dtype=D), x, s, solver="fixed_point", tol=1e-9, max_iter=200)
    assert sol.converged.all() and len(set(sol.nstep.tolist())) > 1 and int(sol.nstep.min()) < k
    for r in range(4):
        (grad_x,) = torch.autograd.grad((z[r] - target[r]).pow(2).sum(), x, retain_graph=True)
        n_r = int(sol.nstep[r])
        steps_with_grad = min(k, n_r)
        ref = torch.zeros(1, 5, dtype=D)
        with torch.no_grad():
            for _ in range(n_r + 1 - steps_with_grad):
                ref = cell(ref, x[r:r + 1], s[r:r + 1])
        for _ in range(steps_with_grad):
            ref = cell(ref, x[r:r + 1], s[r:r + 1])
        (ref_grad,) = torch.autograd.grad((ref[0] - target[r]).pow(2).sum(), x)
        assert torch.allclose(z[r], ref[0], atol=1e-13), r
        assert torch.allclose(grad_x, ref_grad, rtol=1e-10, atol=1e-14), r
        assert sol.nfe[r] == n_r + 1 + steps_with_grad  # forward evaluations + replayed ones


def test_implicit_accepts_loop_options_and_rejects_double_backward() -> None:
    strategy = Implicit(solver="fixed_point", stall_window=10, diverge_factor=100.0)
    assert strategy.loop_options["stall_window"] == 10 and "stall_window=10" in repr(strategy)
    cell, (x, target) = Cell(), make_batch()
    z, _ = strategy(cell, torch.zeros(4, 5, dtype=D), x, solver="anderson", tol=1e-10, max_iter=100)
    (gx,) = torch.autograd.grad((z - target).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()


@pytest.mark.parametrize("solver", [s for s in ("anderson", "broyden") if s in available_solvers()])
def test_unrolled_last_k_with_history_solvers_matches_per_row_replay(solver: str) -> None:
    """Solvers with history buffers (updated in place without a graph, ring positions shared by
    the batch): each row's result equals driving init/step on that row alone and taking a
    graph over its last min(k, n) steps."""
    from eqsolve.solvers import get_solver
    from eqsolve.solvers._base import flat_map

    cell, (x, target) = Cell(), make_batch()
    s = torch.tensor([[0.02], [1.0], [0.3], [0.6]], dtype=D)
    k, tol = 3, 1e-9
    z, sol = Unrolled(k=k)(cell, torch.zeros(4, 5, dtype=D), x, s, solver=solver, tol=tol, max_iter=100)
    assert sol.converged.all() and len(set(sol.nstep.tolist())) > 1
    algo, g = get_solver(solver), flat_map(cell, (5,))
    for r in range(4):
        args, n_r = (x[r:r + 1], s[r:r + 1]), int(sol.nstep[r])
        steps_with_grad = min(k, n_r)
        with torch.no_grad():
            state = algo.init(g, torch.zeros(1, 5, dtype=D), args)
            for _ in range(n_r - steps_with_grad):
                state = algo.step(g, state, args)
        for _ in range(steps_with_grad):
            state = algo.step(g, state, args)
        (ref_grad,) = torch.autograd.grad((state.fz[0] - target[r]).pow(2).sum(), x)
        (grad_x,) = torch.autograd.grad((z[r] - target[r]).pow(2).sum(), x, retain_graph=True)
        assert torch.allclose(z[r], state.fz[0], atol=1e-12), r
        assert torch.allclose(grad_x, ref_grad, rtol=1e-8, atol=1e-12), r

"""The one solver engine: every driver (solve, Unrolled, solve_many) reports the same statuses,
best iterates and NFE."""

from __future__ import annotations

import pytest
import torch

from eqsolve.gradients import Unrolled
from eqsolve.solvers import Status, flat_map, get_solver, solve
from eqsolve.solvers._engine import GO, Budget, Engine, Never, Tolerance

D = torch.float64


def _contraction(n: int = 6, q: float = 0.8, seed: int = 0) -> torch.Tensor:
    w = torch.randn(n, n, dtype=D, generator=torch.Generator().manual_seed(seed))
    return q * w / torch.linalg.matrix_norm(w, ord=2)


def _maps():
    w = _contraction()
    c = torch.rand(4, 6, dtype=D, generator=torch.Generator().manual_seed(1)) + 1
    return {
        "contraction": (lambda z, c: torch.tanh(z @ w.T + c), 1e-10),
        "no_root_shift": (lambda z, c: z + c, 1e-12),  # the iterate runs away: DIVERGED
        "stall": (lambda z, c: torch.where(z >= 0, -1.0, 1.0) * c, 1e-12),  # 2-cycle: STAGNATED
    }, c


@pytest.mark.parametrize("name", ["contraction", "no_root_shift", "stall"])
@pytest.mark.parametrize("solver", ["fixed_point", "anderson"])
@pytest.mark.parametrize("k", [None, 3])
def test_unrolled_reports_what_solve_reports(name: str, solver: str, k: int | None) -> None:
    maps, c = _maps()
    f, tol = maps[name]
    kw = dict(solver=solver, tol=tol, max_iter=120, stall_window=10)
    ref = solve(f, torch.zeros(4, 6, dtype=D), c, compact=False, **kw)
    z, sol = Unrolled(k=k)(f, torch.zeros(4, 6, dtype=D), c, **kw)
    assert sol.status.tolist() == ref.status.tolist()
    assert sol.nstep.tolist() == ref.nstep.tolist()
    assert torch.equal(sol.z, ref.z)  # the best iterate, not the last
    assert torch.equal(sol.abs_residual, ref.abs_residual) and torch.equal(sol.rel_residual, ref.rel_residual)
    # NFE: the forward evaluations, plus the replayed ones for Unrolled(k)
    assert torch.equal(sol.nfe, ref.nfe) if k is None else bool((sol.nfe >= ref.nfe).all())
    assert torch.allclose(z.detach(), f(sol.z, c), rtol=0, atol=1e-9)  # the output is f at the best iterate
    if name != "contraction":
        assert not sol.converged.any()


def test_unrolled_last_k_replays_up_to_the_best_iterate() -> None:
    """A runaway row's best iterate is earlier than its last: the graph covers the k steps before it."""
    c = torch.rand(3, 4, dtype=D, generator=torch.Generator().manual_seed(2)) + 1
    c.requires_grad_(True)
    f = lambda z, c: z + c  # noqa: E731
    k = 2
    z, sol = Unrolled(k=k)(f, torch.zeros(3, 4, dtype=D), c, solver="fixed_point", tol=1e-12, max_iter=10**5,
                           diverge_factor=20.0)
    assert (sol.status == int(Status.DIVERGED)).all()
    algo, g = get_solver("fixed_point"), flat_map(f, (4,))
    for r in range(3):
        with torch.no_grad():  # find the step of the returned iterate
            state, best = algo.init(g, torch.zeros(1, 4, dtype=D), (c[r:r + 1],)), 0
            while not torch.equal(state.z[0], sol.z[r]):
                state, best = algo.step(g, state, (c[r:r + 1],)), best + 1
        assert best < int(sol.nstep[r])  # not the last iterate
        with torch.no_grad():
            state = algo.init(g, torch.zeros(1, 4, dtype=D), (c[r:r + 1],))
            for _ in range(best - min(k, best)):
                state = algo.step(g, state, (c[r:r + 1],))
        for _ in range(min(k, best)):
            state = algo.step(g, state, (c[r:r + 1],))
        (ref_grad,) = torch.autograd.grad(state.fz.sum(), c)
        (grad,) = torch.autograd.grad(z[r].sum(), c, retain_graph=True)
        assert torch.equal(z[r].detach(), state.fz[0].detach())
        assert torch.allclose(grad, ref_grad) and float(grad.sum()) == min(k, best) * 4


def test_engine_admits_rows_and_judges_only_the_observed_ones() -> None:
    w = _contraction()
    f = flat_map(lambda z, x: torch.tanh(z @ w.T + x), (6,))
    x = torch.randn(4, 6, dtype=D, generator=torch.Generator().manual_seed(3))
    eng: Engine = Engine(get_solver("anderson"), f, Budget(3), stop="abs")
    eng.admit(torch.zeros(2, 6, dtype=D), (x[:2],))
    assert eng.observe().tolist() == [GO, GO]
    eng.advance()
    eng.observe()
    eng.admit(torch.zeros(2, 6, dtype=D), (x[2:],))
    code = eng.observe(torch.tensor([False, False, True, True]))
    assert code.tolist() == [GO] * 4 and eng.state is not None and eng.state.nfe.tolist() == [2, 2, 1, 1]
    eng.advance()
    assert eng.observe().tolist() == [int(Status.MAX_ITER)] * 2 + [GO] * 2
    order = eng.drop(torch.tensor([2, 3]), move=False)
    assert order.tolist() == [2, 3] and eng.size == 2 and eng.args[0].shape[0] == 2


def test_engine_rules() -> None:
    f = flat_map(lambda z: 0.5 * z + 1.0, (3,))
    for rule, expect in ((Tolerance(1e-3), Status.CONVERGED), (Never(), Status.MAX_ITER)):
        eng: Engine = Engine(get_solver("fixed_point"), f, rule, diverge_factor=1e4, stall_window=30)
        eng.admit(torch.zeros(2, 3, dtype=D), ())
        eng.observe()
        for _ in range(40):
            eng.advance()
            eng.observe()
        assert eng.status.tolist() == [int(expect)] * 2  # MAX_ITER: the default of rows never stopped
        assert eng.done.all() == (expect == Status.CONVERGED)
    # NONFINITE outranks every rule
    eng = Engine(get_solver("fixed_point"), flat_map(lambda z: z * float("nan"), (3,)), Tolerance(1.0))
    eng.admit(torch.ones(1, 3, dtype=D), ())
    assert eng.observe().tolist() == [int(Status.NONFINITE)]


def test_solve_many_reports_engine_statuses() -> None:
    from eqsolve.scaling import solve_many

    class Toy:
        def init_state(self, batch, generator=None, std=None, device=None):
            return torch.zeros(batch, 2, 3)

        def map(self, s, x, noise=None):
            return 0.5 * s + x.float()[:, None, :]

        def decode(self, s):
            return s

    x = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 0.0, 0.0]])
    res = solve_many(Toy(), x, depth=5, breadth=2, init="zeros")
    assert res.row_status is not None
    assert res.row_status[0].tolist() == [int(Status.MAX_ITER)] * 2
    assert res.row_status[1].tolist() == [int(Status.NONFINITE)] * 2 and res.row_nfe[1].tolist() == [1, 1]
    res = solve_many(Toy(), x[:1], depth=50, breadth=1, init="zeros", halt="residual", halt_tol=1e-3)
    assert res.row_status is not None and res.row_status.tolist() == [[int(Status.CONVERGED)]]
    assert res.row_halted.tolist() == [[True]] and int(res.nfe[0]) < 50


def test_unrolled_rejects_bad_loop_options() -> None:
    maps, c = _maps()
    f, _ = maps["contraction"]
    with pytest.raises(ValueError, match="diverge_factor"):
        Unrolled()(f, torch.zeros(4, 6, dtype=D), c, diverge_factor=0.5)
    with pytest.raises(ValueError, match="stall_window"):
        Unrolled(k=2)(f, torch.zeros(4, 6, dtype=D), c, stall_window=0)

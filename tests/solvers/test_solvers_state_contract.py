"""The state-ownership rule of eqsolve.solvers._base, checked for every solver, and the host
syncs of the solve loop counted on the CPU (the sync-avoiding logic is device-independent)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from eqsolve.solvers import Anderson, Broyden, FixedPointIteration, flat_map, solve
from eqsolve.solvers._base import compact_rows, copy_buffers, take_rows

SOLVERS = [FixedPointIteration(), FixedPointIteration(tau=0.7), Anderson(m=4), Anderson(m=4, beta=0.6, delay=1),
           Broyden(memory=4), Broyden(memory=4, line_search=True)]
IDS = ["plain", "damped", "anderson", "anderson_beta_delay", "broyden", "broyden_ls"]


def _problem(batch=5, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=g, dtype=torch.float64)
    w = 0.9 * w / torch.linalg.matrix_norm(w, ord=2)
    x = torch.randn(batch, d, generator=g, dtype=torch.float64)
    return flat_map(lambda z, x: torch.tanh(z @ w.T + x), (d,)), torch.zeros(batch, d, dtype=torch.float64), (x,)


def _tensors(state):
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if isinstance(getattr(state, f.name), torch.Tensor)}


def _advanced(solver, steps=6):
    f, z0, args = _problem()
    with torch.no_grad():
        state = solver.init(f, z0, args)
        for _ in range(steps):
            state = solver.step(f, state, args)
    return f, args, state


@pytest.mark.parametrize("solver", SOLVERS, ids=IDS)
@pytest.mark.parametrize("mode", ["no_grad", "grad_without_graph", "graph"])
def test_step_writes_only_into_the_buffers_and_only_without_a_graph(solver, mode):
    # Autograd on changes nothing while nothing requires grad (no graph is recorded: the
    # buffers are still written in place); a step that records a graph writes into nothing.
    f, args, state = _advanced(solver)
    before = {k: v.clone() for k, v in _tensors(state).items()}
    buffers = set(type(state).BUFFERS)
    graph = mode == "graph"
    if graph:
        args = tuple(a.clone().requires_grad_() for a in args)
    with torch.set_grad_enabled(mode != "no_grad"):
        new = solver.step(f, state, args)
    assert new.fz.requires_grad == graph
    for name, value in _tensors(state).items():
        if graph or name not in buffers:
            assert torch.equal(value, before[name]), f"step modified the given state's {name!r}"
    # No non-buffer field of the new state shares memory with a buffer (the next step writes
    # there): a caller may keep state.z and state.fz without copying.
    buffer_ptrs = {getattr(state, n).untyped_storage().data_ptr() for n in buffers}
    for name, value in _tensors(new).items():
        if name not in buffers:
            assert value.untyped_storage().data_ptr() not in buffer_ptrs, name
    for name in buffers:
        # ... and without a graph the buffers are updated in place: the new state owns the
        # same tensors; with one, fresh copies.
        assert (getattr(new, name) is getattr(state, name)) == (not graph), name


def test_the_history_solvers_declare_their_buffers():
    # A solver whose history is updated in place must say so, or the loop would copy it.
    f, z0, args = _problem()
    assert set(Anderson().init(f, z0, args).BUFFERS) >= {"dG", "dX"}
    assert set(Broyden().init(f, z0, args).BUFFERS) >= {"S", "W"}


@pytest.mark.parametrize("solver", SOLVERS[2:], ids=IDS[2:])
def test_stepping_a_copy_of_the_buffers_replays_exactly(solver):
    # The rule's consequence for unrolled gradients: keep copy_buffers(state) to step it again.
    f, args, state = _advanced(solver)
    saved = copy_buffers(state)
    with torch.no_grad():
        first = solver.step(f, state, args)
        again = solver.step(f, saved, args)
    for name, value in _tensors(first).items():
        torch.testing.assert_close(_tensors(again)[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("solver", SOLVERS[2:], ids=IDS[2:])
def test_compact_rows_moves_only_dropped_rows_and_matches_take_rows(solver):
    f, args, state = _advanced(solver)
    reference = take_rows(copy_buffers(state), torch.arange(5))
    keep = torch.tensor([1, 3, 4])
    ptrs = {name: getattr(state, name).data_ptr() for name in type(state).BUFFERS}
    with torch.no_grad():
        compacted, order = compact_rows(state, keep)
    assert sorted(order.tolist()) == keep.tolist()
    for name, value in _tensors(compacted).items():
        assert value.shape[0] == 3
        torch.testing.assert_close(value, _tensors(reference)[name][order], rtol=0, atol=0)
    for name, ptr in ptrs.items():  # the buffers were not copied: views of the same memory
        assert getattr(compacted, name).data_ptr() == ptr
    with torch.enable_grad():  # autograd on but no graph: still in place
        same, order = compact_rows(compacted, torch.tensor([0, 1]))
    assert all(getattr(same, n).data_ptr() == ptrs[n] for n in ptrs)
    # a state in a graph: nothing is written in place
    graphed = dataclasses.replace(same, z=same.z.clone().requires_grad_())
    with torch.enable_grad():
        copied, order = compact_rows(graphed, torch.tensor([0]))
    assert order.tolist() == [0]
    assert all(getattr(copied, n).data_ptr() != ptrs[n] for n in ptrs)


# ---- host syncs, counted on the CPU ------------------------------------------------------------

_SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.item", "aten.equal",
             "aten.masked_select", "aten.unique", "aten._unique2")


class SyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device (a value or a data-dependent
    shape read back): the same ops torch.cuda.set_sync_debug_mode reports on CUDA."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in _SYNC_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def nested_syncs(fn) -> list[str]:
    """Host reads anywhere below ``fn``'s ops, found by the profiler: ATen kernels that check
    their own results (``torch.cholesky_solve``, ``torch.linalg.lu_solve``) read a flag back
    inside one op, which a dispatch mode on the outer op does not see."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name in ("aten::_local_scalar_dense", "aten::nonzero")]


def test_the_sync_counter_sees_host_reads():
    x = torch.ones(3)
    with SyncCounter() as c:
        x.sum().item()
        bool(x.any())
        x.nonzero()
    assert c.count == 3
    # ... and the profiler sees the read hidden inside cholesky_solve, which the counter does not
    a = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    with SyncCounter() as c:
        torch.cholesky_solve(torch.ones(2, 3, 1, dtype=torch.float64), a)
    assert c.count == 0
    assert nested_syncs(lambda: torch.cholesky_solve(torch.ones(2, 3, 1, dtype=torch.float64), a))


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden"])
def test_a_solver_step_never_syncs(solver):
    f, z0, args = _problem()
    algo = {"fixed_point": FixedPointIteration(), "anderson": Anderson(m=4), "broyden": Broyden(memory=4)}[solver]
    with torch.no_grad():
        state = algo.init(f, z0, args)
        with SyncCounter() as c:
            for _ in range(8):
                state = algo.step(f, state, args)

        def more_steps():
            s = state
            for _ in range(4):
                s = algo.step(f, s, args)

        hidden = nested_syncs(more_steps)
    assert c.count == 0
    assert hidden == []


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden"])
@pytest.mark.parametrize("compact", [True, False])
def test_the_loop_syncs_once_per_check(solver, compact):
    # A bounded map without a fixed point: every row runs all 40 steps.
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    f = lambda z, x: torch.where(z >= 0, -1.0, 1.0) * x.abs()  # noqa: E731
    kw = dict(solver=solver, tol=0.0, max_iter=40, stall_window=None, diverge_factor=None, compact=compact)
    for every, bound in ((10, 40 // 10 + 1), (1, 40 + 1)):
        with SyncCounter() as c:
            sol = solve(f, torch.zeros(16, 32), x, check_every=every, **kw)
        assert (sol.nstep == 40).all()
        assert c.count <= bound, (every, c.count)
        hidden = nested_syncs(lambda every=every: solve(f, torch.zeros(16, 32), x, check_every=every, **kw))
        assert len(hidden) <= bound, (every, hidden)


def test_off_the_cpu_the_loop_checks_every_few_steps_by_default():
    from eqsolve.solvers._loop import DEVICE_CHECK_EVERY, default_check_every

    assert default_check_every(torch.device("cpu")) == 1
    assert default_check_every(torch.device("meta")) == DEVICE_CHECK_EVERY > 1
    assert default_check_every("cuda") == DEVICE_CHECK_EVERY


@pytest.mark.parametrize("make", [lambda **kw: Anderson(m=5, **kw), lambda **kw: Broyden(memory=5, **kw)],
                         ids=["anderson", "broyden"])
def test_the_compiled_m_x_m_update_gives_the_eager_results(make):
    # torch.compile's "eager" backend traces the same function with dynamo (dynamic shapes, as
    # compaction shrinks the batch) without generating code: the path is exercised cheaply, with
    # the ring of 5 wrapping around.
    pytest.importorskip("torch._dynamo")
    q = torch.tensor([0.05, 0.95, 0.5, 0.9])[:, None].double()
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = w / torch.linalg.matrix_norm(w, ord=2)
    f = lambda z, q: torch.tanh(q * (z @ w.T) + 1.0)  # noqa: E731
    z0 = torch.zeros(4, 8, dtype=torch.float64)
    eager = solve(f, z0, q, solver=make(), tol=1e-10, max_iter=60)
    traced = solve(f, z0, q, solver=make(compile="eager"), tol=1e-10, max_iter=60)
    assert eager.converged.all() and traced.nfe.tolist() == eager.nfe.tolist()
    assert (eager.nfe > 6).any()  # the ring of 5 wrapped around
    torch.testing.assert_close(traced.z, eager.z, rtol=0, atol=0)


def _count_compiled_calls(monkeypatch):
    """From now on, count the calls of the engine's compiled observation (returns a counter)."""
    import eqsolve.solvers._engine as engine

    count = [0]
    original = engine.compiled

    def counting(fn, backend):
        inner = original(fn, backend)

        def call(*args, **kwargs):
            count[0] += 1
            return inner(*args, **kwargs)

        return call

    monkeypatch.setattr(engine, "compiled", counting)
    return lambda: count[0]


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("solver", ["fixed_point", "anderson"])
def test_the_compiled_bookkeeping_gives_the_eager_results(backend, solver, monkeypatch):
    # solve(compile_bookkeeping=...) runs an observation's per-row work through torch.compile.
    # dynamo's "eager" backend traces it without generating code, "aot_eager" also
    # functionalises it (the in-place masks): cheap stand-ins for inductor. Rows stop at
    # different steps (compaction, a batch that shrinks to one row), on the CPU path and the
    # frozen path, and with divergence: every result must be the eager one.
    pytest.importorskip("torch._dynamo")
    import torch._dynamo

    torch._dynamo.reset()  # (a fresh count of recompilations for this test)
    q = torch.tensor([0.05, 0.95, 0.5, 0.9, 0.0])[:, None].double()
    shift = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])[:, None].double()  # the last row, z + 1, has no fixed point
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = w / torch.linalg.matrix_norm(w, ord=2)
    f = lambda z, q, s: q * (z @ w.T) + 1.0 + s * z  # noqa: E731
    z0 = torch.zeros(5, 8, dtype=torch.float64)
    for kw in (dict(check_every=1), dict(check_every=4), dict(check_every=1, compact=False)):
        eager = solve(f, z0, q, shift, solver=solver, tol=1e-10, max_iter=80, trace=True, **kw)
        calls = _count_compiled_calls(monkeypatch)
        traced = solve(f, z0, q, shift, solver=solver, tol=1e-10, max_iter=80, trace=True,
                       compile_bookkeeping=backend, **kw)
        assert calls() >= traced.nstep.max() + 1, kw  # every observation took the compiled path
        assert eager.status.tolist()[:4] == [0] * 4 and eager.status[4] != 0, kw  # four converge, one does not
        assert len(set(eager.nstep.tolist())) > 2, kw  # rows leave at different steps
        for name in ("z", "abs_residual", "rel_residual", "nfe", "nstep", "status", "trace"):
            torch.testing.assert_close(getattr(traced, name), getattr(eager, name), rtol=0, atol=0, equal_nan=True,
                                       msg=f"{name} {kw}")
    with pytest.raises(ValueError, match="compile_bookkeeping"):
        solve(f, z0, q, compile_bookkeeping=3)
    torch._dynamo.reset()


def test_the_bookkeeping_compiled_by_inductor_gives_the_eager_results(monkeypatch):
    # The real compiler once (C++ code for the CPU; ~15 s on a cold cache), on the path a GPU
    # takes (check_every > 1: the frozen path and the status codes): what the dynamo-only
    # backends above cannot check, its generated kernels. The fused norms may round differently,
    # so a row may stop a step apart; statuses match and iterates agree to the tolerance.
    pytest.importorskip("torch._inductor")
    import shutil

    import torch._dynamo

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("inductor needs a C++ compiler on the CPU")
    torch._dynamo.reset()
    w = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    w = 0.9 * w / torch.linalg.matrix_norm(w, ord=2)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    f = lambda z, x: torch.tanh(z @ w.T + x)  # noqa: E731
    z0 = torch.zeros(6, 16)
    for kw in (dict(check_every=4),):
        eager = solve(f, z0, x, solver="anderson", tol=1e-5, max_iter=100, **kw)
        calls = _count_compiled_calls(monkeypatch)
        compiled = solve(f, z0, x, solver="anderson", tol=1e-5, max_iter=100, compile_bookkeeping="inductor", **kw)
        assert calls() >= compiled.nstep.max() + 1, kw  # every observation took the compiled path
        assert eager.converged.all() and compiled.status.tolist() == eager.status.tolist(), kw
        assert (compiled.nfe - eager.nfe).abs().max() <= 1, kw
        torch.testing.assert_close(compiled.z, eager.z, rtol=0, atol=1e-4)
    torch._dynamo.reset()


def _wrapped_around(algo, grad: bool, steps: int = 11):
    """The state of ``algo`` after ``steps`` steps on a small problem (a 3-pair history wraps
    around several times), with a graph recorded when ``grad`` (the steps then write out of place)."""
    f, z0, args = _problem(batch=4, d=9)
    if grad:
        args = tuple(a.clone().requires_grad_() for a in args)
    with torch.set_grad_enabled(grad):
        state = algo.init(f, z0, args)
        for _ in range(steps):
            state = algo.step(f, state, args)
    return state


@pytest.mark.parametrize("grad", [False, True], ids=["in_place", "out_of_place"])
def test_broydens_kept_inverse_equals_the_inverse_compact_form_from_scratch(grad):
    # Q = M^{-1}, M = S^T Y + strictly_lower_by_time(S^T S) over the stored pairs, after the ring
    # wrapped around several times (each step removes the oldest pair and borders the new one);
    # in place and out of place (a graph) alike. H = -I + W Q S^T then satisfies the secant
    # condition of the newest pair, H y = s (good Broyden).
    algo = Broyden(memory=3)
    state = _wrapped_around(algo, grad)
    assert bool(state.valid.all())  # every slot holds a pair
    S, W, Q = state.S.detach(), state.W.detach(), state.qinv.detach()
    Y = W - S
    m, last = algo.memory, state.count - 1
    written = torch.tensor([last - (last - i) % m for i in range(m)])  # the step that wrote each slot
    newer = written[:, None] > written[None, :]
    M = S @ Y.mT + torch.where(newer, S @ S.mT, 0.0)
    torch.testing.assert_close(Q, torch.linalg.inv(M), rtol=1e-9, atol=1e-12)
    s, y = S[:, last % m], Y[:, last % m]
    torch.testing.assert_close(algo.apply_h(state, y).detach(), s, rtol=1e-8, atol=1e-11)


def test_broyden_learns_from_a_rejected_trial_and_clears_its_memory_on_a_second():
    # Evaluations of f listed in `bad` return f + 1000: the residual grows far beyond
    # reset_factor. A quasi-Newton step whose trial is rejected leaves the iterate where it was,
    # but stores the trial's pair (H y = s for it); a second rejection in a row clears the
    # memory, so the next step is a plain one; a plain step (empty memory) is never rejected.
    f0, z0, args = _problem(batch=3, d=7)
    calls, bad = [0], set()

    def f(z, x):
        calls[0] += 1
        return f0(z, x) + (1e3 if calls[0] in bad else 0.0)

    algo = Broyden(memory=5)

    def check_cache(state):  # S^T g cached for the current residual
        k = min(state.count, algo.memory)
        torch.testing.assert_close(state.stg[:, :k], (state.S[:, :k] @ state.g.unsqueeze(2)).squeeze(2))

    with torch.no_grad():
        bad.add(2)  # the first step: a plain one, taken although its residual grows
        start = algo.init(f, z0, args)
        fz0 = start.fz.clone()
        state = algo.step(f, start, args)
        assert not state.rejected.any() and torch.equal(state.z, fz0) and (state.g.norm(dim=1) > 100).all()
        calls[0], bad = 0, {4, 5}
        state = algo.init(f, z0, args)
        for _ in range(2):
            state = algo.step(f, state, args)
        assert state.valid[:, :2].all()
        before = state
        z, fz, nfe = before.z.clone(), before.fz.clone(), before.nfe.clone()
        state = algo.step(f, before, args)  # evaluation 4 is bad: rejected, its pair stored
        assert state.rejected.all() and state.valid[:, :3].all()
        assert torch.equal(state.z, z) and torch.equal(state.fz, fz) and (state.nfe == nfe + 1).all()
        s, y = state.S[:, 2], state.W[:, 2] - state.S[:, 2]
        torch.testing.assert_close(algo.apply_h(state, y), s)
        check_cache(state)
        state = algo.step(f, state, args)  # evaluation 5 is bad too: the memory is cleared
        assert state.rejected.all() and not state.valid.any() and torch.equal(state.z, z)
        state = algo.step(f, state, args)  # a plain step from the same iterate: z + g = f(z)
        assert not state.rejected.any() and torch.equal(state.z, fz)
        check_cache(state)


@pytest.mark.parametrize("grad", [False, True], ids=["in_place", "out_of_place"])
def test_andersons_kept_inverse_equals_the_inverse_gram_from_scratch(grad):
    # P = (dG^T dG + ridge diag(||dg_i||^2))^{-1} over the stored pairs, after the ring wrapped
    # around several times (each step removes the oldest pair and borders the new one); in
    # place and out of place (a graph) alike; a large ridge keeps the reference well conditioned
    algo = Anderson(m=3, ridge=0.1)
    state = _wrapped_around(algo, grad)
    assert bool(state.valid.all())  # nothing dependent here: every slot holds a pair
    dG = state.dG.detach()
    gram = dG @ dG.mT
    ref = torch.linalg.inv(gram + algo.ridge * torch.diag_embed(torch.diagonal(gram, dim1=1, dim2=2)))
    torch.testing.assert_close(state.hinv.detach(), ref, rtol=1e-9, atol=1e-12)
    # the coefficients are the regularised least-squares solution for the current residual
    v = state.g.detach()
    gamma = algo.coefficients(state, (dG @ v.unsqueeze(2)).squeeze(2))
    torch.testing.assert_close(gamma.detach(), (ref @ (dG @ v.unsqueeze(2))).squeeze(2), rtol=1e-9, atol=1e-12)


def test_anderson_does_not_store_a_dependent_or_non_finite_difference():
    # In R^2 at most two differences are independent: with ridge 0 the third one's Schur
    # complement is ~0 and it is not stored (its slot stays empty, its row of P zero); a
    # non-finite difference is not stored either, and P stays finite.
    a = torch.tensor([[0.5, 0.2], [-0.1, 0.3]], dtype=torch.float64)
    f = flat_map(lambda z: z @ a.T + 1.0, (2,))
    algo = Anderson(m=4, ridge=0.0)
    with torch.no_grad():
        state = algo.init(f, torch.zeros(3, 2, dtype=torch.float64), ())
        for _ in range(3):
            state = algo.step(f, state, ())
    assert state.valid.sum(1).tolist() == [2, 2, 2]  # converged in 2 steps (GMRES on R^2)
    assert bool(torch.isfinite(state.hinv).all())
    assert (state.hinv[:, 2] == 0).all() and (state.hinv[:, :, 2] == 0).all()
    bad = flat_map(lambda z: torch.where(z[:, :1] > 0.5, torch.inf, z @ a.T + 1.0), (2,))
    with torch.no_grad():
        state = algo.init(bad, torch.zeros(2, 2, dtype=torch.float64), ())
        state = algo.step(bad, state, ())  # f(z1) is inf: that difference is not stored
    assert state.valid.sum().item() == 0 and bool(torch.isfinite(state.hinv).all())


@pytest.mark.parametrize("long, short", [(Anderson(m=20), Anderson(m=7)), (Broyden(memory=60), Broyden(memory=7))],
                         ids=["anderson", "broyden"])
def test_a_history_longer_than_the_run_changes_nothing(long, short):
    # 7 steps never fill more than 7 slots: a longer ring gives the same iterates (so solve()
    # sizes the history to max_iter), and sized_for gives the short solver
    f, z0, args = _problem(batch=5, d=9)
    assert long.sized_for(7) == short and short.sized_for(100) is short
    with torch.no_grad():
        a, b = long.init(f, z0, args), short.init(f, z0, args)
        for _ in range(7):
            a, b = long.step(f, a, args), short.step(f, b, args)
    torch.testing.assert_close(a.z, b.z, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.fz, b.fz, rtol=1e-12, atol=1e-14)
    kw = dict(max_iter=7, tol=0.0, stall_window=None)
    sol_long, sol_short = solve(f, z0, *args, solver=long, **kw), solve(f, z0, *args, solver=short, **kw)
    assert sol_long.nfe.tolist() == [8] * 5
    torch.testing.assert_close(sol_long.z, sol_short.z, rtol=0, atol=0)  # solve() sized the long one


def test_const_is_a_cached_ordinary_0dim_tensor_that_computes_like_the_number():
    from eqsolve.solvers._base import const

    x = torch.tensor([0.1, 1e-9, float("inf"), float("nan")], dtype=torch.float32)
    with torch.inference_mode():  # made first in inference mode ...
        c = const(1e-8, x)
        torch.testing.assert_close(x + c, x + 1e-8, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(x > const(1e-8, x), x > 1e-8)
    assert not c.is_inference() and c.dim() == 0 and c.dtype == torch.float32  # ... yet usable in a graph
    assert const(1e-8, x) is c and const(1e-8, x.double()) is not c
    w = torch.ones(3, requires_grad=True)
    (w * const(2.0, w)).sum().backward()
    assert w.grad.tolist() == [2.0, 2.0, 2.0]
    n = torch.arange(3)
    assert (n + const(1, n)).dtype == torch.int64
    # in bfloat16 an op computes with a number in float32: const hands the number back there
    y = torch.rand(1000, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    assert torch.equal(y * const(0.99, y), y * 0.99) and torch.equal(y * const(1e4, y), y * 1e4)

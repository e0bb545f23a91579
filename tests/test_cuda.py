"""The GPU paths: training, gradients, scaling and measurement on CUDA agree with the CPU.

Every test here skips without CUDA (CI has none); run them on a GPU machine by hand:
``python -m pytest tests/test_cuda.py tests/solvers/test_solvers_loop.py -k "cuda or host_syncs"``.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny_config

from eqsolve.models.eqr import EqR
from eqsolve.solvers import solve
from eqsolve.training.config import TrainConfig
from eqsolve.training.run import run_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TINY = tiny_config()


def _cfg(tmp_path, **overrides) -> TrainConfig:
    values = dict(steps=6, batch_size=8, gen_easy=8, depth=3, out=str(tmp_path), checkpoint_every=3,
                  log_every=1, eval_size=4, eval_depth=2, progress=False, sup_steps=3,
                  warmup_steps=2, noise=0.01, device="cuda")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("grad", ["sot", "implicit", "unrolled"])
def test_training_on_cuda_matches_cpu_losses(tmp_path, grad):
    # Same seed, same data draw, same initial states (sampled on the CPU by key): the loss curves
    # agree to TF32/float32 round-off, so a GPU run reproduces what the CPU would have done.
    gpu = run_training(_cfg(tmp_path / "gpu", grad=grad), TINY)
    cpu = run_training(_cfg(tmp_path / "cpu", grad=grad, device="cpu"), TINY)
    assert all(math.isfinite(x) for x in gpu["losses"])
    assert gpu["losses"] == pytest.approx(cpu["losses"], rel=2e-2)


def test_cuda_checkpoint_resumes_and_loads_on_cpu(tmp_path):
    full = run_training(_cfg(tmp_path / "full", steps=6), TINY)
    run_training(_cfg(tmp_path / "cut", steps=3), TINY)
    resumed = run_training(_cfg(tmp_path / "cut", steps=6, resume=True), TINY)
    assert resumed["losses"] == pytest.approx(full["losses"][3:], rel=1e-4)
    model = EqR.from_checkpoint(tmp_path / "cut" / "last.pt")  # map_location="cpu"
    assert next(model.parameters()).device.type == "cpu"


def test_solve_many_on_cuda_matches_cpu():
    from eqsolve.scaling import solve_many
    from eqsolve.tasks.sudoku.board import encode_tokens
    from eqsolve.tasks.sudoku.io import default_eval_set

    torch.manual_seed(0)
    model = EqR(TINY).eval()
    tokens = encode_tokens(default_eval_set(subsample=6, seed=0).questions)
    init = model.init_state(6 * 4, generator=torch.Generator().manual_seed(1))
    kw = dict(depth=5, breadth=4, noise=0.0, init=init, aggregate="min_residual")
    with torch.no_grad():
        cpu = solve_many(model, tokens, **kw)
        gpu = solve_many(model.cuda(), tokens.cuda(), **{**kw, "init": init.cuda()})
    torch.testing.assert_close(gpu.residual.cpu(), cpu.residual, rtol=1e-3, atol=1e-5)
    assert torch.equal(gpu.nfe.cpu(), cpu.nfe)


def test_implicit_gradient_on_cuda_matches_cpu_in_float64():
    from eqsolve.gradients import get_gradient

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    w = 0.8 * w / torch.linalg.matrix_norm(w, 2)
    x = torch.randn(3, 12, generator=gen, dtype=torch.float64)

    def grad_on(device: str) -> torch.Tensor:
        wd = w.to(device).requires_grad_()
        strategy = get_gradient("implicit", solver="anderson", tol=1e-12, max_iter=200)
        z, _ = strategy(lambda z, x: torch.tanh(z @ wd.T + x), torch.zeros(3, 12, device=device,
                        dtype=torch.float64), x.to(device), solver="anderson", tol=1e-12,
                        max_iter=200)
        z.pow(2).sum().backward()
        return wd.grad.cpu()

    torch.testing.assert_close(grad_on("cuda"), grad_on("cpu"), rtol=1e-8, atol=1e-10)


def test_measure_on_cuda(tmp_path):
    from eqsolve.tasks.sudoku.io import default_eval_set
    from eqsolve.training.measure import measure

    data = default_eval_set(subsample=8, seed=0)
    rows = measure(EqR(TINY).cuda().eval(), data, [(3, 2)], max_rows=5)
    assert rows[0]["n"] == 8 and rows[0]["nfe_per_puzzle"] == pytest.approx(6.0)


@pytest.mark.parametrize("solver", ["fixed_point", "anderson"])
def test_compiled_bookkeeping_on_cuda_gives_the_eager_results_without_more_syncs(solver):
    # solve(compile_bookkeeping="inductor") on the GPU: Triton kernels instead of ~30 small ops a
    # step. The same statuses and evaluations (the fused norms may round differently: a row may
    # stop one step apart), and no host read beyond the loop's looks.
    import warnings

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g)
    w = (0.95 * w / torch.linalg.matrix_norm(w, ord=2)).cuda()
    x = torch.randn(32, 64, generator=g).cuda()
    f = lambda z, x: torch.tanh(z @ w.T + x)  # noqa: E731
    z0 = torch.zeros(32, 64, device="cuda")
    kw = dict(solver=solver, tol=1e-5, max_iter=200, check_every=8)
    eager = solve(f, z0, x, **kw)
    compiled = solve(f, z0, x, compile_bookkeeping="inductor", **kw)  # compiles (seconds)
    assert eager.converged.all() and compiled.converged.all()
    assert (compiled.nfe - eager.nfe).abs().max() <= 1
    torch.testing.assert_close(compiled.z, eager.z, rtol=1e-4, atol=1e-5)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = solve(f, z0, x, compile_bookkeeping="inductor", **kw)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [c for c in caught if "synchroniz" in str(c.message).lower()]
    looks = int(again.nstep.max()) // 8 + 2
    assert len(syncs) <= 2 * looks, [str(c.message) for c in syncs]

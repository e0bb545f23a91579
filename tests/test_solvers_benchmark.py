"""``benchmarks/solvers.py`` beyond ``--help``: the dtype/device options a GPU run uses, the
recording of a solver that raises, and the results' file names (run here on the CPU, small)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchdeq")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[1]
# loaded under its own name: "solvers" is also the top-level folder of eqsolve.solvers
_spec = importlib.util.spec_from_file_location("solvers_benchmark", ROOT / "benchmarks" / "solvers.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up
_spec.loader.exec_module(bench)


def test_results_stem_names_device_dtype_and_sizes() -> None:
    assert bench.results_stem("cpu", "float32", 1, 64, 512) == "solvers"
    assert bench.results_stem("cpu", "float32", 2, 64, 512) == "solvers_2threads"
    assert bench.results_stem("cuda", "bfloat16", 1, 1024, 2048) == "solvers_cuda_bfloat16_b1024_d2048"
    assert bench.results_stem("cuda", "float32", 16, 64, 512) == "solvers_cuda_float32_b64_d512"


def test_bfloat16_run_writes_its_own_results(tmp_path: Path) -> None:
    out = bench.main(["--quick", "--dtype", "bfloat16", "--no-gmres", "--problems", "tanh_rho0.99",
                      "mixed_easy_hard", "--out", str(tmp_path)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["solvers_cpu_bfloat16_b8_d64.json", "solvers_cpu_bfloat16_b8_d64.md"]
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["meta"]["dtype"] == "bfloat16" and saved["meta"]["tol"] == pytest.approx(1e-2)
    assert list(saved["problems"]) == ["tanh_rho0.99", "mixed_easy_hard"]
    for name, pr in out["problems"].items():
        assert pr["gmres_matvecs"] is None
        for label in ("eqsolve.fixed_point", "eqsolve.anderson", "eqsolve.broyden"):
            assert pr["results"][label]["solved"], (name, label, pr["results"][label])
        assert not any(k.startswith("scipy.") for k in pr["results"])  # scipy only for CPU float32
    # every target was computed (none crashed on a missing GMRES limit or a raising solver)
    assert {t["problem"] for t in out["targets"]} == {"tanh_rho0.99", "mixed_easy_hard"}
    md = (tmp_path / files[1]).read_text()
    assert "bfloat16" in md and "Device: CPU" in md


def test_a_raising_solver_is_recorded_not_fatal() -> None:
    p = bench.make_problems(16, 4, small_d=8, small_batch=2)[0]

    def boom():
        raise NotImplementedError('"lu_cpu" not implemented for \'BFloat16\'')

    r = bench.measure({"ok": lambda: bench.run_eqsolve(p, "anderson", 100), "bad": boom}, p, runs=1)
    assert r["ok"]["solved"] and len(r["ok"]["wall_s_runs"]) == 1
    assert r["bad"]["error"].startswith("NotImplementedError") and r["bad"]["solved"] is False
    assert r["bad"]["wall_s_runs"] == [] and r["bad"]["finite_z"] is False


def test_problems_move_to_the_dtype_asked_for() -> None:
    for p in bench.make_problems(16, 4, small_d=8, small_batch=2, dtype=torch.bfloat16):
        assert p.dtype == torch.bfloat16 and p.z_star.dtype == torch.float64
        z = torch.zeros(p.z_star.shape, dtype=torch.bfloat16)
        assert p.f(z, *p.args).dtype == torch.bfloat16


def test_a_run_cut_short_keeps_the_problems_it_measured(tmp_path: Path, monkeypatch) -> None:
    real = bench.measure
    calls = []

    def measure_then_stop(fns, p, runs):
        calls.append(p.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a time limit does to the run
        return real(fns, p, runs)

    monkeypatch.setattr(bench, "measure", measure_then_stop)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--quick", "--no-gmres", "--problems", "tanh_rho0.99", "mixer_block", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "solvers.json").read_text())
    assert list(saved["problems"]) == ["tanh_rho0.99"] and saved["meta"]["complete"] is False
    assert "Partial" in (tmp_path / "solvers.md").read_text()


def test_the_compiled_step_experiment_runs_andersons_algorithm() -> None:
    # benchmarks/_anderson_compiled_step.py reformulates the step (slot as a tensor, all m slots)
    # so that torch.compile need not recompile per ring position; run eagerly (and traced by
    # dynamo's "eager" backend where available) it must take the library's steps.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _anderson_compiled_step import CompiledStepAnderson
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from eqsolve.solvers import Anderson, solve

    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, 12, generator=g, dtype=torch.float64)
    w = 0.95 * w / torch.linalg.matrix_norm(w, ord=2)
    x = torch.randn(5, 12, generator=g, dtype=torch.float64)
    f = lambda z, x: torch.tanh(z @ w.T + x)  # noqa: E731
    z0 = torch.zeros(5, 12, dtype=torch.float64)
    kw = dict(tol=1e-10, max_iter=40)
    with torch.no_grad():
        ref = solve(f, z0, x, solver=Anderson(m=4), **kw)
        variants = [CompiledStepAnderson(m=4)]
        if importlib.util.find_spec("torch._dynamo") is not None:
            variants.append(CompiledStepAnderson(m=4, step_backend="eager"))
        for algo in variants:
            sol = solve(f, z0, x, solver=algo, **kw)
            assert sol.converged.all() and sol.nfe.tolist() == ref.nfe.tolist()
            torch.testing.assert_close(sol.z, ref.z, rtol=1e-9, atol=1e-10)

"""eqsolve bench: grid, scoring, results.json + plots end to end, torchrun sharding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import tiny_overrides

from eqsolve import cli
from eqsolve.bench import grid as bench
from eqsolve.config import compose
from eqsolve.runs import read_results

TINY = tiny_overrides()
ROW_KEYS = {"solver", "solver_options", "label", "depth", "breadth", "n", "nfe_mean", "steps_mean", "accuracy", "accuracy_by_bucket", "bucket_counts",
            "residual_mean", "nonfinite_residuals", "seconds", "puzzles_per_s"}


def tiny_cfg(puzzle_csv, *extra):
    return compose("config_bench", ["checkpoint=random", f"task.data={puzzle_csv}", "bench.batch_size=2",
                                    "bench.threads=1", "bench.extra_baselines=[]", *TINY, *extra])


def test_cells_cover_solver_and_baseline_at_equal_budgets(puzzle_csv):
    cells = bench.make_cells(tiny_cfg(puzzle_csv, "bench.depth=[2,4]", "bench.breadth=[1,3]"))
    assert [c.key for c in cells] == [
        "anderson/d2/b1", "anderson/d2/b3", "anderson/d4/b1", "anderson/d4/b3",
        "fixed_point/d2/b1", "fixed_point/d2/b3", "fixed_point/d4/b1", "fixed_point/d4/b3"]
    same = bench.make_cells(tiny_cfg(puzzle_csv, "solver=fixed_point", "bench.depth=[2]", "bench.breadth=[1]"))
    assert [c.key for c in same] == ["fixed_point/d2/b1"]  # baseline == solver: not run twice


@pytest.mark.parametrize(("override", "match"), [("solver.tol=1e-3", "bench.halt=residual"),
                                                  ("bench.halt=learned", "none, residual, logit"),
                                                  ("bench.depth=[0]", "positive")])
def test_bad_bench_settings_are_errors(puzzle_csv, override, match):
    with pytest.raises(ValueError, match=match):
        bench.make_cells(tiny_cfg(puzzle_csv, override))


def test_unknown_solver_option_fails_before_any_work(puzzle_csv, tmp_path):
    cfg = tiny_cfg(puzzle_csv, "+solver.options.window=3")
    with pytest.raises(ValueError, match="window"):
        bench.run_bench(cfg, tmp_path)
    assert not list(tmp_path.iterdir())


def test_model_overrides_with_a_real_checkpoint_are_an_error(puzzle_csv, tmp_path):
    cfg = compose("config_bench", [f"checkpoint={tmp_path / 'x.pt'}", "model.hidden_size=16"])
    with pytest.raises(ValueError, match="only apply with checkpoint=random"):
        bench.load_model(cfg)
    with pytest.raises(FileNotFoundError, match="x.pt"):
        bench.load_model(compose("config_bench", [f"checkpoint={tmp_path / 'x.pt'}"]))


def test_scoring_uses_the_checker_not_the_solver(monkeypatch, puzzle_csv):
    """evaluate_chunk marks exactly the rows whose prediction solves the puzzle."""
    from eqsolve.tasks.sudoku import load_any

    data = load_any(puzzle_csv)
    wrong = data.answers.copy()
    wrong[1, 0] = wrong[1, 0] % 9 + 1  # one cell off

    class Fake:
        predictions = torch.as_tensor(np.stack([data.answers[0], wrong[1], data.answers[2]]))
        nfe = torch.tensor([3, 3, 3])
        residual = torch.tensor([0.1, 0.2, float("nan")])

    monkeypatch.setattr("eqsolve.scaling.solve_many", lambda *a, **k: Fake())
    model = torch.nn.Linear(1, 1)
    out = bench.evaluate_chunk(model, data.questions[:3], data.answers[:3], bench.Cell("anderson", 3, 1),
                               bench.RunOptions(), seed=0)
    assert out["correct"].tolist() == [True, False, True]
    assert out["nfe"].tolist() == [3.0, 3.0, 3.0] and np.isnan(out["residual"][2])
    row = bench.summarize(bench.Cell("anderson", 3, 1), out, np.array(["easy", "easy", "hard"]), 1.5)
    assert row["accuracy"] == pytest.approx(2 / 3) and row["accuracy_by_bucket"]["hard"] == 1.0
    assert row["accuracy_by_bucket"]["medium"] is None and row["nonfinite_residuals"] == 1
    assert row["residual_mean"] == pytest.approx(0.15) and row["puzzles_per_s"] == pytest.approx(2.0)


def test_bench_end_to_end_writes_results_and_plots(puzzle_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bench", "--checkpoint", "random", "--data", str(puzzle_csv), "--depth", "1,3", "--breadth", "1,2",
            "--limit", "4", "--out", str(out), "bench.batch_size=3", "bench.threads=1", *TINY]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "fixed_point" in stdout and "anderson" in stdout and "puz/s" in stdout
    document = read_results(out)
    results = document["results"]
    rows = results["rows"]
    assert len(rows) == 3 * 2 * 2 and all(set(r) == ROW_KEYS for r in rows)  # anderson, plain, damped plain
    assert results["n_puzzles"] == 4 and results["torch_threads"] == 1 and results["world_size"] == 1
    for r in rows:
        assert r["n"] == 4 and 0.0 <= r["accuracy"] <= 1.0
        assert sum(r["bucket_counts"].values()) == 4
        budget = r["depth"] * r["breadth"]
        assert 0 < r["steps_mean"] <= budget
        assert r["nfe_mean"] == 2 * r["steps_mean"]  # the TINY model: 1 H-cycle x (1 L-cycle + 1) x 1 layer
        if r["solver"] == "fixed_point":
            assert r["steps_mean"] == budget  # no halting: plain iteration spends the whole budget
    assert set(results["per_puzzle"]) == {f"{r['label']}/d{r['depth']}/b{r['breadth']}" for r in rows}
    # depth 1 -> 3 of every (label, breadth), compared puzzle by puzzle
    pairs = results["depth_pairs"]
    assert len(pairs) == 3 * 2 and "paired, puzzle by puzzle" in stdout
    for p in pairs:
        a = np.array(results["per_puzzle"][f"{p['label']}/d1/b{p['breadth']}"]["correct"])
        b = np.array(results["per_puzzle"][f"{p['label']}/d3/b{p['breadth']}"]["correct"])
        assert (p["gained"], p["lost"], p["n"]) == (int((b & ~a).sum()), int((a & ~b).sum()), 4)
        assert 0.0 < p["p_value"] <= 1.0
    assert set(results["plots"]) == {"accuracy_vs_nfe", "accuracy_vs_breadth", "accuracy_vs_residual",
                                     "depth_breadth_heatmap"}
    for name in results["plots"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"config.yaml", "meta.json", "log.txt", "results.json"} <= {p.name for p in out.iterdir()}
    assert "fixed_point" in (out / "log.txt").read_text()  # the table also lands in the log
    assert OmegaConf.load(out / "config.yaml").bench.depth == [1, 3]
    assert json.loads((out / "meta.json").read_text())["seeds"] == {"seed": 0}


def test_halting_on_residual_saves_nfe(puzzle_csv):
    cfg = tiny_cfg(puzzle_csv, "solver=fixed_point", "bench.depth=[6]", "bench.breadth=[1]", "bench.limit=2",
                   "bench.halt=residual", "bench.halt_tol=1e9")
    payload = bench.run_bench(cfg, None)
    assert payload["rows"][0]["nfe_mean"] < 6  # everything is "converged" at a huge tolerance


def test_unknown_aggregation_is_an_error_naming_the_valid_ones(puzzle_csv):
    with pytest.raises(ValueError, match="min_residual"):
        bench.make_cells(tiny_cfg(puzzle_csv, "bench.aggregate=best"))


def test_load_model_reads_official_and_native_checkpoints(tmp_path):
    from eqsolve.models import EqR, EqRConfig

    torch.manual_seed(0)
    model = EqR(EqRConfig(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1))
    arch = {"hidden_size": 16, "H_cycles": 1, "L_cycles": 1, "L_layers": 1, "expansion": 4, "num_heads": 2,
            "mlp_t": True, "lambda_": 0.95, "noise_scale": 0.01, "H_init_std": 1.0, "L_init_std": 1.0}
    torch.save({"model": {f"_orig_mod.model.inner.{k}": v for k, v in model.state_dict().items()},
                "config": {"arch": arch}}, tmp_path / "eqr.pth")
    model.save_checkpoint(tmp_path / "native.pt")
    for name in ("eqr.pth", "native.pt"):
        loaded = bench.load_model(compose("config_bench", [f"checkpoint={tmp_path / name}"]))
        assert not loaded.training
        assert torch.equal(loaded.lm_head.weight, model.lm_head.weight), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        bench.load_model(compose("config_bench", ["device=cuda", "checkpoint=random"]))


def test_inner_equilibrium_reasoner_gets_the_solver_inside_and_equal_compute(puzzle_csv):
    """With an inner solver the cell's solver solves the inner equilibrium; NFE counts blocks."""
    cfg = tiny_cfg(puzzle_csv, "model.inner_solver=anderson", "model.inner_iter=3", "bench.depth=[2]",
                   "bench.breadth=[1]", "bench.limit=2")
    model = bench.load_model(cfg)
    seen: list = []
    original = type(model)._inner_equilibrium

    def spy(self, z, inj, beta, generator):
        seen.append(type(self.inner_solver).__name__)
        return original(self, z, inj, beta, generator)

    type(model)._inner_equilibrium = spy
    try:
        options = bench.RunOptions(batch_size=2, noise=0.0)
        questions = np.zeros((2, 81), dtype=np.int64)
        for name in ("anderson", "fixed_point"):
            seen.clear()
            out = bench.evaluate_chunk(model, questions, questions + 1, bench.Cell(name, 2, 1), options, 0)
            assert set(seen) == {type(bench_solver(name)).__name__}
            assert out["steps"].tolist() == [2.0, 2.0]
            assert out["nfe"].tolist() == [8.0, 8.0]  # 2 steps x 1 H-cycle x (3 inner + 1) x 1 layer
    finally:
        type(model)._inner_equilibrium = original
    assert model.inner_solver == bench_solver("anderson")  # restored after the cell (resolved once, at build)


def bench_solver(name):
    from eqsolve.solvers import get_solver

    return get_solver(name)


def test_extra_baselines_run_at_equal_budgets_with_their_options(puzzle_csv):
    cells = bench.make_cells(tiny_cfg(puzzle_csv, "bench.depth=[2]", "bench.breadth=[1]",
                                      'bench.extra_baselines=["fixed_point:tau=0.5", "broyden"]'))
    assert [(c.label, dict(c.options)) for c in cells] == [
        ("anderson", {}), ("fixed_point", {}), ("fixed_point(tau=0.5)", {"tau": 0.5}), ("broyden", {})]
    assert len({c.key for c in cells}) == 4  # damped and plain iteration never share a key


def test_hub_checkpoint_references_download_through_huggingface_hub(monkeypatch, tmp_path):
    """hf://OWNER/REPO/PATH@REV goes to hf_hub_download (faked: no network here) and loads locally."""
    import sys
    import types

    from eqsolve.models import EqR, EqRConfig

    local = tmp_path / "eqr.pt"
    EqR(EqRConfig(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1, expansion=2.0)).save_checkpoint(local)
    calls = []
    fake = types.ModuleType("huggingface_hub")
    fake.hf_hub_download = lambda **kw: calls.append(kw) or str(local)
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    model = bench.load_model(compose("config_bench", ["checkpoint=hf://locuslab/EqR-model/sudoku-extreme/eqr.pth@v1"]))
    assert calls == [{"repo_id": "locuslab/EqR-model", "filename": "sudoku-extreme/eqr.pth", "revision": "v1"}]
    assert model.config.hidden_size == 16
    with pytest.raises(ValueError, match="OWNER/REPO/PATH"):
        bench.hub_download("hf://locuslab/EqR-model")


def test_accuracy_plots_carry_binomial_error_bars(tmp_path):
    from matplotlib.figure import Figure

    from eqsolve.bench import plots

    drawn: list[list[float]] = []
    original = Figure.add_subplot

    def spy(self, *args, **kwargs):
        ax = original(self, *args, **kwargs)
        errorbar = ax.errorbar
        ax.errorbar = lambda *a, **k: drawn.append(list(k.get("yerr", []))) or errorbar(*a, **k)
        return ax

    rows = [{"solver": "anderson", "depth": 4, "breadth": b, "nfe_mean": 4 * b, "n": 64,
             "accuracy": a, "residual_mean": 0.1} for b, a in ((1, 0.25), (2, 0.5))]
    expected = [100 * (0.25 * 0.75 / 64) ** 0.5, 100 * (0.5 * 0.5 / 64) ** 0.5]
    Figure.add_subplot = spy
    try:
        for draw in (plots.plot_accuracy_vs_nfe, plots.plot_accuracy_vs_breadth,
                     lambda r, p: plots.plot_accuracy_vs_residual(r, p, residual="abs")):
            drawn.clear()
            draw(rows, tmp_path / "f.png")
            assert sorted(v for bars in drawn for v in bars) == pytest.approx(expected)  # every point has its bar
    finally:
        Figure.add_subplot = original


def test_plots_keep_one_solver_under_two_option_sets_apart():
    from eqsolve.bench import plots

    rows = [{"solver": "fixed_point", "label": label, "depth": 4, "breadth": 1, "nfe_mean": 4, "n": 8,
             "accuracy": 0.5, "residual_mean": 0.1} for label in ("fixed_point", "fixed_point(tau=0.5)")]
    assert plots._solvers(rows) == ["fixed_point", "fixed_point(tau=0.5)"]
    assert plots._solvers([{k: v for k, v in rows[0].items() if k != "label"}]) == ["fixed_point"]


def test_mcnemar_p_is_the_exact_two_sided_binomial_tail():
    from math import comb

    from eqsolve.bench.stats import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(6, 0) == mcnemar_p(0, 6) == 2 * 0.5**6
    assert mcnemar_p(10, 2) == 2 * sum(comb(12, i) for i in range(3)) / 2**12
    assert mcnemar_p(4, 4) == 1.0  # capped: a balanced split is no evidence

"""Diagnostics report, figures, the EqR system and `run_diagnose` end to end (tiny model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eqsolve.diagnostics import (
    FixedPointSystem,
    eqr_system,
    merge_runs,
    residual_auroc,
    run_census,
    run_diagnose,
    summarize,
    write_figures,
)


def well_system() -> FixedPointSystem:
    # x tilts the double well: x > 0 favours the right (correct) well
    return FixedPointSystem(
        map=lambda s, x: s - 0.1 * (s * (s**2 - 1) - x),
        init_state=lambda n, g: 4 * torch.rand(n, 1, generator=g) - 2,
        is_correct=lambda s, t: s[:, 0] > 0,
    )


@pytest.fixture(scope="module")
def well_run():
    x = torch.tensor([[0.0], [0.3], [-0.3]])
    return run_census(well_system(), x, n_starts=64, max_iter=120, tol=1e-3, stop="abs",
                      checkpoints=[5, 20, 60], generator=torch.Generator().manual_seed(0))


def test_summary_is_consistent_with_the_censuses(well_run):
    report = summarize(well_run, target_accuracy=0.9)
    assert report["n_problems"] == 3 and len(report["modes"]) == 3
    assert sum(report["mode_shares"].values()) == pytest.approx(1.0)
    assert sum(report["outcomes"].values()) == pytest.approx(1.0)
    assert set(report["modes"]) <= {"b_spurious", "d_broad", "c_narrow"}
    per_start = report["residual_signal"]["per_start"]
    res = np.concatenate([c.residual for c in well_run.censuses])
    ok = np.concatenate([c.correct for c in well_run.censuses])
    assert per_start["accuracy"] == pytest.approx(ok.mean())
    assert per_start["auroc"] == pytest.approx(residual_auroc(res, ok))
    calib = per_start["calibration"]
    assert calib["coverage"][-1] == 1.0 and calib["accuracy"][-1] == pytest.approx(ok.mean())
    assert calib["threshold"] == sorted(calib["threshold"])
    assert [d["depth"] for d in report["depth"]] == [5, 20, 60, 120]
    # deeper solves lower the median residual on a double well
    assert report["depth"][-1]["residual_median"] < report["depth"][0]["residual_median"]
    for p in report["problems"]:
        assert sum(a["basin_fraction"] for a in p["attractors"]) <= 1.0 + 1e-9
        for a in p["attractors"]:
            # the wells attract (rho = 0.8 at x = 0); a start landing within tol of the
            # barrier top counts as converged there, but is flagged unstable (rho > 1)
            assert a["stable"] == (a["spectral_radius"] < 1.0)
            if a["basin_fraction"] > 0.1:
                assert a["stable"]
    assert 0.5 < report["stability"]["stable_fraction"] <= 1.0
    json.dumps(report, allow_nan=True)  # JSON-ready (NaN is written as null by eqsolve.runs)


def test_tilt_moves_basin_fractions(well_run):
    frac = [sum(a.basin_fraction for a in c.attractors if a.correct) for c in well_run.censuses]
    assert frac[1] > frac[0] > frac[2]


def test_merge_runs_concatenates_problems(well_run):
    merged = merge_runs([well_run, well_run])
    assert len(merged.censuses) == 6
    assert merged.checkpoint_residual.shape == (4, 6, 64)
    with pytest.raises(ValueError):
        merge_runs([])


def test_write_figures(tmp_path, well_run):
    report = summarize(well_run)
    figs = write_figures(well_run, report["modes"], tmp_path)
    assert set(figs) == {"residual_traces", "pca_end_states", "accuracy_vs_residual",
                         "basin_fractions"}
    for path in figs.values():
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def tiny_eqr():
    from eqsolve.models.eqr import EqR, EqRConfig

    torch.manual_seed(0)
    return EqR(EqRConfig(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1, num_heads=2,
                         expansion=2.0)).eval()


def test_eqr_system_answers_and_census_shapes():
    model = tiny_eqr()
    system = eqr_system(model)
    s = system.init_state(3, torch.Generator().manual_seed(0))
    assert s.shape == (3, 2, 81, 16)
    digits = system.decode(s)
    assert digits.shape == (3, 81) and int(digits.min()) >= 1 and int(digits.max()) <= 9
    assert system.is_correct(digits, digits).all()
    assert not system.is_correct(digits, (digits % 9) + 1).any()
    tokens = torch.randint(1, 11, (2, 81))
    with torch.no_grad():
        x = model.embed(tokens)
    run = run_census(system, x, torch.ones(2, 81, dtype=torch.long), n_starts=4, max_iter=3,
                     tol=1e-2, probe_steps=4, stability_iters=3,
                     generator=torch.Generator().manual_seed(0))
    assert [c.n_starts for c in run.censuses] == [4, 4]
    assert run.censuses[0].end_states.shape == (4, 2 * 81 * 16)
    for c in run.censuses:
        for a in c.attractors:
            assert a.spectral_radius is not None and np.isfinite(a.spectral_radius)


def two_puzzles_csv(tmp_path):
    """Two generated puzzles with answers in the Sudoku-Extreme CSV schema."""
    from eqsolve.tasks.sudoku import generate_easy

    csv = tmp_path / "puzzles.csv"
    rows = ["source,question,answer,rating"]
    for q, a, r in generate_easy(2, seed=0):
        rows.append(f"test,{''.join(map(str, q))},{''.join(map(str, a))},{r}")
    csv.write_text("\n".join(rows) + "\n")
    return csv


def tiny_diagnose_cfg(tmp_path, *overrides):
    """The diagnose config of an untrained one-block model on two generated puzzles, plus ``overrides``."""
    from eqsolve.config import compose

    return compose("config_diagnose", [
        "checkpoint=random", f"task.data={two_puzzles_csv(tmp_path)}", "diagnose.threads=1",
        "model.hidden_size=16", "model.H_cycles=1", "model.L_cycles=1", "model.L_layers=1",
        "model.num_heads=2", *overrides,
    ])


def test_run_diagnose_end_to_end(tmp_path):
    cfg = tiny_diagnose_cfg(tmp_path, "solver=fixed_point", "diagnose.depth=4", "diagnose.starts=3",
                            "diagnose.spectral_iters=3")
    summary = run_diagnose(cfg, tmp_path)
    report = json.loads((tmp_path / "diagnostics.json").read_text())
    assert summary["n_puzzles"] == 2 and report["n_problems"] == 2
    assert summary["starts"] == 3 and summary["depth"] == 4
    assert sum(summary["mode_shares"].values()) == pytest.approx(1.0)
    assert report["settings"]["checkpoints"] == [1, 2, 4]
    assert all(isinstance(p["rating"], int) for p in report["problems"])
    assert sum(v["n"] for v in report["mode_shares_by_difficulty"].values()) == 2
    for path in summary["figures"].values():
        assert (tmp_path / path.split("/")[-1]).is_file()
    assert torch.get_num_threads() == 1  # the config asked for one thread


def test_diagnose_measurements_survive_a_plotting_error(tmp_path, monkeypatch):
    import eqsolve.diagnostics.report as report_module

    def broken(run, modes, run_dir):
        raise ValueError("the plotting library broke")

    monkeypatch.setattr(report_module, "write_figures", broken)
    cfg = tiny_diagnose_cfg(tmp_path, "solver=fixed_point", "diagnose.depth=2", "diagnose.starts=2",
                            "diagnose.spectral_iters=2")
    with pytest.raises(RuntimeError, match="diagnostics.json"):
        run_diagnose(cfg, tmp_path)
    report = json.loads((tmp_path / "diagnostics.json").read_text())
    assert report["n_problems"] == 2 and report["figures"] == {}


def test_spectral_radius_on_an_eqr_state_matches_dense_eigvals():
    from eqsolve.diagnostics import spectral_radius
    from eqsolve.models.eqr import EqR, EqRConfig

    torch.manual_seed(0)
    model = EqR(EqRConfig(seq_len=9, hidden_size=8, H_cycles=1, L_cycles=2, L_layers=1,
                          num_heads=2, expansion=2.0, mixer="mlp_t")).double().eval()
    x = model.embed(torch.randint(1, 11, (2, 9))).detach()
    s = model.init_state(2)  # (2, 2, 9, 8): the (B, 2, L, d) state, 144 numbers per row

    def f(state, inj):
        return model.map(state, inj, noise=0.0)

    est = spectral_radius(f, s, x, n_iter=40, generator=torch.Generator().manual_seed(0))
    dense = [torch.autograd.functional.jacobian(lambda v, i=i: f(v[None], x[i:i + 1])[0], s[i])
             .reshape(144, 144) for i in range(2)]
    ref = torch.stack([torch.linalg.eigvals(j).abs().max() for j in dense]).detach()
    torch.testing.assert_close(est.double(), ref, rtol=1e-3, atol=1e-6)


def test_run_diagnose_puts_the_solver_inside_an_inner_equilibrium_reasoner(tmp_path):
    """As in the bench: for a reasoner with an inner solver, --solver solves the inner equilibrium."""
    from eqsolve.models.eqr import EqR

    cfg = tiny_diagnose_cfg(tmp_path, "solver=broyden", "diagnose.depth=3", "diagnose.starts=2",
                            "diagnose.spectral_iters=3", "model.inner_solver=anderson", "model.inner_iter=3")
    used = []
    original = EqR._inner_equilibrium

    def spy(self, *args):
        used.append(type(self.inner_solver).__name__)
        return original(self, *args)

    EqR._inner_equilibrium = spy
    try:
        run_diagnose(cfg, tmp_path)
    finally:
        EqR._inner_equilibrium = original
    report = json.loads((tmp_path / "diagnostics.json").read_text())
    assert report["settings"]["solver_solves"] == "inner equilibrium"
    assert used and set(used) == {"Broyden"}

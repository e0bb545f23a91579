"""compare-grads: same start and data for every mode; cosine against the exact gradient of each level."""

from __future__ import annotations

import json

import pytest
from tiny_models import tiny_config

from eqsolve.training.compare_grads import (
    CompareConfig,
    parse_mode,
    run,
    run_compare,
    summary_table,
)
from eqsolve.training.config import TrainConfig

TINY = tiny_config(L_cycles=1)
TINY_DEQ = tiny_config(L_cycles=1, inner_solver="anderson", inner_iter=16, inner_tol=1e-7)


def test_mode_parsing_and_validation():
    assert parse_mode("phantom:3") == ("phantom", {"phantom_k": 3})
    assert parse_mode("implicit") == ("implicit", {})
    for bad in ("sot", "implicit:2", "unrolled:0", "bogus"):
        with pytest.raises(ValueError, match="compare mode"):
            parse_mode(bad)
    with pytest.raises(ValueError, match="unknown compare config key"):
        run({"compare": {"mode": ["implicit"]}})


def test_modes_share_start_and_data_and_cosines_make_sense(tmp_path):
    train = TrainConfig(steps=3, batch_size=4, depth=4, gen_easy=6, out=str(tmp_path),
                        progress=False, warmup_steps=1, halt_weight=0.0, tol=1e-6)
    compare = CompareConfig(modes=["unrolled", "implicit", "onestep", "unrolled:1"], level="outer",
                            cosine_every=2, eval_size=0, isolate=False)
    result = run_compare(TINY, train, compare)
    modes = result["modes"]
    # same initial weights and batch: the implicit and one-step forwards are both f(z*)
    assert modes["implicit"]["curves"]["loss"][0] == modes["onestep"]["curves"]["loss"][0]
    assert modes["unrolled"]["cosine"]["step"] == [0, 2]
    assert all(abs(c - 1.0) < 1e-5 for c in modes["unrolled"]["cosine"]["cosine"])
    # one-step is the Jacobian-free gradient: biased, so not parallel to the unrolled one
    assert all(c < 0.9999 for c in modes["onestep"]["cosine"]["cosine"])
    assert all(c < 0.9999 for c in modes["unrolled:1"]["cosine"]["cosine"])
    for res in modes.values():
        assert len(res["curves"]["loss"]) == 3 and res["peak_mb"] > 0
        assert res["curves"]["wall_s"] == sorted(res["curves"]["wall_s"])
    saved = json.loads((tmp_path / "compare_grads.json").read_text())
    assert set(saved["summary"]) == set(compare.modes)
    assert (tmp_path / "compare_grads.png").stat().st_size > 10_000


def test_inner_level_converges_and_implicit_matches_the_exact_gradient(tmp_path):
    train = TrainConfig(steps=3, batch_size=4, depth=4, gen_easy=6, out=str(tmp_path),
                        progress=False, warmup_steps=1, halt_weight=0.0)
    compare = CompareConfig(modes=["implicit", "onestep", "phantom:1", "unrolled"], level="inner",
                            cosine_every=2, eval_size=0, isolate=False)
    result = run_compare(TINY_DEQ, train, compare)
    modes, summary = result["modes"], result["summary"]
    # the gradient mode never changes the forward value: implicit and one-step both attach f(z*)
    assert modes["implicit"]["curves"]["loss"][0] == modes["onestep"]["curves"]["loss"][0]
    for mode, row in summary.items():
        assert row["forward_converged"], (mode, row["forward_residual"])
        assert 0 < row["forward_residual"] <= compare.converged_tol
    # at a converged inner solve the implicit gradient is the exact one; one-step is biased
    assert all(c > 0.99 for c in modes["implicit"]["cosine"]["cosine"])
    assert all(c < 0.9999 for c in modes["onestep"]["cosine"]["cosine"])
    assert modes["implicit"]["cosine"]["step"] == [0, 2]
    saved = json.loads((tmp_path / "compare_grads.json").read_text())
    assert saved["compare"]["level"] == "inner"
    assert "forward residual" in summary_table(saved)


def test_inner_level_needs_an_inner_equilibrium(tmp_path):
    train = TrainConfig(steps=1, batch_size=2, gen_easy=4, out=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="model.inner_solver"):
        run_compare(TINY, train, CompareConfig(modes=["implicit"], isolate=False))
    with pytest.raises(ValueError, match="level"):
        CompareConfig(level="middle")

"""Smoke tests: every example runs end to end with a tiny budget and reports sane numbers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bring_your_own_f_trains() -> None:
    out = load("bring_your_own_f").main(steps=3)
    assert out["forward_converged"] == 1.0 and out["backward_converged"] == 1.0
    assert math.isfinite(out["loss"])


def test_implicit_vs_unrolled_digits_reports_accuracy_time_memory() -> None:
    pytest.importorskip("sklearn")
    out = load("implicit_vs_unrolled_digits").main(steps=2, batch=32, max_iter=8)
    for r in out.values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["train_seconds"] > 0
    # The implicit graph is one f call; the unrolled one holds every iteration.
    assert out["unrolled"]["graph_mib_per_step"] > 5 * out["implicit"]["graph_mib_per_step"]


@pytest.mark.slow  # six torchdeq/eqsolve solver runs
def test_torchdeq_model_runs_on_eqsolve_solvers() -> None:
    pytest.importorskip("torchdeq")
    example = load("torchdeq_model")
    out = example.main(steps=2)
    for native, ours in example.PAIRS:
        assert out[ours]["under_tol"] == 1.0, ours
        # Same model, same tolerance: the adapter reaches the same training loss.
        assert out[ours]["loss"] == pytest.approx(out[native]["loss"], abs=1e-3)

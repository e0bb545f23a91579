"""Experiment tracking: a TensorBoard run holds the metrics of metrics.jsonl; bad choices are clear."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from tiny_models import BENCH_MODEL

from eqsolve.training.config import TrainConfig
from eqsolve.training.run import main as train
from eqsolve.training.tracking import make_tracker, scalars

TINY = {**BENCH_MODEL, "num_heads": 2}


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_mirrors_metrics_jsonl_and_resume_continues(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    common = {"model": TINY, "train": {"steps": 4, "batch_size": 4, "gen_easy": 8, "log_every": 2,
                                       "checkpoint_every": 2, "progress": False, "out": str(out),
                                       "tracking": "tensorboard"}}
    train(common)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = _events(out / "tensorboard")
    assert [s for s, _ in events["train/loss"]] == [m["step"] for m in logged] == [2, 4]
    assert [v for _, v in events["train/loss"]] == pytest.approx([m["loss"] for m in logged], rel=1e-6)
    assert "speed/steps_per_s" in events
    # resume to step 6: the same event folder continues
    train({**common, "train": {**common["train"], "steps": 6, "resume": True}})
    assert [s for s, _ in _events(out / "tensorboard")["train/loss"]] == [2, 4, 6]


def test_wandb_tracker_keeps_one_run_id_across_resumes(tmp_path: Path, monkeypatch) -> None:
    calls: list[dict] = []

    class FakeRun:
        def log(self, metrics, step):
            calls.append({"log": metrics, "step": step})

        def finish(self):
            calls.append({"finish": True})

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append({"init": kw}) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for _ in range(2):
        tracker = make_tracker("wandb", tmp_path, {"train": {}}, project="p")
        tracker.log({"loss": 0.5, "eval_exact": 0.25, "step": 3}, step=3)
        tracker.close()
    inits = [c["init"] for c in calls if "init" in c]
    assert inits[0]["id"] == inits[1]["id"] and inits[0]["resume"] == "allow" and inits[0]["project"] == "p"
    assert {"log": {"train/loss": 0.5, "eval/exact": 0.25}, "step": 3} in calls


def test_bad_tracking_choices_are_clear_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="tracking='mlflow'; valid: none, tensorboard, wandb"):
        TrainConfig(tracking="mlflow")
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ValueError, match="needs the wandb package"):
        make_tracker("wandb", tmp_path, {})


def test_scalars_skip_non_numbers_and_non_finite_values() -> None:
    assert scalars({"loss": float("nan"), "halted": True, "note": "x", "exact": 1}) == {"train/exact": 1.0}

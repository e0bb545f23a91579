"""``eqsolve train`` draws its curves (loss, accuracy, residual per step) as ``curves.png``, after
``results.json``, and a failed figure never costs the results."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from eqsolve import cli, runs
from eqsolve.training import run as train_module
from eqsolve.training.run import plot_curves

TINY_CLI = ["train.steps=3", "train.batch_size=2", "train.gen_easy=4", "train.eval_size=1",
            "train.eval_depth=1", "train.eval_every=2", "train.progress=false", "train.threads=1",
            "train.checkpoint_every=3", "train.log_every=1", "model.hidden_size=16",
            "model.num_heads=2", "model.H_cycles=1", "model.L_cycles=2", "model.L_layers=1",
            "model.mixer=sudoku_pool"]


def test_a_few_step_run_writes_curves_after_results(tmp_path, monkeypatch):
    order = []
    real_write, real_plot = runs.write_results, train_module.plot_curves
    monkeypatch.setattr(runs, "write_results", lambda *a, **k: order.append("results") or real_write(*a, **k))
    monkeypatch.setattr(train_module, "plot_curves", lambda d: order.append("curves") or real_plot(d))
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), *TINY_CLI]) == 0
    assert order == ["results", "curves"]
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert runs.read_results(out)["results"]["step"] == 3
    assert not list(out.glob("*.tmp*"))  # written atomically


def test_a_failed_figure_keeps_the_results(tmp_path, monkeypatch, caplog):
    def broken(run_dir):
        raise RuntimeError("no display")

    monkeypatch.setattr(train_module, "plot_curves", broken)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="eqsolve.cli"):
        assert cli.main(["train", "--out", str(out), *TINY_CLI]) == 0
    assert runs.read_results(out)["results"]["step"] == 3
    assert not (out / "curves.png").exists()
    assert "figures failed (RuntimeError: no display)" in caplog.text


def test_plot_curves_reads_metrics_and_skips_missing_values(tmp_path):
    assert plot_curves(tmp_path) is None  # nothing logged: nothing drawn, no error
    lines = [{"step": s, "loss": 2.0 / s, "cell_acc": 0.1 * s, "exact": 0.0, "residual": 0.5 / s,
              "eval_exact": None if s < 3 else 0.25, "inner_residual": float("nan")}
             for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    path = plot_curves(tmp_path)
    assert path == tmp_path / "curves.png" and path.stat().st_size > 10_000


def test_importing_train_loads_no_matplotlib():
    code = "import sys, eqsolve.training.run; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

"""A run folder belongs to one run: no overwriting, no sharing, independent checkpoints, results first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from tiny_models import BENCH_MODEL, tiny_config

from eqsolve import cli, runs
from eqsolve.models.eqr import EqR, EqRConfig
from eqsolve.training.checkpoint import load_training_checkpoint
from eqsolve.training.config import TrainConfig
from eqsolve.training.run import run_training

TINY = tiny_config()
TINY_CLI = ["train.batch_size=2", "train.gen_easy=4", "train.eval_size=1", "train.eval_depth=1",
            "train.progress=false", "train.threads=1", "train.checkpoint_every=1", "train.log_every=1",
            "model.hidden_size=16", "model.num_heads=2", "model.H_cycles=1", "model.L_cycles=2",
            "model.L_layers=1", "model.mixer=sudoku_pool"]


def tiny(out, **overrides) -> TrainConfig:
    values = dict(steps=3, batch_size=2, gen_easy=4, eval_size=1, eval_depth=1, progress=False,
                  checkpoint_every=1, log_every=1, out=str(out))
    values.update(overrides)
    return TrainConfig(**values)


def snapshot(folder):
    """Every file's bytes (the lock file aside), to prove a refused run touched nothing."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != runs.LOCK_NAME}


# ----------------------------------------------------------------------------- item 2
def test_training_into_an_existing_run_without_resume_is_refused_and_touches_nothing(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "run"), "train.steps=2", *TINY_CLI]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path / "run")
    assert {"last.pt", "ckpt_0000001.pt", "ckpt_0000002.pt", "metrics.jsonl", "results.json"} <= set(before)
    # the CLI, with the same or another config
    for extra in ([], ["train.seed=1"]):
        assert cli.main(["train", "--out", str(tmp_path / "run"), "train.steps=2", *TINY_CLI, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(tmp_path / "run") in err and "--resume" in err, err
    # the library
    with pytest.raises(FileExistsError, match=r"already holds a run \(ckpt_0000001.pt.*--resume"):
        run_training(tiny(tmp_path / "run", steps=2), TINY)
    assert snapshot(tmp_path / "run") == before  # config.yaml, meta.json, log.txt included
    # --resume continues it in place
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume", "train.steps=3", *TINY_CLI]) == 0
    assert load_training_checkpoint(tmp_path / "run" / "last.pt")["train"]["step"] == 3


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    assert cli.main(["train", "--out", str(tmp_path / "f"), *TINY_CLI]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'f'} is a" in err and "file" in err and (tmp_path / "f").read_text() == "mine"


# ----------------------------------------------------------------------------- item 3
SLOW_TRAIN = """
import sys, time
import eqsolve.training.loop as loop
step = loop.Trainer.train_step
def slow_step(self):  # keep the run alive while the test starts a second one
    time.sleep(0.5)
    return step(self)
loop.Trainer.train_step = slow_step
from eqsolve import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_second_run_with_the_same_out_fails_while_the_first_runs(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "train.steps=200", *TINY_CLI]
    first = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists():
            assert first.poll() is None and time.time() < deadline, "first run did not start"
            time.sleep(0.05)
        # neither a fresh run nor a resume may write into the folder of a live run
        for extra in ([], ["--resume"]):
            assert cli.main([*argv, *extra]) == 1
            err = capsys.readouterr().err
            assert f"run folder {out} is in use by another eqsolve run (pid {first.pid})" in err, err
        with pytest.raises(runs.RunFolderBusy):
            run_training(tiny(out, resume=True), TINY)
        assert first.poll() is None  # the first run is unharmed
    finally:
        first.terminate()
        first.wait(timeout=120)
    # once it has stopped, the folder can be resumed (and only resumed)
    assert cli.main([*argv, "--resume", "train.steps=1"]) == 0


def test_two_benches_with_the_same_out_cannot_share_it(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from eqsolve import runs; "
                               "runs.lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(["bench", "--checkpoint", "random", "--limit", "1", "--out", str(tmp_path)]) == 1
        assert "in use by another eqsolve run" in capsys.readouterr().err
        assert not (tmp_path / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # a lock held by a process that died is gone with it
    with runs.lock_run_dir(tmp_path):
        pass


# ----------------------------------------------------------------------------- item 5
def test_numbered_checkpoints_are_independent_copies(tmp_path):
    run_training(tiny(tmp_path, steps=3, keep_checkpoints=2), TINY)
    last = tmp_path / "last.pt"
    numbered = sorted(tmp_path.glob("ckpt_*.pt"))
    assert [p.name for p in numbered] == ["ckpt_0000002.pt", "ckpt_0000003.pt"]
    assert all(os.stat(p).st_nlink == 1 for p in [last, *numbered])  # no hard links
    assert not any(p.samefile(last) for p in numbered)
    assert numbered[-1].read_bytes() == last.read_bytes()  # the same checkpoint, in its own file
    # damage last.pt: every numbered file still loads, and the error names the newest of them
    last.write_bytes(last.read_bytes()[:1000])
    for path in numbered:
        assert load_training_checkpoint(path)["train"]["step"] == int(path.stem[5:])
    with pytest.raises(ValueError, match=r"last\.pt is corrupt or truncated.*--resume .*ckpt_0000003\.pt "
                                         r"\(older: ckpt_0000002\.pt\)"):
        run_training(tiny(tmp_path, steps=4, resume=True), TINY)
    rest = run_training(tiny(tmp_path, steps=4, resume=str(numbered[-1])), TINY)
    assert rest["step"] == 4


# ----------------------------------------------------------------------------- item 4
def nan_checkpoint(path):
    model = EqR(EqRConfig(**BENCH_MODEL))
    model.load_state_dict({k: torch.full_like(v, float("nan")) for k, v in model.state_dict().items()})
    model.save_checkpoint(path)
    return path


def test_bench_of_a_nan_model_reports_every_row_as_non_finite(tmp_path, caplog):
    checkpoint = nan_checkpoint(tmp_path / "nan.pt")
    out = tmp_path / "run"
    argv = ["bench", "--checkpoint", str(checkpoint), "--limit", "3", "--depth", "1,2", "--breadth", "1,2",
            "--out", str(out), "bench.batch_size=3", "bench.extra_baselines=[]"]
    assert cli.main(argv) == 0
    results = runs.read_results(out)["results"]
    assert len(results["rows"]) == 8
    for row in results["rows"]:
        assert row["accuracy"] == 0.0 and row["nonfinite_residuals"] == 3 and row["residual_mean"] is None
    assert all((out / name).is_file() for name in results["plots"].values())
    assert sum("ended in a non-finite state" in r.getMessage() for r in caplog.records) == 8


def test_bench_results_survive_a_plotting_error(tmp_path, monkeypatch, capsys):
    import eqsolve.bench.plots

    def broken(rows, out_dir, residual="rel"):
        raise ValueError("the plotting library broke")

    monkeypatch.setattr(eqsolve.bench.plots, "write_bench_plots", broken)
    out = tmp_path / "run"
    argv = ["bench", "--checkpoint", "random", "--limit", "2", "--depth", "1", "--breadth", "1", "--out", str(out),
            "bench.extra_baselines=[]"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "plots failed" in err and str(out / "results.json") in err
    rows = json.loads((out / "results.json").read_text())["results"]["rows"]
    assert len(rows) == 2 and all(r["n"] == 2 for r in rows)


@pytest.mark.parametrize("override", ["bench.noise=nan", "bench.noise=inf", "bench.halt_tol=-inf",
                                      "solver.options.ridge=nan"])
def test_non_finite_float_options_are_refused_before_any_work(tmp_path, override, capsys):
    out = tmp_path / "run"
    assert cli.main(["bench", "--checkpoint", "random", "--out", str(out), override]) == 2
    err = capsys.readouterr().err.strip()
    key = override.split("=")[0]
    assert err.count("\n") == 0 and f"{key}=" in err and "not a finite number" in err, err
    assert not out.exists()

"""A training process killed with SIGKILL resumes exactly; one stopped by SIGTERM says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from tiny_models import TRAIN_MODEL

from eqsolve.models.eqr import EqRConfig
from eqsolve.training.checkpoint import load_training_checkpoint
from eqsolve.training.config import TrainConfig
from eqsolve.training.run import run_training

MODEL = TRAIN_MODEL
TRAIN = dict(steps=12, batch_size=4, gen_easy=6, sup_steps=3, checkpoint_every=2, log_every=1,
             eval_size=2, eval_depth=1, progress=False, warmup_steps=2, reveal_start=0.5,
             reveal_end=0.1, curriculum_steps=8, threads=1)

CHILD = """
import sys, time
from eqsolve.models.eqr import EqRConfig
from eqsolve.training.run import run_training
from eqsolve.training.config import TrainConfig
cfg = TrainConfig(**{train!r}, out={out!r})
import eqsolve.training.loop as loop
step = loop.Trainer.train_step
def slow_step(self):  # slow the child down so that the kill lands mid-run
    time.sleep(0.3)
    return step(self)
loop.Trainer.train_step = slow_step
run_training(cfg, EqRConfig(**{model!r}))
"""


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path):
    full = run_training(TrainConfig(**TRAIN, out=str(tmp_path / "full")), EqRConfig(**MODEL))
    out = tmp_path / "killed"
    code = CHILD.format(train=TRAIN, out=str(out), model=MODEL)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 240
        while not (out / "ckpt_0000004.pt").exists():
            assert proc.poll() is None, "training child exited before its 2nd checkpoint"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = load_training_checkpoint(out / "last.pt")["train"]["step"]
    assert 4 <= saved < TRAIN["steps"]  # killed mid-run, with at most checkpoint_every lost
    rest = run_training(TrainConfig(**TRAIN, out=str(out), resume=True), EqRConfig(**MODEL))
    assert rest["losses"] == full["losses"][saved:]


CLI_CHILD = """
import sys, time
import eqsolve.training.loop as loop
step = loop.Trainer.train_step
def slow_step(self):  # slow the child down so that the signal lands mid-run
    time.sleep(0.3)
    return step(self)
loop.Trainer.train_step = slow_step
from eqsolve import cli
sys.exit(cli.main(sys.argv[1:]))
"""
CLI_TRAIN = ["train.steps=200", "train.batch_size=4", "train.gen_easy=6", "train.sup_steps=3",
             "train.checkpoint_every=2", "train.log_every=1", "train.eval_size=2", "train.eval_depth=1",
             "train.progress=false", "train.threads=1", "model.hidden_size=16", "model.num_heads=2",
             "model.H_cycles=1", "model.L_cycles=2", "model.L_layers=1", "model.mixer=sudoku_pool"]


@pytest.mark.slow
def test_sigterm_stops_cleanly_records_it_and_exits_143(tmp_path):
    # a preempted run must not look finished: results.json says it stopped and where, the exit
    # status is the shell's "killed by SIGTERM" (143), and the checkpoint is at the step reached
    from eqsolve.cli import EXIT_SIGTERM
    from eqsolve.runs import read_results

    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-c", CLI_CHILD, "train", "--out", str(out), *CLI_TRAIN],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "ckpt_0000002.pt").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == EXIT_SIGTERM == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopped by SIGTERM at step" in proc.stderr.read()
    step = load_training_checkpoint(out / "last.pt")["train"]["step"]
    assert 2 <= step < 200
    logged = (out / "metrics.jsonl").read_text().splitlines()
    assert len(logged) == step  # log_every=1: the checkpoint is at the last logged step
    results = read_results(out)["results"]
    assert (results["stopped"], results["step"], results["steps"]) == ("signal", step, 200)


def test_a_complete_or_time_limited_run_says_how_it_ended(tmp_path):
    done = run_training(TrainConfig(**dict(TRAIN, steps=2), out=str(tmp_path / "a")), EqRConfig(**MODEL))
    assert (done["stopped"], done["step"], done["steps"]) == (None, 2, 2)
    cut = run_training(TrainConfig(**dict(TRAIN, steps=50), time_limit_s=1e-9, out=str(tmp_path / "b")),
                       EqRConfig(**MODEL))
    assert (cut["stopped"], cut["step"], cut["steps"]) == ("time_limit", 1, 50)

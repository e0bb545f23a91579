"""Maze-Unique end to end through the task protocol: bench, train (with its eval) and diagnose."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eqsolve import cli
from eqsolve.tasks.base import get_task

SMALL = ["model.hidden_size=8"]  # the maze preset (grid_conv), narrower


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())["results"]


def test_maze_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--task", "maze-unique", "--checkpoint", "random", "--depth", "1,2", "--limit", "3",
            "--out", str(out), *SMALL]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "100-109%" in stdout and "130-140%" in stdout and "maze-unique" in stdout
    results = _results(out)
    assert results["task"] == "maze-unique" and results["n_puzzles"] == 3
    assert {(r["solver"], r["depth"], r["breadth"]) for r in results["rows"]} == {
        (s, d, 1) for s in ("anderson", "fixed_point") for d in (1, 2)}
    assert sum(results["rows"][0]["bucket_counts"].values()) == 3


def test_maze_bench_defaults_are_the_maze_grid():
    overrides = cli._flag_overrides("bench", cli.build_parser().parse_args(["bench", "--task", "maze-unique"]))
    assert overrides == ["bench=maze", "task=maze_unique"]
    from eqsolve.config import compose

    cfg = compose("config_bench", overrides)
    assert max(cfg.bench.depth) >= 64 and cfg.task.name == "maze-unique"
    # an explicit grid choice wins over the task's
    chosen = cli.build_parser().parse_args(["bench", "--task", "maze-unique", "bench=default"])
    assert "bench=maze" not in cli._flag_overrides("bench", chosen)


def test_maze_bench_without_a_shipped_reasoner_or_with_a_sudoku_model_is_a_clear_error(tmp_path, capsys):
    if not get_task("maze-unique").shipped_reasoners["eqr"].is_file():
        assert cli.main(["bench", "--task", "maze-unique", "--out", str(tmp_path / "a")]) == 2
        assert "shipped maze-unique reasoner 'eqr' not found" in capsys.readouterr().err
    from eqsolve.models.eqr import EqR, EqRConfig

    path = tmp_path / "sudoku.pt"
    EqR(EqRConfig(hidden_size=8, H_cycles=1, L_cycles=1, L_layers=1)).save_checkpoint(path)
    assert cli.main(["bench", "--task", "maze-unique", "--checkpoint", str(path), "--out", str(tmp_path / "b")]) == 2
    assert "seq_len=81, vocab_size=11 but task 'maze-unique' has seq_len=900" in capsys.readouterr().err


def test_maze_train_end_to_end_with_eval_and_resume(tmp_path):
    out = tmp_path / "train"
    argv = ["train", "--task", "maze-unique", "--out", str(out), *SMALL, "train.steps=2", "train.batch_size=2",
            "train.gen_easy=6", "train.sup_steps=2", "train.eval_size=2", "train.eval_depth=1",
            "train.eval_every=2", "train.log_every=1", "train.checkpoint_every=1", "train.time_limit_s=0"]
    assert cli.main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["task"] == "maze-unique" and config["model"]["mixer"] == "grid_conv"
    assert config["model"]["ffn_multiple"] == 16 and config["pool"] == "maze.generate(6, seed=0, exclude=eval set)"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and lines[-1]["eval_n"] == 2.0
    assert 0.0 <= lines[-1]["cell_acc"] <= 1.0 and np.isfinite(lines[-1]["loss"])
    # resumable: two more steps from last.pt
    resume = [a for a in argv if a != "train.steps=2"] + ["--resume", "train.steps=4"]
    assert cli.main(resume) == 0
    assert _results(out)["step"] == 4


def test_maze_pool_excludes_the_eval_set_and_refuses_a_reveal_curriculum():
    from eqsolve.models.eqr import EqRConfig
    from eqsolve.tasks.maze import canonical_keys, eval_set_keys
    from eqsolve.training.config import TrainConfig
    from eqsolve.training.data import build_pool, draw_batch
    from eqsolve.training.loop import Trainer
    from eqsolve.training.run import load_preset

    pool = build_pool(None, limit=None, gen_easy=4, gen_hard=0, seed=3, task="maze-unique")
    assert pool.questions.shape == (4, 900)
    assert not set(canonical_keys(pool.questions)) & eval_set_keys()
    q, a = draw_batch(pool, [(0, 0, 0), (0, 1, 0)], seed=0, reveal_max=0.0, reveal_prob=0.0, augment=True,
                      task="maze-unique")
    assert get_task("maze-unique").check_batch(a, q).all()  # a symmetry keeps answers right
    with pytest.raises(ValueError, match="'maze-unique', which has none"):
        draw_batch(pool, [(0, 0, 0)], seed=0, reveal_max=0.5, reveal_prob=1.0, augment=False, task="maze-unique")
    model = EqRConfig(**{**load_preset("model", "maze"), "hidden_size": 8})
    with pytest.raises(ValueError, match="'maze-unique' has no reveal curriculum"):
        Trainer(model, TrainConfig(task="maze-unique", reveal_start=0.7), pool)


def test_maze_diagnose_end_to_end(tmp_path):
    out = tmp_path / "diag"
    argv = ["diagnose", "--task", "maze-unique", "--checkpoint", "random", "--limit", "1", "--starts", "2",
            "--depth", "2", "--out", str(out), *SMALL, "diagnose.checkpoints=[1]", "diagnose.probe_steps=4",
            "diagnose.spectral_iters=2"]
    assert cli.main(argv) == 0
    report = json.loads((out / "diagnostics.json").read_text())
    assert report["settings"]["task"] == "maze-unique" and report["n_problems"] == 1
    assert set(report["mode_shares_by_difficulty"]) <= set(get_task("maze-unique").bucket_names(["other"]))


def test_maze_task_predict_reads_symbols_only():
    task = get_task("maze-unique")
    logits = torch.zeros(1, 900, 6)
    logits[..., 0] = 5.0  # pad is never an answer
    logits[0, 0, 5] = 1.0
    pred = task.predict(logits)
    assert pred[0, 0] == 5 and (pred[0, 1:] == 1).all()


def test_shipped_equilibrium_native_maze_reasoner_solves_mazes_at_its_equilibria():
    from eqsolve.models.eqr import EqR
    from eqsolve.scaling import solve_many

    task = get_task("maze-unique")
    path = task.shipped_reasoners["deq"]
    if not path.is_file():
        pytest.skip("the shipped maze deq reasoner is not built")
    model = EqR.from_checkpoint(path)
    assert model.inner_solver is not None and model.blocks_per_map() == 14
    data = task.load(None, limit=8)
    with torch.no_grad():
        result = solve_many(model, task.encode(data.questions), depth=24, solver="fixed_point", noise=0.0,
                            seed=0, predict=task.predictor(model))
    solved = task.check_batch(result.predictions.numpy(), data.questions)
    assert solved.mean() >= 0.5  # ~80% measured on 128 eval mazes at depth 16 (model card)
    assert float(model.last_inner_residual.median()) < 0.1  # the inner solve reaches its equilibrium

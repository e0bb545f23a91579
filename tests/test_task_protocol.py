"""The task protocol is pluggable: a toy task defined *here* runs through bench and train.

``InvertTask`` ("flip every bit of a 4 x 4 board") registers itself with
:func:`eqsolve.tasks.base.register_task`; nothing in ``eqsolve/`` knows it. The CLI's bench,
train and diagnose take it by name, so adding a task touches no core file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from tiny_models import tiny_overrides

from eqsolve import cli
from eqsolve.tasks.base import (
    Task,
    TaskData,
    available_tasks,
    get_task,
    register_task,
    unregister_task,
)

TINY = tiny_overrides()


class InvertTask(Task):
    """Toy: 16 bits in, the same 16 bits flipped out. Tokens 0 pad, 1 = bit 0, 2 = bit 1.

    Files hold one board per line as 16 characters ``0``/``1`` (the answer is implied).
    """

    name: ClassVar[str] = "toy-invert"
    seq_len: ClassVar[int] = 16
    vocab_size: ClassVar[int] = 3
    buckets: ClassVar[tuple[str, ...]] = ("sparse", "dense")
    model_config: ClassVar[str] = "tiny"
    train_config: ClassVar[str] = "compare"

    def load(self, path: str | None, *, limit: int | None = None, seed: int = 0,
             min_rating: int | None = None) -> TaskData:
        if path is None:  # the "shipped" eval set: a fixed draw
            q = np.random.default_rng(12345).integers(0, 2, size=(40, 16))
        else:
            rows = []
            for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
                if len(line) != 16 or set(line) - {"0", "1"}:
                    raise ValueError(f"{path}:{line_no}: expected 16 characters 0/1, got {line!r}")
                rows.append([int(c) for c in line])
            q = np.array(rows).reshape(-1, 16)
        q = q[:limit] if limit is not None else q
        return TaskData(q, 1 - q, q.sum(1), str(path or "toy eval set"))

    def generate_pool(self, n: int, seed: int, *, hard: int = 0) -> TaskData:
        q = np.random.default_rng(seed).integers(0, 2, size=(n, 16))
        return TaskData(q, 1 - q, q.sum(1), self.pool_source(n, seed))

    def encode(self, questions: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(questions), dtype=torch.long) + 1

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., 1:].argmax(-1)

    def check_batch(self, predictions: Any, questions: Any) -> np.ndarray:
        p, q = np.asarray(predictions), np.asarray(questions)
        return (p == 1 - q).all(axis=1)

    def bucket(self, ratings: Any) -> list[str]:
        return ["dense" if r >= 8 else "sparse" for r in np.asarray(ratings).reshape(-1)]

    def augment(self, question: np.ndarray, answer: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        shift = int(rng.integers(16))  # a cyclic shift keeps the rule
        return np.roll(question, shift), np.roll(answer, shift)


@pytest.fixture
def toy() -> Any:
    task = register_task(InvertTask())
    yield task
    unregister_task(task.name)


def test_registry_lookup_and_errors(toy):
    assert "toy-invert" in available_tasks() and get_task("toy-invert") is toy
    with pytest.raises(ValueError, match=r"unknown task 'nope'; valid: maze-unique, sudoku-extreme, toy-invert"):
        get_task("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_task(InvertTask())
    with pytest.raises(TypeError):
        register_task("toy")  # type: ignore[arg-type]


def test_toy_task_runs_through_bench(toy, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--task", "toy-invert", "--checkpoint", "random", "--depth", "1,2", "--breadth", "1,2",
            "--limit", "6", "--out", str(out), "bench.batch_size=4", *TINY]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "sparse%" in stdout and "dense%" in stdout and "toy-invert" in stdout
    results = json.loads((out / "results.json").read_text())["results"]
    # anderson, plain and damped plain iteration (the default extra baseline) x 2 depths x 2 breadths
    assert results["task"] == "toy-invert" and len(results["rows"]) == 12
    assert set(results["rows"][0]["accuracy_by_bucket"]) == {"sparse", "dense"}


def test_toy_task_trains_and_evaluates_through_the_cli(toy, tmp_path):
    out = tmp_path / "train"
    argv = ["train", "--task", "toy-invert", "--out", str(out), "model.seq_len=16", "model.vocab_size=3",
            "model.hidden_size=16", "train.grad=sot", "train.steps=3", "train.batch_size=4", "train.gen_easy=20",
            "train.reveal_start=0", "train.reveal_end=0", "train.eval_size=8", "train.eval_depth=2",
            "train.log_every=1", "train.checkpoint_every=3"]
    assert cli.main(argv) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in lines)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["task"] == "toy-invert" and config["pool"].startswith("toy-invert.generate_pool(20")
    from eqsolve.models.loading import load_checkpoint as load_model
    from eqsolve.training.eval import default_eval_set, evaluate

    report = evaluate(load_model(out / "last.pt"), default_eval_set("toy-invert"), depth=2, task="toy-invert")
    assert report["n"] == 40.0 and 0.0 <= report["exact"] <= 1.0 and "exact_dense" in report


def test_toy_task_without_a_reveal_curriculum_refuses_one(toy, tmp_path):
    from eqsolve.models.eqr import EqRConfig
    from eqsolve.training.config import TrainConfig
    from eqsolve.training.data import build_pool
    from eqsolve.training.loop import Trainer

    pool = build_pool(None, limit=None, gen_easy=8, gen_hard=0, seed=0, task=toy)
    mc = EqRConfig(seq_len=16, vocab_size=3, hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1)
    with pytest.raises(ValueError, match="toy-invert' has no reveal curriculum"):
        Trainer(mc, TrainConfig(task="toy-invert", reveal_start=0.5), pool)
    with pytest.raises(ValueError, match="do not fit task 'toy-invert'"):
        Trainer(EqRConfig(hidden_size=16), TrainConfig(task="toy-invert"), pool)


def test_toy_file_errors_name_file_and_line(toy, tmp_path):
    bad = tmp_path / "boards.txt"
    bad.write_text("0101010101010101\n01x\n")
    with pytest.raises(ValueError, match=r"boards.txt:2: expected 16 characters"):
        toy.load(str(bad))


def test_sudoku_task_predict_is_the_digit_readout():
    """Sudoku's answer space (digits) comes from the task; EqR.predict is the plain argmax."""
    from eqsolve.models.eqr import EqR, EqRConfig

    torch.manual_seed(0)
    model = EqR(EqRConfig(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1))
    s = model.init_state(3)
    sudoku = get_task("sudoku-extreme")
    assert torch.equal(sudoku.predictor(model)(s), model.predict_digits(s))
    assert torch.equal(model.predict(s), model.decode(s).argmax(-1))

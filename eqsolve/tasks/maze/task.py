"""Maze-Unique as a :class:`~eqsolve.tasks.base.Task` (wraps :mod:`eqsolve.tasks.maze`).

Answer space: the grid codes flattened to ``(N, 900)`` (0 pad, 1..5 = ``# SGo``), which are
also the model's tokens; an answer is the question with its path cells set to ``o``.
Predictions are the argmax over the five symbols (pad excluded). A maze counts as solved only
when the whole path is exactly right (:func:`eqsolve.tasks.maze.check_batch`). Difficulty
buckets are path lengths (the ``rating`` column of the shipped set).

Examples:
    >>> from eqsolve.tasks.base import get_task
    >>> task = get_task("maze-unique")
    >>> pool = task.generate_pool(2, seed=0)
    >>> tuple(task.encode(pool.questions).shape), task.check_batch(pool.answers, pool.questions).tolist()
    ((2, 900), [True, True])
    >>> task.bucket([100, 125])
    ['100-109', '120-129']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from ..base import Task, TaskData, register_task, seeded_subset

__all__ = ["MAZE", "MazeTask"]

_ASSETS = Path(__file__).resolve().parents[2] / "assets"


class MazeTask(Task):
    """Maze-Unique: 30 × 30 perfect mazes, shortest paths of 100-140 moves (EqR paper, App. C.2)."""

    name: ClassVar[str] = "maze-unique"
    seq_len: ClassVar[int] = 900
    vocab_size: ClassVar[int] = 6
    buckets: ClassVar[tuple[str, ...]] = ("100-109", "110-119", "120-129", "130-140")
    model_config: ClassVar[str] = "maze"
    train_config: ClassVar[str] = "maze"
    bench_config: ClassVar[str] = "maze"
    random_model: ClassVar[str | None] = "maze"
    shipped_reasoners: ClassVar[dict[str, Path]] = {"eqr": _ASSETS / "maze_reasoner.pt",
                                                    "deq": _ASSETS / "maze_reasoner_deq.pt"}
    supports_reveal: ClassVar[bool] = False

    def load(self, path: str | None, *, limit: int | None = None, seed: int = 0,
             min_rating: int | None = None) -> TaskData:
        """A maze file (CSV, JSONL, text or official arrays) or the shipped eval set (1,000)."""
        from eqsolve.tasks.maze import default_eval_set, load_any

        data = load_any(path) if path else default_eval_set()
        if min_rating is not None:
            data = data.subset(data.ratings >= int(min_rating))
        data = data.subset(seeded_subset(len(data), limit, seed))
        return self._task_data(data, str(path or "shipped eval set"))

    def load_training(self, path: str, *, limit: int | None = None, seed: int = 0) -> TaskData:
        from eqsolve.tasks.maze import load_any

        data = load_any(path)
        return self._task_data(data if limit is None else data.subset(slice(0, limit)), str(path))

    def generate_pool(self, n: int, seed: int, *, hard: int = 0) -> TaskData:
        """``generate(n, seed, exclude=eval_set_keys())``: no maze of the shipped eval set, up to symmetry."""
        from eqsolve.tasks.maze import eval_set_keys, generate

        if hard:
            raise ValueError(f"train.gen_hard={hard}: maze-unique has one generator; use train.gen_easy")
        if n < 1:
            raise ValueError(f"train.gen_easy={n}: a maze pool needs at least one maze")
        return self._task_data(generate(n, seed, exclude=eval_set_keys()), self.pool_source(n, seed))

    def pool_source(self, n: int, seed: int, *, hard: int = 0) -> str:
        """E.g. ``'maze.generate(2000, seed=0, exclude=eval set)'``."""
        return f"maze.generate({n}, seed={seed}, exclude=eval set)"

    @staticmethod
    def _task_data(data: Any, source: str) -> TaskData:
        n = len(data)
        return TaskData(data.questions.reshape(n, -1), data.answers.reshape(n, -1), data.ratings, source)

    def encode(self, questions: Any) -> Tensor:
        from eqsolve.tasks.maze import encode_tokens

        return encode_tokens(questions)

    def predict(self, logits: Tensor) -> Tensor:
        from eqsolve.tasks.maze import logits_to_tokens

        return logits_to_tokens(logits)

    def check_batch(self, predictions: Any, questions: Any) -> np.ndarray:
        from eqsolve.tasks.maze import check_batch

        return np.asarray(check_batch(predictions, questions), dtype=bool)

    def scored_cells(self, tokens: Tensor) -> Tensor:
        """The open cells (the only ones a path can take): walls, S and G are copied."""
        from eqsolve.tasks.maze import OPEN

        return tokens == OPEN

    def bucket(self, ratings: Any) -> list[str]:
        from eqsolve.tasks.maze import length_bucket

        return length_bucket(ratings)

    def augment(self, question: np.ndarray, answer: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One of the 8 dihedral transforms of the 29 × 29 maze block (the same for both)."""
        from eqsolve.tasks.maze import augment

        q, a, _ = augment(question, answer, rng)
        return q.reshape(-1).astype(np.int64), a.reshape(-1).astype(np.int64)


MAZE = register_task(MazeTask())

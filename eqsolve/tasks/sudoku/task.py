"""Sudoku-Extreme as a :class:`~eqsolve.tasks.base.Task` (wraps :mod:`eqsolve.tasks.sudoku`).

Answer space: digits (questions 0 = blank, answers 1..9); tokens are the official encoding
(0 pad, 1 blank, 2..10 digits 1..9); predictions are the argmax over the digit tokens only.

Examples:
    >>> import torch
    >>> from eqsolve.tasks.base import get_task
    >>> task = get_task("sudoku-extreme")
    >>> data = task.load(None, limit=2, seed=0)
    >>> tokens = task.encode(data.questions)
    >>> tuple(tokens.shape), task.check_batch(data.answers, data.questions).tolist()
    ((2, 81), [True, True])
    >>> logits = torch.nn.functional.one_hot(task.targets(data.answers), 11).float()
    >>> bool((task.predict(logits).numpy() == data.answers).all())
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from ..base import Task, TaskData, register_task

__all__ = ["SUDOKU", "SudokuTask"]

_ASSETS = Path(__file__).resolve().parents[2] / "assets"


class SudokuTask(Task):
    """Sudoku-Extreme: 81 cells, 11 tokens, difficulty by the backtracking rating."""

    name: ClassVar[str] = "sudoku-extreme"
    seq_len: ClassVar[int] = 81
    vocab_size: ClassVar[int] = 11
    buckets: ClassVar[tuple[str, ...]] = ("easy", "medium", "hard")
    bucket_labels: ClassVar[dict[str, str]] = {"medium": "med"}
    model_config: ClassVar[str] = "small"
    train_config: ClassVar[str] = "small"
    bench_config: ClassVar[str] = "default"
    shipped_reasoners: ClassVar[dict[str, Path]] = {"deq": _ASSETS / "reasoner_deq.pt",
                                                    "eqr": _ASSETS / "reasoner.pt"}
    supports_reveal: ClassVar[bool] = True

    def load(self, path: str | None, *, limit: int | None = None, seed: int = 0,
             min_rating: int | None = None) -> TaskData:
        """A CSV / puzzle-per-line file, or the shipped eval set; a seeded sample of ``limit``."""
        from eqsolve.tasks import sudoku

        # the loader samples (a seeded draw in file order) and then proves only the kept puzzles
        # unique: ~5 ms each, instead of every row of a large file
        options: dict[str, Any] = {"subsample": limit, "seed": int(seed)}
        if min_rating is not None:
            options["min_rating"] = int(min_rating)
        data = sudoku.load_any(path, **options) if path else sudoku.default_eval_set(**options)
        return TaskData(data.questions, data.answers, data.ratings, str(path or "shipped eval set"))

    def load_training(self, path: str, *, limit: int | None = None, seed: int = 0) -> TaskData:
        """A seeded random sample of ``limit`` rows of ``path`` (all rows if None).

        Only the sampled rows are parsed (:func:`~eqsolve.tasks.sudoku.io.load_csv`'s
        ``sample``), so a limit on the 3.8-million-row training CSV costs one quick pass over
        the file, not a parse of every row.
        """
        from eqsolve.tasks.sudoku.io import load_any

        # unique=False: a puzzle paired with one of its solutions is still a correct target, and
        # proving uniqueness would cost ~5 ms per row of files with millions of rows
        data = load_any(Path(path), unique=False, sample=limit, seed=seed)
        return TaskData(data.questions, data.answers, data.ratings, str(path))

    def generate_pool(self, n: int, seed: int, *, hard: int = 0) -> TaskData:
        """``generate_easy(n, seed)`` then ``generate(hard, seed + 1)`` (rated, harder)."""
        from eqsolve.tasks.sudoku.easy_generator import generate_easy

        parts_q, parts_a = [], []
        if n:
            easy = generate_easy(n, seed=seed)
            parts_q.append(np.asarray([q for q, _, _ in easy]))
            parts_a.append(np.asarray([a for _, a, _ in easy]))
        if hard:
            from eqsolve.tasks.sudoku import generate

            rated = generate(hard, seed=seed + 1)
            parts_q.append(np.asarray([q for q, _, _ in rated]))
            parts_a.append(np.asarray([a for _, a, _ in rated]))
        if not parts_q:
            raise ValueError("an empty Sudoku pool: set train.gen_easy or train.gen_hard > 0")
        questions = np.concatenate(parts_q).reshape(-1, 81)
        answers = np.concatenate(parts_a).reshape(-1, 81)
        return TaskData(questions, answers, None, self.pool_source(n, seed, hard=hard))

    def pool_source(self, n: int, seed: int, *, hard: int = 0) -> str:
        """The generator calls, e.g. ``'generate_easy(2000, seed=0)'`` (as runs have recorded)."""
        desc = []
        if n:
            desc.append(f"generate_easy({n}, seed={seed})")
        if hard:
            desc.append(f"generate({hard}, seed={seed + 1})")
        return " + ".join(desc)

    def encode(self, questions: Any) -> Tensor:
        from eqsolve.tasks.sudoku.board import encode_tokens

        return encode_tokens(questions)

    def predict(self, logits: Tensor) -> Tensor:
        """Digits 1..9: argmax over the digit tokens 2..10 (pad and blank are never answers)."""
        return logits[..., 2:].argmax(-1) + 1

    def check_batch(self, predictions: Any, questions: Any) -> np.ndarray:
        from eqsolve.tasks.sudoku.board import check_batch

        return np.asarray(check_batch(predictions, questions), dtype=bool)

    def scored_cells(self, tokens: Tensor) -> Tensor:
        """The blanks (token 1): givens are trivially right and would inflate the cell accuracy."""
        return tokens == 1

    def bucket(self, ratings: Any) -> list[str]:
        from eqsolve.tasks.sudoku.board import bucket

        return [bucket(int(r)) for r in np.asarray(ratings).reshape(-1)]

    def augment(self, question: np.ndarray, answer: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Digit permutation, transpose, band/stack/row/column permutations (one draw)."""
        from eqsolve.tasks.sudoku import augment

        q, a = augment(question, answer, rng)
        return np.asarray(q, dtype=np.int64), np.asarray(a, dtype=np.int64)

    def reveal(self, question: np.ndarray, answer: np.ndarray, fraction: float,
               rng: np.random.Generator) -> np.ndarray:
        """Fill a uniform share in ``[0, fraction]`` of the blanks from the answer."""
        blanks = np.flatnonzero(question == 0)
        n = int(round(rng.uniform(0.0, fraction) * len(blanks)))
        if n:
            cells = rng.choice(blanks, size=n, replace=False)
            question[cells] = answer[cells]
        return question


SUDOKU = register_task(SudokuTask())

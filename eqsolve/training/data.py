"""Training data for reasoners on any task: a puzzle pool and a deterministic, resumable draw.

The pool is either a user's file (``--data``, read by the task: e.g. a Sudoku-Extreme CSV or a
maze CSV) or puzzles from the task's generator, built once per run and cached as ``pool.npz``
in the run folder (so a resumed run trains on the very same puzzles). The task
(:class:`~eqsolve.tasks.base.Task`, by name) also gives the augmentation (one random symmetry
per draw), the optional reveal curriculum (Sudoku's) and the tokens.

Every drawn puzzle is a pure function of ``(seed, stream, slot, count)``: which pool row, which
symmetry and which extra clues (the reveal curriculum) all come from a numpy generator seeded
with that tuple. A run therefore needs no data-loader state beyond small integer counters to
resume exactly, and the rows of a global batch are the same whatever the number of DDP ranks.

Examples:
    >>> import numpy as np
    >>> pool = PuzzlePool(np.zeros((1, 81), np.int64), np.ones((1, 81), np.int64), "toy")
    >>> q, a = draw_puzzle(pool, seed=0, key=(0, 0, 0), reveal_max=1.0, reveal_prob=1.0,
    ...                    augment=False)
    >>> bool((a == 1).all()) and bool((q[q > 0] == 1).all())
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqsolve.tasks.base import get_task

SUDOKU = "sudoku-extreme"

__all__ = ["PuzzlePool", "build_pool", "draw_puzzle", "draw_batch", "reveal_bound", "to_tokens"]


@dataclass
class PuzzlePool:
    """Questions and answers as ``(N, seq_len)`` int64 arrays in the task's answer space.

    Attributes:
        questions: ``(N, seq_len)`` puzzles (Sudoku: digits, 0 = blank; Maze: grid codes).
        answers: ``(N, seq_len)`` solutions.
        source: human-readable description (file or generator call).
    """

    questions: np.ndarray
    answers: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.questions.shape != self.answers.shape or self.questions.ndim != 2:
            raise ValueError(
                f"pool questions {self.questions.shape} and answers {self.answers.shape} "
                "must both be (N, seq_len)"
            )
        if len(self.questions) == 0:
            raise ValueError(f"empty training pool ({self.source})")

    def __len__(self) -> int:
        return len(self.questions)

    def fingerprint(self) -> str:
        """Short hash of the pool contents (stored in checkpoints to detect a changed pool)."""
        h = hashlib.sha256(self.questions.tobytes())
        h.update(self.answers.tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> None:
        """Atomic ``.npz`` write (temp file in the same folder + rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, questions=self.questions, answers=self.answers,
                            source=np.array(self.source))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PuzzlePool:
        """Read a pool written by :meth:`save`."""
        with np.load(path) as data:
            return cls(data["questions"].astype(np.int64), data["answers"].astype(np.int64),
                       str(data["source"]))


def build_pool(data: str | None, *, limit: int | None, gen_easy: int, gen_hard: int,
               seed: int, task: Any = SUDOKU) -> PuzzlePool:
    """Load the user's file, or generate a pool with the task's generator.

    Args:
        data: path of a training file the task reads (Sudoku: CSV or one puzzle per line), or None.
        limit: keep a random sample (seeded by ``seed``) of at most this many rows of ``data``;
            the task parses only those (:meth:`~eqsolve.tasks.base.Task.load_training`).
        gen_easy: rows from the task's training generator when ``data`` is None.
        gen_hard: rows from its harder generator (Sudoku's rated ``generate``) when ``data`` is None.
        seed: generator and sampling seed.
        task: task name or :class:`~eqsolve.tasks.base.Task`.

    Returns:
        The pool (answers solved by the loader when the file has none).
    """
    task = get_task(task)
    if data is not None:
        path = Path(data)
        if not path.is_file() and not path.is_dir():
            raise ValueError(f"training data file not found: {path}")
        loaded = task.load_training(str(path), limit=limit, seed=seed)
        return PuzzlePool(loaded.questions, loaded.answers,
                          pool_source(data, gen_easy, gen_hard, seed, rows=len(loaded), task=task))
    generated = task.generate_pool(gen_easy, seed, hard=gen_hard)
    return PuzzlePool(generated.questions, generated.answers,
                      pool_source(None, gen_easy, gen_hard, seed, task=task))


def pool_source(data: str | None, gen_easy: int, gen_hard: int, seed: int, rows: int = 0,
                task: Any = SUDOKU) -> str:
    """The ``source`` string :func:`build_pool` gives a pool (what a cached ``pool.npz`` matches).

    Args:
        data: the training file, or None for a generated pool.
        gen_easy, gen_hard, seed: the generator settings (used when ``data`` is None).
        rows: rows loaded from ``data``.
        task: task name or object (its :meth:`~eqsolve.tasks.base.Task.pool_source`).

    Examples:
        >>> pool_source(None, 2000, 0, 0)
        'generate_easy(2000, seed=0)'
        >>> pool_source("a.csv", 2000, 0, 0, rows=5)
        'file a.csv (5 rows)'
    """
    if data is not None:
        return f"file {Path(data)} ({rows} rows)"
    return get_task(task).pool_source(gen_easy, seed, hard=gen_hard)


def reveal_bound(step: int, start: float, end: float, steps: int) -> float:
    """Curriculum: the largest fraction of blanks revealed at ``step`` (linear start -> end).

    Examples:
        >>> reveal_bound(0, 0.8, 0.0, 10), reveal_bound(5, 0.8, 0.0, 10), reveal_bound(99, 0.8, 0.0, 10)
        (0.8, 0.4, 0.0)
    """
    t = min(max(step / steps, 0.0), 1.0)
    return start + (end - start) * t


def draw_puzzle(pool: PuzzlePool, *, seed: int, key: tuple[int, ...], reveal_max: float,
                reveal_prob: float, augment: bool, task: Any = SUDOKU) -> tuple[np.ndarray, np.ndarray]:
    """Draw one training puzzle, determined entirely by ``(seed, *key)``.

    Args:
        pool: the puzzle pool.
        seed: run seed.
        key: identifies the draw (e.g. ``(stream, slot, count)``); any ints >= 0.
        reveal_max: upper bound of the fraction of blanks filled in from the answer (tasks with
            a reveal curriculum only; > 0 on another task is an error).
        reveal_prob: probability that any clue is revealed at all.
        augment: apply one random symmetry of the task (:meth:`~eqsolve.tasks.base.Task.augment`;
            Sudoku: digit permutation, transpose, band/stack/row/column permutations).
        task: task name or object.

    Returns:
        ``(question, answer)`` as ``(seq_len,)`` int64 arrays.
    """
    task = get_task(task)
    rng = np.random.default_rng((seed, *key))
    idx = int(rng.integers(len(pool)))
    q, a = pool.questions[idx].copy(), pool.answers[idx].copy()
    if augment:
        q, a = task.augment(q, a, rng)
    if reveal_max > 0 and not task.supports_reveal:
        raise ValueError(f"reveal curriculum (reveal_max={reveal_max}) asked for task {task.name!r}, "
                         "which has none; set train.reveal_start=0 and train.reveal_end=0")
    if reveal_max > 0 and rng.random() < reveal_prob:
        q = task.reveal(q, a, reveal_max, rng)
    return q, a


def draw_batch(pool: PuzzlePool, keys: list[tuple[int, ...]], *, seed: int, reveal_max: float,
               reveal_prob: float, augment: bool, task: Any = SUDOKU) -> tuple[np.ndarray, np.ndarray]:
    """Draw several puzzles (one key each); returns ``(questions, answers)`` of shape ``(n, seq_len)``.

    Examples:
        >>> pool = PuzzlePool(np.zeros((3, 81), np.int64), np.ones((3, 81), np.int64), "toy")
        >>> draw_batch(pool, [(0, 0), (0, 1)], seed=1, reveal_max=0, reveal_prob=0,
        ...            augment=False)[0].shape
        (2, 81)
    """
    task = get_task(task)
    qs, answers = zip(*(draw_puzzle(pool, seed=seed, key=k, reveal_max=reveal_max,
                                    reveal_prob=reveal_prob, augment=augment, task=task) for k in keys))
    return np.stack(qs), np.stack(answers)


def to_tokens(questions: np.ndarray, answers: np.ndarray, device: torch.device | str = "cpu",
              task: Any = SUDOKU) -> tuple[Tensor, Tensor]:
    """Model tokens for inputs (``task.encode``) and labels (``task.targets``).

    Sudoku's are the official encoding: blank 1, digit d -> d + 1.

    Examples:
        >>> t, l = to_tokens(np.zeros((1, 81), np.int64), np.full((1, 81), 9))
        >>> int(t[0, 0]), int(l[0, 0])
        (1, 10)
    """
    task = get_task(task)
    return task.encode(questions).to(device), task.targets(answers).to(device)

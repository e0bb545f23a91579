"""Training data for Sudoku reasoners: a puzzle pool and a deterministic, resumable draw.

The pool is either a user's file (``--data``: Sudoku-Extreme CSV or one puzzle per line) or
puzzles from the project's generator, built once per run and cached as ``pool.npz`` in the run
folder (so a resumed run trains on the very same puzzles).

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

import numpy as np
import torch
from torch import Tensor

__all__ = ["PuzzlePool", "build_pool", "draw_puzzle", "draw_batch", "reveal_bound", "to_tokens"]


@dataclass
class PuzzlePool:
    """Questions and answers as ``(N, 81)`` int64 digit arrays (0 = blank), with provenance.

    Attributes:
        questions: ``(N, 81)`` puzzles.
        answers: ``(N, 81)`` solutions.
        source: human-readable description (file or generator call).
    """

    questions: np.ndarray
    answers: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.questions.shape != self.answers.shape or self.questions.ndim != 2:
            raise ValueError(
                f"pool questions {self.questions.shape} and answers {self.answers.shape} "
                "must both be (N, 81)"
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
               seed: int) -> PuzzlePool:
    """Load the user's file, or generate a pool with the project's Sudoku generator.

    Args:
        data: path of a Sudoku-Extreme CSV or a plain one-puzzle-per-line file, or None.
        limit: keep at most this many rows of ``data``.
        gen_easy: number of generated easy puzzles (``generate_easy``) when ``data`` is None.
        gen_hard: number of generated rated puzzles (``generate``) when ``data`` is None.
        seed: generator seed.

    Returns:
        The pool (answers solved by the loader when the file has none).
    """
    from eqsolve.tasks.sudoku_generator import generate_easy

    if data is not None:
        from eqsolve.tasks.sudoku_io import load_any

        path = Path(data)
        if not path.is_file():
            raise ValueError(f"training data file not found: {path}")
        # unique=False: a puzzle paired with one of its solutions is still a correct target, and
        # proving uniqueness would cost ~5 ms per row of files with millions of rows
        loaded = load_any(path, unique=False)
        questions, answers = np.asarray(loaded.questions), np.asarray(loaded.answers)
        if limit is not None:
            questions, answers = questions[:limit], answers[:limit]
        return PuzzlePool(questions.astype(np.int64), answers.astype(np.int64),
                          pool_source(data, gen_easy, gen_hard, seed, rows=len(questions)))
    parts_q, parts_a = [], []
    if gen_easy:
        easy = generate_easy(gen_easy, seed=seed)
        parts_q.append(np.asarray([q for q, _, _ in easy]))
        parts_a.append(np.asarray([a for _, a, _ in easy]))
    if gen_hard:
        from eqsolve.tasks.sudoku import generate

        hard = generate(gen_hard, seed=seed + 1)
        parts_q.append(np.asarray([q for q, _, _ in hard]))
        parts_a.append(np.asarray([a for _, a, _ in hard]))
    questions = np.concatenate(parts_q).reshape(-1, 81).astype(np.int64)
    answers = np.concatenate(parts_a).reshape(-1, 81).astype(np.int64)
    return PuzzlePool(questions, answers, pool_source(None, gen_easy, gen_hard, seed))


def pool_source(data: str | None, gen_easy: int, gen_hard: int, seed: int, rows: int = 0) -> str:
    """The ``source`` string :func:`build_pool` gives a pool (what a cached ``pool.npz`` matches).

    Args:
        data: the training file, or None for a generated pool.
        gen_easy, gen_hard, seed: the generator settings (used when ``data`` is None).
        rows: rows loaded from ``data``.

    Examples:
        >>> pool_source(None, 2000, 0, 0)
        'generate_easy(2000, seed=0)'
        >>> pool_source("a.csv", 2000, 0, 0, rows=5)
        'file a.csv (5 rows)'
    """
    if data is not None:
        return f"file {Path(data)} ({rows} rows)"
    desc = []
    if gen_easy:
        desc.append(f"generate_easy({gen_easy}, seed={seed})")
    if gen_hard:
        desc.append(f"generate({gen_hard}, seed={seed + 1})")
    return " + ".join(desc)


def reveal_bound(step: int, start: float, end: float, steps: int) -> float:
    """Curriculum: the largest fraction of blanks revealed at ``step`` (linear start -> end).

    Examples:
        >>> reveal_bound(0, 0.8, 0.0, 10), reveal_bound(5, 0.8, 0.0, 10), reveal_bound(99, 0.8, 0.0, 10)
        (0.8, 0.4, 0.0)
    """
    t = min(max(step / steps, 0.0), 1.0)
    return start + (end - start) * t


def draw_puzzle(pool: PuzzlePool, *, seed: int, key: tuple[int, ...], reveal_max: float,
                reveal_prob: float, augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """Draw one training puzzle, determined entirely by ``(seed, *key)``.

    Args:
        pool: the puzzle pool.
        seed: run seed.
        key: identifies the draw (e.g. ``(stream, slot, count)``); any ints >= 0.
        reveal_max: upper bound of the fraction of blanks filled in from the answer.
        reveal_prob: probability that any clue is revealed at all.
        augment: apply a random symmetry (digit permutation, transpose, band/stack/row/column
            permutations) via :func:`eqsolve.tasks.sudoku.augment`.

    Returns:
        ``(question, answer)`` as ``(81,)`` int64 arrays.
    """
    rng = np.random.default_rng((seed, *key))
    idx = int(rng.integers(len(pool)))
    q, a = pool.questions[idx].copy(), pool.answers[idx].copy()
    if augment:
        from eqsolve.tasks.sudoku import augment as sudoku_augment

        q, a = sudoku_augment(q, a, rng)
        q, a = np.asarray(q, dtype=np.int64), np.asarray(a, dtype=np.int64)
    if reveal_max > 0 and rng.random() < reveal_prob:
        blanks = np.flatnonzero(q == 0)
        n = int(round(rng.uniform(0.0, reveal_max) * len(blanks)))
        if n:
            cells = rng.choice(blanks, size=n, replace=False)
            q[cells] = a[cells]
    return q, a


def draw_batch(pool: PuzzlePool, keys: list[tuple[int, ...]], *, seed: int, reveal_max: float,
               reveal_prob: float, augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """Draw several puzzles (one key each); returns ``(questions, answers)`` of shape ``(n, 81)``.

    Examples:
        >>> pool = PuzzlePool(np.zeros((3, 81), np.int64), np.ones((3, 81), np.int64), "toy")
        >>> draw_batch(pool, [(0, 0), (0, 1)], seed=1, reveal_max=0, reveal_prob=0,
        ...            augment=False)[0].shape
        (2, 81)
    """
    qs, answers = zip(*(draw_puzzle(pool, seed=seed, key=k, reveal_max=reveal_max,
                                    reveal_prob=reveal_prob, augment=augment) for k in keys))
    return np.stack(qs), np.stack(answers)


def to_tokens(questions: np.ndarray, answers: np.ndarray, device: torch.device | str = "cpu"
              ) -> tuple[Tensor, Tensor]:
    """Model tokens (official encoding: blank 1, digit d -> d + 1) for inputs and labels.

    Examples:
        >>> t, l = to_tokens(np.zeros((1, 81), np.int64), np.full((1, 81), 9))
        >>> int(t[0, 0]), int(l[0, 0])
        (1, 10)
    """
    from eqsolve.tasks.sudoku_board import encode_tokens

    return encode_tokens(questions).to(device), encode_tokens(answers).to(device)

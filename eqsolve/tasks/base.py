"""The task protocol: everything bench, train, diagnose and scaling need to know about a task.

A task is one small object (a subclass of :class:`Task`, registered by name). It says how to
read its data (:meth:`Task.load`, validated by the task's loaders), how questions and answers
become model tokens (:meth:`Task.encode`, :meth:`Task.targets`), how logits become answers
(:meth:`Task.predict`), the exact-accuracy rule (:meth:`Task.check_batch`), difficulty buckets
(:meth:`Task.bucket`), the default model / training / bench presets (names of
``eqsolve/conf/<group>/*.yaml``), a training pool source (:meth:`Task.generate_pool`, seeded)
and its augmentation (:meth:`Task.augment`, one random symmetry per draw). Adding a task is
defining a subclass and calling :func:`register_task`; no file of the core changes.

Arrays: questions and answers are ``(N, seq_len)`` int64 arrays in the task's *answer space*
(Sudoku: digits, 0 = blank; Maze: the grid codes, which are also its tokens). Predictions are
``(N, seq_len)`` tensors in that same space, so ``predictions == answers`` cell by cell is
meaningful (the bench's ``any_correct`` oracle and diagnose's census use it).

Examples:
    >>> sorted(available_tasks())
    ['maze-unique', 'sudoku-extreme']
    >>> get_task("sudoku-extreme").seq_len
    81
    >>> get_task("chess")
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'chess'; valid: maze-unique, sudoku-extreme
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from eqsolve._errors import unknown_key

__all__ = ["Task", "TaskData", "available_tasks", "get_task", "register_task"]


@dataclass
class TaskData:
    """Puzzles of one task: questions, answers and ratings, row-aligned.

    Attributes:
        questions: ``(N, seq_len)`` int64, the task's answer space (see the module).
        answers: ``(N, seq_len)`` int64 answers.
        ratings: ``(N,)`` int64 difficulty (what :meth:`Task.bucket` reads; -1: unknown).
        source: Where the rows came from (a file, a generator call).

    Examples:
        >>> d = TaskData(np.zeros((3, 4)), np.ones((3, 4)), np.arange(3), "toy")
        >>> len(d.head(2)), d.questions.dtype.name, d.subset([2]).ratings.tolist()
        (2, 'int64', [2])
    """

    questions: np.ndarray
    answers: np.ndarray
    ratings: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.questions)
        self.questions = np.asarray(self.questions, dtype=np.int64).reshape(n, -1)
        self.answers = np.asarray(self.answers, dtype=np.int64).reshape(len(self.answers), -1)
        ratings = np.full(n, -1) if self.ratings is None else self.ratings
        self.ratings = np.asarray(ratings, dtype=np.int64).reshape(-1)
        if self.answers.shape != self.questions.shape or len(self.ratings) != n:
            raise ValueError(f"task data disagree in shape: questions {self.questions.shape}, answers "
                             f"{self.answers.shape}, {len(self.ratings)} ratings ({self.source})")

    def __len__(self) -> int:
        return len(self.questions)

    def subset(self, index: Any) -> TaskData:
        """Rows picked by an index array, slice or mask."""
        return TaskData(self.questions[index], self.answers[index], self.ratings[index], self.source)

    def head(self, n: int) -> TaskData:
        """The first ``n`` rows."""
        return self.subset(slice(0, n))


def seeded_subset(n_rows: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random sample of ``limit`` rows, in file order (all rows for ``None``).

    Examples:
        >>> seeded_subset(5, None, 0).tolist(), len(seeded_subset(5, 3, 0))
        ([0, 1, 2, 3, 4], 3)
    """
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=limit, replace=False))


class Task:
    """The protocol of a task; subclass it, set the class attributes and override the methods.

    Class attributes:
        name: The registry name (``--task``).
        seq_len: Cells per puzzle (model sequence length).
        vocab_size: Model token vocabulary.
        buckets: Difficulty bucket names in display order (what :meth:`bucket` returns, plus
            any extra names a data file produces).
        bucket_labels: Short column headings of the bench table per bucket (default: the name).
        model_config: ``eqsolve/conf/model/<name>.yaml`` used to train this task by default.
        train_config: ``eqsolve/conf/train/<name>.yaml`` used to train this task by default.
        bench_config: ``eqsolve/conf/bench/<name>.yaml``, the default bench grid.
        random_model: ``eqsolve/conf/model/<name>.yaml`` under ``checkpoint=random`` in bench
            and diagnose (``None``: ``EqRConfig`` defaults with this task's ``seq_len`` and
            ``vocab_size``).
        shipped_reasoners: ``--model`` name -> file of a reasoner trained on this task.
        supports_reveal: Whether :meth:`reveal` (the training curriculum of extra clues) exists.
    """

    name: ClassVar[str] = ""
    seq_len: ClassVar[int] = 0
    vocab_size: ClassVar[int] = 0
    buckets: ClassVar[tuple[str, ...]] = ("all",)
    bucket_labels: ClassVar[Mapping[str, str]] = {}
    model_config: ClassVar[str] = "small"
    train_config: ClassVar[str] = "small"
    bench_config: ClassVar[str] = "default"
    random_model: ClassVar[str | None] = None
    shipped_reasoners: ClassVar[Mapping[str, Any]] = {}
    supports_reveal: ClassVar[bool] = False

    # ------------------------------------------------------------------ data
    def load(self, path: str | None, *, limit: int | None = None, seed: int = 0,
             min_rating: int | None = None) -> TaskData:
        """Read ``path`` (``None``: the shipped eval set), keep a seeded sample of ``limit`` rows.

        Bad input is a ``ValueError`` naming the file and line (the task's loaders validate).
        """
        raise NotImplementedError(f"task {self.name!r} does not define load()")

    def load_training(self, path: str, *, limit: int | None = None, seed: int = 0) -> TaskData:
        """Training rows of ``path``: at most ``limit`` of them (``seed`` for tasks that sample).

        The default reads the whole file with :meth:`load` and keeps the first ``limit`` rows; a
        task with large training files should sample before parsing (Sudoku does).
        """
        data = self.load(path)
        return data if limit is None else data.head(limit)

    def generate_pool(self, n: int, seed: int, *, hard: int = 0) -> TaskData:
        """A training pool from the task's generator, seeded, excluding the eval set's puzzles.

        Args:
            n: Rows from the task's training generator (``train.gen_easy``).
            seed: Generator seed.
            hard: Rows from a second, harder generator (``train.gen_hard``), where there is one.
        """
        raise NotImplementedError(f"task {self.name!r} has no generator; pass train.data=FILE")

    def pool_source(self, n: int, seed: int, *, hard: int = 0) -> str:
        """The ``source`` string of :meth:`generate_pool` (what a cached pool must match)."""
        return f"{self.name}.generate_pool({n}, seed={seed}, hard={hard})"

    # ------------------------------------------------------------------ tokens and answers
    def encode(self, questions: Any) -> Tensor:
        """Model input tokens ``(N, seq_len)`` LongTensor of questions."""
        raise NotImplementedError(f"task {self.name!r} does not define encode()")

    def targets(self, answers: Any) -> Tensor:
        """Label tokens ``(N, seq_len)`` LongTensor for the loss (default: :meth:`encode`)."""
        return self.encode(answers)

    def predict(self, logits: Tensor) -> Tensor:
        """Answers ``(..., seq_len)`` in the answer space from logits ``(..., seq_len, vocab)``."""
        return logits.argmax(-1)

    def predictor(self, model: Any) -> Callable[[Tensor], Tensor]:
        """``state -> predictions`` for :func:`eqsolve.scaling.solve_many` (``predict=``)."""
        return lambda s: self.predict(model.decode(s))

    def check_batch(self, predictions: Any, questions: Any) -> np.ndarray:
        """The exact-accuracy rule: ``(N,)`` bool, whether each prediction solves its question."""
        raise NotImplementedError(f"task {self.name!r} does not define check_batch()")

    def scored_cells(self, tokens: Tensor) -> Tensor:
        """Cells counted by the cell accuracy (``(N, seq_len)`` bool; default: all)."""
        return torch.ones_like(tokens, dtype=torch.bool)

    def bucket(self, ratings: Any) -> list[str]:
        """Difficulty bucket name per puzzle."""
        return [self.buckets[0]] * len(np.asarray(ratings).reshape(-1))

    def bucket_names(self, names: Any = ()) -> list[str]:
        """:attr:`buckets`, then any other name in ``names`` (in first-seen order)."""
        out = list(self.buckets)
        for name in names:
            if name not in out:
                out.append(str(name))
        return out

    # ------------------------------------------------------------------ training draws
    def augment(self, question: np.ndarray, answer: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One random symmetry of one ``(seq_len,)`` question/answer pair (default: none)."""
        return question, answer

    def reveal(self, question: np.ndarray, answer: np.ndarray, fraction: float,
               rng: np.random.Generator) -> np.ndarray:
        """Copy up to ``fraction`` of the answer's missing cells into the question (curriculum)."""
        raise ValueError(f"task {self.name!r} has no reveal curriculum; set train.reveal_start=0 "
                         "and train.reveal_end=0")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, seq_len={self.seq_len}, vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------- registry
@dataclass
class _Registry:
    tasks: dict[str, Task] = field(default_factory=dict)
    builtins_loaded: bool = False


_REGISTRY = _Registry()
#: Modules that register the shipped tasks when imported (loaded on first use of the registry).
_BUILTIN_MODULES = ("eqsolve.tasks.sudoku.task", "eqsolve.tasks.maze.task")


def _load_builtins() -> None:
    if not _REGISTRY.builtins_loaded:
        _REGISTRY.builtins_loaded = True  # first: the modules call register_task while importing
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Register ``task`` under ``task.name`` (an existing name needs ``replace=True``).

    Returns:
        ``task``, so that a module can write ``TASK = register_task(MyTask())``.

    Raises:
        TypeError: ``task`` is not a :class:`Task` instance.
        ValueError: a bad name, a bad size, or a name already taken.
    """
    if not isinstance(task, Task):
        raise TypeError(f"register_task needs a Task instance, got {type(task).__name__}")
    if not (isinstance(task.name, str) and task.name and task.name.strip() == task.name):
        raise ValueError(f"a task needs a non-empty name, got {task.name!r}")
    for attr in ("seq_len", "vocab_size"):
        value = getattr(task, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"task {task.name!r}: {attr} must be a positive int, got {value!r}")
    _load_builtins()
    if task.name in _REGISTRY.tasks and not replace and _REGISTRY.tasks[task.name] is not task:
        raise ValueError(f"task {task.name!r} is already registered; pass replace=True to replace it")
    _REGISTRY.tasks[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task (tests that register a toy task clean up with this)."""
    _REGISTRY.tasks.pop(name, None)


def available_tasks() -> list[str]:
    """Registered task names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY.tasks)


def get_task(name: str | Task) -> Task:
    """The registered task ``name`` (a :class:`Task` passes through).

    Raises:
        ValueError: ``unknown task 'x'; valid: ...``.
    """
    if isinstance(name, Task):
        return name
    _load_builtins()
    task = _REGISTRY.tasks.get(name)
    if task is None:
        raise ValueError(unknown_key("task", name, available_tasks()))
    return task

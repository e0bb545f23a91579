"""The Sudoku data set record: :class:`SudokuSet` (questions, answers, ratings, sources).

Examples:
    >>> import numpy as np
    >>> data = SudokuSet(np.zeros((2, 81)), np.ones((2, 81)), np.array([3, 4]))
    >>> len(data), data.sources, data.subset([1]).ratings.tolist()
    (2, ['unknown', 'unknown'], [4])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SudokuSet"]


@dataclass
class SudokuSet:
    """A set of puzzles with solutions and ratings.

    Attributes:
        questions: (N, 81) int64 digits, 0 for blanks.
        answers: (N, 81) int64 digits 1..9.
        ratings: (N,) int64 difficulty ratings (backtrack counts; see ``source`` for the scale).
        sources: N strings naming where each row came from.
    """

    questions: np.ndarray
    answers: np.ndarray
    ratings: np.ndarray
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.questions)
        self.questions = np.asarray(self.questions, dtype=np.int64).reshape(n, 81)
        self.answers = np.asarray(self.answers, dtype=np.int64).reshape(n, 81)
        self.ratings = np.asarray(self.ratings, dtype=np.int64).reshape(n)
        if not self.sources:
            self.sources = ["unknown"] * n
        if len(self.answers) != n or len(self.sources) != n:
            raise ValueError(
                f"SudokuSet fields disagree in length: {n} questions, {len(self.answers)} "
                f"answers, {len(self.ratings)} ratings, {len(self.sources)} sources"
            )

    def __len__(self) -> int:
        return len(self.questions)

    @classmethod
    def from_items(cls, items: list[tuple[Any, Any, int]], source: str) -> SudokuSet:
        """Builds a set from ``(question, answer, rating)`` items, e.g. a generator's output.

        Examples:
            >>> from eqsolve.tasks.sudoku import generate_easy
            >>> len(SudokuSet.from_items(generate_easy(2, seed=0), "easy"))
            2
        """
        if not items:
            empty = np.zeros((0, 81), dtype=np.int64)
            return cls(empty, empty.copy(), np.zeros(0, dtype=np.int64), [])
        q = np.stack([np.asarray(i[0]) for i in items])
        a = np.stack([np.asarray(i[1]) for i in items])
        r = np.array([int(i[2]) for i in items])
        return cls(q, a, r, [source] * len(items))

    def subset(self, index: Any) -> SudokuSet:
        """Rows selected by an index array or boolean mask."""
        idx = np.arange(len(self))[index]
        return SudokuSet(
            self.questions[idx],
            self.answers[idx],
            self.ratings[idx],
            [self.sources[i] for i in idx],
        )

    def tokens(self):
        """(questions, answers) as official model tokens, two (N, 81) LongTensors."""
        from .board import encode_tokens

        return encode_tokens(self.questions), encode_tokens(self.answers)

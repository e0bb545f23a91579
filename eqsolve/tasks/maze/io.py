"""Maze data sets: the :class:`MazeSet` record, validated loaders, the hub download, the shipped set.

File formats (every loader validates every record; a bad one is a ``ValueError`` reading
``path:line: problem``, never skipped):

- **CSV** (the exchange format; HRM's ``maze-30x30-hard-1k`` and the shipped eval set): header
  ``source,question,answer,rating``; ``question``/``answer`` are 900-character row-major strings
  of ``#`` wall, space open, ``S`` start, ``G`` goal, ``o`` path (answers). Only ``question``
  is required; an empty or absent ``answer`` is solved by BFS. ``rating`` is an integer (this
  project writes the path length in moves); ``source`` is free text. Empty lines are not records.
- **JSONL**: one JSON object per line with the same keys; a grid is a 900-character string or a
  list of 30 row strings.
- **Text** (``.txt``): questions only, each 30 lines of 30 symbols (``.`` or space open),
  mazes separated by blank lines; answers are solved.
- **Official arrays** (EqR/HRM preprocessed folder, :func:`load_npy_dir`; the EqR authors'
  Maze-Unique split comes this way from :func:`fetch_maze_unique`): ``all__inputs.npy`` and
  ``all__labels.npy``, ``(N, 900)`` tokens (0 pad, 1..5 = ``# SGo``), and ``dataset.json``;
  the "line" of an error is the 1-based record number.

Checks: a 30 × 30 grid (else "non-square"/wrong size), known symbols, exactly one ``S`` and one
``G``, no ``o`` in a question, ``G`` reachable from ``S``, and an answer that is the question
plus the ``o`` cells of a shortest path (:func:`eqsolve.tasks.maze.solver.answer_problems`).
With ``unique=True`` the shortest path must also be unique (Maze-Unique).

Examples:
    >>> import tempfile
    >>> from eqsolve.tasks.maze.generator import generate
    >>> path = Path(tempfile.mkdtemp()) / "mazes.csv"
    >>> save_csv(generate(2, seed=0), path)
    >>> data = load_csv(path, unique=True)
    >>> len(data), data.questions.shape, bool((data.lengths >= 100).all())
    (2, (2, 30, 30), True)
    >>> _ = path.write_text("source,question\\nx," + "#" * 841 + "\\n")
    >>> load_csv(path)
    Traceback (most recent call last):
    ...
    ValueError: .../mazes.csv:2: bad question: a 29×29 grid (841 cells), expected 30×30
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._io import write_rows
from .grid import (
    CHARSET,
    SIDE,
    as_grids,
    encode_tokens,
    grid_to_string,
    parse_grid,
    question_problem,
)
from .solver import answer_problems, path_length, shortest_distance, solve, unique_shortest_path
from .symmetry import canonical_keys

__all__ = [
    "EQR_DATA_REPO",
    "EQR_MAZE_FOLDER",
    "EVAL_SET_PATH",
    "HRM_MAZE_REPO",
    "MazeSet",
    "default_eval_set",
    "eval_set_keys",
    "fetch_maze_csv",
    "fetch_maze_unique",
    "load_any",
    "load_csv",
    "load_jsonl",
    "load_npy_dir",
    "load_text",
    "save_csv",
]

EVAL_SET_PATH = Path(__file__).resolve().parents[2] / "assets" / "maze_unique_eval.csv"
#: HRM's 30x30 maze set on the HuggingFace hub (``train.csv``, ``test.csv``; this CSV layout).
HRM_MAZE_REPO = "sapientinc/maze-30x30-hard-1k"
#: The EqR authors' data repository on the HuggingFace hub (``scripts/download_artifacts.sh`` of
#: locuslab/EqR) and the folder of its Maze-Unique set (``config/dataset/maze_unique.yaml``).
EQR_DATA_REPO = "locuslab/EqR-data"
EQR_MAZE_FOLDER = "maze-30x30-unique-1k"


@dataclass
class MazeSet:
    """Mazes with their answers.

    Attributes:
        questions: ``(N, 30, 30)`` uint8 codes (tokens), see :mod:`eqsolve.tasks.maze.grid`.
        answers: ``(N, 30, 30)`` uint8 codes: the question with the path's cells set to ``o``.
        lengths: ``(N,)`` int64 shortest-path lengths in moves (derived from the answers).
        sources: ``N`` strings naming where each maze came from.
        ratings: ``(N,)`` int64 ``rating`` column as read (the length when absent or generated).
    """

    questions: np.ndarray
    answers: np.ndarray
    lengths: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)
    ratings: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.questions = as_grids(self.questions).copy()
        self.answers = as_grids(self.answers).copy()
        n = len(self.questions)
        if self.lengths is None:
            self.lengths = path_length(self.answers) if n else np.zeros(0, np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64).reshape(-1)
        self.ratings = self.lengths.copy() if self.ratings is None else np.asarray(self.ratings, np.int64).reshape(-1)
        if not self.sources:
            self.sources = ["unknown"] * n
        sizes = {len(self.answers), len(self.lengths), len(self.sources), len(self.ratings)}
        if sizes != {n}:
            raise ValueError(f"MazeSet fields disagree in length: {n} questions, {len(self.answers)} "
                             f"answers, {len(self.lengths)} lengths, {len(self.sources)} sources")

    def __len__(self) -> int:
        return len(self.questions)

    @classmethod
    def empty(cls) -> MazeSet:
        """A set with no mazes."""
        z = np.zeros((0, SIDE, SIDE), np.uint8)
        return cls(z, z.copy(), np.zeros(0, np.int64), [])

    def subset(self, index: Any) -> MazeSet:
        """Rows selected by an index array or boolean mask."""
        idx = np.arange(len(self))[index]
        return MazeSet(self.questions[idx], self.answers[idx], self.lengths[idx],
                       [self.sources[i] for i in idx], self.ratings[idx])

    def tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(questions, answers)`` as model tokens, two ``(N, 900)`` LongTensors (inputs, targets)."""
        return encode_tokens(self.questions), encode_tokens(self.answers)


def _error(path: Path, line: int, msg: str) -> ValueError:
    return ValueError(f"{path}:{line}: {msg}")


def _grid(text: Any, path: Path, line: int, what: str) -> np.ndarray:
    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        text = "\n".join(text)
    if not isinstance(text, str):
        raise _error(path, line, f"bad {what}: expected a string or a list of row strings, got {type(text).__name__}")
    try:
        return parse_grid(text)
    except ValueError as exc:
        raise _error(path, line, f"bad {what}: {exc}") from None


def _finish(path: Path, lines: list[int], questions: list[np.ndarray], answers: list[np.ndarray | None],
            sources: list[str], ratings: list[int | None], unique: bool) -> MazeSet:
    """Validates parsed records together (batched BFS) and raises on the first bad one."""
    if not questions:
        return MazeSet.empty()
    for q, line in zip(questions, lines):
        problem = question_problem(q)
        if problem:
            raise _error(path, line, f"bad question: {problem}")
    q = np.stack(questions)
    dist = shortest_distance(q)
    for i in np.flatnonzero(dist < 0)[:1]:
        raise _error(path, lines[i], "goal 'G' unreachable from start 'S'")
    if unique:
        for i in np.flatnonzero(~unique_shortest_path(q))[:1]:
            raise _error(path, lines[i], "the shortest path is not unique (unique=True: Maze-Unique)")
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        solved = solve(q[missing])
        for j, i in enumerate(missing):
            answers[i] = solved[j]
    a = np.stack(answers)
    problems = answer_problems(a, q)
    for i, problem in enumerate(problems):
        if problem:
            raise _error(path, lines[i], f"answer is not a valid shortest path: {problem}")
    lengths = dist.astype(np.int64)
    rating = np.array([lengths[i] if r is None else r for i, r in enumerate(ratings)], np.int64)
    return MazeSet(q, a, lengths, sources, rating)


def _rating(text: Any, path: Path, line: int) -> int | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        raise _error(path, line, f"rating must be an integer, got {text!r}") from None


def load_csv(path: str | os.PathLike, *, unique: bool = False, limit: int | None = None) -> MazeSet:
    """Loads a maze CSV (``source,question,answer,rating``; see the module for the checks).

    Args:
        path: The CSV file.
        unique: Also require a unique shortest path (Maze-Unique files).
        limit: Read only the first ``limit`` records.

    Returns:
        A :class:`MazeSet`.

    Raises:
        ValueError: ``path:line: problem`` for the first bad record or a bad header.
    """
    path = Path(path)
    lines, qs, ans, srcs, rates = [], [], [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or "question" not in header:
            raise _error(path, 1, f"header must name a 'question' column (source,question,answer,rating), got {header}")
        col = {name: i for i, name in enumerate(header)}
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise _error(path, line, f"{len(row)} fields, the header has {len(header)}")
            if limit is not None and len(qs) >= limit:
                break
            qs.append(_grid(row[col["question"]], path, line, "question"))
            answer = row[col["answer"]] if "answer" in col else ""
            ans.append(_grid(answer, path, line, "answer") if answer else None)
            srcs.append(row[col["source"]] if "source" in col else path.name)
            rates.append(_rating(row[col["rating"]], path, line) if "rating" in col else None)
            lines.append(line)
    return _finish(path, lines, qs, ans, srcs, rates, unique)


def load_jsonl(path: str | os.PathLike, *, unique: bool = False, limit: int | None = None) -> MazeSet:
    """Loads a JSONL maze file: one ``{"question", "answer"?, "source"?, "rating"?}`` object a line."""
    path = Path(path)
    lines, qs, ans, srcs, rates = [], [], [], [], []
    with open(path, encoding="utf-8") as fh:
        for line, text in enumerate(fh, 1):
            if not text.strip():
                continue
            if limit is not None and len(qs) >= limit:
                break
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _error(path, line, f"not JSON: {exc.msg}") from None
            if not isinstance(rec, dict) or "question" not in rec:
                raise _error(path, line, "each line must be an object with a 'question'")
            qs.append(_grid(rec["question"], path, line, "question"))
            ans.append(_grid(rec["answer"], path, line, "answer") if rec.get("answer") else None)
            srcs.append(str(rec.get("source", path.name)))
            rates.append(_rating(rec.get("rating"), path, line))
            lines.append(line)
    return _finish(path, lines, qs, ans, srcs, rates, unique)


def load_text(path: str | os.PathLike, *, unique: bool = False) -> MazeSet:
    """Loads questions in the text format (30 lines of 30 symbols each, empty lines between)."""
    path = Path(path)
    blocks: list[tuple[int, list[str]]] = []
    current: tuple[int, list[str]] | None = None
    with open(path, encoding="utf-8") as fh:
        for line, text in enumerate(fh, 1):
            row = text.rstrip("\r\n")
            if row == "":  # only an empty line separates mazes (a row of spaces is a row)
                current = None
                continue
            if current is None:
                current = (line, [])
                blocks.append(current)
            if len(row) != SIDE:
                raise _error(path, line, f"row has {len(row)} symbols, expected {SIDE} (a maze is a {SIDE}×{SIDE} square)")
            bad = next((c for c, ch in enumerate(row) if ch not in CHARSET + "."), None)
            if bad is not None:
                raise _error(path, line, f"unknown symbol {row[bad]!r} at column {bad + 1}")
            current[1].append(row)
            if len(current[1]) > SIDE:
                raise _error(path, line, f"the maze starting at line {current[0]} has more than {SIDE} rows")
    for first, rows in blocks:
        if len(rows) != SIDE:
            raise _error(path, first, f"the maze has {len(rows)} rows, expected {SIDE} (not a square grid)")
    qs = [parse_grid("\n".join(rows)) for _, rows in blocks]
    n = len(qs)
    return _finish(path, [b[0] for b in blocks], qs, [None] * n, [path.name] * n, [None] * n, unique)


def load_npy_dir(folder: str | os.PathLike, *, unique: bool = False) -> MazeSet:
    """Loads an official preprocessed split (``all__inputs.npy``, ``all__labels.npy``; no pickles).

    The layout written by the EqR/HRM ``build_maze_unique_dataset.py``: ``(N, 900)`` uint8 token
    arrays (1..5 = ``# SGo``, row-major), and a ``dataset.json`` whose ``seq_len`` (900) and
    ``vocab_size`` (6) are checked when the file is there.
    """
    folder = Path(folder)
    meta = folder / "dataset.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{meta}: cannot read the split's metadata: {exc}") from None
        expected = {"seq_len": SIDE * SIDE, "vocab_size": len(CHARSET) + 1}
        wrong = {k: info.get(k) for k, v in expected.items() if not isinstance(info, dict) or info.get(k) != v}
        if wrong:
            raise ValueError(f"{meta}: not a 30 × 30 maze split: {wrong} (expected {expected})")
    arrays = []
    for name in ("all__inputs.npy", "all__labels.npy"):
        file = folder / name
        try:
            arr = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{file}: cannot read a numpy array: {exc}") from None
        if arr.ndim != 2 or arr.shape[1] != SIDE * SIDE or arr.dtype.kind not in "iu":
            raise ValueError(f"{file}: expected (N, {SIDE * SIDE}) integer tokens, got {arr.shape} {arr.dtype}")
        arrays.append((file, arr))
    (fq, q), (fa, a) = arrays
    if len(q) != len(a):
        raise ValueError(f"{fa}: {len(a)} labels for {len(q)} inputs")
    qs, ans = [], []
    for k in range(len(q)):
        for file, arr, out in ((fq, q, qs), (fa, a, ans)):
            row = arr[k]
            bad = np.flatnonzero((row < 1) | (row > 5))
            if len(bad):
                raise _error(file, k + 1, f"token {int(row[bad[0]])} at cell {int(bad[0])} is not a maze symbol (1..5)")
            out.append(row.reshape(SIDE, SIDE).astype(np.uint8))
    n = len(qs)
    return _finish(fq, list(range(1, n + 1)), qs, ans, [f"{folder.name}:{k}" for k in range(n)], [None] * n, unique)


def load_any(path: str | os.PathLike, **options: Any) -> MazeSet:
    """Loads by suffix: ``.csv``, ``.jsonl``, ``.txt``, or a folder of official arrays."""
    path = Path(path)
    if path.is_dir():
        return load_npy_dir(path, **options)
    loaders = {".csv": load_csv, ".jsonl": load_jsonl, ".txt": load_text}
    if path.suffix not in loaders:
        raise ValueError(f"{path}: unknown maze file type {path.suffix!r}; use .csv, .jsonl, .txt or a folder")
    return loaders[path.suffix](path, **options)


def save_csv(data: MazeSet, path: str | os.PathLike) -> None:
    """Writes a :class:`MazeSet` as CSV atomically (temp file + rename); ``rating`` is the rating."""
    rows = ([data.sources[i], grid_to_string(data.questions[i]), grid_to_string(data.answers[i]),
             int(data.ratings[i])] for i in range(len(data)))
    write_rows(path, ["source", "question", "answer", "rating"], rows)


def _hub_destination(dest: str | os.PathLike, split: str) -> tuple[Any, Path]:
    """Check the split, import huggingface_hub (``hub`` extra) and create ``dest``: what every fetch does first."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError("downloading mazes needs huggingface_hub: pip install 'eqsolve[hub]'") from exc
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return huggingface_hub, dest


def fetch_maze_csv(dest: str | os.PathLike, split: str = "test", repo_id: str = HRM_MAZE_REPO,
                   revision: str | None = None) -> Path:
    """Downloads a maze CSV split from the HuggingFace hub (``hub`` extra); load it with :func:`load_csv`.

    The default is HRM's ``maze-30x30-hard-1k`` (the layout of this module's CSV format). Its
    mazes use the whole 30 × 30 grid: use ``full=True`` symmetries on them. ``revision`` pins a
    branch, tag or commit of the dataset repository (None: the default branch).

    Raises:
        ImportError: huggingface_hub is not installed (``pip install 'eqsolve[hub]'``).
        ValueError: an unknown split.
    """
    hub, dest = _hub_destination(dest, split)
    return Path(hub.hf_hub_download(repo_id=repo_id, filename=f"{split}.csv", repo_type="dataset", local_dir=dest,
                                    revision=revision))


def fetch_maze_unique(dest: str | os.PathLike, split: str = "test", repo_id: str = EQR_DATA_REPO,
                      revision: str | None = None) -> Path:
    """Downloads the EqR authors' Maze-Unique split (``hub`` extra); load it with :func:`load_npy_dir`.

    The files are the official preprocessed arrays (``all__inputs.npy``, ``all__labels.npy``,
    ``dataset.json``; see :func:`load_npy_dir`) of ``maze-30x30-unique-1k/<split>/`` in
    :data:`EQR_DATA_REPO`, found at the repository's top level or under ``data/``. Only that
    split is downloaded. ``revision`` pins a branch, tag or commit.

    Returns:
        The folder of the split (pass it to ``--data`` or :func:`load_any`).

    Raises:
        ImportError: huggingface_hub is not installed (``pip install 'eqsolve[hub]'``).
        ValueError: an unknown split.
        FileNotFoundError: the repository has no such split (the message names where it looked).
    """
    hub, dest = _hub_destination(dest, split)
    places = [f"{EQR_MAZE_FOLDER}/{split}", f"data/{EQR_MAZE_FOLDER}/{split}"]
    hub.snapshot_download(repo_id=repo_id, repo_type="dataset", local_dir=dest, revision=revision,
                      allow_patterns=[f"{place}/*" for place in places])
    for place in places:
        if (dest / place / "all__inputs.npy").is_file():
            return dest / place
    raise FileNotFoundError(f"{repo_id} has no Maze-Unique {split} split: looked for all__inputs.npy in "
                            + " and ".join(str(dest / place) for place in places))


def default_eval_set(**options: Any) -> MazeSet:
    """The shipped Maze-Unique evaluation set (see ``maze_unique_eval.PROVENANCE.md``).

    Args:
        **options: passed to :func:`load_csv` (``limit``); ``unique`` is always checked.
    """
    if not EVAL_SET_PATH.is_file():
        raise FileNotFoundError(f"the shipped maze evaluation set is missing: {EVAL_SET_PATH}")
    options.setdefault("unique", True)
    return load_csv(EVAL_SET_PATH, **options)


@lru_cache(maxsize=1)
def eval_set_keys() -> frozenset[bytes]:
    """Canonical keys of the shipped evaluation set: pass as ``generate(..., exclude=...)``."""
    return frozenset(canonical_keys(default_eval_set().questions))

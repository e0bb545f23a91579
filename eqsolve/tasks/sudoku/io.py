"""Sudoku files: validated CSV/plain-text loaders and writers, and the shipped evaluation set.

Formats:

- **Sudoku-Extreme CSV** (the exchange format): header ``source,question,answer,rating``.
  ``answer`` and ``rating`` may be absent or empty: missing answers are solved (the puzzle must
  then have exactly one solution), missing ratings are computed with
  :func:`eqsolve.tasks.sudoku.solver.rate` (backtracks of this project's solver, which is
  *not* tdoku's scale: see that module).
- **Plain files**: one puzzle per line (81 characters, ``.`` or ``0`` blank; anything after
  the first whitespace is ignored). Empty lines and lines starting with ``#`` are not data.

Every malformed row is a ``ValueError`` naming ``file:line``; loaders never skip bad rows.
``limit`` stops reading after that many data rows; ``sample`` reads a seeded random sample of
that many data rows instead, from anywhere in the file, and parses only those (the training pool's
``train.data_limit`` on multi-million-row files); ``min_rating`` and ``subsample`` then select
rows explicitly (the benchmark protocol), and ``augment`` appends that many random symmetric
copies per puzzle.

What "validated" means, row by row: the question parses (81 cells, digits or ``.``/``0``), has
at least 17 givens (no Sudoku with fewer has one solution) and no unit repeats a digit; a given
answer parses and is a solution of its question; a rating is a non-negative integer. With
``unique=True`` (the default) every puzzle returned has exactly one solution, proven by
:func:`~eqsolve.tasks.sudoku.solver.solve`: rows without an answer or rating are solved anyway,
the others are checked after ``limit``/``min_rating``/``subsample`` have selected them, at about
5 ms per puzzle (5.6 s for the 1,000 puzzles of the shipped eval set on one busy CPU core).
``unique=False`` trusts the file on that point (the training pool does, for multi-million-row
files; a puzzle paired with one of its solutions is still a correct training target).
Files are UTF-8 (a byte-order mark is accepted); a header must not repeat a column name.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import write_rows
from .board import UNITS, board_to_string, check_batch, find_conflicts, parse_board
from .dataset import SudokuSet
from .solver import solve
from .symmetry import augment_set

__all__ = [
    "load_csv",
    "load_lines",
    "load_any",
    "save_csv",
    "write_csv",
    "EVAL_SET_PATH",
    "default_eval_set",
]

EVAL_SET_PATH = Path(__file__).resolve().parents[2] / "assets" / "sudoku_extreme_eval.csv"
_UNIT_INDEX = np.asarray(UNITS, dtype=np.int64)
#: No Sudoku with fewer givens has a unique solution (McGuire, Tugemann & Civario 2012).
MIN_GIVENS = 17


def _data_error(path: Path, line: int, msg: str) -> ValueError:
    return ValueError(f"{path}:{line}: {msg}")


def _parse_row(text: str, path: Path, line: int, what: str) -> np.ndarray:
    try:
        return parse_board(text, check_givens=False)
    except (ValueError, TypeError) as exc:
        raise _data_error(path, line, f"bad {what}: {exc}") from None


def _parse_many(texts: list[str], path: Path, lines: list[int], what: str) -> np.ndarray:
    """Parses many 81-character strings at once (numpy); a bad row raises with its file:line."""
    out = np.zeros((len(texts), 81), dtype=np.int64)
    if not texts:
        return out
    try:
        buf = "".join(texts).encode("ascii")
    except UnicodeEncodeError:
        buf = b""
    if len(buf) != 81 * len(texts) or any(len(t) != 81 for t in texts):
        for text, line in zip(texts, lines):
            _parse_row(text, path, line, what)  # raises on the first malformed row
    arr = np.frombuffer(buf, dtype=np.uint8).reshape(len(texts), 81)
    digit = (arr >= ord("1")) & (arr <= ord("9"))
    bad = ~(digit | (arr == ord(".")) | (arr == ord("0")))
    if bad.any():
        k = int(np.flatnonzero(bad.any(axis=1))[0])
        _parse_row(texts[k], path, lines[k], what)  # raises with the character and cell
    out[digit] = arr[digit] - ord("0")
    return out


def _check_givens(q: np.ndarray, path: Path, lines: list[int]) -> None:
    """Vectorised check that there are enough givens for a unique solution and that no unit
    repeats a digit; names the first offending row."""
    for start in range(0, len(q), 20000):
        chunk = q[start : start + 20000]
        onehot = (chunk[:, _UNIT_INDEX][..., None] == np.arange(1, 10)).sum(axis=2)  # (n,27,9)
        bad = np.flatnonzero((onehot > 1).any(axis=(1, 2)))
        if bad.size:
            k = start + int(bad[0])
            raise _data_error(path, lines[k], f"contradictory givens: {find_conflicts(q[k])[0]}")
    few = np.flatnonzero((q > 0).sum(axis=1) < MIN_GIVENS)
    if few.size:
        k = int(few[0])
        raise _data_error(path, lines[k], f"only {int((q[k] > 0).sum())} givens: a Sudoku needs at "
                          f"least {MIN_GIVENS} to have one solution (blank cells are '.' or '0')")


def _finish(
    path: Path,
    lines: list[int],
    questions: list[str],
    answers: list[str],
    ratings: list[int | None],
    sources: list[str],
    min_rating: int | None,
    subsample: int | None,
    augment: int,
    seed: int,
    question_label: str = "question",
    unique: bool = True,
) -> SudokuSet:
    """Validates the raw rows (texts; empty answer = missing) and applies the selections; with
    ``unique``, the selected rows whose uniqueness was not proven while solving are checked."""
    n = len(questions)
    q = _parse_many(questions, path, lines, question_label)
    _check_givens(q, path, lines)
    given = [k for k in range(n) if answers[k]]
    a = np.zeros((n, 81), dtype=np.int64)
    a[given] = _parse_many([answers[k] for k in given], path, [lines[k] for k in given], "answer")
    r = np.zeros(n, dtype=np.int64)
    has_answer = np.zeros(n, dtype=bool)
    has_answer[given] = True
    proven = np.zeros(n, dtype=bool)  # rows already solved here (uniqueness known)
    for k in range(n):
        if not has_answer[k] or ratings[k] is None:
            res = solve(q[k], limit=2)
            _require_unique(res.n_solutions, path, lines[k])
            proven[k] = True
            if not has_answer[k]:
                a[k] = res.solution
            if ratings[k] is None:
                ratings[k] = res.n_backtracks
        r[k] = ratings[k]
    ok = check_batch(a, q) if n else np.zeros(0, dtype=bool)
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        raise _data_error(path, lines[k], "answer is not a valid solution of its question")
    keep = np.arange(n)
    if min_rating is not None:
        keep = keep[r >= min_rating]
    if subsample is not None and subsample < len(keep):
        rng = np.random.default_rng(seed)
        keep = keep[np.sort(rng.choice(len(keep), size=subsample, replace=False))]
    if unique:  # only the rows returned: a limit or subsample keeps the cost at ~5 ms per row
        for k in keep[~proven[keep]]:
            _require_unique(solve(q[k], limit=2).n_solutions, path, lines[k])
    data = SudokuSet(q, a, r, sources).subset(keep)
    if augment:

        data = augment_set(data, augment, seed=seed)
    return data


def _require_unique(n_solutions: int, path: Path, line: int) -> None:
    """Raise the ``file:line`` error of a puzzle with no or several solutions."""
    if n_solutions == 0:
        raise _data_error(path, line, "puzzle has no solution")
    if n_solutions > 1:
        raise _data_error(path, line, "puzzle has more than one solution (a Sudoku must have "
                          "exactly one; pass unique=False to trust the file)")


def _decode_error(path: Path, exc: UnicodeDecodeError) -> ValueError:
    """A one-line error for a file that is not UTF-8 text, naming the likely cause."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return ValueError(f"{path}: gzip-compressed, not a text file; decompress it first "
                          f"(gunzip -k {path})")
    return ValueError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}: {exc.reason}); "
                      "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def _sample_rows(count: int, sample: int | None, seed: int) -> set[int] | None:
    """Indices of ``sample`` data rows out of ``count``, drawn without replacement (seeded)."""
    if sample is None or sample >= count:
        return None
    return set(np.random.default_rng(seed).choice(count, size=sample, replace=False).tolist())


def _check_options(limit: int | None, subsample: int | None, augment: int,
                   sample: int | None = None) -> None:
    if limit is not None and sample is not None:
        raise ValueError(f"give limit={limit} (the first rows) or sample={sample} (random rows), not both")
    for name, value in (("limit", limit), ("subsample", subsample), ("sample", sample)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if augment < 0:
        raise ValueError(f"augment must be >= 0, got {augment}")


def load_csv(
    path: str | os.PathLike,
    limit: int | None = None,
    min_rating: int | None = None,
    subsample: int | None = None,
    seed: int = 0,
    augment: int = 0,
    unique: bool = True,
    sample: int | None = None,
) -> SudokuSet:
    """Loads a Sudoku-Extreme CSV (``source,question,answer,rating``; answer/rating optional).

    Args:
        path: the CSV file.
        limit: read at most this many data rows (None: all).
        sample: instead of the first rows, a random sample of this many data rows (seeded by
            ``seed``, in file order); the other rows are read but never parsed or validated.
        min_rating: keep rows whose rating is at least this.
        subsample: then keep a random subset of this size (seeded by ``seed``).
        seed: seed for ``subsample`` and ``augment``.
        augment: random symmetric copies appended per puzzle.
        unique: prove that every returned puzzle has exactly one solution (module doc).

    Returns:
        A :class:`SudokuSet`.

    Raises:
        ValueError: a missing or repeated column, a file that is not UTF-8 CSV, or a malformed
            row (named as ``file:line``).

    Examples:
        >>> data = load_csv(EVAL_SET_PATH, limit=5)
        >>> data.questions.shape
        (5, 81)
    """
    _check_options(limit, subsample, augment, sample)
    path = Path(path)
    lines: list[int] = []
    questions: list[str] = []
    answers: list[str] = []
    ratings: list[int | None] = []
    sources: list[str] = []
    select = None
    if sample is not None:  # a first, cheap pass counts the data rows to draw from
        with open(path, newline="", encoding="utf-8-sig") as fh:
            try:
                count = sum(1 for row in csv.reader(fh) if row and any(c.strip() for c in row)) - 1
            except (UnicodeDecodeError, csv.Error):
                count = 0  # the parsing pass below reports the problem with its line
        select = _sample_rows(max(count, 0), sample, seed)
    # utf-8-sig: a byte-order mark (Excel, Notepad) would otherwise stick to the first column's name
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            _read_csv_rows(reader, path, limit, lines, questions, answers, ratings, sources, select)
        except UnicodeDecodeError as exc:
            raise _decode_error(path, exc) from None
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit(): not a puzzle CSV
            raise _data_error(path, reader.line_num, f"not a readable CSV row ({exc}); a "
                              "Sudoku-Extreme CSV has short fields (81-character grids)") from None
    return _finish(
        path, lines, questions, answers, ratings, sources, min_rating, subsample, augment, seed,
        unique=unique,
    )


def _read_csv_rows(reader: Any, path: Path, limit: int | None, lines: list[int],
                   questions: list[str], answers: list[str], ratings: list[int | None],
                   sources: list[str], select: set[int] | None = None) -> None:
    """Reads the header and the data rows of :func:`load_csv` into the given lists.

    ``select``: indices of the data rows to keep (None: all); the others are not parsed.
    """
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}:1: empty file, expected a header with a 'question' column")
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:  # which of the two would be read is arbitrary: refuse
        raise ValueError(f"{path}:1: column {repeated[0]!r} appears more than once in the header "
                         f"{header}; keep one")
    if "question" not in header:
        raise ValueError(f"{path}:1: no 'question' column in header {header}")
    col = {
        name: header.index(name)
        for name in ("source", "question", "answer", "rating")
        if name in header
    }
    index = -1
    for row in reader:
        if limit is not None and len(questions) >= limit:
            break
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        index += 1
        if select is not None and index not in select:
            continue
        if len(row) != len(header):
            raise _data_error(path, line, f"expected {len(header)} fields, got {len(row)}")
        questions.append(row[col["question"]].strip())
        answers.append(row[col["answer"]].strip() if "answer" in col else "")
        rating_text = row[col["rating"]].strip() if "rating" in col else ""
        if rating_text:
            try:
                rating = int(float(rating_text))
            except (ValueError, OverflowError):  # 'abc' and 'nan' / 'inf'
                raise _data_error(path, line, f"bad rating {rating_text!r}: expected a "
                                  "non-negative integer (or leave it empty)") from None
            if rating < 0:
                raise _data_error(path, line, f"negative rating {rating}")
            ratings.append(rating)
        else:
            ratings.append(None)
        sources.append(row[col["source"]].strip() if "source" in col else path.name)
        lines.append(line)


def load_lines(
    path: str | os.PathLike,
    limit: int | None = None,
    min_rating: int | None = None,
    subsample: int | None = None,
    seed: int = 0,
    augment: int = 0,
    unique: bool = True,
    sample: int | None = None,
) -> SudokuSet:
    """Loads a plain file with one puzzle per line; solves and rates every puzzle.

    Args:
        path: the text file.
        limit, min_rating, subsample, seed, augment, sample: as in :func:`load_csv`.
            ``subsample`` is applied after rating, so prefer ``limit`` or ``sample`` on large
            files (rating costs about 5-30 ms per hard puzzle; only drawn lines are rated).
        unique: accepted for :func:`load_any`; every puzzle is solved, so uniqueness is always
            proven here.

    Returns:
        A :class:`SudokuSet` whose sources are the file name.

    Raises:
        ValueError: a malformed line or a puzzle without a unique solution (``file:line``).
    """
    _check_options(limit, subsample, augment, sample)
    path = Path(path)
    lines: list[int] = []
    questions: list[str] = []

    def is_data(text: str) -> bool:
        stripped = text.strip()
        return bool(stripped) and not stripped.startswith("#")

    try:
        select = None
        if sample is not None:  # a first, cheap pass counts the data lines to draw from
            with open(path, encoding="utf-8-sig") as fh:
                select = _sample_rows(sum(1 for text in fh if is_data(text)), sample, seed)
        with open(path, encoding="utf-8-sig") as fh:
            index = -1
            for line, text in enumerate(fh, start=1):
                if limit is not None and len(questions) >= limit:
                    break
                if not is_data(text):
                    continue
                index += 1
                if select is not None and index not in select:
                    continue
                questions.append(text.strip().split()[0])
                lines.append(line)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    n = len(questions)
    return _finish(
        path,
        lines,
        questions,
        [""] * n,
        [None] * n,
        [path.name] * n,
        min_rating,
        subsample,
        augment,
        seed,
        question_label="puzzle",
    )


def load_any(path: str | os.PathLike, **options: Any) -> SudokuSet:
    """Loads a CSV (``.csv`` or a header with ``question``) or a plain puzzle-per-line file.

    Args:
        path: the file.
        **options: passed to :func:`load_csv` or :func:`load_lines`.

    Returns:
        A :class:`SudokuSet`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Sudoku data file at {path}")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            first = fh.readline()
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    if path.suffix.lower() == ".csv" or "question" in [c.strip() for c in first.split(",")]:
        return load_csv(path, **options)
    return load_lines(path, **options)


def save_csv(data: SudokuSet, path: str | os.PathLike) -> None:
    """Writes a set in the Sudoku-Extreme CSV schema, atomically (temp file + rename).

    Args:
        data: the set.
        path: destination ``.csv``.
    """
    rows = ([data.sources[k], board_to_string(data.questions[k]), board_to_string(data.answers[k]),
             int(data.ratings[k])] for k in range(len(data)))
    write_rows(path, ["source", "question", "answer", "rating"], rows)


def write_csv(path: str | os.PathLike, data: SudokuSet | list, source: str = "generated") -> None:
    """Writes a SudokuSet or generator items ``(question, answer, rating)`` as a CSV, atomically.

    Args:
        path: destination ``.csv``.
        data: a :class:`SudokuSet` or a list of ``(question, answer, rating)`` items.
        source: the ``source`` column for items (a SudokuSet keeps its own sources).
    """
    if not isinstance(data, SudokuSet):
        data = SudokuSet.from_items(list(data), source)
    save_csv(data, path)


def default_eval_set(**options: Any) -> SudokuSet:
    """The shipped evaluation set (generated Sudoku-Extreme-like puzzles, see its PROVENANCE).

    Its puzzles were proven unique when the set was built (``eqsolve.tasks.sudoku.build_eval`` reloads it with
    ``unique=True``) and ``tests/test_assets.py`` proves it again, so the default here skips that
    5 s check; pass ``unique=True`` to repeat it.

    Args:
        **options: passed to :func:`load_csv` (limit, min_rating, subsample, seed, augment,
            unique).

    Returns:
        A :class:`SudokuSet`.
    """
    if not EVAL_SET_PATH.is_file():
        raise FileNotFoundError(f"the shipped evaluation set is missing: {EVAL_SET_PATH}")
    return load_csv(EVAL_SET_PATH, **{"unique": False, **options})

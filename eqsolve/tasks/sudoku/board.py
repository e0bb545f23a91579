"""Sudoku boards: parsing, validation, model tokens and the exact-accuracy checker.

A board is 81 cells in row-major order, each 0 (blank) or a digit 1..9. Boards come in as
81-character strings (``.`` or ``0`` for a blank), 9x9 grids, flat sequences, numpy arrays or
torch tensors. The model's token encoding is the official one of the EqR/TRM release:
0 pad, 1 blank, 2..10 for the digits 1..9.

Difficulty buckets (used for reporting accuracy by difficulty) are defined on the
rating (backtrack count of :func:`eqsolve.tasks.sudoku.solver.rate`):
``"easy"`` for 0..2, ``"medium"`` for 3..20, ``"hard"`` for > 20.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "BLANK_TOKEN",
    "PAD_TOKEN",
    "DIGIT_TOKEN_OFFSET",
    "UNITS",
    "parse_board",
    "parse_boards",
    "board_to_string",
    "find_conflicts",
    "encode_tokens",
    "decode_tokens",
    "is_solution",
    "check_batch",
    "bucket",
]

PAD_TOKEN = 0
BLANK_TOKEN = 1
DIGIT_TOKEN_OFFSET = 1  # token = digit + 1 for digits 1..9

# The 27 units (9 rows, 9 columns, 9 boxes) as tuples of cell indices.
ROWS = tuple(tuple(r * 9 + c for c in range(9)) for r in range(9))
COLS = tuple(tuple(r * 9 + c for r in range(9)) for c in range(9))
BOXES = tuple(
    tuple((br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3))
    for br in range(3)
    for bc in range(3)
)
UNITS = ROWS + COLS + BOXES
_UNIT_INDEX = np.asarray(UNITS, dtype=np.int64)  # (27, 9)

_BLANK_CHARS = {".": 0, "0": 0}


def _parse_string(s: str) -> np.ndarray:
    text = s.strip()
    if len(text) != 81:
        raise ValueError(f"a Sudoku string must have 81 characters, got {len(text)}: {text[:90]!r}")
    out = np.zeros(81, dtype=np.int64)
    for i, ch in enumerate(text):
        if ch in _BLANK_CHARS:
            continue
        if "1" <= ch <= "9":
            out[i] = ord(ch) - 48
        else:
            raise ValueError(
                f"bad character {ch!r} at cell {i} (row {i // 9 + 1}, col {i % 9 + 1}); "
                "allowed: digits 1-9 and '.' or '0' for a blank"
            )
    return out


def parse_board(board: Any, *, check_givens: bool = True) -> np.ndarray:
    """Parses one board into a flat int64 array of 81 cells (0 blank, 1..9 digits).

    Args:
        board: an 81-character string (``.`` or ``0`` blank), a 9x9 or flat sequence of ints,
            a numpy array or a torch tensor of shape (81,) or (9, 9).
        check_givens: also reject boards whose givens repeat a digit in a row, column or box.

    Returns:
        np.ndarray of shape (81,), dtype int64.

    Raises:
        ValueError: wrong length/shape, a value outside 0..9, a bad character, or
            contradictory givens (the message names the offending cell or unit).
        TypeError: an unsupported input type.

    Examples:
        >>> parse_board("1" + "." * 80)[:3].tolist()
        [1, 0, 0]
    """
    if isinstance(board, str):
        out = _parse_string(board)
    else:
        if hasattr(board, "detach"):  # torch tensor, without importing torch here
            board = board.detach().cpu().numpy()
        if isinstance(board, (bytes, bytearray)):
            raise TypeError("pass boards as str, not bytes")
        try:
            arr = np.asarray(board)
        except Exception as exc:  # ragged nested lists
            raise ValueError(f"cannot read a board from {board!r}") from exc
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"a board must hold integers, got dtype {arr.dtype}")
        if arr.size != 81 or arr.shape not in ((81,), (9, 9)):
            raise ValueError(f"a board must have shape (81,) or (9, 9), got {arr.shape}")
        out = arr.reshape(81).astype(np.int64)
        bad = np.flatnonzero((out < 0) | (out > 9))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"cell {i} holds {int(out[i])}, expected 0 (blank) or a digit 1..9")
    if check_givens:
        conflicts = find_conflicts(out)
        if conflicts:
            raise ValueError(f"contradictory givens: {conflicts[0]}")
    return out


def parse_boards(boards: Any, *, check_givens: bool = True) -> np.ndarray:
    """Parses many boards into an (N, 81) int64 array.

    Args:
        boards: a sequence of boards accepted by :func:`parse_board`, or an array/tensor of
            shape (N, 81) or (N, 9, 9).
        check_givens: reject boards with repeated digits in a unit.

    Returns:
        np.ndarray of shape (N, 81), dtype int64.

    Raises:
        ValueError: a malformed board; the message starts with its index in ``boards``.

    Examples:
        >>> parse_boards(["." * 81, "0" * 81]).shape
        (2, 81)
    """
    if hasattr(boards, "detach"):
        boards = boards.detach().cpu().numpy()
    if isinstance(boards, np.ndarray) and boards.ndim >= 2:
        boards = boards.reshape(boards.shape[0], -1)
    out = np.zeros((len(boards), 81), dtype=np.int64)
    for k, b in enumerate(boards):
        try:
            out[k] = parse_board(b, check_givens=check_givens)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"board {k}: {exc}") from None
    return out


def board_to_string(board: Any, blank: str = ".") -> str:
    """Formats a board as an 81-character string.

    Args:
        board: anything :func:`parse_board` accepts.
        blank: the character for blank cells.

    Returns:
        The 81-character string.

    Examples:
        >>> board_to_string([5] + [0] * 80)[:3]
        '5..'
    """
    cells = parse_board(board, check_givens=False)
    return "".join(blank if v == 0 else chr(48 + int(v)) for v in cells)


def find_conflicts(board: np.ndarray) -> list[str]:
    """Lists repeated digits in rows, columns and boxes of a parsed board.

    Args:
        board: (81,) int array, 0 for blanks.

    Returns:
        Human-readable descriptions, empty when the givens are consistent.
    """
    names = ["row", "column", "box"]
    out = []
    for u, unit in enumerate(UNITS):
        seen: dict[int, int] = {}
        for i in unit:
            v = int(board[i])
            if v == 0:
                continue
            if v in seen:
                out.append(
                    f"digit {v} twice in {names[u // 9]} {u % 9 + 1} (cells {seen[v]} and {i})"
                )
            seen[v] = i
    return out


def encode_tokens(boards: Any):
    """Encodes boards as the official model tokens (0 pad, 1 blank, 2..10 digits 1..9).

    Args:
        boards: one board or many (anything :func:`parse_boards` accepts; a single string or
            a (81,)/(9, 9) array is treated as one board).

    Returns:
        torch.LongTensor of shape (N, 81).

    Examples:
        >>> encode_tokens("1" + "." * 80)[0, :2].tolist()
        [2, 1]
    """
    import torch

    digits = _as_digit_batch(boards)
    return torch.from_numpy(digits + DIGIT_TOKEN_OFFSET)


def decode_tokens(tokens: Any) -> np.ndarray:
    """Maps model tokens back to digits (0 blank, 1..9); pad tokens become blanks.

    Args:
        tokens: int tensor/array of shape (N, 81) or (81,) with values 0..10.

    Returns:
        np.ndarray (N, 81) int64 of digits 0..9.

    Raises:
        ValueError: a token outside 0..10.

    Examples:
        >>> decode_tokens([[2, 1] + [0] * 79])[0, :2].tolist()
        [1, 0]
    """
    if hasattr(tokens, "detach"):
        tokens = tokens.detach().cpu().numpy()
    arr = np.asarray(tokens).astype(np.int64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.shape[-1] != 81:
        raise ValueError(f"token rows must have 81 entries, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 10):
        raise ValueError(f"tokens must lie in 0..10, got range {arr.min()}..{arr.max()}")
    return np.maximum(arr - DIGIT_TOKEN_OFFSET, 0)


def _as_digit_batch(boards: Any) -> np.ndarray:
    """One board (string, (81,) or (9, 9)) becomes a batch of one; anything else is a batch."""
    if isinstance(boards, str):
        return parse_board(boards, check_givens=False)[None]
    if hasattr(boards, "detach"):
        boards = boards.detach().cpu().numpy()
    arr = np.asarray(boards) if not isinstance(boards, np.ndarray) else boards
    if arr.dtype.kind in "iu" and arr.shape in ((81,), (9, 9)):
        return parse_board(arr, check_givens=False)[None]
    if arr.dtype.kind in "iu" and arr.ndim >= 2:
        flat = arr.reshape(arr.shape[0], -1).astype(np.int64)
        if flat.shape[1] != 81:
            raise ValueError(f"boards must have 81 cells, got shape {arr.shape}")
        if flat.size and (flat.min() < 0 or flat.max() > 9):
            raise ValueError(f"board digits must lie in 0..9, got range {flat.min()}..{flat.max()}")
        return flat
    return parse_boards(boards, check_givens=False)


def is_solution(answer: Any, question: Any) -> bool:
    """True when ``answer`` is a complete, valid grid that keeps every given of ``question``.

    Args:
        answer: a board (81 digits); blanks make it incomplete.
        question: the puzzle; its non-zero cells are the givens.

    Returns:
        bool.

    Examples:
        >>> is_solution("." * 81, "." * 81)
        False
    """
    a = parse_board(answer, check_givens=False)
    q = parse_board(question, check_givens=False)
    return bool(check_batch(a[None], q[None])[0])


def check_batch(pred_digits: Any, questions: Any) -> np.ndarray:
    """Vectorised exact-accuracy check of predicted grids.

    A row passes when the prediction is complete (all digits 1..9), valid (each row, column and
    box holds every digit once) and consistent (equal to the question at every given).

    Args:
        pred_digits: (N, 81) ints (digits 1..9; anything else counts as wrong), numpy or torch.
        questions: (N, 81) ints, 0 for blanks.

    Returns:
        np.ndarray of shape (N,), dtype bool.

    Raises:
        ValueError: shapes that differ or are not (N, 81).

    Examples:
        >>> check_batch(np.zeros((2, 81), int), np.zeros((2, 81), int)).tolist()
        [False, False]
    """
    pred = _to_int_array(pred_digits)
    q = _to_int_array(questions)
    if pred.shape != q.shape or pred.ndim != 2 or pred.shape[1] != 81:
        raise ValueError(f"expected two (N, 81) arrays, got {pred.shape} and {q.shape}")
    complete = np.all((pred >= 1) & (pred <= 9), axis=1)
    consistent = np.all((q == 0) | (pred == q), axis=1)
    # A unit is valid iff its 9 digits form the set {1..9}: OR of one-hot bits == 0b1111111110.
    bits = np.left_shift(1, np.clip(pred, 0, 15)).astype(np.int64)
    units = bits[:, _UNIT_INDEX]  # (N, 27, 9)
    covered = np.bitwise_or.reduce(units, axis=2)
    valid = np.all(covered == 0b1111111110, axis=1)
    return complete & consistent & valid


def _to_int_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def bucket(rating: int) -> str:
    """Difficulty bucket of a rating (backtrack count): easy 0-2, medium 3-20, hard > 20.

    Args:
        rating: a non-negative backtrack count.

    Returns:
        ``"easy"``, ``"medium"`` or ``"hard"``.

    Examples:
        >>> [bucket(0), bucket(3), bucket(21)]
        ['easy', 'medium', 'hard']
    """
    r = int(rating)
    if r < 0:
        raise ValueError(f"a rating is a non-negative count, got {rating!r}")
    if r <= 2:
        return "easy"
    if r <= 20:
        return "medium"
    return "hard"

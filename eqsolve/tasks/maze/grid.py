"""Maze grids: symbols, the text format, model tokens and per-grid validation.

A maze is a ``30 × 30`` grid of symbols (the layout of HRM's ``maze-30x30-hard-1k`` and of
the EqR paper's Maze-Unique):

======  =====  ==========================================================
symbol  token  meaning
======  =====  ==========================================================
(pad)   0      padding (never in a grid; a prediction of 0 is never correct)
``#``   1      wall
`` ``   2      open cell (``.`` is accepted as an alias when reading)
``S``   3      start
``G``   4      goal
``o``   5      a path cell strictly between ``S`` and ``G`` (answers only)
======  =====  ==========================================================

The tokens are the official ones (HRM/EqR ``CHARSET = "# SGo"``, token = index + 1), so official
arrays and checkpoints read the same. In memory a grid is a ``uint8`` array of these codes, shape
``(30, 30)`` (or ``(N, 30, 30)``); the code *is* the token, so encoding only flattens.

Text format: 30 lines of 30 symbols (one maze); :func:`format_grid` writes ``.`` for open cells
so that editors do not strip meaningful trailing spaces. The CSV format (900-character strings,
row-major) is in :mod:`eqsolve.tasks.maze.io`.

Examples:
    >>> g = parse_grid("#" * 900)
    >>> g.shape, int(g[0, 0]) == WALL
    ((30, 30), True)
    >>> encode_tokens(g[None]).shape
    torch.Size([1, 900])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHARSET",
    "GOAL",
    "OPEN",
    "PAD_TOKEN",
    "PATH",
    "SIDE",
    "START",
    "VOCAB_SIZE",
    "WALL",
    "as_grids",
    "decode_tokens",
    "encode_tokens",
    "format_grid",
    "grid_to_string",
    "logits_to_tokens",
    "parse_grid",
    "question_problem",
]

SIDE = 30
CHARSET = "# SGo"
PAD_TOKEN, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
VOCAB_SIZE = len(CHARSET) + 1

_CHAR_TO_CODE = np.zeros(256, dtype=np.uint8)  # 0 marks an unknown symbol
for _i, _c in enumerate(CHARSET):
    _CHAR_TO_CODE[ord(_c)] = _i + 1
_CHAR_TO_CODE[ord(".")] = OPEN
_CODE_TO_CHAR = np.frombuffer(("?" + CHARSET).encode(), dtype=np.uint8)


def _describe_shape(n: int) -> str:
    side = math.isqrt(n)
    if side * side == n:
        return f"a {side}×{side} grid ({n} cells), expected {SIDE}×{SIDE}"
    return f"{n} cells: not a square grid (expected {SIDE}×{SIDE} = {SIDE * SIDE})"


def parse_grid(text: str) -> np.ndarray:
    """Parses one maze: a 900-character string (row-major) or 30 lines of 30 symbols.

    Args:
        text: The maze. Lines may end in ``\\n`` or ``\\r\\n``; open cells are space or ``.``.

    Returns:
        ``(30, 30)`` uint8 codes.

    Raises:
        ValueError: wrong size or a non-square grid, or an unknown symbol (with its row and column).

    Examples:
        >>> parse_grid("#S" + "." * 897 + "G")[0, :3].tolist()
        [1, 3, 2]
        >>> parse_grid("#" * 899)
        Traceback (most recent call last):
        ...
        ValueError: 899 cells: not a square grid (expected 30×30 = 900)
    """
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) > 1:
        widths = {len(line) for line in lines}
        if len(widths) > 1:
            bad = next(i for i, line in enumerate(lines) if len(line) != len(lines[0]))
            raise ValueError(
                f"rows have different widths: row 1 has {len(lines[0])} symbols, "
                f"row {bad + 1} has {len(lines[bad])} (a maze is {SIDE} rows of {SIDE})"
            )
        if len(lines) != SIDE or len(lines[0]) != SIDE:
            raise ValueError(f"{len(lines)} rows of {len(lines[0])} symbols, expected {SIDE} rows of {SIDE}")
    flat = "".join(lines)
    if len(flat) != SIDE * SIDE:
        raise ValueError(_describe_shape(len(flat)))
    try:
        raw = np.frombuffer(flat.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        raw = None
    codes = None if raw is None else _CHAR_TO_CODE[raw]
    if codes is None or not codes.all():
        pos = next(i for i, ch in enumerate(flat) if ch not in CHARSET + ".")
        raise ValueError(
            f"unknown symbol {flat[pos]!r} at row {pos // SIDE + 1}, column {pos % SIDE + 1} "
            f"(valid: '#' wall, ' ' or '.' open, 'S' start, 'G' goal, 'o' path)"
        )
    return codes.reshape(SIDE, SIDE).copy()


def grid_to_string(grid: Any) -> str:
    """The 900-character row-major string of one grid (the CSV cell; open cells are spaces).

    Examples:
        >>> grid_to_string(parse_grid("S" + "#" * 898 + "G"))[:3]
        'S##'
    """
    g = np.asarray(grid, dtype=np.uint8).reshape(SIDE * SIDE)
    if int(g.max(initial=0)) >= VOCAB_SIZE:
        raise ValueError(f"grid codes must be in [0, {VOCAB_SIZE}), got {int(g.max())}")
    return _CODE_TO_CHAR[g].tobytes().decode("ascii")


def format_grid(grid: Any) -> str:
    """The text format: 30 lines of 30 symbols, ``.`` for open cells, ``?`` for pad/unknown.

    Examples:
        >>> format_grid(parse_grid("S" + " " * 898 + "G")).splitlines()[0][:4]
        'S...'
    """
    s = grid_to_string(grid).replace(" ", ".")
    return "\n".join(s[i : i + SIDE] for i in range(0, SIDE * SIDE, SIDE)) + "\n"


def as_grids(data: Any) -> np.ndarray:
    """Grids ``(N, 30, 30)`` uint8 from grids, tokens ``(N, 900)`` (array or tensor) or strings.

    Examples:
        >>> as_grids(torch.ones(2, 900, dtype=torch.long)).shape
        (2, 30, 30)
    """
    if isinstance(data, str):
        return parse_grid(data)[None]
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], str):
        return np.stack([parse_grid(t) for t in data])
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    arr = np.asarray(data)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"maze grids must be integer codes, got dtype {arr.dtype}")
    if arr.ndim in (1, 2) and arr.shape[-1] == SIDE * SIDE:
        arr = arr.reshape(-1, SIDE, SIDE)
    elif arr.ndim == 2 and arr.shape == (SIDE, SIDE):
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"expected grids (N, {SIDE}, {SIDE}) or tokens (N, {SIDE * SIDE}), got {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= VOCAB_SIZE):
        raise ValueError(f"maze codes must be in [0, {VOCAB_SIZE}), got min {int(arr.min())}, max {int(arr.max())}")
    return arr.astype(np.uint8, copy=False)


def encode_tokens(grids: Any) -> torch.Tensor:
    """Model tokens ``(N, 900)`` LongTensor of grids (questions, or answers as targets).

    Examples:
        >>> encode_tokens(parse_grid("S" + "#" * 898 + "G"))[0, :2].tolist()
        [3, 1]
    """
    return torch.from_numpy(as_grids(grids).reshape(-1, SIDE * SIDE).astype(np.int64))


def decode_tokens(tokens: Any) -> np.ndarray:
    """Grids ``(N, 30, 30)`` uint8 from model tokens (pad stays 0 and never checks as correct).

    Examples:
        >>> decode_tokens(torch.full((1, 900), 1)).shape
        (1, 30, 30)
    """
    return as_grids(tokens)


def logits_to_tokens(logits: torch.Tensor) -> torch.Tensor:
    """Predicted tokens ``(B, L)`` from logits ``(B, L, vocab)``: argmax over the symbols (pad excluded).

    Examples:
        >>> logits_to_tokens(torch.zeros(1, 900, 6)).unique().tolist()
        [1]
    """
    if logits.shape[-1] != VOCAB_SIZE:
        raise ValueError(f"maze logits need {VOCAB_SIZE} classes, got {logits.shape[-1]}")
    return logits[..., 1:].argmax(-1) + 1


def _cells(mask: np.ndarray) -> str:
    return ", ".join(f"(row {r + 1}, col {c + 1})" for r, c in np.argwhere(mask)[:4])


def question_problem(grid: np.ndarray) -> str | None:
    """What is wrong with a question grid's symbols, or ``None`` (reachability is not checked here).

    A question has exactly one ``S`` and one ``G``, and no path symbol ``o``.

    Examples:
        >>> question_problem(parse_grid("#" * 900))
        "no start 'S'"
    """
    for code, name in ((START, "start 'S'"), (GOAL, "goal 'G'")):
        count = int((grid == code).sum())
        if count == 0:
            return f"no {name}"
        if count > 1:
            return f"{count} of {name} (exactly one allowed): {_cells(grid == code)}"
    if (grid == PATH).any():
        return f"path symbol 'o' in a question: {_cells(grid == PATH)}"
    if (grid == PAD_TOKEN).any():
        return f"pad/unknown cells: {_cells(grid == PAD_TOKEN)}"
    return None

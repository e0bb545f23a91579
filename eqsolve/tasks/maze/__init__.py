"""Maze-Unique for eqsolve: 30 × 30 perfect mazes (EqR paper, App. C.2) and HRM-style maze files.

The public API, re-exported explicitly:

- grids and tokens (:mod:`.grid`): :data:`CHARSET`, :data:`PAD_TOKEN`, :data:`WALL`,
  :data:`OPEN`, :data:`START`, :data:`GOAL`, :data:`PATH`, :data:`VOCAB_SIZE`, :data:`SIDE`,
  :func:`parse_grid`, :func:`format_grid`, :func:`grid_to_string`, :func:`as_grids`,
  :func:`encode_tokens`, :func:`decode_tokens`, :func:`logits_to_tokens`
- BFS and the checker (:mod:`.solver`): :func:`solve`, :func:`shortest_distance`,
  :func:`count_shortest_paths`, :func:`unique_shortest_path`, :func:`check_batch`, :func:`answer_problems`, :func:`path_length`
- the generator (:mod:`.generator`): :func:`generate`, :func:`iter_generate`, :func:`carve`
- symmetries (:mod:`.symmetry`): :func:`transform`, :func:`inverse`, :func:`compose`,
  :func:`canonical_keys`, :func:`augment`
- data sets (:mod:`.io`): :class:`MazeSet`, :func:`load_csv`, :func:`load_jsonl`,
  :func:`load_text`, :func:`load_npy_dir`, :func:`load_any`, :func:`save_csv`,
  :func:`fetch_maze_csv` and :func:`fetch_maze_unique` (``hub`` extra), :func:`default_eval_set`, :func:`eval_set_keys`
- :func:`length_bucket`: difficulty buckets by path length

Examples:
    >>> data = generate(1, seed=3)
    >>> q, a = data.tokens()
    >>> q.shape, bool(check_batch(a, q)[0]), bool(check_batch(q, q)[0])
    (torch.Size([1, 900]), True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .generator import ROOMS, carve, generate, iter_generate
from .grid import (
    CHARSET,
    GOAL,
    OPEN,
    PAD_TOKEN,
    PATH,
    SIDE,
    START,
    VOCAB_SIZE,
    WALL,
    as_grids,
    decode_tokens,
    encode_tokens,
    format_grid,
    grid_to_string,
    logits_to_tokens,
    parse_grid,
)
from .io import (
    EVAL_SET_PATH,
    HRM_MAZE_REPO,
    MazeSet,
    default_eval_set,
    eval_set_keys,
    fetch_maze_csv,
    fetch_maze_unique,
    load_any,
    load_csv,
    load_jsonl,
    load_npy_dir,
    load_text,
    save_csv,
)
from .solver import (
    answer_problems,
    check_batch,
    count_shortest_paths,
    path_length,
    shortest_distance,
    solve,
    unique_shortest_path,
)
from .symmetry import NUM_SYMMETRIES, augment, canonical_keys, compose, inverse, transform


def length_bucket(lengths: Any, edges: tuple[int, ...] = (100, 110, 120, 130, 141)) -> list[str]:
    """Difficulty bucket labels by path length in moves (``"100-109"``, ..., ``"other"``).

    Examples:
        >>> length_bucket([100, 119, 140, 12])
        ['100-109', '110-119', '130-140', 'other']
    """
    lengths = np.asarray(lengths).reshape(-1)
    idx = np.searchsorted(np.asarray(edges), lengths, side="right") - 1
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    return [labels[i] if 0 <= i < len(labels) else "other" for i in idx]


__all__ = [
    "CHARSET",
    "EVAL_SET_PATH",
    "GOAL",
    "HRM_MAZE_REPO",
    "NUM_SYMMETRIES",
    "OPEN",
    "PAD_TOKEN",
    "PATH",
    "ROOMS",
    "SIDE",
    "START",
    "VOCAB_SIZE",
    "WALL",
    "MazeSet",
    "answer_problems",
    "as_grids",
    "augment",
    "canonical_keys",
    "carve",
    "check_batch",
    "compose",
    "count_shortest_paths",
    "decode_tokens",
    "default_eval_set",
    "encode_tokens",
    "eval_set_keys",
    "fetch_maze_csv",
    "fetch_maze_unique",
    "format_grid",
    "generate",
    "grid_to_string",
    "inverse",
    "iter_generate",
    "length_bucket",
    "load_any",
    "load_csv",
    "load_jsonl",
    "load_npy_dir",
    "load_text",
    "logits_to_tokens",
    "parse_grid",
    "path_length",
    "save_csv",
    "shortest_distance",
    "solve",
    "transform",
    "unique_shortest_path",
]

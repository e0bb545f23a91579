"""Sudoku for eqsolve: the public facade of the Sudoku task (re-exports only).

- boards: :func:`parse_board`, :func:`encode_tokens`, :func:`decode_tokens`,
  :func:`is_solution`, :func:`check_batch`, :func:`bucket` (:mod:`.board`)
- classical solver and rater: :func:`solve`, :func:`solve_classical`, :func:`rate`
  (:mod:`.solver`)
- generators: :func:`generate_easy` (:mod:`.easy_generator`), :func:`generate` (hard mix,
  :mod:`.generator`)
- symmetries: :func:`augment`, :func:`canonical_form`, :func:`contamination`
  (:mod:`.symmetry`)
- data sets: :class:`SudokuSet`, :func:`load_csv`, :func:`load_lines`, :func:`load_any`,
  :func:`save_csv`, :func:`write_csv`, :func:`fetch_sudoku_extreme`, :func:`default_eval_set` (:mod:`.io`)
"""

from __future__ import annotations

from .board import (
    BLANK_TOKEN,
    PAD_TOKEN,
    board_to_string,
    bucket,
    check_batch,
    decode_tokens,
    encode_tokens,
    find_conflicts,
    is_solution,
    parse_board,
    parse_boards,
)
from .dataset import SudokuSet
from .easy_generator import generate_easy, minimise, random_grid
from .generator import generate, iter_generate
from .hub import fetch_sudoku_extreme
from .io import (
    EVAL_SET_PATH,
    default_eval_set,
    load_any,
    load_csv,
    load_lines,
    save_csv,
    write_csv,
)
from .solver import SolveResult, count_solutions, rate, solve, solve_classical
from .symmetry import (
    apply_symmetry,
    augment,
    augment_set,
    canonical_form,
    contamination,
    random_symmetry,
)

__all__ = [
    "BLANK_TOKEN",
    "PAD_TOKEN",
    "EVAL_SET_PATH",
    "SolveResult",
    "SudokuSet",
    "apply_symmetry",
    "augment",
    "augment_set",
    "board_to_string",
    "bucket",
    "canonical_form",
    "check_batch",
    "contamination",
    "count_solutions",
    "decode_tokens",
    "default_eval_set",
    "encode_tokens",
    "fetch_sudoku_extreme",
    "find_conflicts",
    "generate",
    "generate_easy",
    "iter_generate",
    "is_solution",
    "load_any",
    "load_csv",
    "load_lines",
    "minimise",
    "parse_board",
    "parse_boards",
    "random_grid",
    "random_symmetry",
    "rate",
    "save_csv",
    "solve",
    "solve_classical",
    "write_csv",
]

"""Board parsing, token encoding, the exact-accuracy checker and difficulty buckets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sudoku_cases import WIKI, WIKI_SOLUTION

from eqsolve.tasks.sudoku import (
    board_to_string,
    bucket,
    check_batch,
    decode_tokens,
    encode_tokens,
    is_solution,
    parse_board,
    parse_boards,
)


def test_parse_string_forms_agree():
    dots = parse_board(WIKI)
    zeros = parse_board(WIKI.replace(".", "0"))
    assert dots.shape == (81,) and dots.dtype == np.int64
    np.testing.assert_array_equal(dots, zeros)
    assert dots[:5].tolist() == [5, 3, 0, 0, 7]
    assert board_to_string(dots) == WIKI


def test_parse_grid_tensor_and_flat_forms_agree():
    flat = parse_board(WIKI)
    np.testing.assert_array_equal(parse_board(flat.reshape(9, 9).tolist()), flat)
    np.testing.assert_array_equal(parse_board(torch.from_numpy(flat)), flat)
    np.testing.assert_array_equal(parse_boards(torch.from_numpy(flat).view(1, 9, 9))[0], flat)


@pytest.mark.parametrize(
    ("board", "match"),
    [
        (WIKI[:-1], "81 characters, got 80"),
        (WIKI[:-1] + "x", "bad character 'x' at cell 80"),
        ("55" + "." * 79, "digit 5 twice in row 1"),
        ("5" + "." * 8 + "5" + "." * 71, "digit 5 twice in column 1"),
        ("5" + "." * 9 + "5" + "." * 70, "digit 5 twice in box 1"),
        ([0] * 80 + [10], "cell 80 holds 10"),
        ([0] * 80, r"shape \(81,\) or \(9, 9\)"),
    ],
)
def test_parse_rejects_malformed_boards(board, match):
    with pytest.raises(ValueError, match=match):
        parse_board(board)


def test_parse_boards_names_the_bad_index():
    with pytest.raises(ValueError, match="board 1: "):
        parse_boards([WIKI, WIKI[:40]])


def test_tokens_round_trip_and_official_values():
    tokens = encode_tokens([WIKI, WIKI_SOLUTION])
    assert tokens.dtype == torch.long and tokens.shape == (2, 81)
    assert tokens[0, :4].tolist() == [6, 4, 1, 1]  # 5 -> 6, 3 -> 4, blank -> 1
    assert int(tokens.min()) >= 1 and int(tokens.max()) <= 10
    np.testing.assert_array_equal(decode_tokens(tokens), parse_boards([WIKI, WIKI_SOLUTION]))
    assert encode_tokens(WIKI).shape == (1, 81)
    assert decode_tokens(torch.zeros(81, dtype=torch.long)).tolist() == [[0] * 81]  # pad = blank
    with pytest.raises(ValueError, match="0..10"):
        decode_tokens([[11] * 81])


def test_checker_accepts_the_solution():
    assert is_solution(WIKI_SOLUTION, WIKI)
    assert check_batch(parse_boards([WIKI_SOLUTION]), parse_boards([WIKI])).tolist() == [True]


def test_checker_rejects_incomplete_invalid_and_inconsistent():
    q = parse_board(WIKI)
    a = parse_board(WIKI_SOLUTION)
    incomplete = a.copy()
    incomplete[2] = 0
    swapped = a.copy()  # swapping two cells of a row keeps the row but breaks two columns
    swapped[[2, 3]] = swapped[[3, 2]]
    out_of_range = a.copy()
    out_of_range[2] = 10
    relabelled = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])[a]  # a valid grid that breaks givens
    preds = np.stack([a, incomplete, swapped, out_of_range, relabelled])
    ok = check_batch(preds, np.stack([q] * 5))
    assert ok.tolist() == [True, False, False, False, False]
    assert check_batch(relabelled[None], np.zeros((1, 81), dtype=np.int64)).tolist() == [True]
    assert not is_solution(swapped, q)


def test_checker_shape_errors():
    with pytest.raises(ValueError, match=r"\(N, 81\)"):
        check_batch(np.zeros((2, 81), dtype=np.int64), np.zeros((3, 81), dtype=np.int64))


def test_buckets():
    assert [bucket(r) for r in (0, 2, 3, 20, 21, 500)] == [
        "easy",
        "easy",
        "medium",
        "medium",
        "hard",
        "hard",
    ]
    with pytest.raises(ValueError):
        bucket(-1)

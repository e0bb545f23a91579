"""Maze symbols, the text format and model tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from maze_cases import CORRIDOR, CORRIDOR_ANSWER

from eqsolve.tasks.maze import (
    CHARSET,
    PAD_TOKEN,
    VOCAB_SIZE,
    as_grids,
    decode_tokens,
    encode_tokens,
    format_grid,
    grid_to_string,
    logits_to_tokens,
    parse_grid,
)


def test_tokens_are_the_official_ones():
    # HRM / EqR: char2id[CHARSET] = arange + 1, pad 0
    assert CHARSET == "# SGo" and VOCAB_SIZE == 6 and PAD_TOKEN == 0
    g = parse_grid("# SGo." + "#" * 894)
    assert encode_tokens(g)[0, :6].tolist() == [1, 2, 3, 4, 5, 2]


def test_string_text_and_token_round_trips():
    s = grid_to_string(CORRIDOR_ANSWER)
    assert len(s) == 900 and s[31:35] == "SooG"
    np.testing.assert_array_equal(parse_grid(s), CORRIDOR_ANSWER)
    text = format_grid(CORRIDOR)
    assert len(text.splitlines()) == 30 and " " not in text
    np.testing.assert_array_equal(parse_grid(text), CORRIDOR)
    np.testing.assert_array_equal(parse_grid(text.replace("\n", "\r\n")), CORRIDOR)
    tokens = encode_tokens(np.stack([CORRIDOR, CORRIDOR_ANSWER]))
    assert tokens.dtype == torch.long and tokens.shape == (2, 900)
    np.testing.assert_array_equal(decode_tokens(tokens), np.stack([CORRIDOR, CORRIDOR_ANSWER]))


@pytest.mark.parametrize("text, message", [
    ("#" * 899, "not a square grid"),
    ("#" * 841, "a 29×29 grid"),
    ("\n".join(["#" * 30] * 29), "29 rows of 30"),
    ("\n".join(["#" * 30] * 29 + ["#" * 29]), "row 30 has 29"),
    ("#" * 45 + "X" + "#" * 854, "unknown symbol 'X' at row 2, column 16"),
    ("#" * 899 + "é", "unknown symbol 'é'"),
])
def test_parse_errors_say_what_and_where(text, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(text)


def test_as_grids_rejects_bad_shapes_and_codes():
    with pytest.raises(ValueError, match="expected grids"):
        as_grids(np.zeros((2, 899), np.int64))
    with pytest.raises(ValueError, match=r"codes must be in \[0, 6\)"):
        as_grids(np.full((1, 900), 6))
    with pytest.raises(TypeError, match="integer"):
        as_grids(np.zeros((1, 900), np.float32))


def test_logits_to_tokens_never_predicts_pad():
    logits = torch.zeros(2, 900, VOCAB_SIZE)
    logits[..., 0] = 10.0  # pad is the largest, but never a prediction
    logits[0, 5, 4] = 1.0
    out = logits_to_tokens(logits)
    assert out.min() >= 1 and out[0, 5] == 4 and out[1, 5] == 1

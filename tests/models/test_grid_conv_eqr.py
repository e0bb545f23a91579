"""The grid_conv mixer inside EqR: config validation, the block, the maze model config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from eqsolve.models import EqR, EqRConfig
from eqsolve.models.eqr import ReasoningBlock

MAZE_YAML = Path(__file__).resolve().parents[2] / "eqsolve" / "conf" / "model" / "maze.yaml"


def test_bad_configs():
    with pytest.raises(ValueError, match="grid_kernel"):
        EqRConfig(mixer="grid_conv", grid_kernel=4)
    with pytest.raises(ValueError, match="not square"):
        EqRConfig(mixer="grid_conv", seq_len=80)
    with pytest.raises(ValueError, match="does not hold"):
        EqRConfig(mixer="grid_conv", seq_len=80, board_height=9, board_width=9)
    assert EqRConfig(mixer="grid_conv", seq_len=80, board_height=8, board_width=10).board() == (8, 10)


def changed_cells(a, b, width):
    """(row, col) of the cells whose vectors differ."""
    diff = (a - b).abs().amax(-1)[0] > 1e-6
    return {divmod(int(i), width) for i in torch.nonzero(diff).flatten()}


@pytest.mark.parametrize("kernel", [3, 5])
def test_one_block_mix_reaches_exactly_the_kernel_neighbourhood(kernel):
    torch.manual_seed(0)
    cfg = EqRConfig(hidden_size=8, seq_len=63, board_height=7, board_width=9, mixer="grid_conv",
                    grid_kernel=kernel, L_layers=1)
    block = ReasoningBlock(cfg)
    h = torch.randn(1, 63, 8)
    r = kernel // 2
    for cell in [(3, 4), (0, 0), (6, 8)]:  # the middle and two corners (the edge clips the square)
        h2 = h.clone()
        h2[0, cell[0] * 9 + cell[1]] += torch.randn(8)
        with torch.no_grad():
            got = changed_cells(block(h), block(h2), 9)
        want = {(i, j) for i in range(7) for j in range(9) if abs(i - cell[0]) <= r and abs(j - cell[1]) <= r}
        assert got == want


def test_the_maze_model_config_builds_and_one_map_reaches_eight_cells():
    values = yaml.safe_load(MAZE_YAML.read_text())
    cfg = EqRConfig.from_dict(values)
    assert (cfg.mixer, cfg.vocab_size, cfg.seq_len, cfg.board()) == ("grid_conv", 6, 900, (30, 30))
    assert 48 <= cfg.hidden_size <= 64 and (cfg.H_cycles, cfg.L_cycles, cfg.L_layers) == (1, 3, 2)
    torch.manual_seed(0)
    model = EqR(EqRConfig.from_dict({**values, "hidden_size": 8})).eval()
    tokens = torch.full((1, 900), 2, dtype=torch.long)
    tokens2 = tokens.clone()
    tokens2[0, 15 * 30 + 15] = 1  # a wall in the middle
    s = model.init_state(1, std=0.0)
    with torch.no_grad():
        a = model.map(s, model.embed(tokens), noise=0.0)
        b = model.map(s, model.embed(tokens2), noise=0.0)
    assert model.decode(a).shape == (1, 900, 6)
    got = changed_cells(a[:, 0], b[:, 0], 30)
    # blocks per map = H_cycles * (L_cycles + 1) * L_layers = 8, each reaching 1 cell further
    reach = max(max(abs(i - 15), abs(j - 15)) for i, j in got)
    assert reach == cfg.H_cycles * (cfg.L_cycles + 1) * cfg.L_layers == 8

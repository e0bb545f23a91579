"""The grid_conv token mixer: shape, a reference convolution written from its definition, locality."""

from __future__ import annotations

import pytest
import torch

from eqsolve.models.layers import GridConv, rms_norm


def ref_grid_conv(h, weight, proj, height, width):
    """out[b, (i, j)] = proj · sum_{|di|,|dj| <= r} w[:, di, dj] * h[b, (i + di, j + dj)], zero
    outside the board (float64, explicit loops over cells and offsets)."""
    b, n, d = h.shape
    k = weight.shape[-1]
    r = k // 2
    h = h.double().reshape(b, height, width, d)
    w = weight.double().reshape(d, k, k)
    out = torch.zeros(b, height, width, d, dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    if 0 <= i + di < height and 0 <= j + dj < width:
                        out[:, i, j] += w[:, di + r, dj + r] * h[:, i + di, j + dj]
    return out.reshape(b, n, d) @ proj.double().T


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_matches_the_reference_on_a_non_square_board(kernel):
    torch.manual_seed(kernel)
    mix = GridConv(6, 5, 7, kernel_size=kernel)
    h = torch.randn(2, 35, 6)
    out = mix(h)
    assert out.shape == (2, 35, 6)
    ref = ref_grid_conv(h, mix.conv_weight.detach(), mix.proj.weight.detach(), 5, 7)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    # a transposed board (the H/W mix-up) gives something else
    wrong = ref_grid_conv(h, mix.conv_weight.detach(), mix.proj.weight.detach(), 7, 5)
    assert kernel == 1 or not torch.allclose(out.double(), wrong, atol=1e-3)


def test_bad_shapes():
    with pytest.raises(ValueError, match="odd"):
        GridConv(4, 3, 3, kernel_size=2)
    with pytest.raises(ValueError, match="3x3=9 cells, got 8"):
        GridConv(4, 3, 3)(torch.zeros(1, 8, 4))


def changed_cells(a, b, width):
    """(row, col) of the cells whose vectors differ."""
    diff = (a - b).abs().amax(-1)[0] > 1e-6
    return {divmod(int(i), width) for i in torch.nonzero(diff).flatten()}


@pytest.mark.parametrize("kernel", [3, 5])
def test_one_mix_reaches_exactly_the_kernel_neighbourhood(kernel):
    """In the block's post-norm residual form ``rms(h + mix(h))``, a change at one cell moves
    exactly the cells within ``kernel // 2`` rows and columns (clipped at the board's edge)."""
    torch.manual_seed(0)
    mix = GridConv(8, 7, 9, kernel_size=kernel)
    h = torch.randn(1, 63, 8)
    r = kernel // 2
    for cell in [(3, 4), (0, 0), (6, 8)]:  # the middle and two corners
        h2 = h.clone()
        h2[0, cell[0] * 9 + cell[1]] += torch.randn(8)
        with torch.no_grad():
            got = changed_cells(rms_norm(h + mix(h)), rms_norm(h2 + mix(h2)), 9)
        want = {(i, j) for i in range(7) for j in range(9) if abs(i - cell[0]) <= r and abs(j - cell[1]) <= r}
        assert got == want

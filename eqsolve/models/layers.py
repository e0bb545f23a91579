"""Building blocks of the EqR / TRM backbone: norm, SwiGLU, rotary attention, mixers.

Parameter names follow the official release (``gate_up_proj``, ``down_proj``, ``qkv_proj``,
``o_proj``, ``embedding_weight``) so that official checkpoints load by renaming prefixes only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GridConv",
    "Linear",
    "RotaryEmbedding",
    "SelfAttention",
    "SudokuPool",
    "SwiGLU",
    "TokenEmbedding",
    "rms_norm",
    "rotate_half",
    "sudoku_peer_mask",
    "swiglu_hidden_size",
    "trunc_normal_",
]


def trunc_normal_(
    tensor: Tensor, std: float = 1.0, bound: float = 2.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill ``tensor`` in place with a truncated normal whose *actual* std is ``std``.

    Samples a standard normal truncated to ``[-bound, bound]`` by inverse-CDF sampling, then
    rescales it so that the truncated distribution has standard deviation ``std`` (the
    "compensated" convention of JAX and of the EqR release; values lie within
    ``±bound · std / 0.880`` for ``bound = 2``).

    Args:
        tensor: Tensor to fill (any float dtype).
        std: Target standard deviation; 0 fills zeros.
        bound: Truncation in units of the underlying standard normal.
        generator: Optional random generator.

    Returns:
        ``tensor``.

    Examples:
        >>> t = trunc_normal_(torch.empty(10000), std=1.0)
        >>> bool(t.abs().max() < 2.3)
        True
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2.0)
        lo, hi = math.erf(-bound / sqrt2), math.erf(bound / sqrt2)
        mass = (hi - lo) / 2.0
        pdf = math.exp(-0.5 * bound**2) / math.sqrt(2.0 * math.pi)
        # variance of a standard normal truncated symmetrically at ±bound
        var = 1.0 - 2.0 * bound * pdf / mass
        scale = std / math.sqrt(var)
        tensor.uniform_(lo, hi, generator=generator)
        tensor.erfinv_().mul_(sqrt2 * scale)
        return tensor.clamp_(-bound * scale, bound * scale)


def _upcast(t: Tensor) -> Tensor:
    """At least float32 (half/bfloat16 are computed in float32; float64 stays float64)."""
    return t.float() if t.element_size() < 4 else t


def rms_norm(h: Tensor, eps: float = 1e-5) -> Tensor:
    """Weightless RMSNorm over the last axis, computed in (at least) float32, returned in ``h.dtype``."""
    h32 = _upcast(h)
    return (h32 * torch.rsqrt(h32.square().mean(-1, keepdim=True) + eps)).to(h.dtype)


def swiglu_hidden_size(n: int, expansion: float, multiple: int = 256) -> int:
    """Hidden width of the release's SwiGLU: ``ceil(round(expansion·n·2/3) / multiple) · multiple``.

    The release rounds to 256 (``EqRConfig.ffn_multiple``); a smaller multiple keeps a small
    model's MLP near ``expansion · n · 2/3``.

    Examples:
        >>> swiglu_hidden_size(48, 4.0), swiglu_hidden_size(48, 4.0, 16), swiglu_hidden_size(512, 4.0)
        (256, 128, 1536)
    """
    return -(-round(expansion * n * 2 / 3) // multiple) * multiple


class Linear(nn.Module):
    """Linear layer with truncated-normal init (std ``1/sqrt(fan_in)``), cast to the input dtype.

    Args:
        in_features: Input width.
        out_features: Output width.
        bias: Whether to add a (zero-initialised) bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5)
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class TokenEmbedding(nn.Module):
    """Embedding table ``embedding_weight (vocab, d)``, truncated-normal init with std ``init_std``.

    Args:
        vocab_size: Number of tokens.
        hidden_size: Embedding width.
        init_std: Initial standard deviation (the release uses ``1/sqrt(d)``).
    """

    def __init__(self, vocab_size: int, hidden_size: int, init_std: float) -> None:
        super().__init__()
        self.embedding_weight = nn.Parameter(
            trunc_normal_(torch.empty(vocab_size, hidden_size), std=init_std)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.embedding_weight)


class SwiGLU(nn.Module):
    """``down(silu(gate) · up)`` with ``gate, up = gate_up_proj(x).chunk(2)``; no biases.

    Args:
        n: Width of the axis it acts on (hidden size, or sequence length for the token mixer).
        expansion: Expansion factor (4 in the release).
        multiple: The hidden width is rounded up to a multiple of this (256 in the release).
    """

    def __init__(self, n: int, expansion: float, multiple: int = 256) -> None:
        super().__init__()
        hidden = swiglu_hidden_size(n, expansion, multiple)
        self.gate_up_proj = Linear(n, 2 * hidden)
        self.down_proj = Linear(hidden, n)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last axis (RoPE's rotation)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position tables, 1-D (positions 0..L-1) or 2-D (row, column of a board).

    In 2-D mode the first half of each head rotates with the row index and the second half with
    the column index (the release's ``rope2d``).

    Args:
        head_dim: Per-head width (even; a multiple of 4 in 2-D mode).
        seq_len: Number of positions.
        base: RoPE frequency base (``rope_theta``).
        board: ``(height, width)`` for 2-D mode, or ``None`` for 1-D.
    """

    def __init__(
        self, head_dim: int, seq_len: int, base: float = 10000.0, board: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.two_d = board is not None
        if board is None:
            cos, sin = self._tables(head_dim, torch.arange(seq_len, dtype=torch.float32), base)
        else:
            h, w = board
            if h * w != seq_len:
                raise ValueError(f"2-D RoPE board {h}x{w} does not match seq_len={seq_len}")
            pos = torch.arange(seq_len)
            cos_h, sin_h = self._tables(head_dim // 2, (pos // w).float(), base)
            cos_w, sin_w = self._tables(head_dim // 2, (pos % w).float(), base)
            cos, sin = torch.cat((cos_h, cos_w), -1), torch.cat((sin_h, sin_w), -1)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _tables(dim: int, positions: Tensor, base: float) -> tuple[Tensor, Tensor]:
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(positions, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def apply(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate ``q, k`` of shape ``(B, L, heads, head_dim)`` (in at least float32)."""
        cos, sin = self.cos[:, None, :], self.sin[:, None, :]

        def rot(t: Tensor) -> Tensor:
            t32 = _upcast(t)
            return (t32 * cos + rotate_half(t32) * sin).to(t.dtype)

        if not self.two_d:
            return rot(q), rot(k)
        # 2-D mode: the two halves of the head use separate (row, column) tables
        half = q.shape[-1] // 2

        def rot2(t: Tensor) -> Tensor:
            t32 = _upcast(t)
            a, b = t32[..., :half], t32[..., half:]
            ca, cb = cos[..., :half], cos[..., half:]
            sa, sb = sin[..., :half], sin[..., half:]
            out = torch.cat((a * ca + rotate_half(a) * sa, b * cb + rotate_half(b) * sb), -1)
            return out.to(t.dtype)

        return rot2(q), rot2(k)


class SelfAttention(nn.Module):
    """Non-causal multi-head self-attention, optional RoPE and optional boolean attention mask.

    Args:
        hidden_size: Model width ``d``.
        num_heads: Number of heads (``d`` must be divisible by it).
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = Linear(hidden_size, 3 * hidden_size)
        self.o_proj = Linear(hidden_size, hidden_size)

    def forward(
        self, h: Tensor, rotary: RotaryEmbedding | None = None, mask: Tensor | None = None
    ) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv_proj(h).view(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        if rotary is not None:
            q, k = rotary.apply(q, k)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )
        return self.o_proj(y.transpose(1, 2).reshape(b, n, d))


class SudokuPool(nn.Module):
    """Constraint-aware token mixer: means over the cell's row, column and box, then a linear map.

    ``h (B, L, d) -> pool_proj(concat(row_mean, col_mean, box_mean)) (B, L, d)`` with
    ``L = side²``; O(L·d²), cheaper than attention. Each mean includes the cell itself.

    Args:
        hidden_size: Model width ``d``.
        side: Board side (a perfect square, 9 for Sudoku).
    """

    def __init__(self, hidden_size: int, side: int = 9) -> None:
        super().__init__()
        self.side, self.box = side, math.isqrt(side)
        if self.box * self.box != side:
            raise ValueError(f"sudoku side {side} is not a perfect square")
        self.pool_proj = Linear(3 * hidden_size, hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        side, box = self.side, self.box
        grid = h.view(b, side, side, d)
        rows = grid.mean(2, keepdim=True).expand_as(grid)
        cols = grid.mean(1, keepdim=True).expand_as(grid)
        boxes = grid.view(b, box, box, box, box, d).mean((2, 4), keepdim=True)
        boxes = boxes.expand(b, box, box, box, box, d).reshape(b, side, side, d)
        return self.pool_proj(torch.cat((rows, cols, boxes), -1).view(b, n, 3 * d))


class GridConv(nn.Module):
    """Grid token mixer: a depthwise ``k × k`` convolution over the 2-D board, then a linear map.

    ``h (B, L, d)`` is read as a ``(B, d, H, W)`` board (row-major cells, ``L = H·W``); each
    channel is convolved with its own ``k × k`` kernel (zero padding, so the board's edge sees
    nothing beyond it), and ``proj (d -> d)`` mixes the channels per cell. A cell only hears
    cells within ``k // 2`` rows and columns, so one mix costs O(L·d·(k² + d)) and a 30 × 30
    maze is affordable on a CPU; depth (iterations of the map) carries information farther.

    Args:
        hidden_size: Model width ``d``.
        height: Board rows ``H``.
        width: Board columns ``W``.
        kernel_size: Odd kernel side ``k``.

    Examples:
        >>> mix = GridConv(8, 30, 30)
        >>> tuple(mix(torch.randn(2, 900, 8)).shape)
        (2, 900, 8)
    """

    def __init__(self, hidden_size: int, height: int, width: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"GridConv kernel_size must be odd and positive, got {kernel_size}")
        self.height, self.width, self.kernel_size = height, width, kernel_size
        # fan-in of a depthwise filter is k² (one channel), hence the init std
        self.conv_weight = nn.Parameter(
            trunc_normal_(torch.empty(hidden_size, 1, kernel_size, kernel_size), std=1.0 / kernel_size)
        )
        self.proj = Linear(hidden_size, hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        if n != self.height * self.width:
            raise ValueError(f"GridConv expects {self.height}x{self.width}={self.height * self.width} cells, got {n}")
        board = h.transpose(1, 2).reshape(b, d, self.height, self.width)
        mixed = F.conv2d(board, self.conv_weight.to(h.dtype), padding=self.kernel_size // 2, groups=d)
        return self.proj(mixed.reshape(b, d, n).transpose(1, 2))


def sudoku_peer_mask(side: int = 9) -> Tensor:
    """Boolean ``(side², side²)`` mask: cell i may attend to j iff they share a row, column or box.

    The diagonal (a cell and itself) is included. ``side`` must be a perfect square (box size).

    Examples:
        >>> int(sudoku_peer_mask(9).sum(1)[0])  # 8 row + 8 column + 4 more box peers + itself
        21
    """
    box = math.isqrt(side)
    if box * box != side:
        raise ValueError(f"sudoku side {side} is not a perfect square")
    cell = torch.arange(side * side)
    row, col = cell // side, cell % side
    boxid = (row // box) * box + col // box
    same = lambda a: a[:, None] == a[None, :]  # noqa: E731
    return same(row) | same(col) | same(boxid)

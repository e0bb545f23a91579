"""Architecture of the Equilibrium Reasoner: :class:`EqRConfig`, validated on construction.

Kept apart from the model (:mod:`eqsolve.models.eqr`, which re-exports it) so that configs,
checkpoints and the CLI can name an architecture without building one.

Examples:
    >>> cfg = EqRConfig(hidden_size=64, mixer="sudoku_pool")
    >>> cfg.board()
    (9, 9)
    >>> EqRConfig.from_dict({"hidden": 3})
    Traceback (most recent call last):
    ...
    ValueError: unknown EqRConfig key 'hidden' (did you mean 'hidden_size'?); valid: ...
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from eqsolve._errors import check_keys

__all__ = ["MIXERS", "POS_ENCODINGS", "SOLVE_FIELDS", "EqRConfig"]

MIXERS = ("mlp_t", "attention", "sudoku_attention", "sudoku_pool", "grid_conv")
POS_ENCODINGS = ("rope", "rope2d", "none")
INNER_GRADS = ("phantom", "implicit", "onestep", "unrolled")
#: Fields that say how the map is solved, not what the weights are: weights move freely between
#: configs that differ only in these.
SOLVE_FIELDS = frozenset({"L_cycles", "inner_solver", "inner_iter", "inner_tol", "inner_grad", "inner_grad_k",
                          "inner_damping", "inner_backward_iter"})


@dataclass
class EqRConfig:
    """Architecture of an :class:`EqR` (defaults: the release's Sudoku-Extreme model).

    Attributes:
        vocab_size: Token vocabulary (Sudoku: 0 pad, 1 blank, 2..10 digits 1..9).
        seq_len: Sequence length L (81 cells).
        hidden_size: Width d.
        H_cycles: H-updates per outer iteration.
        L_cycles: L-updates before each H-update.
        L_layers: Blocks in the weight-tied stack.
        expansion: SwiGLU expansion factor.
        num_heads: Attention heads (attention mixers only).
        mixer: ``"mlp_t"``, ``"attention"``, ``"sudoku_attention"``, ``"sudoku_pool"`` or
            ``"grid_conv"`` (a depthwise convolution over the :meth:`board`, for mazes).
        lambda_: Damping ``lambda`` of the update U.
        noise_scale: Default path-noise scale ``beta`` (overridable per call of ``map``).
        H_init_std: Std of the random initial ``z_H``.
        L_init_std: Std of the random initial ``z_L``.
        rms_eps: RMSNorm epsilon.
        pos_encodings: ``"rope"``, ``"rope2d"`` (board rows/columns) or ``"none"``; attention only.
        rope_theta: RoPE base.
        board_height: Board rows for ``rope2d`` and ``grid_conv`` (default ``sqrt(seq_len)``).
        board_width: Board columns for ``rope2d`` and ``grid_conv`` (default ``sqrt(seq_len)``).
        grid_kernel: Odd kernel side of the ``grid_conv`` mixer.
        ffn_multiple: The SwiGLU hidden width ``round(expansion * n * 2 / 3)`` is rounded up to a
            multiple of this (256 in the release, which makes a d = 48 maze model's channel MLP
            256 wide instead of 128; a small multiple keeps small models small).
        halt_max_steps: Depth the release trains and evaluates with (informational default).
        inner_solver: ``None`` (the release): each H-cycle runs ``L_cycles`` plain updates of
            ``z_L``. A registered solver name (``"anderson"``, ``"fixed_point"``, ...): each
            H-cycle instead *solves* the inner equilibrium ``z_L = U(z_L, z_H + x)`` with that
            solver (the equilibrium-native reasoner; ``L_cycles`` is then unused).
        inner_iter: Evaluations of ``U`` per inner solve (the first one included).
        inner_tol: Relative residual at which a row's inner solve stops early (0: always spend
            ``inner_iter``, so that compute is the same for every row and solver).
        inner_grad: Gradient strategy of the inner equilibrium in training
            (:mod:`eqsolve.gradients` name: ``phantom``, ``implicit``, ``onestep``, ``unrolled``).
        inner_grad_k: Steps of the ``phantom`` / ``unrolled`` inner gradient.
        inner_backward_iter: Iteration budget of the ``implicit`` inner gradient's adjoint solve
            (Anderson, relative tolerance 1e-6).
        inner_damping: Damping of the inner map ``z <- (1 - a) z + a Blocks(z + inj)`` (``None``:
            ``lambda_``). The inner fixed points do not depend on it; plain iteration's stability
            does (a damped map turns oscillating directions into contracting ones).
    """

    vocab_size: int = 11
    seq_len: int = 81
    hidden_size: int = 512
    H_cycles: int = 3
    L_cycles: int = 6
    L_layers: int = 2
    expansion: float = 4.0
    num_heads: int = 8
    mixer: str = "mlp_t"
    lambda_: float = 0.95
    noise_scale: float = 0.01
    H_init_std: float = 1.0
    L_init_std: float = 1.0
    rms_eps: float = 1e-5
    pos_encodings: str = "rope"
    rope_theta: float = 10000.0
    board_height: int | None = None
    board_width: int | None = None
    grid_kernel: int = 3
    ffn_multiple: int = 256
    halt_max_steps: int = 16
    inner_solver: str | None = None
    inner_iter: int = 6
    inner_tol: float = 0.0
    inner_grad: str = "phantom"
    inner_grad_k: int = 2
    inner_backward_iter: int = 30
    inner_damping: float | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "hidden_size", "H_cycles", "L_cycles", "L_layers",
                     "num_heads", "halt_max_steps", "inner_iter", "inner_grad_k", "ffn_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EqRConfig.{name} must be a positive int, got {value!r}")
        if self.mixer not in MIXERS:
            raise ValueError(f"EqRConfig.mixer={self.mixer!r}; valid: {', '.join(MIXERS)}")
        if self.pos_encodings not in POS_ENCODINGS:
            raise ValueError(
                f"EqRConfig.pos_encodings={self.pos_encodings!r}; valid: {', '.join(POS_ENCODINGS)}"
            )
        if not 0.0 < self.lambda_ <= 1.0:
            raise ValueError(f"EqRConfig.lambda_ must be in (0, 1], got {self.lambda_}")
        for name in ("noise_scale", "H_init_std", "L_init_std", "expansion", "rms_eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"EqRConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.mixer in ("attention", "sudoku_attention") and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.inner_solver is not None and not (isinstance(self.inner_solver, str) and self.inner_solver):
            raise ValueError(f"EqRConfig.inner_solver must be None or a solver name, got {self.inner_solver!r}")
        if not (isinstance(self.inner_tol, (int, float)) and 0.0 <= self.inner_tol < 1.0):
            raise ValueError(f"EqRConfig.inner_tol must be in [0, 1), got {self.inner_tol!r}")
        if self.inner_damping is not None and not 0.0 < self.inner_damping <= 1.0:
            raise ValueError(f"EqRConfig.inner_damping must be None or in (0, 1], got {self.inner_damping!r}")
        if self.inner_grad not in INNER_GRADS:
            raise ValueError(f"EqRConfig.inner_grad={self.inner_grad!r}; valid: {', '.join(INNER_GRADS)}")
        if isinstance(self.grid_kernel, bool) or not isinstance(self.grid_kernel, int) or self.grid_kernel < 1 \
                or self.grid_kernel % 2 == 0:
            raise ValueError(f"EqRConfig.grid_kernel must be an odd positive int, got {self.grid_kernel!r}")
        if self.mixer == "grid_conv":
            height, width = self.board()
            if height * width != self.seq_len:
                raise ValueError(f"grid_conv board {height}x{width} does not hold seq_len={self.seq_len} cells")
        side = math.isqrt(self.seq_len)
        if self.mixer.startswith("sudoku_") and (side**2 != self.seq_len or math.isqrt(side) ** 2 != side):
            raise ValueError(f"{self.mixer} needs a side² board with square boxes, got seq_len={self.seq_len}")

    def board(self) -> tuple[int, int]:
        """``(height, width)`` of the board (explicit, or ``sqrt(seq_len)`` each)."""
        if self.board_height is not None and self.board_width is not None:
            return self.board_height, self.board_width
        side = math.isqrt(self.seq_len)
        if side * side != self.seq_len:
            raise ValueError(f"seq_len={self.seq_len} is not square; set board_height/board_width")
        return side, side

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and run records)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EqRConfig:
        """Build from a dict; an unknown key is a ValueError naming the valid ones."""
        check_keys("EqRConfig key", values, [f.name for f in fields(cls)])
        return cls(**values)

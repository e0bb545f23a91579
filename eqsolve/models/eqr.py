"""The Equilibrium Reasoner (EqR): a TRM-style latent reasoner written as a fixed-point map.

State ``s = (z_H, z_L)`` is one tensor of shape ``(B, 2, L, d)`` (``s[:, 0]`` is ``z_H``).
One call of :meth:`EqR.map` is one outer iteration, i.e. one NFE::

    repeat H_cycles times:
        repeat L_cycles times:  z_L <- U(z_L, z_H + x)
        z_H <- U(z_H, z_L)
    U(z, inj) = (1 - lambda) z + lambda Blocks(z + inj) + beta eps,   eps ~ N(0, I)

with ``x = sqrt(d) E[tokens]`` and one weight-tied stack of ``L_layers`` post-norm blocks
``h = rms(h + mix(h)); h = rms(h + SwiGLU(h))`` (weightless RMSNorm in float32). The token
mixer is one of

* ``"mlp_t"``: a SwiGLU across the sequence axis (MLP-mixer, the release's Sudoku model). As in
  the release, the norm after this mixer is taken over the *sequence* axis (the block works on
  the transposed ``(B, d, L)`` tensor for that half).
* ``"attention"``: non-causal multi-head self-attention with RoPE (1-D, or 2-D with ``rope2d``).
* ``"sudoku_attention"``: the same attention, masked so each cell only sees its row, column
  and box peers and itself (an eqsolve addition, cheaper to train on CPU).
* ``"sudoku_pool"``: means over the cell's row, column and box, concatenated, then a linear map
  ``pool_proj (3d -> d)`` (an eqsolve addition; O(L d^2), no attention).
* ``"grid_conv"``: a depthwise ``grid_kernel × grid_kernel`` convolution over the 2-D board
  (``config.board()``), then a linear map ``proj (d -> d)`` (an eqsolve addition for 30 × 30
  mazes; O(L d (k² + d)), each mix reaches the cells within ``k // 2``).

With ``config.inner_solver`` set (the equilibrium-native reasoner, ``model=deq``) the L-cycles are
replaced by a solve: each H-cycle finds ``z_L* = U(z_L*, z_H + x)`` (noise-free) with that solver
in ``inner_iter`` evaluations, attaches a gradient with the ``inner_grad`` strategy, then updates
``z_H``; :meth:`EqR.blocks_per_map` counts the compute either way.

Heads: ``lm_head`` on ``z_H`` gives per-cell logits; ``q_head`` on ``z_H[:, 0]`` gives two
logits, the first being the halting logit (init weight 0, bias -5).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from eqsolve.models.eqr_config import MIXERS, EqRConfig
from eqsolve.models.layers import (
    GridConv,
    Linear,
    RotaryEmbedding,
    SelfAttention,
    SudokuPool,
    SwiGLU,
    TokenEmbedding,
    rms_norm,
    sudoku_peer_mask,
    trunc_normal_,
)
from eqsolve.solvers._registry import resolve_solver

__all__ = ["MIXERS", "EqR", "EqRConfig"]


class ReasoningBlock(nn.Module):
    """Post-norm block ``h = rms(h + mix(h)); h = rms(h + SwiGLU(h))``."""

    def __init__(self, config: EqRConfig) -> None:
        super().__init__()
        self.eps = config.rms_eps
        self.mixer = config.mixer
        if self.mixer == "mlp_t":
            self.mlp_t = SwiGLU(config.seq_len, config.expansion, config.ffn_multiple)
        elif self.mixer == "sudoku_pool":
            self.pool = SudokuPool(config.hidden_size, math.isqrt(config.seq_len))
        elif self.mixer == "grid_conv":
            self.grid_conv = GridConv(config.hidden_size, *config.board(), config.grid_kernel)
        else:
            self.self_attn = SelfAttention(config.hidden_size, config.num_heads)
        self.mlp = SwiGLU(config.hidden_size, config.expansion, config.ffn_multiple)

    def forward(
        self, h: Tensor, rotary: RotaryEmbedding | None = None, mask: Tensor | None = None
    ) -> Tensor:
        if self.mixer == "mlp_t":
            # mix (and normalise, as the release does) along the sequence axis
            ht = h.transpose(1, 2)
            h = rms_norm(ht + self.mlp_t(ht), self.eps).transpose(1, 2)
        elif self.mixer == "sudoku_pool":
            h = rms_norm(h + self.pool(h), self.eps)
        elif self.mixer == "grid_conv":
            h = rms_norm(h + self.grid_conv(h), self.eps)
        else:
            h = rms_norm(h + self.self_attn(h, rotary, mask), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class BlockStack(nn.Module):
    """The weight-tied stack of ``L_layers`` blocks (``L_level`` in the release)."""

    def __init__(self, config: EqRConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ReasoningBlock(config) for _ in range(config.L_layers))

    def forward(self, h: Tensor, rotary: RotaryEmbedding | None, mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            h = layer(h, rotary, mask)
        return h


class EqR(nn.Module):
    """Equilibrium Reasoner: ``map(s, x)`` is one outer iteration (one NFE) on ``s (B, 2, L, d)``.

    Args:
        config: Architecture; defaults to the release's Sudoku-Extreme model.

    Examples:
        >>> model = EqR(EqRConfig(hidden_size=32, H_cycles=1, L_cycles=1, L_layers=1))
        >>> tokens = torch.ones(2, 81, dtype=torch.long)
        >>> x = model.embed(tokens)
        >>> s = model.init_state(2, std=0.0)
        >>> with torch.no_grad():
        ...     s = model.map(s, x, noise=0.0)
        >>> tuple(model.decode(s).shape), tuple(model.predict_digits(s).shape)
        ((2, 81, 11), (2, 81))
    """

    def __init__(self, config: EqRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EqRConfig()
        d = config.hidden_size
        self.embed_scale = math.sqrt(d)
        self.embed_tokens = TokenEmbedding(config.vocab_size, d, init_std=1.0 / self.embed_scale)
        self.lm_head = Linear(d, config.vocab_size)
        self.q_head = Linear(d, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.L_level = BlockStack(config)
        self.rotary: RotaryEmbedding | None = None
        if config.mixer in ("attention", "sudoku_attention") and config.pos_encodings != "none":
            board = config.board() if config.pos_encodings == "rope2d" else None
            self.rotary = RotaryEmbedding(d // config.num_heads, config.seq_len,
                                          config.rope_theta, board)
        mask = sudoku_peer_mask(math.isqrt(config.seq_len)) if config.mixer == "sudoku_attention" else None
        self.register_buffer("attn_mask", mask, persistent=False)
        #: Solver object of the inner equilibrium (``None``: plain L-cycles), resolved once from
        #: ``config.inner_solver``; reassign it (a solver object) to solve the same model another way.
        self.inner_solver: Any = None if config.inner_solver is None else resolve_solver(config.inner_solver, {})
        #: Set to a list to collect, per inner solve with autograd on, a one-probe Hutchinson
        #: estimate of ``||J||_F^2 / n`` of the inner map at its solution (with a graph): the
        #: training loop's inner Jacobian penalty. ``None``: nothing is computed.
        self.inner_jacobian_terms: list[Tensor] | None = None
        #: Per-row relative residual of the last inner solve (``None`` before the first one).
        self.last_inner_residual: Tensor | None = None

    # ----------------------------------------------------------------------------- inputs, state
    def embed(self, tokens: Tensor) -> Tensor:
        """Input injection ``x = sqrt(d) · E[tokens]``, shape ``(B, L, d)``.

        Args:
            tokens: ``(B, seq_len)`` integer tokens in ``[0, vocab_size)``.

        Returns:
            Float tensor ``(B, L, d)`` in the parameters' dtype.
        """
        cfg = self.config
        if tokens.dim() != 2 or tokens.shape[1] != cfg.seq_len:
            raise ValueError(f"tokens must have shape (B, {cfg.seq_len}), got {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
            raise ValueError(
                f"tokens out of range [0, {cfg.vocab_size}): min {int(tokens.min())}, max {int(tokens.max())}"
            )
        return self.embed_scale * self.embed_tokens(tokens.long())

    def init_state(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        std: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Random initial state (RI): ``z_H, z_L`` truncated normal (±2σ, compensated std).

        Args:
            batch: Number of rows.
            generator: Random generator (sampling happens on its device, then moves).
            std: Overrides both ``H_init_std`` and ``L_init_std``; 0 gives zeros.
            device: Target device (default: the parameters').
            dtype: Target dtype (default: the parameters').

        Returns:
            ``(batch, 2, seq_len, hidden_size)`` tensor.
        """
        ref = self.lm_head.weight
        device = ref.device if device is None else torch.device(device)
        dtype = ref.dtype if dtype is None else dtype
        cfg = self.config
        stds = (cfg.H_init_std, cfg.L_init_std) if std is None else (std, std)
        sample_device = generator.device if generator is not None else device
        s = torch.empty(batch, 2, cfg.seq_len, cfg.hidden_size, device=sample_device, dtype=dtype)
        for level, level_std in enumerate(stds):
            trunc_normal_(s[:, level], std=float(level_std), generator=generator)
        return s.to(device)

    # ----------------------------------------------------------------------------- the map
    def _update(self, z: Tensor, injection: Tensor, beta: float, generator: torch.Generator | None) -> Tensor:
        h = self.L_level(z + injection, self.rotary, self.attn_mask)
        out = (1.0 - self.config.lambda_) * z + self.config.lambda_ * h
        if beta:
            eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            out = out + beta * eps
        return out

    def map(
        self,
        s: Tensor,
        x: Tensor,
        noise: float | None = None,
        *,
        generator: torch.Generator | None = None,
        grad_last_h_cycle: bool = False,
        h_cycles: int | None = None,
    ) -> Tensor:
        """One outer iteration ``F(s; x)`` (one NFE).

        Works with or without grad. For truncated training (the release's recipe, H5's "sot"
        mode) pass ``grad_last_h_cycle=True``: the first ``H_cycles - 1`` H-cycles run under
        ``torch.no_grad()`` and only the last one records a graph (detach ``s`` yourself between
        calls, as the release does).

        Args:
            s: State ``(B, 2, L, d)``.
            x: Input injection ``(B, L, d)`` from :meth:`embed`.
            noise: Path-noise scale ``beta``; ``None`` uses ``config.noise_scale``, 0 disables.
            generator: Random generator for the noise (on ``s``'s device).
            grad_last_h_cycle: Record the autograd graph for the last H-cycle only.
            h_cycles: Run this many H-cycles instead of ``config.H_cycles`` (a map split in
                two parts, ``h`` then ``H_cycles - h`` cycles, draws the same noise and gives the
                same state as the whole map).

        Returns:
            The next state, same shape as ``s``.
        """
        if s.dim() != 4 or s.shape[1] != 2 or s.shape[0] != x.shape[0]:
            raise ValueError(f"state must be (B, 2, L, d) matching x {tuple(x.shape)}, got {tuple(s.shape)}")
        beta = self.config.noise_scale if noise is None else float(noise)
        z_H, z_L = s[:, 0], s[:, 1]
        cycles = self.config.H_cycles if h_cycles is None else h_cycles
        if not (isinstance(cycles, int) and cycles >= 1):
            raise ValueError(f"h_cycles must be an int >= 1, got {h_cycles!r}")
        for cycle in range(cycles):
            frozen = grad_last_h_cycle and cycle < cycles - 1
            with torch.no_grad() if frozen else nullcontext():
                injection = z_H + x  # once per H-cycle (the release adds it before every L-cycle)
                if self.inner_solver is None:
                    for _ in range(self.config.L_cycles):
                        z_L = self._update(z_L, injection, beta, generator)
                else:
                    z_L = self._inner_equilibrium(z_L, injection, beta, generator)
                z_H = self._update(z_H, z_L, beta, generator)
        return torch.stack((z_H, z_L), dim=1)

    def _inner_equilibrium(self, z_L: Tensor, injection: Tensor, beta: float,
                           generator: torch.Generator | None) -> Tensor:
        """Solve ``z_L = U(z_L, injection)`` (noise-free) with ``self.inner_solver``.

        The solve spends ``config.inner_iter`` evaluations of ``U`` per row (fewer where a row's
        relative residual reaches ``config.inner_tol``) and returns each row's best iterate. With
        autograd recording, the graph is attached at the solution by the ``config.inner_grad``
        strategy; path noise is added once, after the solve.
        """
        from eqsolve.gradients import get_gradient
        from eqsolve.solvers import solve

        cfg = self.config
        damping = cfg.lambda_ if cfg.inner_damping is None else cfg.inner_damping

        def inner_map(z: Tensor, inj: Tensor) -> Tensor:
            return (1.0 - damping) * z + damping * self.L_level(z + inj, self.rotary, self.attn_mask)

        options: dict[str, Any] = dict(solver=self.inner_solver, tol=float(cfg.inner_tol), max_iter=cfg.inner_iter - 1)
        if cfg.inner_grad != "unrolled":  # unrolled runs its own loop, which never stops a row early
            # the budget is the compute: no row stops for stagnation or a residual bump
            options.update(stall_window=None, diverge_factor=None)
        if torch.is_grad_enabled():
            grad_options = {"k": cfg.inner_grad_k} if cfg.inner_grad in ("phantom", "unrolled") else {}
            if cfg.inner_grad == "phantom":
                grad_options["tau"] = 1.0
            if cfg.inner_grad == "implicit":
                grad_options["max_iter"] = cfg.inner_backward_iter
            strategy = get_gradient(cfg.inner_grad, **grad_options)
            z, sol = strategy(inner_map, z_L, injection, **options)
            if self.inner_jacobian_terms is not None:
                from eqsolve.jacobian import jac_reg

                z_star = z.detach().requires_grad_(True)
                out = inner_map(z_star, injection.detach())
                self.inner_jacobian_terms.append(
                    jac_reg(out, z_star, vecs=1, create_graph=True, generator=generator) / z_star[0].numel())
        else:
            sol = solve(inner_map, z_L, injection, **options)
            z = sol.z
        self.last_inner_residual = sol.rel_residual.detach()
        if beta:
            z = z + beta * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return z

    def forward(self, s: Tensor, x: Tensor, noise: float | None = None) -> Tensor:
        """Same as :meth:`map` (so hooks and DDP wrappers see the map)."""
        return self.map(s, x, noise)

    def blocks_per_map(self) -> int:
        """Applications of one block of the weight-tied stack per call of :meth:`map` (at most).

        The unit in which reasoners with and without an inner equilibrium compare compute:
        ``H_cycles * (inner updates + 1) * L_layers``, where the inner updates are ``L_cycles``
        plain ones, or the inner solver's ``inner_iter`` evaluations.
        """
        cfg = self.config
        inner = cfg.L_cycles if self.inner_solver is None else cfg.inner_iter
        return cfg.H_cycles * (inner + 1) * cfg.L_layers

    # ----------------------------------------------------------------------------- readouts
    def decode(self, s: Tensor) -> Tensor:
        """Per-cell logits ``lm_head(z_H)``, shape ``(B, L, vocab_size)``."""
        return self.lm_head(s[:, 0])

    def q_logits(self, s: Tensor) -> Tensor:
        """Both ``q_head`` outputs on ``z_H[:, 0]``, float32 ``(B, 2)`` (halt, continue)."""
        return self.q_head(s[:, 0, 0]).float()

    def halt_logit(self, s: Tensor) -> Tensor:
        """Learned halting logit ``(B,)``; the release halts a row when it is > 0."""
        return self.q_logits(s)[:, 0]

    def predict_digits(self, s: Tensor) -> Tensor:
        """Sudoku digits ``(B, L)`` in 1..9: argmax over the digit tokens 2..10 of the logits."""
        if self.config.vocab_size != 11:
            raise ValueError(f"predict_digits needs the Sudoku vocabulary (11), got {self.config.vocab_size}")
        return self.decode(s)[..., 2:].argmax(-1) + 1

    def predict(self, s: Tensor) -> Tensor:
        """Predicted tokens ``(B, L)``: the argmax over the whole vocabulary of the logits.

        Task-agnostic: a task's own answer space (Sudoku digits, say) comes from its
        :meth:`~eqsolve.tasks.base.Task.predict`, passed to
        :func:`eqsolve.scaling.solve_many` as ``predict=task.predictor(model)``.
        """
        return self.decode(s).argmax(-1)

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_official(cls, source: Any, *, prefer_ema: bool = True, seq_len: int | None = None,
                      vocab_size: int | None = None) -> EqR:
        """Build from an official release checkpoint (path, loaded dict or bare state dict).

        Loading is strict (any missing, unexpected or mis-shaped tensor is a ``ValueError``);
        see :func:`eqsolve.models.checkpoint.read_official`.

        Examples:
            >>> m = EqR(EqRConfig(hidden_size=32, L_layers=1))
            >>> ckpt = {"model": {"_orig_mod.model.inner." + k: v for k, v in m.state_dict().items()},
            ...         "config": {"arch": {"hidden_size": 32, "L_layers": 1, "mlp_t": True}}}
            >>> EqR.from_official(ckpt).config.hidden_size
            32
        """
        from eqsolve.models.checkpoint import load_strict, read_official

        config, state, origin = read_official(source, prefer_ema=prefer_ema, seq_len=seq_len,
                                              vocab_size=vocab_size)
        return load_strict(cls(config), state, origin).eval()

    @classmethod
    def load_hub(cls, repo_id: str = "locuslab/EqR-model", filename: str = "sudoku-extreme/eqr.pth",
                 *, revision: str | None = None, cache_dir: Any = None, **kwargs: Any) -> EqR:
        """Download an official checkpoint with ``huggingface_hub`` (``hub`` extra) and load it.

        ``kwargs`` go to :meth:`from_official`; see
        :func:`eqsolve.models.checkpoint.download_official`.
        """
        from eqsolve.models.checkpoint import download_official

        path = download_official(repo_id, filename, revision=revision, cache_dir=cache_dir)
        return cls.from_official(path, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: Any, *, prefer_ema: bool = True) -> EqR:
        """Load a native eqsolve checkpoint (or an official one, detected by its layout), strictly."""
        from eqsolve.models.checkpoint import load_strict, read_checkpoint

        config, state, origin = read_checkpoint(path, prefer_ema=prefer_ema)
        return load_strict(cls(config), state, origin).eval()

    def save_checkpoint(self, path: Any, *, ema: dict[str, Tensor] | None = None,
                        extra: dict[str, Any] | None = None) -> None:
        """Write a native checkpoint atomically (see :func:`eqsolve.models.checkpoint.save_checkpoint`)."""
        from eqsolve.models.checkpoint import save_checkpoint

        save_checkpoint(self, path, ema=ema, extra=extra)

    # ----------------------------------------------------------------------------- test-time scaling
    def reason(
        self,
        tokens: Tensor,
        depth: int = 16,
        solver: Any = "fixed_point",
        breadth: int = 1,
        noise: float | None = None,
        init: str | Tensor = "random",
        aggregate: str = "min_residual",
        **options: Any,
    ) -> Any:
        """Solve puzzles with depth × breadth test-time scaling (``eqsolve.scaling.solve_many``).

        Args:
            tokens: ``(N, seq_len)`` model tokens.
            depth: NFE budget per start.
            solver: Solver name or object (``eqsolve.solvers``).
            breadth: Starts per puzzle.
            noise: Path noise (``None``: ``config.noise_scale``; 0 disables).
            init: ``"random"``, ``"zeros"`` or an explicit state tensor.
            aggregate: ``min_residual``, ``logit_change``, ``vote``, ``weighted_vote`` or ``any_correct``.
            **options: Further keyword options of ``solve_many`` (``halt``, ``answers``, ``seed``,
                ``predict``: e.g. ``get_task("sudoku-extreme").predictor(model)`` for digits).

        Returns:
            A ``ScalingResult``; ``.predictions`` are :meth:`predict`'s tokens (or what
            ``predict=`` returns), shape ``(N, seq_len)``.
        """
        from eqsolve.scaling import solve_many

        return solve_many(self, tokens, depth=depth, solver=solver, breadth=breadth, noise=noise,
                          init=init, aggregate=aggregate, **options)

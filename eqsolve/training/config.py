"""Validated configuration schema of ``eqsolve train`` (the ``train`` hydra group).

Every field is checked in ``__post_init__``; building from a mapping with an unknown key is a
``ValueError`` that names the valid keys, so a typo in a YAML file or override never passes
silently.

Examples:
    >>> cfg = TrainConfig(grad="implicit", steps=10)
    >>> cfg.grad, cfg.steps
    ('implicit', 10)
    >>> TrainConfig.from_dict({"stepz": 3})
    Traceback (most recent call last):
    ...
    ValueError: unknown train config key 'stepz' (did you mean 'steps'?); valid: ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eqsolve._errors import check_keys
from eqsolve.training.tracking import TRACKERS

__all__ = ["GRAD_MODES", "TrainConfig", "dataclass_from_dict", "RESUMABLE_CHANGES"]

GRAD_MODES = ("sot", "implicit", "phantom", "onestep", "unrolled")
LR_SCHEDULES = ("constant", "cosine")
INITS = ("random", "zeros")

# Keys that may differ between a checkpoint and the run that resumes it: they change neither the
# optimisation trajectory already taken nor the meaning of the saved state.
RESUMABLE_CHANGES = frozenset(
    {"steps", "out", "checkpoint_every", "log_every", "progress", "threads", "resume",
     "eval_every", "eval_size", "eval_depth", "keep_checkpoints", "time_limit_s", "init_from",
     "tracking", "tracking_project"}
)


def dataclass_from_dict(cls: type, values: Mapping[str, Any] | None, what: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name.

    Args:
        cls: The dataclass type.
        values: Field values (a dict or an omegaconf DictConfig); None means defaults.
        what: Name used in the error message (e.g. ``"train"``).

    Returns:
        An instance of ``cls``.

    Raises:
        ValueError: if ``values`` holds a key that is not a field of ``cls``.

    Examples:
        >>> dataclass_from_dict(TrainConfig, {"steps": 5}, "train").steps
        5
    """
    values = dict(values or {})
    check_keys(f"{what} config key", values, [f.name for f in dataclasses.fields(cls)])
    return cls(**values)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class TrainConfig:
    """Training options (see ``eqsolve/conf/train/*.yaml`` for the shipped presets).

    Attributes:
        grad: gradient mode: ``sot`` (supervised outer steps, the paper's recipe: deep
            supervision over up to ``sup_steps`` outer steps,
            one optimizer step per outer step, detached carry, gradient through the last
            H-cycle only), ``implicit``, ``phantom``, ``onestep`` or ``unrolled`` (fixed point of
            the outer map solved by ``solver`` for ``depth`` steps, gradient by eqsolve.gradients).
        steps: optimizer steps of the whole run.
        batch_size: global batch (rows per optimizer step, summed over DDP ranks).
        sup_steps: sot: maximum supervised outer steps per puzzle before it is replaced.
        depth: DEQ modes: forward iteration budget (max_iter); also the eval depth default.
        solver: DEQ modes: forward solver name (any registered eqsolve solver).
        tol: DEQ modes: forward/backward relative tolerance.
        unroll_k: unrolled: backprop through the last k iterations (None = all).
        phantom_k: phantom: number of damped unrolled steps.
        phantom_tau: phantom: damping.
        backward_max_iter: implicit: adjoint solve budget.
        lr: peak learning rate (AdamW; AdamATan2 of the reference is CUDA-only).
        weight_decay: AdamW decoupled weight decay.
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        warmup_steps: linear warm-up length.
        lr_schedule: ``constant`` or ``cosine`` after warm-up.
        min_lr_ratio: cosine floor as a fraction of ``lr``.
        grad_clip: max global gradient norm (0 disables).
        ema_decay: EMA of weights used for evaluation (0 disables).
        loss: ``stablemax`` or ``softmax`` cross-entropy.
        halt_weight: weight of the halting BCE (0 disables learned halting).
        halt_explore: sot: probability that a row gets a random minimum number of steps.
        jac_weight: weight of the Jacobian penalty ``||J||_F^2 / n`` of the outer map (Hutchinson,
            one probe; Bai et al., 2021, "Stabilizing Equilibrium Models by Jacobian
            Regularization"), taken at the input of the last H-cycle of each sot segment or at
            the DEQ modes' solution; 0 disables (and costs nothing).
        inner_jac_weight: weight of the same penalty on the *inner* map of a reasoner with an
            inner equilibrium (``model.inner_solver``), at each inner solution; it pushes the
            inner equilibria towards attractors (spectral radius < 1). 0 disables.
        init: initial latent state: ``random`` (truncated normal, the paper's RI) or ``zeros``.
        noise: path noise scale during training (None = the model's ``noise_scale``).
        data: training puzzles in a file the task reads (None = the task's generator).
        data_limit: use a random sample (seeded by ``seed``) of this many rows of ``data``;
            only the sampled rows are parsed.
        gen_easy: puzzles from the task's training generator in the pool (when ``data`` is None;
            Sudoku: ``generate_easy``; Maze: ``generate`` without the eval set's mazes).
        gen_hard: generated rated (harder) puzzles in the training pool (when ``data`` is None;
            tasks with a second generator only, Sudoku's ``generate``).
        augment: apply a random symmetry of the task to every drawn puzzle.
        reveal_start: curriculum: at step 0 a drawn puzzle gets up to this fraction of its blanks
            revealed from the answer (uniformly drawn per puzzle).
        reveal_end: the same bound at ``curriculum_steps`` and after (linear in between).
        curriculum_steps: length of the reveal schedule.
        reveal_prob: probability that a drawn puzzle gets any reveal at all.
        seed: master seed (weights, data order, initial states, noise).
        out: run folder (checkpoints, metrics.jsonl, config).
        checkpoint_every: steps between atomic checkpoints (also written at the end).
        keep_checkpoints: how many numbered checkpoints to keep besides ``last.pt``.
        log_every: steps between metrics lines.
        eval_every: steps between evaluations of the EMA weights (0 = only at the end).
        eval_size: puzzles of the held-out eval set scored at each evaluation.
        eval_depth: iterations of the eval forward pass.
        resume: continue from ``out/last.pt`` (True) or from this checkpoint path.
        init_from: start a new run from these weights (an eqsolve weights file, a training
            checkpoint or an official ``eqr.pth``; EMA weights preferred) instead of a random
            init; the architecture must equal the run's model config; the optimizer starts fresh
            and the EMA starts at these weights. Ignored when resuming.
        threads: torch intra-op threads (None leaves torch's default).
        device: ``cpu`` or ``cuda``.
        progress: show a tqdm bar.
        time_limit_s: stop cleanly (with a checkpoint) after this many seconds (0 = no limit).
        task: registered task name (:func:`eqsolve.tasks.base.get_task`): what the pool, the
            tokens, the augmentation and the evaluation are (``eqsolve train --task``).
        tracking: also send the logged metrics to ``tensorboard`` or ``wandb``
            (:mod:`eqsolve.training.tracking`); ``none`` (the default) writes only
            ``metrics.jsonl``.
        tracking_project: the W&B project of ``tracking=wandb``.
    """

    grad: str = "sot"
    steps: int = 1000
    batch_size: int = 64
    sup_steps: int = 16
    depth: int = 16
    solver: str = "fixed_point"
    tol: float = 1e-3
    unroll_k: int | None = None
    phantom_k: int = 5
    phantom_tau: float = 0.5
    backward_max_iter: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 100
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss: str = "stablemax"
    halt_weight: float = 0.5
    halt_explore: float = 0.1
    jac_weight: float = 0.0
    inner_jac_weight: float = 0.0
    init: str = "random"
    noise: float | None = None
    data: str | None = None
    data_limit: int | None = None
    gen_easy: int = 2000
    gen_hard: int = 0
    augment: bool = True
    reveal_start: float = 0.0
    reveal_end: float = 0.0
    curriculum_steps: int = 1
    reveal_prob: float = 0.5
    seed: int = 0
    out: str = "runs/train"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int = 0
    eval_size: int = 256
    eval_depth: int = 16
    resume: bool | str = False
    init_from: str | None = None
    threads: int | None = None
    device: str = "cpu"
    progress: bool = True
    time_limit_s: float = 0.0
    task: str = "sudoku-extreme"
    tracking: str = "none"
    tracking_project: str = "eqsolve"

    def __post_init__(self) -> None:
        _check(self.grad in GRAD_MODES, f"grad={self.grad!r}; valid: {', '.join(GRAD_MODES)}")
        _check(self.lr_schedule in LR_SCHEDULES,
               f"lr_schedule={self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        _check(self.init in INITS, f"init={self.init!r}; valid: {', '.join(INITS)}")
        _check(self.tracking in TRACKERS, f"tracking={self.tracking!r}; valid: {', '.join(TRACKERS)}")
        _check(self.loss in ("stablemax", "softmax"),
               f"loss={self.loss!r}; valid: stablemax, softmax")
        for name in ("steps", "batch_size", "sup_steps", "depth", "phantom_k",
                     "backward_max_iter", "checkpoint_every", "log_every", "eval_size",
                     "eval_depth", "curriculum_steps"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name}={value!r} must be an int >= 1")
        for name in ("warmup_steps", "gen_easy", "gen_hard", "eval_every", "keep_checkpoints"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 0, f"{name}={value!r} must be an int >= 0")
        for name in ("lr", "tol"):
            _check(getattr(self, name) > 0, f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("weight_decay", "grad_clip", "halt_weight", "jac_weight", "inner_jac_weight",
                     "time_limit_s"):
            _check(getattr(self, name) >= 0, f"{name}={getattr(self, name)!r} must be >= 0")
        for name in ("ema_decay", "halt_explore", "reveal_start", "reveal_end", "reveal_prob",
                     "min_lr_ratio", "phantom_tau", "beta1", "beta2"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"{name}={value!r} must be in [0, 1]")
        _check(self.unroll_k is None or self.unroll_k >= 1,
               f"unroll_k={self.unroll_k!r} must be None (all) or >= 1")
        _check(self.noise is None or self.noise >= 0, f"noise={self.noise!r} must be >= 0")
        _check(self.data_limit is None or self.data_limit >= 1,
               f"data_limit={self.data_limit!r} must be None or >= 1")
        _check(self.data is not None or self.gen_easy + self.gen_hard > 0,
               "no training data: set data=PATH or gen_easy/gen_hard > 0")
        _check(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"),
               f"device={self.device!r}; valid: cpu, cuda, cuda:N")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TrainConfig:
        """Build from a mapping (dict or DictConfig), rejecting unknown keys.

        Args:
            values: field values.

        Returns:
            A validated TrainConfig.

        Examples:
            >>> TrainConfig.from_dict({"grad": "onestep"}).grad
            'onestep'
        """
        return dataclass_from_dict(cls, values, "train")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON/YAML-serialisable)."""
        return dataclasses.asdict(self)

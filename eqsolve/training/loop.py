"""The training state machine: model, AdamW, EMA, data draw, sot carry, one step at a time.

:class:`Trainer` performs exactly one optimizer step per :meth:`Trainer.train_step` and can
serialise / restore everything that influences later steps (:meth:`state` / :meth:`load_state`).
Orchestration (files, logging, progress, resume, DDP set-up) lives in :mod:`eqsolve.training.run`.

Examples:
    >>> import numpy as np
    >>> from eqsolve.models.eqr import EqRConfig
    >>> from eqsolve.training.data import PuzzlePool
    >>> pool = PuzzlePool(np.zeros((4, 81), np.int64), np.ones((4, 81), np.int64), "toy")
    >>> mc = EqRConfig(hidden_size=16, num_heads=2, H_cycles=1, L_cycles=1, L_layers=1)
    >>> trainer = Trainer(mc, TrainConfig(steps=2, batch_size=2, augment=False), pool)
    >>> sorted(trainer.train_step())[:3]
    ['ce', 'cell_acc', 'exact']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from eqsolve.models.eqr import EqR, EqRConfig
from eqsolve.models.eqr_config import SOLVE_FIELDS
from eqsolve.tasks.base import get_task
from eqsolve.training.config import TrainConfig
from eqsolve.training.data import PuzzlePool, draw_batch, reveal_bound, to_tokens
from eqsolve.training.losses import reasoning_loss
from eqsolve.training.steps import DeqForward, SotSegment, make_strategy

__all__ = ["Trainer", "row_seed"]

# stream ids of the keyed draws (kept distinct so the streams never collide)
_SOT_DRAW, _DEQ_DRAW, _EXPLORE = 0, 1, 2


def row_seed(seed: int, key: tuple[int, ...]) -> int:
    """A 63-bit seed for one keyed draw (independent for distinct keys)."""
    return int(np.random.SeedSequence((seed, *key)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _load_initial_weights(model: EqR, path: str) -> None:
    """Copy the weights of ``path`` into ``model``; a different architecture is an error.

    Fields that only say how the map is run (``SOLVE_FIELDS``: the inner solve, ``L_cycles``)
    may differ: a reasoner trained with plain L-cycles can be fine-tuned with an inner solver.
    """
    source = EqR.from_checkpoint(path)
    mine, theirs = model.config.to_dict(), source.config.to_dict()
    differ = sorted(k for k in set(mine) | set(theirs)
                    if mine.get(k) != theirs.get(k) and k not in SOLVE_FIELDS)
    if differ:
        detail = ", ".join(f"{k}: run {mine.get(k)!r} != file {theirs.get(k)!r}" for k in differ)
        raise ValueError(f"train.init_from={path}: the weights are for another architecture "
                         f"({detail}); set the model config to match")
    model.load_state_dict(source.state_dict())


class Trainer:
    """Holds a training run's state; :meth:`train_step` does one optimizer step.

    Args:
        model_config: architecture.
        cfg: training options.
        pool: training puzzles.
        rank: DDP rank (0 when not distributed).
        world: DDP world size.
    """

    def __init__(self, model_config: EqRConfig, cfg: TrainConfig, pool: PuzzlePool,
                 rank: int = 0, world: int = 1) -> None:
        if cfg.batch_size % world:
            raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} ranks")
        self.cfg, self.pool, self.rank, self.world = cfg, pool, rank, world
        #: The task: tokens, augmentation, reveal curriculum and the cells the accuracy counts.
        self.task = task = get_task(cfg.task)
        if (model_config.seq_len, model_config.vocab_size) != (task.seq_len, task.vocab_size):
            raise ValueError(f"model seq_len={model_config.seq_len}, vocab_size={model_config.vocab_size} do not fit "
                             f"task {task.name!r} (seq_len={task.seq_len}, vocab_size={task.vocab_size}); "
                             f"use its model preset (model={task.model_config})")
        if (cfg.reveal_start > 0 or cfg.reveal_end > 0) and not task.supports_reveal:
            raise ValueError(f"train.reveal_start={cfg.reveal_start}, train.reveal_end={cfg.reveal_end}: task "
                             f"{task.name!r} has no reveal curriculum; set both to 0")
        self.device = torch.device(cfg.device)
        self.local_batch = cfg.batch_size // world
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = EqR(model_config)
        if cfg.init_from and not cfg.resume:
            _load_initial_weights(self.model, cfg.init_from)
        self.model = self.model.to(self.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           betas=(cfg.beta1, cfg.beta2),
                                           weight_decay=cfg.weight_decay)
        self.ema = ({k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    if cfg.ema_decay > 0 else None)
        self.noise_gen = torch.Generator(self.device).manual_seed(row_seed(cfg.seed, (9, rank)))
        self.step = 0
        self.carry: dict[str, Tensor] | None = None
        jacobian = cfg.jac_weight > 0
        if cfg.grad == "sot":
            module: torch.nn.Module = SotSegment(self.model, jacobian=jacobian)
        else:
            module = DeqForward(self.model, make_strategy(cfg), solver=cfg.solver, tol=cfg.tol,
                                depth=cfg.depth, jacobian=jacobian)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # the halting head is unused when its loss is off
            module = DistributedDataParallel(module, find_unused_parameters=cfg.halt_weight == 0)
        self.forward = module

    # ------------------------------------------------------------------ data
    def _global_rows(self) -> range:
        return range(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)

    def _init_rows(self, keys: list[tuple[int, ...]]) -> Tensor:
        std = 0.0 if self.cfg.init == "zeros" else None
        # sampled row by row on the CPU (keyed, so independent of batch layout and device), then
        # moved in one transfer
        rows = [self.model.init_state(1, generator=torch.Generator().manual_seed(
            row_seed(self.cfg.seed, key)), std=std, device="cpu") for key in keys]
        return torch.cat(rows).to(self.device)

    def _draw(self, keys: list[tuple[int, ...]]) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        reveal = reveal_bound(self.step, cfg.reveal_start, cfg.reveal_end, cfg.curriculum_steps)
        q, a = draw_batch(self.pool, keys, seed=cfg.seed, reveal_max=reveal,
                          reveal_prob=cfg.reveal_prob, augment=cfg.augment, task=self.task)
        return to_tokens(q, a, self.device, task=self.task)

    def deq_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens, labels and initial states of this step's batch in the DEQ modes.

        The draw is keyed by ``(seed, step, global row)``, so calling it twice (e.g. to get a
        reference gradient on the same batch) returns the same rows.
        """
        keys = [(_DEQ_DRAW, self.step, g) for g in self._global_rows()]
        tokens, labels = self._draw(keys)
        return tokens, labels, self._init_rows(keys)

    def _new_carry(self) -> dict[str, Tensor]:
        b, mc, dev = self.local_batch, self.model.config, self.device
        long = {"dtype": torch.long, "device": dev}
        return {
            "s": torch.zeros(b, 2, mc.seq_len, mc.hidden_size, device=dev),
            "tokens": torch.ones(b, mc.seq_len, **long),
            "labels": torch.ones(b, mc.seq_len, **long),
            "steps": torch.zeros(b, **long), "min_halt": torch.zeros(b, **long),
            "count": torch.zeros(b, **long),
            "halted": torch.ones(b, dtype=torch.bool, device=dev),
        }

    def _refill(self, carry: dict[str, Tensor]) -> None:
        # host syncs: two per step whatever the number of rows (per-row .item() calls cost a
        # GPU round trip each)
        rows = carry["halted"].nonzero().flatten().tolist()
        if not rows:
            return
        g = list(self._global_rows())
        counts = carry["count"].tolist()
        keys = [(_SOT_DRAW, g[j], int(counts[j])) for j in rows]
        tokens, labels = self._draw(keys)
        idx = torch.tensor(rows, device=self.device)
        carry["tokens"][idx], carry["labels"][idx] = tokens, labels
        carry["s"][idx] = self._init_rows(keys)
        carry["steps"][idx] = 0
        min_halt = []
        for key in keys:
            rng = np.random.default_rng((self.cfg.seed, _EXPLORE, *key[1:]))
            explore = rng.random() < self.cfg.halt_explore
            min_halt.append(int(rng.integers(2, self.cfg.sup_steps + 1)) if explore else 0)
        carry["min_halt"][idx] = torch.tensor(min_halt, dtype=torch.long, device=self.device)
        carry["count"][idx] += 1
        carry["halted"][idx] = False

    # ------------------------------------------------------------------ optimisation
    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (linear warm-up, then constant or cosine)."""
        cfg = self.cfg
        scale = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule == "cosine" and step >= cfg.warmup_steps:
            t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
            scale *= cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return cfg.lr * scale

    def _optimize(self, loss: Tensor) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip
                                              else float("inf"))
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.optimizer.step()
        if self.ema is not None:
            # warm-up of the decay so early EMA weights are not dominated by the random init
            decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for name, value in self.model.state_dict().items():
                    if value.dtype.is_floating_point:
                        self.ema[name].mul_(decay).add_(value, alpha=1 - decay)
        self.step += 1
        return norm.detach()

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns this rank's metrics (loss, ce, acc, NFE, residual...)."""
        cfg = self.cfg
        inner_jac = cfg.inner_jac_weight > 0
        if inner_jac and self.model.inner_solver is None:
            raise ValueError("train.inner_jac_weight > 0 needs a model with an inner equilibrium "
                             "(model.inner_solver); set model=deq or model.inner_solver=anderson")
        self.model.inner_jacobian_terms = [] if inner_jac else None
        if cfg.grad == "sot":
            if self.carry is None:
                self.carry = self._new_carry()
            c = self.carry
            self._refill(c)
            s_new, logits, halt, info = self.forward(c["s"], c["tokens"], cfg.noise, self.noise_gen)
            labels, tokens = c["labels"], c["tokens"]
        else:
            tokens, labels, s0 = self.deq_batch()
            s_new, logits, halt, info = self.forward(s0, tokens, cfg.noise, self.noise_gen)
        loss, stats = reasoning_loss(logits, labels, halt if cfg.halt_weight > 0 else None,
                                     kind=cfg.loss, halt_weight=cfg.halt_weight,
                                     blank_mask=self.task.scored_cells(tokens))
        jac = info["jac"].mean() if "jac" in info else None
        if jac is not None:
            loss = loss + cfg.jac_weight * jac
        inner_terms, self.model.inner_jacobian_terms = self.model.inner_jacobian_terms, None
        inner_jac_value = torch.cat(inner_terms).mean() if inner_terms else None
        if inner_jac_value is not None:
            loss = loss + cfg.inner_jac_weight * inner_jac_value
        grad_norm = self._optimize(loss)
        scalars = {"loss": loss.detach(), "ce": stats["ce"], "halt_loss": stats["halt"],
                   "cell_acc": stats["cell_acc"], "exact": stats["exact"].float().mean(),
                   "nfe": info["nfe"].float().mean(), "residual": info["residual"].float().mean(),
                   "grad_norm": grad_norm}
        if jac is not None:
            scalars["jac"] = jac
        if inner_jac_value is not None:
            scalars["inner_jac"] = inner_jac_value
        if self.model.inner_solver is not None and self.model.last_inner_residual is not None:
            scalars["inner_residual"] = self.model.last_inner_residual.float().mean()
        if cfg.grad == "sot":
            c = self.carry
            c["s"] = s_new.detach()
            c["steps"] += 1
            halted = c["steps"] >= cfg.sup_steps
            if cfg.halt_weight > 0:
                halted |= (halt.detach() > 0) & (c["steps"] >= c["min_halt"])
            c["halted"] = halted
            n_halted = halted.sum()
            scalars["halted"] = halted.float().mean()
            scalars["n_halted"] = n_halted.float()
            # accuracy of the answers rows leave with (what evaluation would see)
            scalars["exact_at_halt"] = (stats["exact"] & halted).sum() / n_halted.clamp(min=1)
            scalars["halt_steps"] = (c["steps"] * halted).sum() / n_halted.clamp(min=1)
        # one device-to-host copy for every logged number
        values = torch.stack([v.detach().float().reshape(()).to(self.device)
                              for v in scalars.values()]).tolist()
        out = dict(zip(scalars, values))
        out["lr"] = self.lr_at(self.step - 1)
        if cfg.grad == "sot" and out.pop("n_halted") == 0:
            out["exact_at_halt"] = out["halt_steps"] = float("nan")  # no row left this step
        return out

    # ------------------------------------------------------------------ state
    def ema_model(self) -> EqR:
        """A copy of the model holding the EMA weights (the live weights when EMA is off)."""
        copy = EqR(self.model.config).to(self.device)
        copy.load_state_dict(self.ema if self.ema is not None else self.model.state_dict())
        return copy.eval()

    def local_state(self) -> dict[str, Any]:
        """This rank's part of the state: the sot carry and the noise generator."""
        carry = None if self.carry is None else {k: v.cpu() for k, v in self.carry.items()}
        return {"carry": carry, "noise_gen": self.noise_gen.get_state()}

    def gather_local_states(self) -> list[dict[str, Any]]:
        """Every rank's :meth:`local_state` (a collective under DDP: call it on all ranks)."""
        mine = self.local_state()
        if self.world == 1:
            return [mine]
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, mine)
        return states

    def load_state(self, model: dict, ema: dict | None, optimizer: dict, step: int,
                   rank_states: list[dict[str, Any]]) -> None:
        """Restore weights, EMA, optimizer, step and this rank's carry / noise generator."""
        if len(rank_states) != self.world:
            raise ValueError(f"checkpoint was written by {len(rank_states)} rank(s); resume it "
                             f"with the same number (this run has {self.world})")
        self.model.load_state_dict(model)
        if self.ema is not None:
            if ema is None:
                raise ValueError("checkpoint has no EMA weights but ema_decay > 0")
            self.ema = {k: v.to(self.device).clone() for k, v in ema.items()}
        self.optimizer.load_state_dict(optimizer)
        self.step = int(step)
        mine = rank_states[self.rank]
        self.noise_gen.set_state(mine["noise_gen"])
        self.carry = (None if mine["carry"] is None
                      else {k: v.to(self.device) for k, v in mine["carry"].items()})

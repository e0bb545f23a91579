"""``eqsolve train``: train an equilibrium reasoner on any task under a chosen gradient.

The task (``train.task``, :func:`eqsolve.tasks.base.get_task`; ``eqsolve train --task NAME``
also picks its model and training presets) gives the pool, tokens, augmentation and eval set.

The run (this module) wires a :class:`~eqsolve.training.loop.Trainer` (model, AdamW, EMA, data
draw, sot carry) to files: ``config.json``, ``pool.npz``, ``metrics.jsonl`` (one JSON line per
``log_every`` steps: loss, accuracy, NFE, residual, steps/s), and atomic checkpoints
``last.pt`` (+ numbered independent copies, ``ckpt_<step>.pt``) every ``checkpoint_every`` steps
and at the end; ``eqsolve train`` then draws ``curves.png`` (:func:`plot_curves`) after
``results.json``. AdamW replaces the release's AdamATan2, which is CUDA-only.

The run folder belongs to one run: it is locked for the whole run (a second run with the same
``out`` fails at once), and a folder that already holds a run is refused unless ``resume`` is
set. SIGTERM stops the run cleanly at the next step, with a checkpoint there; the result then
says ``"stopped": "signal"`` (``eqsolve train`` exits 143), a time limit ``"time_limit"``.

Resume: ``resume=True`` continues from ``<out>/last.pt`` (or ``resume=PATH``). A run killed at
any moment, ``kill -9`` included, loses at most ``checkpoint_every`` steps, and the resumed run
produces exactly the losses of an uninterrupted one: every random draw is either keyed by
``(seed, step/slot, count)`` or its generator state is in the checkpoint.

Scale-out: under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised (gloo on
CPU; on GPU each rank takes ``cuda:LOCAL_RANK`` and nccl carries CUDA tensors, see
:func:`eqsolve.distributed.select_device`) and the step module is wrapped in
DistributedDataParallel; ``batch_size`` is the global batch and each rank trains on its slice of
the same global rows.

Examples:
    >>> cfg = load_preset("train", "small")
    >>> sorted(cfg)[:3]
    ['augment', 'batch_size', 'beta1']
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from eqsolve import runs
from eqsolve._errors import check_keys
from eqsolve._io import atomic_write
from eqsolve.distributed import process_group, rank_and_world, select_device
from eqsolve.models.eqr import EqRConfig
from eqsolve.tasks.base import get_task
from eqsolve.training.checkpoint import (
    TRAIN_STATE_VERSION,
    atomic_torch_save,
    capture_global_rng,
    check_compatible,
    git_commit,
    load_training_checkpoint,
    restore_global_rng,
)
from eqsolve.training.config import TrainConfig, dataclass_from_dict
from eqsolve.training.data import PuzzlePool, build_pool, pool_source
from eqsolve.training.eval import default_eval_set, evaluate
from eqsolve.training.loop import Trainer
from eqsolve.training.tracking import make_tracker

__all__ = ["TrainConfig", "Trainer", "load_preset", "main", "run_training"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def load_preset(group: str, name: str) -> dict[str, Any]:
    """Read ``eqsolve/conf/<group>/<name>.yaml`` (``group`` is ``model`` or ``train``) as a dict.

    Args:
        group: config group.
        name: preset name (``small`` or ``eqr``).

    Returns:
        The preset's fields.
    """
    from omegaconf import OmegaConf

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise ValueError(f"no {group} preset {name!r}; available: {have}")
    return dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


def _get_pool(cfg: TrainConfig, out: Path, rank: int) -> PuzzlePool:
    """Build the pool once (rank 0) and cache it; a resumed run reuses the cached file."""
    cache = out / "pool.npz"
    if rank == 0 and not cache.is_file():
        build_pool(cfg.data, limit=cfg.data_limit, gen_easy=cfg.gen_easy, gen_hard=cfg.gen_hard,
                   seed=cfg.seed, task=cfg.task).save(cache)
    if dist.is_initialized():
        dist.barrier()
    pool = PuzzlePool.load(cache)
    expected = pool_source(cfg.data, cfg.gen_easy, cfg.gen_hard, cfg.seed, rows=len(pool), task=cfg.task)
    if pool.source != expected:
        raise ValueError(f"{cache} holds the pool {pool.source!r} but this run's config asks for "
                         f"{expected!r}; delete the file or use another run folder")
    return pool


def _checkpoint(trainer: Trainer, out: Path, elapsed: float, metrics: dict[str, Any],
                commit: str) -> None:
    states = trainer.gather_local_states()  # collective: every rank calls it
    if trainer.rank != 0:
        return
    payload = {
        "format": "eqsolve.eqr/1",
        "config": trainer.model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "ema": None if trainer.ema is None else {k: v.cpu() for k, v in trainer.ema.items()},
        "extra": {"step": trainer.step, "seed": trainer.cfg.seed, "grad": trainer.cfg.grad,
                  "commit": commit, "elapsed_s": elapsed, "metrics": metrics},
        "train": {"version": TRAIN_STATE_VERSION, "step": trainer.step,
                  "optimizer": trainer.optimizer.state_dict(),
                  "train_config": trainer.cfg.to_dict(), "rng": capture_global_rng(),
                  "carry": states, "pool_fingerprint": trainer.pool.fingerprint(),
                  "elapsed_s": elapsed, "world": trainer.world},
    }
    atomic_torch_save(payload, out / "last.pt")
    keep = trainer.cfg.keep_checkpoints
    if keep:
        # an independent copy (not a hard link): damage to last.pt is then not damage to every
        # numbered file, so an older one is a real fallback; the bytes are copied, not re-pickled
        with open(out / "last.pt", "rb") as source:
            atomic_write(out / f"ckpt_{trainer.step:07d}.pt",
                         lambda handle: shutil.copyfileobj(source, handle))
        for path in sorted(out.glob("ckpt_*.pt"))[:-keep]:
            path.unlink(missing_ok=True)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint being resumed (they will be redone)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def run_training(cfg: TrainConfig, model_config: EqRConfig | None = None) -> dict[str, Any]:
    """Train (or resume) a run; see :func:`_run_training`. On CUDA, matmuls use TF32 for the
    duration of the run only (about twice the float32 rate; norms stay in float32).

    Under ``torchrun`` the process group is joined here and left here, after
    :func:`_run_training` has returned: its trainer (the DDP model) is released by then, so
    leaving the group stops gloo's threads before the process exits (see
    :mod:`eqsolve.distributed`). A group the caller created is left to the caller. On CUDA each
    rank trains on its own GPU, ``cuda:LOCAL_RANK``, made the current device
    (:func:`eqsolve.distributed.select_device`), so ``device="cuda"`` resolves to it.
    """
    device, backend = select_device(cfg.device)
    cuda = device.type == "cuda"
    with process_group(backend):
        if not cuda:
            return _run_training(cfg, model_config)
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            return _run_training(cfg, model_config)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run_training(cfg: TrainConfig, model_config: EqRConfig | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns the final metrics, evaluation and checkpoint path.

    Args:
        cfg: training options (``cfg.out`` is the run folder).
        model_config: architecture (default: the task's model preset, ``small`` for Sudoku).

    Returns:
        ``{"step", "steps", "stopped", "losses", "final", "eval", "checkpoint", "elapsed_s"}``:
        ``step`` is the step reached, ``steps`` the planned total, ``stopped`` ``None`` for a
        complete run, ``"signal"`` after SIGTERM or ``"time_limit"``; ``losses`` holds this
        process's per-step losses, which resume tests compare.

    Raises:
        FileExistsError: ``cfg.out`` already holds a run and ``cfg.resume`` is not set.
        RunFolderBusy: Another process is running in ``cfg.out``.
    """
    if model_config is None:
        model_config = EqRConfig.from_dict(load_preset("model", get_task(cfg.task).model_config))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = rank_and_world()
    out = Path(cfg.out)
    lock = None
    if rank == 0:  # one writer per folder; the CLI already holds this lock (claims nest)
        _, lock = runs.claim_run_dir("train", out, run_files=runs.TRAIN_RUN_FILES, resumable=True,
                                     resume=bool(cfg.resume))
    try:
        return _train_in(cfg, model_config, out, rank, world)
    finally:
        if lock is not None:
            lock.release()


def _train_in(cfg: TrainConfig, model_config: EqRConfig, out: Path, rank: int,
              world: int) -> dict[str, Any]:
    """The body of :func:`_run_training`, with the run folder claimed (by rank 0)."""
    pool = _get_pool(cfg, out, rank)
    trainer = Trainer(model_config, cfg, pool, rank=rank, world=world)
    elapsed0 = 0.0
    if cfg.resume:
        path = out / "last.pt" if cfg.resume is True else Path(str(cfg.resume))
        path = path / "last.pt" if path.is_dir() else path  # a run folder means its last.pt
        ckpt = load_training_checkpoint(path)
        check_compatible(ckpt, model_config.to_dict(), cfg.to_dict(), pool.fingerprint(), str(path))
        tr = ckpt["train"]
        trainer.load_state(ckpt["model"], ckpt["ema"], tr["optimizer"], tr["step"], tr["carry"])
        restore_global_rng(tr["rng"])
        elapsed0 = float(tr.get("elapsed_s", 0.0))
        if rank == 0:
            _truncate_metrics(out / "metrics.jsonl", trainer.step)
    commit = git_commit()  # the code this process runs (HEAD may move while it trains)
    if rank == 0:
        (out / "config.json").write_text(json.dumps(
            {"model": model_config.to_dict(), "train": cfg.to_dict(), "commit": commit,
             "world": world, "pool": pool.source, "torch": torch.__version__}, indent=2))
    stop = {"flag": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True)) \
        if rank == 0 and hasattr(signal, "SIGTERM") else None
    eval_set = default_eval_set(cfg.task) if rank == 0 else None
    tracker = make_tracker(cfg.tracking if rank == 0 else "none", out,
                           {"model": model_config.to_dict(), "train": cfg.to_dict(), "commit": commit},
                           start_step=trainer.step, project=cfg.tracking_project)
    bar = None
    if cfg.progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=trainer.step, desc=f"train[{cfg.grad}]",
                   dynamic_ncols=True)
    losses: list[float] = []
    window: dict[str, list[float]] = {}  # key -> [sum, count] since the last log line
    t_start = t_window = time.perf_counter()
    n_window, last_metrics, evaluation = 0, {}, {}
    stopped = None
    try:
        while trainer.step < cfg.steps:
            metrics = trainer.train_step()
            losses.append(metrics["loss"])
            for key, value in metrics.items():
                total = window.setdefault(key, [0.0, 0.0])
                if value == value:  # NaN means "no such event this step" (e.g. nobody halted)
                    total[0] += value
                    total[1] += 1
            n_window += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['cell_acc']:.3f}")
            elapsed = elapsed0 + time.perf_counter() - t_start
            if trainer.step % cfg.log_every == 0 or trainer.step == cfg.steps:
                keys = sorted(window)  # the same keys on every rank: train_step's
                sums = torch.tensor([window[k] for k in keys], dtype=torch.float64)
                if dist.is_initialized():  # log the global batch, not rank 0's slice
                    dist.all_reduce(sums)
                last_metrics = {k: (s / n if n else None) for k, (s, n) in zip(keys, sums.tolist())}
                last_metrics.update(step=trainer.step, elapsed_s=round(elapsed, 2),
                                    steps_per_s=n_window / (time.perf_counter() - t_window))
                if cfg.eval_every and trainer.step % cfg.eval_every == 0 and eval_set is not None:
                    evaluation = evaluate(trainer.ema_model(), eval_set.head(cfg.eval_size),
                                          depth=cfg.eval_depth, seed=cfg.seed, task=cfg.task)
                    last_metrics.update({f"eval_{k}": v for k, v in evaluation.items()})
                if rank == 0:
                    with open(out / "metrics.jsonl", "a") as handle:
                        handle.write(json.dumps(last_metrics) + "\n")
                    tracker.log(last_metrics, trainer.step)
                window, n_window, t_window = {}, 0, time.perf_counter()
            over_time = cfg.time_limit_s and time.perf_counter() - t_start > cfg.time_limit_s
            if dist.is_initialized():  # every rank must agree to stop at the same step
                # (two flags, so that the result can say which stop it was)
                flags = torch.tensor([float(stop["flag"]), float(bool(over_time))])
                dist.all_reduce(flags)
                stop["flag"], over_time = bool(flags[0].item()), bool(flags[1].item())
            if (trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps
                    or stop["flag"] or over_time):
                _checkpoint(trainer, out, elapsed, last_metrics, commit)
            if stop["flag"] or over_time:
                if trainer.step < cfg.steps:  # a stop that lands on the last step stopped nothing
                    stopped = "signal" if stop["flag"] else "time_limit"
                break
        if eval_set is not None:
            evaluation = evaluate(trainer.ema_model(), eval_set.head(cfg.eval_size),
                                  depth=cfg.eval_depth, seed=cfg.seed, task=cfg.task)
        if dist.is_initialized():
            # ranks leave together: rank 0 still evaluates here, and a peer that destroys its
            # gloo group meanwhile can abort ("terminate called without an active exception")
            dist.barrier()
    finally:
        tracker.close()
        if bar is not None:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return {"step": trainer.step, "steps": cfg.steps, "stopped": stopped, "losses": losses,
            "final": last_metrics, "eval": evaluation,
            "checkpoint": str(out / "last.pt"),
            "elapsed_s": elapsed0 + time.perf_counter() - t_start}


#: Accuracy curves of :func:`plot_curves`: metrics key and legend label.
_ACCURACY_CURVES = (("cell_acc", "cell (training batch)"), ("exact", "exact (training batch)"),
                    ("eval_cell_acc", "cell (eval set)"), ("eval_exact", "exact (eval set)"))


def plot_curves(run_dir: str | os.PathLike) -> Path | None:
    """Draw a run's ``metrics.jsonl`` as ``curves.png``: loss, accuracy and residual per step.

    ``eqsolve train`` calls it after ``results.json`` is written, so a failure here never costs
    the results. matplotlib is imported only here.

    Args:
        run_dir: A training run folder.

    Returns:
        The figure's path, or ``None`` when the run logged no metrics (nothing to draw).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines()
             if line.strip()] if metrics.is_file() else []
    if not lines:
        return None

    def curve(key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
        points = [(m["step"], m[key] * scale) for m in lines
                  if isinstance(m.get(key), (int, float)) and m[key] == m[key]]
        return [x for x, _ in points], [y for _, y in points]

    fig = Figure(figsize=(15, 4))
    FigureCanvasAgg(fig)
    loss_ax, acc_ax, res_ax = fig.subplots(1, 3)
    loss_ax.plot(*curve("loss"), label="loss")
    loss_ax.set_ylabel("training loss")
    for key, label in _ACCURACY_CURVES:
        steps, values = curve(key, 100.0)
        if steps:
            acc_ax.plot(steps, values, marker="o" if key.startswith("eval") else None, label=label)
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_ylim(-2, 102)
    for key, label in (("residual", "outer map"), ("inner_residual", "inner solve")):
        steps, values = curve(key)
        if steps:
            res_ax.plot(steps, values, label=label)
    res_ax.set_ylabel("relative residual ||f(z) - z|| / ||f(z)||")
    if any(v > 0 for v in curve("residual")[1]):
        res_ax.set_yscale("log")
    for ax in (loss_ax, acc_ax, res_ax):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"training curves: {run_dir.name}")
    fig.tight_layout()
    return atomic_write(run_dir / "curves.png", lambda handle: fig.savefig(handle, format="png", dpi=110))


def main(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Entry point for the CLI: ``cfg`` holds groups ``model`` and ``train`` (dict/DictConfig).

    Missing groups fall back to the task's presets (``train.task``; Sudoku: ``small``); unknown
    keys are errors.

    Args:
        cfg: composed configuration.

    Returns:
        What :func:`run_training` returns.
    """
    cfg = dict(cfg or {})
    check_keys("config group", cfg, ["model", "train"])
    train_values = dict(cfg.get("train") or load_preset("train", "small"))
    task = get_task(train_values.get("task", TrainConfig.task))
    model_values = dict(cfg.get("model") or load_preset("model", task.model_config))
    model_config = dataclass_from_dict(EqRConfig, model_values, "model")
    return run_training(TrainConfig.from_dict(train_values), model_config)

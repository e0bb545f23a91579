"""``eqsolve compare-grads``: implicit vs unrolled (and phantom, one-step) training side by side.

Every mode starts from the same initial weights (same seed) and sees the same batches in the
same order, with path noise off so that the only difference is the gradient. Two levels:

- ``level: inner`` (the default): the equilibrium-native reasoner (``model.inner_solver``): each
  outer step *solves* its inner equilibrium, and the mode is the gradient through that solve
  (``model.inner_grad``); the outer steps are trained by deep supervision (``sot``). The inner
  forward converges (the default model reaches a relative residual below 1e-3 in its inner
  budget), so the implicit function theorem applies. The reference gradient is the exact
  implicit one: float64, IFT at an inner solve run to 1e-10 with a converged adjoint.
- ``level: outer``: the whole outer map is one DEQ solved by ``train.solver`` within
  ``train.depth`` steps and the mode is the DEQ gradient (``train.grad``); the reference is the
  full unrolled gradient through all ``depth`` forward iterations.

For each mode it records loss and accuracy against step and wall time, the forward residual
reached (inner: the inner solve's relative residual; outer: the DEQ solve's), the peak memory of
the training process, and every ``cosine_every`` steps the cosine between the mode's gradient
and the reference at the current weights on the current batch. Each mode runs in a fresh
process (``spawn``) so that peak memory (max RSS, or CUDA peak) is its own. Output:
``compare_grads.json`` and ``compare_grads.png`` in the run folder, and a printed table.

Modes are names of :data:`eqsolve.training.config.GRAD_MODES` other than ``sot`` (whose data
order differs by design), optionally with a parameter: ``unrolled:4`` (last 4 iterations),
``phantom:3`` (k = 3).

Examples:
    >>> parse_mode("unrolled:4")
    ('unrolled', {'unroll_k': 4})
    >>> CompareConfig(modes=["sot"])
    Traceback (most recent call last):
    ...
    ValueError: compare mode 'sot' invalid; use implicit, phantom[:k], onestep, unrolled[:k]
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eqsolve._errors import check_keys
from eqsolve._io import atomic_write, atomic_write_json
from eqsolve.models.eqr import EqRConfig
from eqsolve.runs import progress_bar
from eqsolve.training.config import TrainConfig, dataclass_from_dict

__all__ = ["CompareConfig", "parse_mode", "run", "run_compare", "summary_table"]


def parse_mode(mode: str) -> tuple[str, dict[str, int]]:
    """Split ``"name[:k]"`` into the gradient name and TrainConfig overrides.

    Args:
        mode: e.g. ``"implicit"``, ``"unrolled"``, ``"unrolled:4"``, ``"phantom:3"``.

    Returns:
        ``(grad, overrides)``.
    """
    name, _, arg = str(mode).partition(":")
    ok = name in ("implicit", "onestep", "phantom", "unrolled") and (
        not arg or (name in ("phantom", "unrolled") and arg.isdigit() and int(arg) >= 1))
    if not ok:
        raise ValueError(f"compare mode {mode!r} invalid; use implicit, phantom[:k], onestep, "
                         "unrolled[:k]")
    if not arg:
        return name, {}
    return name, {"unroll_k" if name == "unrolled" else "phantom_k": int(arg)}


@dataclass
class CompareConfig:
    """Options of ``eqsolve compare-grads`` (the ``compare`` config section).

    Attributes:
        modes: gradient modes to compare (see :func:`parse_mode`).
        level: ``"inner"`` (the mode is the gradient through each outer step's inner
            equilibrium; needs a model with ``inner_solver``) or ``"outer"`` (the whole outer map
            is one DEQ; the mode is its gradient). See the module docstring.
        cosine_every: steps between gradient-cosine measurements (0 disables).
        eval_size: held-out puzzles scored at the end of each mode (0 disables).
        isolate: run each mode in a fresh process (needed for a per-mode peak memory).
        converged_tol: a mode's forward pass counts as converged when its mean relative
            residual over the last ten steps is at most this.
    """

    modes: list[str] = field(default_factory=lambda: ["unrolled", "implicit", "phantom",
                                                      "onestep"])
    level: str = "inner"
    cosine_every: int = 10
    eval_size: int = 64
    isolate: bool = True
    converged_tol: float = 1e-3

    def __post_init__(self) -> None:
        self.modes = list(self.modes)
        if not self.modes:
            raise ValueError("compare: modes is empty")
        if self.level not in ("inner", "outer"):
            raise ValueError(f"compare: level={self.level!r} invalid; use inner or outer")
        for mode in self.modes:
            parse_mode(mode)
        if self.cosine_every < 0 or self.eval_size < 0:
            raise ValueError(f"compare: cosine_every={self.cosine_every} and "
                             f"eval_size={self.eval_size} must be >= 0")


def _flat_grad(trainer: Any, strategy: Any) -> torch.Tensor:
    """Gradient of this step's loss under ``strategy`` at the current weights (no update)."""
    from eqsolve.training.losses import reasoning_loss
    from eqsolve.training.steps import DeqForward

    cfg = trainer.cfg
    forward = DeqForward(trainer.model, strategy, solver=cfg.solver, tol=cfg.tol, depth=cfg.depth)
    tokens, labels, s0 = trainer.deq_batch()
    _, logits, halt, _ = forward(s0, tokens, cfg.noise)
    loss, _ = reasoning_loss(logits, labels, halt if cfg.halt_weight > 0 else None,
                             kind=cfg.loss, halt_weight=cfg.halt_weight)
    params = [p for p in trainer.model.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params)])


#: the exact reference of the inner level: float64, inner solve to 1e-10, converged adjoint
_EXACT_INNER = {"inner_grad": "implicit", "inner_iter": 200, "inner_tol": 1e-10, "inner_backward_iter": 200}
#: outer steps run without a graph before the probed one (mid-reasoning states)
_PROBE_WARMUP = 4


def _inner_flat_grad(trainer: Any, inner: Mapping[str, Any]) -> torch.Tensor:
    """Gradient through one outer step with the inner-solve settings ``inner``, in float64.

    The point is this step's DEQ-mode batch (the same for every mode at the same step) after
    ``_PROBE_WARMUP`` outer steps without a graph from the batch's initial states.
    """
    import copy

    from eqsolve.training.losses import reasoning_loss

    cfg = trainer.cfg
    model = copy.deepcopy(trainer.model).double()
    for key, value in inner.items():
        setattr(model.config, key, value)
    tokens, labels, s0 = trainer.deq_batch()
    with torch.no_grad():
        x = model.embed(tokens)
        s = s0.double()
        for _ in range(_PROBE_WARMUP):
            s = model.map(s, x, noise=0.0)
    logits = model.decode(model.map(s, model.embed(tokens), noise=0.0))
    loss, _ = reasoning_loss(logits, labels, None, kind=cfg.loss, halt_weight=0.0)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params)])


def _status_mb(field_name: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB, NaN if unavailable."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak_rss() -> float:
    """Reset the process's RSS high-water mark (Linux) and return the current RSS in MiB.

    ``ru_maxrss`` survives fork+exec, so a spawned worker would report its parent's peak;
    writing 5 to ``/proc/self/clear_refs`` resets ``VmHWM`` instead. Freed heap is trimmed
    first so that earlier allocations do not hide the training's own growth.
    """
    try:
        import ctypes
        import ctypes.util

        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        pass
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_mode(model: dict[str, Any], train: dict[str, Any], compare: dict[str, Any], mode: str,
              pool_path: str, tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train one mode from the shared initial weights; returns its curves and measurements.

    ``tick`` is called after every training step (the parent's progress bar).
    """
    from eqsolve.gradients import get_gradient
    from eqsolve.training.data import PuzzlePool
    from eqsolve.training.eval import default_eval_set, evaluate
    from eqsolve.training.loop import Trainer

    if train.get("threads"):
        torch.set_num_threads(int(train["threads"]))
    grad, overrides = parse_mode(mode)
    inner_level = compare["level"] == "inner"
    if inner_level:  # the mode is the inner gradient; the outer steps get deep supervision
        k = next(iter(overrides.values()), None)
        if grad == "unrolled" and k is None:  # "unrolled": through every inner evaluation
            k = int(model["inner_iter"])
        model = {**model, "inner_grad": grad, **({"inner_grad_k": k} if k is not None else {})}
        cfg = TrainConfig.from_dict({**train, "grad": "sot"})
    else:
        cfg = TrainConfig.from_dict({**train, "grad": grad, **overrides})
    trainer = Trainer(EqRConfig.from_dict(model), cfg, PuzzlePool.load(Path(pool_path)))
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base_mb = _reset_peak_rss()
    reference = get_gradient("unrolled", k=None)
    curves: dict[str, list[float]] = {k: [] for k in ("step", "wall_s", "loss", "cell_acc",
                                                         "exact", "nfe", "residual",
                                                         "forward_residual")}
    cosine: dict[str, list[float]] = {"step": [], "cosine": [], "rel_norm": []}
    wall = 0.0
    every = int(compare["cosine_every"])
    snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []
    while trainer.step < cfg.steps:
        if every and trainer.step % every == 0:
            snapshots.append((trainer.step, {k: v.detach().clone()
                                             for k, v in trainer.model.state_dict().items()}))
        t0 = time.perf_counter()
        metrics = trainer.train_step()
        wall += time.perf_counter() - t0
        # the residual of the solve the mode differentiates: the inner solve's, or the DEQ's
        metrics["forward_residual"] = metrics.get("inner_residual", float("nan")) if inner_level \
            else metrics["residual"]
        for key in curves:
            curves[key].append(trainer.step if key == "step" else
                               wall if key == "wall_s" else metrics[key])
        if tick is not None:
            tick()
    # peak memory of training alone: read before the (memory-hungry) reference gradients
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()
    final_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    final_step = trainer.step
    for step, state in snapshots:  # same weights and batch as when the mode trained on it
        trainer.model.load_state_dict(state)
        trainer.step = step
        if inner_level:
            g_ref = _inner_flat_grad(trainer, _EXACT_INNER)
            g_mode = _inner_flat_grad(trainer, {})  # the mode's own inner settings, in float64
        else:
            g_ref = _flat_grad(trainer, reference)
            g_mode = _flat_grad(trainer, trainer.forward.strategy)
        cosine["step"].append(step)
        cosine["cosine"].append(float(torch.nn.functional.cosine_similarity(g_mode, g_ref, dim=0)))
        cosine["rel_norm"].append(float(g_mode.norm() / (g_ref.norm() + 1e-30)))
    trainer.model.load_state_dict(final_state)
    trainer.step = final_step
    out = {"mode": mode, "curves": curves, "cosine": cosine, "wall_s": wall,
           "s_per_step": wall / max(cfg.steps, 1), "peak_mb": peak_mb,
           "peak_over_start_mb": peak_mb - (0.0 if cuda else base_mb),
           "memory_kind": "cuda_max_allocated" if cuda else "VmHWM (peak RSS, reset at start)"}
    eval_set = default_eval_set() if compare["eval_size"] else None
    if eval_set is not None:
        model_eval = trainer.ema_model()
        out["eval"] = evaluate(model_eval, eval_set.head(int(compare["eval_size"])),
                               depth=cfg.depth, seed=cfg.seed)
    return out


def _worker(args: tuple, queue: Any, ticks: bool = False) -> None:
    tick = (lambda: queue.put(("tick", None))) if ticks else None
    try:
        queue.put(("ok", _run_mode(*args, tick=tick)))
    except BaseException as err:  # report, never hang the parent
        queue.put(("error", f"{type(err).__name__}: {err}"))


def _wait(proc: Any, queue: Any, mode: str,
          tick: Callable[[], None] | None = None) -> tuple[str, Any]:
    """The worker's report; a worker that died without one is an error, never a hang.

    ``("tick", None)`` messages (one per training step) are passed to ``tick``.
    """
    import queue as queue_module

    while True:
        try:
            item = queue.get(timeout=1.0)
            if item[0] == "tick":
                if tick is not None:
                    tick()
                continue
            proc.join()
            return item
        except queue_module.Empty:
            if not proc.is_alive():
                return "error", (f"worker for {mode!r} exited with code {proc.exitcode} and no "
                                 "report (a script that calls run() needs an "
                                 "`if __name__ == '__main__':` guard for spawn)")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inner = result["compare"].get("level", "outer") == "inner"
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    for mode, res in result["modes"].items():
        c = res["curves"]
        label = f"{mode} ({res['peak_over_start_mb']:.0f} MB)"
        axes[0].plot(c["step"], c["loss"], label=label)
        axes[1].plot(c["wall_s"], c["loss"], label=label)
        axes[2].plot(c["step"], c["cell_acc"], label=label)
        axes[3].semilogy(c["step"], c["forward_residual"], label=label)
        if res["cosine"]["step"]:
            axes[4].plot(res["cosine"]["step"], res["cosine"]["cosine"], marker="o", label=mode)
    titles = [("step", "training loss"), ("wall time [s]", "training loss"),
              ("step", "cell accuracy (blanks)"),
              ("step", "relative residual of the " + ("inner solve" if inner else "DEQ solve")),
              ("step", "cosine with the exact implicit grad" if inner
               else "cosine with full unrolled grad")]
    for ax, (xlabel, ylabel) in zip(axes, titles):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="mode (peak mem over start)", title_fontsize=8)
    axes[4].legend(fontsize=8)
    what = (f"inner gradient through {result['model'].get('inner_solver')} "
            f"({result['model'].get('inner_iter')} evaluations), outer deep supervision" if inner
            else f"DEQ gradient of the outer map, forward depth {result['train']['depth']}")
    fig.suptitle(f"compare-grads: same init and data; {what}; batch {result['train']['batch_size']}")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def run_compare(model: EqRConfig, train: TrainConfig, compare: CompareConfig) -> dict[str, Any]:
    """Train every mode of ``compare.modes`` from the same start; write JSON + figure.

    Args:
        model: architecture (small, so that full unrolling fits).
        train: shared training options (``grad`` is replaced per mode; ``noise`` is forced to 0
            so that all modes see the same map; ``out`` is the output folder).
        compare: modes and measurement options.

    Returns:
        The result dict (also written to ``<out>/compare_grads.json``), with per-mode curves,
        cosines, wall time, peak memory and final evaluation, and a ``summary`` table.
    """
    from eqsolve.training.data import build_pool

    if compare.level == "inner" and model.inner_solver is None:
        raise ValueError("compare.level=inner compares gradients through an inner equilibrium, but "
                         "the model has none (model.inner_solver is null); use model=tiny_deq, set "
                         "model.inner_solver=anderson, or compare.level=outer")
    out = Path(train.out)
    out.mkdir(parents=True, exist_ok=True)
    train = dataclasses.replace(train, noise=0.0, ema_decay=0.0, resume=False)
    pool_path = out / "pool.npz"
    if not pool_path.is_file():
        build_pool(train.data, limit=train.data_limit, gen_easy=train.gen_easy,
                   gen_hard=train.gen_hard, seed=train.seed).save(pool_path)
    args_common = (model.to_dict(), train.to_dict(), dataclasses.asdict(compare))
    result: dict[str, Any] = {"schema": "eqsolve.training.compare_grads/1", "model": model.to_dict(),
                              "train": train.to_dict(), "compare": dataclasses.asdict(compare),
                              "torch_threads": train.threads or torch.get_num_threads(),
                              "modes": {}}
    ctx = mp.get_context("spawn")
    with progress_bar(len(compare.modes) * train.steps, "compare-grads", enabled=train.progress,
                      unit="step") as bar:
        def tick() -> None:
            bar.update(1)

        for mode in compare.modes:
            bar.set_postfix(mode=mode)
            args = (*args_common, mode, str(pool_path))
            if not compare.isolate:
                result["modes"][mode] = _run_mode(*args, tick=tick)
                continue
            queue = ctx.Queue()
            # steps are reported through the queue only when a bar draws them
            proc = ctx.Process(target=_worker, args=(args, queue, not bar.disable))
            proc.start()
            status, payload = _wait(proc, queue, mode, tick)
            if status != "ok":
                raise RuntimeError(f"compare-grads: mode {mode!r} failed: {payload}")
            result["modes"][mode] = payload
    def tail_mean(values: list[float]) -> float:
        tail = [v for v in values[-10:] if v == v]
        return sum(tail) / len(tail) if tail else float("nan")

    result["summary"] = {
        mode: {"final_loss": res["curves"]["loss"][-1],
               "forward_residual": tail_mean(res["curves"]["forward_residual"]),
               "forward_converged": tail_mean(res["curves"]["forward_residual"]) <= compare.converged_tol,
               "final_cell_acc": res["curves"]["cell_acc"][-1],
               "mean_cosine": (sum(res["cosine"]["cosine"]) / len(res["cosine"]["cosine"])
                               if res["cosine"]["cosine"] else None),
               "s_per_step": res["s_per_step"], "peak_over_start_mb": res["peak_over_start_mb"],
               "eval_exact": res.get("eval", {}).get("exact"),
               "eval_cell_acc": res.get("eval", {}).get("cell_acc")}
        for mode, res in result["modes"].items()}
    atomic_write_json(out / "compare_grads.json", result)
    print(summary_table(result))
    _plot(result, out / "compare_grads.png")
    return result


def summary_table(result: Mapping[str, Any]) -> str:
    """The per-mode summary of a compare-grads result as a markdown table."""
    level = result["compare"].get("level", "outer")
    ref = "exact implicit" if level == "inner" else "full unrolled"
    lines = [f"compare-grads ({level} level): every mode from the same weights on the same batches",
             f"| mode | final loss | eval exact | eval cells | forward residual | converged | "
             f"cosine with {ref} | s/step | peak MB over start |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]

    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    for mode, row in result["summary"].items():
        lines.append(f"| {mode} | {row['final_loss']:.3f} | {fmt(row['eval_exact'], '.1%')} | "
                     f"{fmt(row['eval_cell_acc'], '.1%')} | {fmt(row['forward_residual'], '.1e')} | "
                     f"{'yes' if row['forward_converged'] else 'NO'} | {fmt(row['mean_cosine'], '.3f')} | "
                     f"{row['s_per_step']:.3f} | {row['peak_over_start_mb']:.0f} |")
    return "\n".join(lines)


def run(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CLI entry point: ``cfg`` holds groups ``model``, ``train`` and optional ``compare``.

    Missing groups default to the presets ``model/tiny_deq`` and ``train/compare`` (sized to run
    in under 10 minutes on 2 CPU cores).

    Args:
        cfg: composed configuration (dict or DictConfig).

    Returns:
        The ``summary`` and output paths (the full curves are in the JSON file).
    """
    from eqsolve.training.run import load_preset

    cfg = dict(cfg or {})
    check_keys("config group", cfg, ["model", "train", "compare"])
    model = dataclass_from_dict(EqRConfig, dict(cfg.get("model") or load_preset("model", "tiny_deq")),
                                "model")
    train = TrainConfig.from_dict(dict(cfg.get("train") or load_preset("train", "compare")))
    compare = dataclass_from_dict(CompareConfig, dict(cfg.get("compare") or {}), "compare")
    result = run_compare(model, train, compare)
    return {"summary": result["summary"], "json": str(Path(train.out) / "compare_grads.json"),
            "figure": str(Path(train.out) / "compare_grads.png")}

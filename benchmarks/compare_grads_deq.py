"""Implicit vs unrolled vs phantom vs one-step gradients, training the equilibrium-native reasoner.

Every mode trains the same architecture (``model=deq``: each outer step solves its inner
equilibrium with 8 Anderson evaluations) from the same initial weights (the shipped ``eqr``
reasoner's) on the same batches (same seed) with the ``train=deq`` recipe, for the same
wall-clock time; only ``model.inner_grad`` differs: how the gradient passes the inner
equilibrium. Then, per mode:

* eval exact accuracy (binomial standard error) of the EMA weights at 1/3, 2/3 and all of the
  time budget (the numbered checkpoint nearest each time), on a seeded subset of the shipped
  eval set at depth 16 with the Anderson inner solver, against wall time and optimizer steps;
* peak resident memory of the training process (``/usr/bin/time``, KiB);
* the inner forward residual reached (training log ``inner_residual``, mean of the last 10 logs);
* the cosine between the mode's parameter gradient and the exact implicit gradient (IFT at a
  200-step inner solution) on 8 eval puzzles, at the shared initial weights.

Run (repository root): ``python benchmarks/compare_grads_deq.py --seconds 360`` →
``benchmarks/results/compare_grads_deq.{json,md,png}``. 1 torch thread per process.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reasoner_deq import binomial_se  # noqa: E402  (a sibling script, not a package)

from eqsolve._io import (
    atomic_write,  # noqa: E402
    atomic_write_json,  # noqa: E402
)
from eqsolve.models.loading import load_checkpoint as load_model  # noqa: E402
from eqsolve.scaling import solve_many  # noqa: E402
from eqsolve.tasks.sudoku import check_batch, default_eval_set, encode_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: label -> model overrides
MODES = {
    "implicit (adjoint budget 8)": ["model.inner_grad=implicit", "model.inner_backward_iter=8"],
    "unrolled (all 8 steps)": ["model.inner_grad=unrolled", "model.inner_grad_k=8"],
    "unrolled (last 2 steps)": ["model.inner_grad=unrolled", "model.inner_grad_k=2"],
    "phantom k=2 (shipped recipe)": ["model.inner_grad=phantom", "model.inner_grad_k=2"],
    "onestep": ["model.inner_grad=onestep"],
}


def train_mode(label: str, overrides: list[str], out: Path, seconds: int) -> dict:
    run = out / re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    run.mkdir(parents=True)
    # the recipe's pool (2,000 easy + 800 hard puzzles) is pre-built: generating it takes ~25 min
    shutil.copyfile(ROOT / "checkpoints/pools/pool_easy2000_hard800_seed0.npz", run / "pool.npz")
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "eqsolve", "train", "--out", str(run),
           "model=deq", "train=deq", f"train.time_limit_s={seconds}", "train.checkpoint_every=5",
           "train.keep_checkpoints=1000", "train.log_every=2", "train.progress=false",
           "train.init_from=" + str(ROOT / "eqsolve/assets/reasoner.pt"), *overrides]
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: training failed\n{proc.stderr[-2000:]}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    logs = [m for m in metrics if "loss" in m]
    return {"run": str(run), "peak_rss_kib": peak_kib, "wall_s": time.perf_counter() - began, "logs": logs}


def evaluate(path: Path, tokens: torch.Tensor, questions: np.ndarray, depth: int) -> float:
    model = load_model(str(path)).eval()
    with torch.no_grad():
        result = solve_many(model, tokens, depth=depth, breadth=1, solver="fixed_point", noise=0.0, seed=0,
                            predict=model.predict_digits)
    return float(np.mean(check_batch(result.predictions.numpy(), questions)))


def gradient_cosines(modes: dict[str, list[str]], n: int, seed: int) -> dict[str, float]:
    """Each mode's parameter gradient vs the exact implicit one (IFT at a 200-step inner solution).

    Taken once, at the initial weights every mode starts from (the shipped ``eqr`` weights run as
    the ``deq`` reasoner), in float64, through one outer step from the state after 8 outer steps
    on ``n`` eval puzzles: the same point and the same reference for every mode.
    """
    from eqsolve.training.losses import reasoning_loss

    data = default_eval_set()
    idx = np.random.default_rng(seed + 1).choice(len(data), size=n, replace=False)
    tokens = encode_tokens(data.questions[idx])
    labels = encode_tokens(data.answers[idx])

    def grad(inner_grad: str, k: int, iters: int, backward_iter: int) -> torch.Tensor:
        model = load_model(str(ROOT / "eqsolve/assets/reasoner.pt")).double()
        model.inner_solver = model.config.inner_solver = "anderson"
        model.config.inner_grad, model.config.inner_grad_k, model.config.inner_iter = inner_grad, k, iters
        model.config.inner_backward_iter = backward_iter
        with torch.no_grad():
            x = model.embed(tokens)
            s = model.init_state(n, generator=torch.Generator().manual_seed(seed))
            for _ in range(8):
                s = model.map(s, x, noise=0.0)
        loss, _ = reasoning_loss(model.decode(model.map(s, model.embed(tokens), noise=0.0)), labels, None,
                                 kind="stablemax", blank_mask=tokens == 1)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.L_level.parameters()])

    exact = grad("implicit", 2, 200, 200)
    out = {}
    for label, overrides in modes.items():
        options = dict(o.removeprefix("model.").split("=") for o in overrides)
        mine = grad(options["inner_grad"], int(options.get("inner_grad_k", 2)), 8,
                    int(options.get("inner_backward_iter", 30)))
        out[label] = float(torch.nn.functional.cosine_similarity(mine, exact, dim=0))
        print(f"cosine with the exact implicit gradient: {label}: {out[label]:.4f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=360, help="training wall time per mode")
    parser.add_argument("--limit", type=int, default=256, help="eval puzzles")
    parser.add_argument("--depth", type=int, default=16, help="outer steps at evaluation")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--work", default="runs/compare-grads-deq", help="folder for the training runs")
    parser.add_argument("--out", default=str(RESULTS / "compare_grads_deq.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    if work.exists():
        raise SystemExit(f"{work} exists; pass a new --work folder (runs are never overwritten)")
    data = default_eval_set()
    idx = np.sort(np.random.default_rng(args.seed).choice(len(data), size=args.limit, replace=False))
    questions = data.questions[idx]
    tokens = encode_tokens(questions)
    modes = {label: MODES[label] for label in args.modes.split(",")}
    cosines = gradient_cosines(modes, 8, args.seed)
    rows = []
    for label in modes:
        overrides = MODES[label]
        trained = train_mode(label, overrides, work, args.seconds)
        logs = trained["logs"]
        points = []
        for fraction in (1 / 3, 2 / 3, 1.0):
            target = fraction * logs[-1]["elapsed_s"]
            log = min(logs, key=lambda m: abs(m["elapsed_s"] - target))
            ckpts = sorted(Path(trained["run"]).glob("ckpt_*.pt"))
            steps = {int(p.stem.split("_")[1]): p for p in ckpts}
            step = min(steps, key=lambda s: abs(s - log["step"])) if fraction < 1 else max(steps)
            acc = evaluate(steps[step], tokens, questions, args.depth)
            elapsed = next((m["elapsed_s"] for m in logs if m["step"] >= step), logs[-1]["elapsed_s"])
            points.append({"step": step, "elapsed_s": elapsed, "accuracy": acc, "se": binomial_se(acc, args.limit)})
            print(f"{label}: step {step} ({elapsed:.0f} s) acc {100 * acc:.1f}%", flush=True)
        tail = logs[-10:]
        row = {"mode": label, "overrides": overrides, "peak_rss_mib": trained["peak_rss_kib"] / 1024,
               "steps": logs[-1]["step"], "steps_per_s": logs[-1]["step"] / logs[-1]["elapsed_s"],
               "inner_residual": float(np.mean([m.get("inner_residual", np.nan) for m in tail])),
               "train_loss_last": float(np.mean([m["loss"] for m in tail])),
               "cosine_with_implicit_at_init": cosines[label],
               "points": points}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "points"}, flush=True)
    document = {"schema": "eqsolve.compare_grads_deq/1",
                "meta": {"seconds_per_mode": args.seconds, "limit": args.limit, "depth": args.depth,
                         "torch": torch.__version__, "threads": 1, "device": "cpu",
                         "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                  capture_output=True, text=True).stdout.strip()},
                "rows": rows}
    out = Path(args.out)
    atomic_write_json(out, document)
    plot(document, out.with_suffix(".png"))
    print(f"wrote {out}")


def plot(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for row in document["rows"]:
        pts = row["points"]
        acc = [100 * p["accuracy"] for p in pts]
        err = [100 * p["se"] for p in pts]
        axes[0].errorbar([p["elapsed_s"] for p in pts], acc, yerr=err, marker="o", capsize=3, label=row["mode"])
        axes[1].errorbar([p["step"] for p in pts], acc, yerr=err, marker="o", capsize=3, label=row["mode"])
    axes[0].set_xlabel("training wall time (s, 1 CPU thread)")
    axes[1].set_xlabel("optimizer steps")
    for ax in axes:
        ax.set_ylabel(f"exact accuracy (%), depth {document['meta']['depth']}, Anderson inner")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"deq reasoner: inner gradient modes, {document['meta']['limit']} eval puzzles (± binomial SE)")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))


if __name__ == "__main__":
    main()

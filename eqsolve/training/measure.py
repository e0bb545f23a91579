"""Measure a reasoner for its model card: exact accuracy by difficulty over a depth × breadth grid.

Usage (the shipped reasoners' cards were made with it)::

    python -m eqsolve.training.measure eqsolve/assets/reasoner.pt \\
        --sets eval:300,magictour:100,forum:100 --grid 16x1,64x1,32x4 --out runs/reasoner-card.json

``eval`` is the shipped evaluation set; ``magictour`` and ``forum`` are the real lists, read from
``$EQSOLVE_SHARED_DATA/sudoku/`` (default ``data/sudoku/``; random subsample with ``--seed``; skipped when absent). Exact
accuracy uses the project checker; answers of the real lists come from the classical solver.

Examples:
    >>> parse_grid("16x1,32x4")
    [(16, 1), (32, 4)]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqsolve._errors import unknown_key
from eqsolve._io import atomic_write_text

__all__ = ["load_sets", "measure", "parse_grid"]

REAL_LISTS = {"magictour": "magictour_top1465.txt", "forum": "forum_hardest_1905_11plus.txt"}


def parse_grid(text: str) -> list[tuple[int, int]]:
    """``"16x1,64x8"`` -> ``[(16, 1), (64, 8)]`` (depth × breadth)."""
    out = []
    for item in text.split(","):
        depth, _, breadth = item.strip().partition("x")
        if not (depth.isdigit() and breadth.isdigit()) or int(depth) < 1 or int(breadth) < 1:
            raise ValueError(f"grid item {item!r} is not DEPTHxBREADTH (positive ints)")
        out.append((int(depth), int(breadth)))
    return out


def _subsample_lines(path: Path, n: int, seed: int) -> Path:
    lines = [x for x in path.read_text().splitlines() if x.strip()]
    picked = sorted(random.Random(seed).sample(range(len(lines)), min(n, len(lines))))
    fd, tmp = tempfile.mkstemp(suffix=".txt")
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(lines[i] + "\n" for i in picked))
    return Path(tmp)


def load_sets(spec: str, seed: int = 0) -> dict[str, Any]:
    """``"eval:300,magictour:100"`` -> {name: SudokuSet}; absent real lists are skipped."""
    from eqsolve.tasks.sudoku.io import default_eval_set, load_lines

    shared = Path(os.environ.get("EQSOLVE_SHARED_DATA", "data"))
    out = {}
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        n = int(count) if count else None
        if name == "eval":
            out[name] = default_eval_set(subsample=n, seed=seed) if n else default_eval_set()
        elif name in REAL_LISTS:
            path = shared / "sudoku" / REAL_LISTS[name]
            if not path.is_file():
                print(f"skipping {name}: {path} not present")
                continue
            tmp = _subsample_lines(path, n or 10**9, seed)
            try:
                out[name] = load_lines(tmp)
            finally:
                tmp.unlink()
        else:
            raise ValueError(unknown_key("set", name, ["eval", *REAL_LISTS]))
    return out


@torch.no_grad()
def measure(model: Any, data: Any, grid: list[tuple[int, int]], *, noise: float | None = 0.0,
            seed: int = 0, max_rows: int | None = None) -> list[dict[str, Any]]:
    """Exact accuracy (overall and by bucket) of ``model`` on ``data`` for each depth × breadth.

    Args:
        model: an EqR.
        data: a SudokuSet (questions, answers, ratings).
        grid: ``(depth, breadth)`` pairs; plain fixed-point iteration, ``min_residual`` choice.
        noise: path noise at test time (0: off; None: the model's default).
        seed: seed of the random initial states.
        max_rows: rows in flight at once (``solve_many``'s continuous batching; None: all).

    Returns:
        One row per grid point.
    """
    from eqsolve.scaling import solve_many
    from eqsolve.tasks.base import get_task
    from eqsolve.tasks.sudoku.board import bucket, check_batch, encode_tokens

    questions = np.asarray(data.questions)
    ratings = np.asarray(data.ratings)
    names = np.array([bucket(int(r)) for r in ratings])
    device = next(model.parameters()).device
    tokens = encode_tokens(questions).to(device)
    rows = []
    for depth, breadth in grid:
        t0 = time.perf_counter()
        res = solve_many(model, tokens, depth=depth, breadth=breadth, solver="fixed_point",
                         noise=noise, init="random", aggregate="min_residual", seed=seed,
                         max_rows=max_rows, predict=get_task("sudoku-extreme").predictor(model))
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        ok = check_batch(res.predictions.cpu().numpy(), questions)
        row = {"depth": depth, "breadth": breadth, "n": len(ok), "exact": float(ok.mean()),
               "nfe_per_puzzle": float(res.nfe.float().mean()),
               "residual": float(res.residual.float().mean()), "puzzles_per_s": len(ok) / wall}
        for name in ("easy", "medium", "hard"):
            mask = names == name
            row[f"exact_{name}"] = float(ok[mask].mean()) if mask.any() else None
            row[f"n_{name}"] = int(mask.sum())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: ``WEIGHTS --sets ... --grid ...``."""
    parser = argparse.ArgumentParser(prog="python -m eqsolve.training.measure",
                                     description="accuracy by difficulty over a depth x breadth grid")
    parser.add_argument("weights")
    parser.add_argument("--sets", default="eval:300,magictour:100,forum:100")
    parser.add_argument("--grid", default="16x1,64x1,32x4")
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="rows in flight at once (bounds memory at large breadth)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    from eqsolve.models.eqr import EqR

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # recorded in the JSON as "tf32"
    model = EqR.from_checkpoint(args.weights).eval().to(args.device)
    grid = parse_grid(args.grid)
    result = {"weights": args.weights, "noise": args.noise, "seed": args.seed,
              "device": args.device, "threads": args.threads,
              "tf32": bool(torch.backends.cuda.matmul.allow_tf32), "sets": {}}
    for name, data in load_sets(args.sets, seed=args.seed).items():
        print(f"== {name} ({len(data.questions)} puzzles)", flush=True)
        result["sets"][name] = measure(model, data, grid, noise=args.noise, seed=args.seed,
                                       max_rows=args.max_rows)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

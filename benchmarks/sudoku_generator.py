"""Sudoku data benchmark: classical solver speed, rater calibration, generator throughput.

Pure Python, one process (one core). Real lists are read from ``../shared/data/sudoku/`` (or
``$EQSOLVE_SHARED_DATA/sudoku``) when present and skipped otherwise.

    python benchmarks/sudoku_generator.py [--forum 300] [--hard 6] [--easy 100] [--out FILE.json]

Rating = backtracks of ``eqsolve.tasks.sudoku.solver.rate`` (complete, uniqueness-proving
search with naked + hidden singles). Sudoku-Extreme's ``rating`` is tdoku's count (stronger
propagation, first solution only), whose mean on the Sudoku-Extreme test split is 22; the
calibration rows below put this project's scale next to the real hard lists that split was
built from. The machine load is printed because throughput on a shared machine depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from eqsolve.tasks.sudoku import EVAL_SET_PATH, generate, generate_easy, load_csv, solve

SHARED = (
    Path(
        os.environ.get(
            "EQSOLVE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
        )
    )
    / "sudoku"
)


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def rate_list(puzzles: list[str]) -> dict:
    """Solves and rates a list; returns speed and rating statistics."""
    start = time.perf_counter()
    ratings = []
    for text in puzzles:
        res = solve(text)
        if not res.unique:
            raise ValueError(f"puzzle without a unique solution: {text}")
        ratings.append(res.n_backtracks)
    seconds = time.perf_counter() - start
    r = np.array(ratings)
    return {
        "n": len(r),
        "puzzles_per_s": len(r) / seconds,
        "rating_mean": float(r.mean()),
        "rating_median": float(np.median(r)),
        "rating_p90": float(np.percentile(r, 90)),
        "share_easy_0_2": float((r <= 2).mean()),
        "share_hard_gt_20": float((r > 20).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forum", type=int, default=300, help="forum_hardest subsample size")
    parser.add_argument("--hard", type=int, default=6, help="hard puzzles to generate (0: skip)")
    parser.add_argument("--easy", type=int, default=100, help="easy puzzles to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out: dict = {"load_average_start": os.getloadavg()}
    magictour = SHARED / "magictour_top1465.txt"
    forum = SHARED / "forum_hardest_1905_11plus.txt"
    if magictour.is_file():
        out["magictour_top1465"] = rate_list(_read_lines(magictour))
    if forum.is_file():
        lines = _read_lines(forum)
        pick = np.random.default_rng(args.seed).choice(len(lines), args.forum, replace=False)
        out[f"forum_hardest_subsample{args.forum}"] = rate_list([lines[i] for i in sorted(pick)])
    if EVAL_SET_PATH.is_file():
        r = load_csv(EVAL_SET_PATH).ratings
        out["shipped_eval_set"] = {
            "n": len(r),
            "rating_mean": float(r.mean()),
            "rating_median": float(np.median(r)),
            "share_easy_0_2": float((r <= 2).mean()),
            "share_hard_gt_20": float((r > 20).mean()),
        }
    start = time.perf_counter()
    easy = generate_easy(args.easy, seed=args.seed + 1)
    seconds = time.perf_counter() - start
    r = np.array([x[2] for x in easy])
    out["generate_easy"] = {
        "n": args.easy,
        "puzzles_per_min": args.easy / seconds * 60,
        "rating_mean": float(r.mean()),
        "share_easy_0_2": float((r <= 2).mean()),
    }
    if args.hard > 0:
        stats: dict = {}
        hard = generate(args.hard, seed=args.seed + 2, easy_fraction=0.0, stats=stats)
        r = np.array([x[2] for x in hard])
        out["generate_hard"] = {
            "n": args.hard,
            "puzzles_per_min": args.hard / stats["seconds"] * 60,
            "searches_per_puzzle": stats["attempts"] / args.hard,
            "rating_mean": float(r.mean()),
            "rating_median": float(np.median(r)),
        }
    out["load_average_end"] = os.getloadavg()
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""The shipped assets: the evaluation set matches its provenance, the reasoner actually reasons."""

from __future__ import annotations

import numpy as np
import torch

from eqsolve.tasks.sudoku.board import bucket, check_batch, encode_tokens
from eqsolve.tasks.sudoku.io import EVAL_SET_PATH, default_eval_set


def test_eval_set_is_the_documented_one():
    data = default_eval_set(unique=True)  # every puzzle proven to have one solution (~5 s)
    buckets = [bucket(int(r)) for r in data.ratings]
    assert len(data.questions) == 1000
    assert (buckets.count("easy"), buckets.count("hard")) == (250, 750)
    assert EVAL_SET_PATH.stat().st_size <= 1_000_000
    assert float(np.mean(data.ratings)) >= 20  # Sudoku-Extreme-like: mean rating >= 20 on our rater


def test_shipped_reasoner_solves_easy_puzzles_and_depth_helps():
    # A regression guard on the weights (not a benchmark): measured 78% / 90% of the easy
    # bucket at depth 16 / 64 on all 250; here 24 of them, with a wide margin.
    from eqsolve.models.loading import load_checkpoint as load_model
    from eqsolve.scaling import solve_many
    from eqsolve.tasks.base import get_task

    torch.set_num_threads(1)
    model = load_model(str(EVAL_SET_PATH.parent / "reasoner.pt")).eval()
    data = default_eval_set()
    easy = np.flatnonzero(np.asarray(data.ratings) <= 2)[:24]
    questions = np.asarray(data.questions)[easy]
    solved = {}
    with torch.no_grad():
        for depth in (2, 32):
            res = solve_many(model, encode_tokens(questions), depth=depth, noise=0.0, seed=0,
                             predict=get_task("sudoku-extreme").predictor(model))  # digits
            solved[depth] = int(check_batch(res.predictions.numpy(), questions).sum())
    assert solved[32] >= 16, solved
    assert solved[32] > solved[2], solved

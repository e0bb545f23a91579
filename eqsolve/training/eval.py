"""Exact-accuracy evaluation of a reasoner during and after training (plain iteration), any task.

The task (by name) encodes the questions, decodes the answers (``predict``), scores them with
its exact-accuracy rule (``check_batch``), picks the cells the cell accuracy counts
(``scored_cells``) and names the difficulty buckets.

Examples:
    >>> import numpy as np, torch
    >>> from eqsolve.models.eqr import EqR, EqRConfig
    >>> model = EqR(EqRConfig(hidden_size=16, num_heads=2, H_cycles=1, L_cycles=1, L_layers=1))
    >>> from eqsolve.tasks.base import TaskData
    >>> es = TaskData(np.zeros((2, 81), np.int64), np.ones((2, 81), np.int64), np.zeros(2, np.int64))
    >>> evaluate(model, es, depth=2)["exact"]
    0.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from eqsolve.residual import relative_residual
from eqsolve.tasks.base import TaskData, get_task

__all__ = ["default_eval_set", "evaluate"]


def default_eval_set(task: Any = "sudoku-extreme") -> TaskData | None:
    """The task's shipped evaluation set (``eqsolve/assets``), or None when it has none."""
    try:
        data = get_task(task).load(None)
    except (FileNotFoundError, OSError, NotImplementedError):
        return None
    ratings = getattr(data, "ratings", None)
    ratings = np.full(len(data.questions), -1) if ratings is None else np.asarray(ratings)
    return TaskData(np.asarray(data.questions, dtype=np.int64),
                    np.asarray(data.answers, dtype=np.int64), ratings.astype(np.int64))


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData, *, depth: int = 16, seed: int = 0,
             init: str = "random", noise: float = 0.0, batch: int = 256,
             task: Any = "sudoku-extreme") -> dict[str, float]:
    """Iterate the outer map ``depth`` times from the initial state and score the answers.

    Args:
        model: an EqR (its current weights are used; pass the EMA copy for EMA evaluation).
        data: puzzles to score.
        depth: outer iterations (NFE per puzzle).
        seed: seed of the random initial states.
        init: ``random`` (the training distribution) or ``zeros``.
        noise: path noise during evaluation.
        batch: rows per forward pass.
        task: task name or object.

    Returns:
        ``exact`` (fraction of puzzles exactly solved), ``cell_acc`` (fraction of the task's
        scored cells right, Sudoku: the blanks), ``residual`` (mean relative change of the last step), ``n`` and
        ``exact_<bucket>`` for each difficulty bucket present (when ratings are known).
    """
    task = get_task(task)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    exact, cells, blanks, residuals = [], 0, 0, []
    for start in range(0, len(data.questions), batch):
        q = data.questions[start:start + batch]
        a = data.answers[start:start + batch]
        tokens = task.encode(q).to(device)
        x = model.embed(tokens)
        s = model.init_state(len(q), generator=gen, std=0.0 if init == "zeros" else None,
                             device=device)
        prev = s
        for _ in range(depth):
            prev, s = s, model.map(s, x, noise)
        pred = task.predict(model.decode(s)).cpu().numpy()
        exact.append(task.check_batch(pred, q))
        blank = task.scored_cells(tokens).cpu().numpy()
        cells += int(((pred == a) & blank).sum())
        blanks += int(blank.sum())
        residuals.append(relative_residual((s - prev).flatten(1).norm(dim=1),
                                           s.flatten(1).norm(dim=1)).cpu().numpy())
    model.train(was_training)
    ok = np.concatenate(exact) if exact else np.zeros(0, bool)
    out = {"n": float(len(ok)), "exact": float(ok.mean()) if len(ok) else 0.0,
           "cell_acc": cells / max(blanks, 1),
           "residual": float(np.concatenate(residuals).mean()) if residuals else 0.0}
    if len(ok) and (data.ratings >= 0).all():
        names = np.array(task.bucket(data.ratings))
        for name in task.bucket_names(names.tolist()):
            if (names == name).any():
                out[f"exact_{name}"] = float(ok[names == name].mean())
    return out

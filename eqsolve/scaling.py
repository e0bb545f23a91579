"""Test-time scaling of latent reasoners: depth (NFE budget) × breadth (starts), halting, aggregation.

Signature::

    solve_many(reasoner, inputs, *, depth=16, breadth=1, solver="fixed_point",
               noise=None, init="random", aggregate="min_residual",
               answers=None, halt=None, halt_tol=1e-3, residual="abs", window=3,
               max_rows=None, refill_threshold=None, seed=0, generator=None,
               predict=None) -> ScalingResult

Every puzzle gets ``breadth`` starting points; the ``N × breadth`` rows are queued puzzle-major
and run through any eqsolve solver by the solver engine (:mod:`eqsolve.solvers._engine`, the
loop behind :func:`eqsolve.solvers.solve`, here with an NFE-budget stop rule) in one batch of
at most ``max_rows`` rows. A row stops when it has spent ``depth`` NFE (one NFE = one call of
the map on one row), or earlier when the halting rule fires (``halt="residual"``: latent
residual ``<= halt_tol``; ``halt="logit"``: learned halting logit ``> 0``), or when its residual
is not finite (status NONFINITE). Freed rows are refilled from the queue (continuous batching).
A row's answer is decoded from its last map output ``F(z)`` (the budget protocol; the engine's
best iterate is not used here): with ``solver="fixed_point"`` and no halting this is exactly
the paper's depth-D protocol.

Per start, two convergence scores are kept: the mean latent residual ``||F(z) - z||`` over the
row's last ``window`` (3) iterations (``residual="abs"``, or the relative one), and the release's
*logit change*: the mean over cells and the last ``window`` iterations of ``||Δ logits||``.
Aggregations over the ``breadth`` starts of a puzzle:

* ``min_residual``: the start with the smallest mean latent residual (the paper's rule);
* ``logit_change``: the start with the smallest logit change (the release's rule);
* ``vote``: the most frequent answer (ties: the group holding the lowest residual);
* ``weighted_vote``: answers weighted by ``r_min / r`` (the inverse residual relative to the
  puzzle's best start), so a few well-converged starts outvote many unconverged ones;
* ``any_correct``: oracle, the first start whose answer equals ``answers`` (else min_residual).

In voting rules the chosen start is the lowest-residual member of the winning answer.

The reasoner protocol (:class:`Reasoner`): ``init_state(batch, generator=None, std=None,
device=None)``, ``map(s, x, noise)`` (may accept ``generator=``), ``decode(s)``; optional
``embed(inputs)`` (default: ``x = inputs``), ``predict(s)`` (default ``decode(s).argmax(-1)``)
and ``halt_logit(s)`` (needed by ``halt="logit"``). :class:`eqsolve.models.EqR` is one. A task
maps states to answers in its own answer space: pass ``predict=task.predictor(reasoner)``
(:meth:`eqsolve.tasks.base.Task.predictor`; e.g. Sudoku digits rather than tokens).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from eqsolve.solvers import Status, flat_map
from eqsolve.solvers._engine import Budget, Engine
from eqsolve.solvers._registry import resolve_solver

__all__ = ["AGGREGATIONS", "Reasoner", "ScalingResult", "aggregate_starts", "solve_many"]

AGGREGATIONS = ("min_residual", "logit_change", "vote", "weighted_vote", "any_correct")
HALTS = (None, "residual", "logit")


@runtime_checkable
class Reasoner(Protocol):
    """What :func:`solve_many` needs from a model (see the module docstring for optional parts)."""

    def init_state(self, batch: int, generator: Any = None, std: Any = None, device: Any = None) -> Tensor: ...

    def map(self, s: Tensor, x: Tensor, noise: float | None = None) -> Tensor: ...

    def decode(self, s: Tensor) -> Tensor: ...


@dataclass
class ScalingResult:
    """Outcome of :func:`solve_many` for ``N`` puzzles × ``B`` starts.

    Attributes:
        predictions: ``(N, ...)`` answer of the chosen start per puzzle.
        chosen: ``(N,)`` index of the chosen start.
        nfe: ``(N,)`` NFE spent on the puzzle, all starts together.
        residual: ``(N,)`` mean latent residual (last ``window`` iterations) of the chosen start.
        row_predictions: ``(N, B, ...)`` answer of every start.
        row_nfe: ``(N, B)`` NFE per start.
        row_residual: ``(N, B)`` mean latent residual over the last ``window`` iterations.
        row_logit_change: ``(N, B)`` mean logit change over the last ``window`` iterations (NaN
            when a row ran a single iteration).
        row_halted: ``(N, B)`` True where the halting rule stopped the row before its budget.
        row_status: ``(N, B)`` int64 :class:`~eqsolve.solvers.Status` of every start, from the
            solver engine as in :func:`~eqsolve.solvers.solve`: ``MAX_ITER`` (the NFE budget
            ended it), ``CONVERGED`` (the halting rule stopped it) or ``NONFINITE``.
        trace: ``(N, B, depth)`` latent residual per iteration (NaN after the row stopped).
        correct: ``(N,)`` chosen answer equals ``answers`` (None without answers).
        row_correct: ``(N, B)`` per start (None without answers).
        aggregate: Aggregation rule used.
        depth: NFE budget per start.
        breadth: Starts per puzzle.
    """

    predictions: Tensor
    chosen: Tensor
    nfe: Tensor
    residual: Tensor
    row_predictions: Tensor
    row_nfe: Tensor
    row_residual: Tensor
    row_logit_change: Tensor
    row_halted: Tensor
    trace: Tensor
    correct: Tensor | None
    row_correct: Tensor | None
    aggregate: str
    depth: int
    breadth: int
    row_status: Tensor | None = None

    def summary(self) -> dict[str, float]:
        """Scalar summary: accuracy (and oracle any-correct) when answers were given, NFE, residual."""
        out = {
            "puzzles": float(self.chosen.shape[0]),
            "mean_nfe_per_puzzle": float(self.nfe.double().mean()),
            "mean_nfe_per_start": float(self.row_nfe.double().mean()),
            "halted_fraction": float(self.row_halted.double().mean()),
            "median_residual": float(self.residual.double().median()),
        }
        if self.correct is not None and self.row_correct is not None:
            out["accuracy"] = float(self.correct.double().mean())
            out["any_correct"] = float(self.row_correct.any(1).double().mean())
        return out


def _mean_last(trace: Tensor, count: Tensor, window: int) -> Tensor:
    """Mean of the last ``min(window, count)`` entries of each row's trace prefix."""
    pos = count[:, None] - 1 - torch.arange(window, device=trace.device)[None, :]
    ok = pos >= 0
    vals = trace.gather(1, pos.clamp(min=0))
    vals = torch.where(ok & torch.isfinite(vals), vals, 0.0)
    n = (ok & torch.isfinite(trace.gather(1, pos.clamp(min=0)))).sum(1)
    return torch.where(n > 0, vals.sum(1) / n.clamp(min=1), torch.full_like(vals[:, 0], math.nan))


def aggregate_starts(
    rule: str,
    predictions: Tensor,
    residual: Tensor,
    logit_change: Tensor | None = None,
    answers: Tensor | None = None,
) -> Tensor:
    """Pick one start per puzzle.

    Args:
        rule: One of :data:`AGGREGATIONS`.
        predictions: ``(N, B, ...)`` answers per start.
        residual: ``(N, B)`` convergence score per start (lower is better; NaN counts as worst).
        logit_change: ``(N, B)`` logit-change score (needed by ``logit_change``).
        answers: ``(N, ...)`` true answers (needed by ``any_correct``).

    Returns:
        ``(N,)`` int64 chosen start per puzzle.
    """
    if rule not in AGGREGATIONS:
        raise ValueError(f"aggregate={rule!r}; valid: {', '.join(AGGREGATIONS)}")
    worst = torch.finfo(residual.dtype).max
    res = torch.nan_to_num(residual, nan=worst, posinf=worst)
    if rule == "min_residual":
        return res.argmin(1)
    if rule == "logit_change":
        if logit_change is None:
            raise ValueError("aggregate='logit_change' needs logit_change scores")
        return torch.nan_to_num(logit_change, nan=worst, posinf=worst).argmin(1)
    n, b = residual.shape
    flat = predictions.reshape(n, b, -1)
    same = (flat[:, :, None, :] == flat[:, None, :, :]).all(-1)  # (N, B, B) equal answers
    if rule == "any_correct":
        if answers is None:
            raise ValueError("aggregate='any_correct' is an oracle and needs answers")
        hit = (flat == answers.reshape(n, 1, -1).to(flat.dtype)).all(-1)
        first = torch.where(hit, torch.arange(b, device=hit.device), b).min(1).values
        return torch.where(first < b, first, res.argmin(1))
    if rule == "vote":
        weight = torch.ones_like(res)
    else:  # inverse residual relative to the puzzle's best start: 10x the best residual counts 1/10
        best = res.min(1, keepdim=True).values
        weight = torch.where(res > 0, best / res, 1.0).nan_to_num(nan=0.0)
    support = (same * weight[:, None, :]).sum(-1)  # (N, B): weight of each start's answer group
    best_in_group = torch.where(same, res[:, None, :], worst).min(-1).values
    # winner: the most supported answer; ties go to the group holding the lowest residual
    top = support >= support.max(1, keepdim=True).values * (1 - 1e-6)
    key = torch.where(top, best_in_group, math.inf)
    member = key.argmin(1)
    return torch.where(same[torch.arange(n), member], res, math.inf).argmin(1)


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _initial_states(reasoner: Any, init: Any, jobs: Tensor, generator: Any, device: torch.device) -> Tensor:
    if isinstance(init, Tensor):  # already (N·breadth, ...)
        return init[jobs.to(init.device)].to(device)
    if init == "random":
        return reasoner.init_state(int(jobs.numel()), generator=generator, device=device)
    return reasoner.init_state(int(jobs.numel()), std=0.0, device=device)


class _Bookkeeping:
    """Per-row records of a :func:`solve_many` run (rows indexed by job id, puzzle-major)."""

    def __init__(self, n_rows: int, depth: int, device: torch.device) -> None:
        self.depth = depth
        self.trace = torch.full((n_rows, depth), math.nan, device=device)
        self.logit_trace = torch.full((n_rows, depth), math.nan, device=device)
        self.nfe = torch.zeros(n_rows, dtype=torch.int64, device=device)
        self.steps = torch.zeros(n_rows, dtype=torch.int64, device=device)
        self.status = torch.full((n_rows,), int(Status.MAX_ITER), dtype=torch.int64, device=device)
        self.pred: Tensor | None = None
        self.prev_logits: Tensor | None = None  # aligned with the active rows

    def observe(self, rows: Tensor, observed: Tensor | None, res: Tensor, logits: Tensor | None) -> None:
        """Record the engine's newest residuals ``res`` of the ``observed`` active rows (None: all)."""
        if observed is None:
            observed = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        obs_rows = rows[observed]
        col = self.steps[obs_rows].clamp(max=self.depth - 1)
        self.trace[obs_rows, col] = res[observed]
        if logits is not None:  # the release's score: change of the output logits between iterations
            prev = self.prev_logits
            if prev is None:
                prev = logits
            elif prev.shape[0] < len(rows):  # rows just admitted (their first change is NaN)
                prev = torch.cat((prev, logits[prev.shape[0]:]))
            change = torch.linalg.vector_norm(logits - prev, dim=-1).reshape(len(rows), -1).mean(1)
            first = self.steps[rows] == 0
            self.logit_trace[obs_rows, col] = torch.where(first, math.nan, change)[observed]
            self.prev_logits = torch.where(observed.view(-1, *[1] * (logits.dim() - 1)), logits, prev)
        self.steps[obs_rows] += 1

    def finish(self, rows: Tensor, pred: Tensor, status: Tensor) -> None:
        """Store the answers and the :class:`~eqsolve.solvers.Status` of rows that stopped."""
        if self.pred is None:
            self.pred = torch.zeros((self.nfe.shape[0], *pred.shape[1:]), dtype=pred.dtype, device=pred.device)
        self.pred[rows] = pred
        self.status[rows] = status

    def keep(self, index: Tensor) -> None:
        """The active rows were compacted to ``index``."""
        if self.prev_logits is not None:
            self.prev_logits = self.prev_logits[index]


def solve_many(
    reasoner: Any,
    inputs: Tensor,
    *,
    depth: int = 16,
    breadth: int = 1,
    solver: Any = "fixed_point",
    noise: float | None = None,
    init: str | Tensor = "random",
    aggregate: str = "min_residual",
    answers: Tensor | None = None,
    halt: str | None = None,
    halt_tol: float = 1e-3,
    residual: str = "abs",
    window: int = 3,
    max_rows: int | None = None,
    refill_threshold: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    predict: Any = None,
) -> ScalingResult:
    """Solve ``N`` problems with ``breadth`` starts each under an NFE budget, and aggregate.

    Args:
        reasoner: A :class:`Reasoner` (e.g. :class:`eqsolve.models.EqR`).
        inputs: ``(N, ...)`` problems (EqR: tokens ``(N, 81)``); passed to ``reasoner.embed``.
        depth: NFE budget per start (>= 1).
        breadth: Starts per problem (>= 1).
        solver: A registered solver name (default options) or a solver object of
            :mod:`eqsolve.solvers` (``get_solver("anderson", m=5)``), driven via ``init``/``step``.
        noise: Path noise passed to ``reasoner.map`` (``None``: the reasoner's default; 0: off).
        init: ``"random"`` (``reasoner.init_state`` with the generator), ``"zeros"``, or a
            state tensor ``(N·breadth, ...)`` / ``(N, breadth, ...)``.
        aggregate: One of :data:`AGGREGATIONS`.
        answers: ``(N, ...)`` true answers (enables ``correct``; required by ``any_correct``).
        halt: ``None`` (full budget), ``"residual"`` (stop at residual ``<= halt_tol``) or
            ``"logit"`` (stop when ``reasoner.halt_logit(F(z)) > 0``).
        halt_tol: Threshold of ``halt="residual"`` (on the ``residual`` kind).
        residual: ``"abs"`` (``||F(z) - z||``) or ``"rel"`` (divided by ``||F(z)|| + 1e-8``).
        window: Iterations averaged by the convergence scores (3 in the paper).
        max_rows: Rows in flight at once (default: all ``N·breadth``); freed rows are refilled.
        refill_threshold: Refill only when at least this many rows are free (default
            ``max(1, max_rows // 8)``), so refills come in batches.
        seed: Seed of the random starts and noise when ``generator`` is None (None: global RNG).
        generator: Random generator (on the inputs' device).
        predict: ``state -> answers`` of a row (default: ``reasoner.predict``, else the argmax
            of ``reasoner.decode``); a task's :meth:`~eqsolve.tasks.base.Task.predictor`.
            Predictions, votes and the ``any_correct`` oracle are in its answer space.

    Returns:
        A :class:`ScalingResult`.

    Examples:
        >>> from eqsolve.models import EqR, EqRConfig
        >>> model = EqR(EqRConfig(hidden_size=16, num_heads=2, H_cycles=1, L_cycles=1, L_layers=1))
        >>> res = solve_many(model, torch.ones(2, 81, dtype=torch.long), depth=3, breadth=2)
        >>> res.predictions.shape, res.nfe.tolist()
        (torch.Size([2, 81]), [6, 6])
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch-first tensor, got {getattr(inputs, 'shape', inputs)}")
    for name, value in (("depth", depth), ("breadth", breadth), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"aggregate={aggregate!r}; valid: {', '.join(AGGREGATIONS)}")
    if aggregate == "any_correct" and answers is None:
        raise ValueError("aggregate='any_correct' is an oracle and needs answers")
    if halt not in HALTS:
        raise ValueError(f"halt={halt!r}; valid: None, 'residual', 'logit'")
    if halt == "logit" and not callable(getattr(reasoner, "halt_logit", None)):
        raise ValueError("halt='logit' needs a reasoner with halt_logit(s)")
    if residual not in ("abs", "rel"):
        raise ValueError(f"residual={residual!r}; valid: 'abs', 'rel'")
    if answers is not None and answers.shape[0] != inputs.shape[0]:
        raise ValueError(f"answers has {answers.shape[0]} rows, inputs {inputs.shape[0]}")
    algo = resolve_solver(solver, {})

    device = inputs.device
    n_prob = inputs.shape[0]
    n_rows = n_prob * breadth
    capacity = n_rows if max_rows is None else int(max_rows)
    if capacity < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    threshold = max(1, capacity // 8) if refill_threshold is None else max(1, int(refill_threshold))
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    embed = getattr(reasoner, "embed", None)
    if predict is None:
        predict = getattr(reasoner, "predict", None) or (lambda s: reasoner.decode(s).argmax(-1))
    elif not callable(predict):
        raise TypeError(f"predict must be a callable state -> answers, got {type(predict).__name__}")
    map_kwargs = {"generator": generator} if _accepts(reasoner.map, "generator") else {}
    track_logits = callable(getattr(reasoner, "decode", None))

    with torch.no_grad():
        state_shape = tuple(reasoner.init_state(1, std=0.0, device=device).shape[1:])
        if isinstance(init, Tensor):
            if tuple(init.shape) == (n_prob, breadth, *state_shape):
                init = init.reshape(n_rows, *state_shape)
            elif tuple(init.shape) != (n_rows, *state_shape):
                raise ValueError(f"init tensor must be (N*breadth, *state) = {(n_rows, *state_shape)} "
                                 f"or (N, breadth, *state), got {tuple(init.shape)}")
        elif init not in ("random", "zeros"):
            raise ValueError(f"init={init!r}; valid: 'random', 'zeros' or a state tensor")
        g = flat_map(lambda s, x: reasoner.map(s, x, noise, **map_kwargs), state_shape)

        halt_rule: Any = None
        if halt == "residual":
            halt_rule = lambda obs: obs.residual <= halt_tol  # noqa: E731
        elif halt == "logit":
            halt_rule = lambda obs: reasoner.halt_logit(obs.state.fz.view(-1, *state_shape)) > 0  # noqa: E731
        # The solver engine with the NFE budget as its stop rule. The fixed-budget protocol has
        # no DIVERGED/STAGNATED tests; a row with a non-finite residual stops as NONFINITE.
        # a row takes at most depth - 1 steps after its first evaluation: no longer history
        eng: Engine[Any] = Engine(algo.sized_for(max(1, depth - 1)), g, Budget(depth, halt_rule), stop=residual)
        book = _Bookkeeping(n_rows, depth, device)
        rows = torch.empty(0, dtype=torch.int64, device=device)
        next_job = 0
        while rows.numel() or next_job < n_rows:
            free = capacity - int(rows.numel())
            if next_job < n_rows and (free >= min(threshold, n_rows - next_job) or rows.numel() == 0):
                # admit queued rows: their init evaluates F once; running rows wait this round
                jobs = torch.arange(next_job, min(n_rows, next_job + free), device=device)
                next_job += int(jobs.numel())
                x_new = inputs[jobs // breadth]
                x_new = embed(x_new) if callable(embed) else x_new
                z0 = _initial_states(reasoner, init, jobs, generator, device)
                eng.admit(z0.reshape(len(jobs), -1), (x_new,))
                rows = torch.cat((rows, jobs))
                observed: Tensor | None = torch.arange(len(rows), device=device) >= len(rows) - len(jobs)
            else:
                eng.advance()
                observed = None
            code = eng.observe(observed)
            state = eng.state
            assert state is not None and eng.residual is not None
            fz = state.fz.view(len(rows), *state_shape)
            book.observe(rows, observed, eng.residual, reasoner.decode(fz).float() if track_logits else None)
            book.nfe[rows] = state.nfe
            done = code >= 0
            if bool(done.any()):
                book.finish(rows[done], predict(fz[done]), code[done])
                keep = (~done).nonzero().flatten()
                rows = rows[eng.drop(keep, move=False)]
                book.keep(keep)

    count = book.steps.clamp(max=depth)
    window_res = _mean_last(book.trace, count, window)
    window_logit = _mean_last(book.logit_trace, count, window)
    shape_nb = (n_prob, breadth)
    assert book.pred is not None  # every row finishes (the budget ends it)
    preds = book.pred.view(*shape_nb, *book.pred.shape[1:])
    res_nb, logit_nb = window_res.view(shape_nb), window_logit.view(shape_nb)
    ans = None if answers is None else answers.to(device)
    chosen = aggregate_starts(aggregate, preds, res_nb, logit_nb, ans)
    idx = torch.arange(n_prob, device=device)
    row_correct = correct = None
    if ans is not None:
        row_correct = (preds.reshape(n_prob, breadth, -1) == ans.reshape(n_prob, 1, -1).to(preds.dtype)).all(-1)
        correct = row_correct[idx, chosen]
    return ScalingResult(
        predictions=preds[idx, chosen], chosen=chosen, nfe=book.nfe.view(shape_nb).sum(1),
        residual=res_nb[idx, chosen], row_predictions=preds, row_nfe=book.nfe.view(shape_nb),
        row_residual=res_nb, row_logit_change=logit_nb, row_halted=(book.status == int(Status.CONVERGED)).view(shape_nb),
        row_status=book.status.view(shape_nb),
        trace=book.trace.view(*shape_nb, depth), correct=correct, row_correct=row_correct,
        aggregate=aggregate, depth=depth, breadth=breadth,
    )

"""``eqsolve bench``: a solver against plain iteration over a depth × breadth grid, on any task.

The task (``task.name``, :func:`eqsolve.tasks.base.get_task`) says how puzzles are read,
encoded, decoded (``predict``) and scored (``check_batch``), and how they are bucketed.

For every grid cell (solver, depth, breadth) the bench solves every puzzle with
:func:`eqsolve.scaling.solve_many` (``breadth`` random starts per puzzle as one batch, at most
``depth`` NFE per start) and records, per puzzle, whether the aggregated answer is exactly right
(complete, valid, consistent with the givens), the NFE spent (all starts together) and the final
residual of the chosen start (mean over its last 3 iterations, of kind ``solver.stop``). The
chosen solver and the baseline (plain iteration, ``fixed_point``) get the same NFE budgets and
the same initial states, so the comparison is at equal NFE.

Puzzles are processed in chunks of ``bench.batch_size``; chunk ``c`` is seeded with
``seed + c`` whatever process runs it, so under ``torchrun`` (chunks dealt round-robin to
ranks, gathered with ``torch.distributed`` over gloo) the per-puzzle results equal a
one-process run.

Outputs (in the run folder): the table on stdout and in ``log.txt``, ``results.json``
(``rows``: one summary per cell; ``per_puzzle``: the raw arrays) and three plots.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqsolve.bench.journal import JOURNAL_GLOB, ChunkJournal
from eqsolve.bench.stats import consecutive_depth_pairs
from eqsolve.distributed import group_backend, process_group, rank_and_world

log = logging.getLogger(__name__)

_ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: The shipped Sudoku reasoners by name (``--model``): ``deq`` solves an inner equilibrium in every
#: outer step (the bench's solver solves it); ``eqr`` runs plain inner updates (the solver runs the
#: outer map). Each has a model card next to it. Other tasks list theirs in
#: ``Task.shipped_reasoners``.
SHIPPED_REASONERS = {"deq": _ASSETS / "reasoner_deq.pt", "eqr": _ASSETS / "reasoner.pt"}
#: The ``eqr`` reasoner's file (kept for scripts that name it).
SHIPPED_REASONER = SHIPPED_REASONERS["eqr"]
BUCKETS = ("easy", "medium", "hard")
HALT_MODES = ("none", "residual", "logit")


@dataclass(frozen=True)
class Cell:
    """One grid cell: how every puzzle is solved.

    Attributes:
        solver: Registered solver name.
        depth: NFE budget per start.
        breadth: Starts per puzzle.
        options: Solver options (the CLI's ``solver.options.*``), resolved with the name by
            ``resolve_solver(solver, options)``.
    """

    solver: str
    depth: int
    breadth: int
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The solver with its options, e.g. ``fixed_point`` or ``fixed_point(tau=0.5)``."""
        if not self.options:
            return self.solver
        return f"{self.solver}({','.join(f'{k}={v}' for k, v in sorted(self.options.items()))})"

    @property
    def key(self) -> str:
        """Stable name, e.g. ``anderson/d16/b4`` (options in parentheses after the solver)."""
        return f"{self.label}/d{self.depth}/b{self.breadth}"


@dataclass(frozen=True)
class RunOptions:
    """Settings shared by all cells (see ``BenchConfig``)."""

    aggregate: str = "min_residual"
    halt: str = "none"
    halt_tol: float = 1e-3
    noise: float | None = 0.0
    init: str = "random"
    stop: str = "rel"
    batch_size: int = 32
    seed: int = 0
    task: str = "sudoku-extreme"


#: evaluate(model, questions (n, L), answers (n, L), cell, options, seed) -> per-puzzle dict
Evaluator = Callable[[torch.nn.Module, np.ndarray, np.ndarray, Cell, RunOptions, int], dict[str, np.ndarray]]


# ----------------------------------------------------------------------------- model and data
def load_model(cfg: Any) -> torch.nn.Module:
    """Build the reasoner a bench/diagnose config asks for.

    Args:
        cfg: Config with ``checkpoint`` (``None``: the task's shipped reasoner; ``"random"``: an
            untrained EqR from the task's ``random_model`` preset and ``cfg.model`` seeded by
            ``cfg.seed``; else a path to an eqsolve checkpoint or an official ``eqr.pth``),
            ``model``, ``seed``, ``device`` and ``task.name``.

    Returns:
        The model in eval mode on ``cfg.device``.

    Raises:
        FileNotFoundError: The checkpoint (or the shipped reasoner) is missing.
        ValueError: ``model.*`` overrides given together with a real checkpoint, or a model
            whose sequence length or vocabulary is not the task's.
    """
    from eqsolve.models.eqr import EqR, EqRConfig
    from eqsolve.models.loading import load_checkpoint

    task = get_task(cfg.task.name)
    device = torch.device(cfg.device)  # a malformed name raises here, before any loading
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but CUDA is not available on this machine; use --device cpu")
    model_overrides = dict(cfg.model or {})
    if cfg.checkpoint == "random":
        torch.manual_seed(int(cfg.seed))
        model = EqR(EqRConfig(**{**random_model_fields(task), **model_overrides}))
    else:
        if model_overrides:
            raise ValueError(
                f"model.* overrides {sorted(model_overrides)} only apply with checkpoint=random; "
                "a checkpoint brings its own architecture"
            )
        if cfg.checkpoint and str(cfg.checkpoint).startswith("hf://"):
            path = hub_download(str(cfg.checkpoint))
        else:
            path = Path(cfg.checkpoint) if cfg.checkpoint else shipped_reasoner(cfg.reasoner, task)
        if not path.is_file():
            what = (f"the shipped {task.name} reasoner {reasoner_name(cfg.reasoner, task)!r}"
                    if not cfg.checkpoint else "checkpoint")
            raise FileNotFoundError(f"{what} not found at {path}; pass --checkpoint PATH (or 'random')")
        model = load_checkpoint(path)
    check_model_fits(model, task, cfg.checkpoint or "the shipped reasoner")
    return model.to(device).eval()


def hub_download(reference: str) -> Path:
    """A local copy of ``hf://OWNER/REPO/PATH/IN/REPO[@REVISION]`` (the ``hub`` extra).

    Examples:
        >>> hub_download("hf://locuslab")
        Traceback (most recent call last):
        ...
        ValueError: checkpoint 'hf://locuslab' is not hf://OWNER/REPO/PATH[@REVISION], e.g. hf://locuslab/EqR-model/sudoku-extreme/eqr.pth
    """
    body, _, revision = reference.removeprefix("hf://").partition("@")
    parts = body.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"checkpoint {reference!r} is not hf://OWNER/REPO/PATH[@REVISION], "
                         "e.g. hf://locuslab/EqR-model/sudoku-extreme/eqr.pth")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # optional dependency
        raise ValueError(f"checkpoint {reference!r} needs huggingface_hub: pip install 'eqsolve[hub]'") from exc
    local = hf_hub_download(repo_id="/".join(parts[:2]), filename="/".join(parts[2:]), revision=revision or None)
    return Path(local)


def get_task(name: str) -> Any:
    """The registered task ``name`` (:func:`eqsolve.tasks.base.get_task`)."""
    from eqsolve.tasks.base import get_task as lookup

    return lookup(name)


def random_model_fields(task: Any) -> dict[str, Any]:
    """``EqRConfig`` fields of an untrained model for ``task`` (before ``model.*`` overrides).

    The task's ``random_model`` preset when it names one, else only its ``seq_len`` and
    ``vocab_size`` (for Sudoku these are ``EqRConfig``'s defaults: the release's model).
    """
    fields: dict[str, Any] = {}
    if task.random_model:
        from omegaconf import OmegaConf

        path = Path(__file__).resolve().parents[1] / "conf" / "model" / f"{task.random_model}.yaml"
        fields.update(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    fields.update(seq_len=task.seq_len, vocab_size=task.vocab_size)
    return fields


def check_model_fits(model: torch.nn.Module, task: Any, what: Any) -> None:
    """A model for another task (sequence length or vocabulary) is an error naming both."""
    config = getattr(model, "config", None)
    if config is None:
        return
    seq_len, vocab = getattr(config, "seq_len", task.seq_len), getattr(config, "vocab_size", task.vocab_size)
    if (seq_len, vocab) != (task.seq_len, task.vocab_size):
        raise ValueError(f"{what}: the model reads seq_len={seq_len}, vocab_size={vocab} but task {task.name!r} "
                         f"has seq_len={task.seq_len}, vocab_size={task.vocab_size}; pass a checkpoint "
                         f"trained on {task.name} (--checkpoint PATH)")


def reasoner_name(name: str | None, task: Any = None) -> str | None:
    """``name``, or when it is ``None`` the task's default shipped reasoner (its first)."""
    shipped = SHIPPED_REASONERS if task is None else dict(task.shipped_reasoners)
    return name if name is not None else next(iter(shipped), None)


def shipped_reasoner(name: str | None, task: Any = None) -> Path:
    """The file of the shipped reasoner ``name`` (``--model``; ``None``: the default) of ``task``."""
    shipped = SHIPPED_REASONERS if task is None else dict(task.shipped_reasoners)
    name = reasoner_name(name, task)
    if name not in shipped:
        where = "" if task is None else f" for task {task.name!r}"
        valid = ", ".join(shipped) or "none yet"
        raise ValueError(f"reasoner={name!r} is not a shipped reasoner{where}; valid: {valid} "
                         "(or pass --checkpoint PATH)")
    return Path(shipped[name])


def solves_inner(model: torch.nn.Module) -> bool:
    """Whether ``model`` solves an inner equilibrium in each outer step (``EqR`` with an inner solver)."""
    return getattr(model, "inner_solver", None) is not None


def assign_solver(model: torch.nn.Module, solver: Any) -> Any:
    """Give ``solver`` its role in ``model`` and return the solver of the outer map.

    For a reasoner with an inner equilibrium (:func:`solves_inner`) the solver solves each outer
    step's equilibrium (it becomes ``model.inner_solver``) and the outer steps are plain iteration;
    for any other reasoner it runs the outer map.
    """
    if not solves_inner(model):
        return solver
    from eqsolve.solvers import get_solver

    model.inner_solver = solver
    return get_solver("fixed_point")


def load_puzzles(cfg: Any, limit: int | None) -> Any:
    """Load ``cfg.task.data`` (or the task's shipped evaluation set) and keep ``limit`` puzzles.

    The subset is a seeded random sample (``cfg.seed``), in file order, so that it mixes the
    difficulty buckets like the whole file does.

    Args:
        cfg: Config with ``task`` and ``seed``.
        limit: Number of puzzles (``None``: all).

    Returns:
        A :class:`~eqsolve.tasks.base.TaskData`.
    """
    task = get_task(cfg.task.name)
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit} (bench.limit / task.limit): the number of puzzles must be "
                         ">= 1; leave it out (null) for all of them")
    min_rating = None if cfg.task.min_rating is None else int(cfg.task.min_rating)
    data = task.load(cfg.task.data or None, limit=limit, seed=int(cfg.seed), min_rating=min_rating)
    if len(data) == 0:
        raise ValueError(f"no puzzles to evaluate (data={cfg.task.data!r}, limit={limit})")
    return data


# ----------------------------------------------------------------------------- one chunk
def evaluate_chunk(
    model: torch.nn.Module, questions: np.ndarray, answers: np.ndarray, cell: Cell,
    options: RunOptions, seed: int,
) -> dict[str, np.ndarray]:
    """Solve one chunk of puzzles for one grid cell with :func:`eqsolve.scaling.solve_many`.

    Args:
        model: The reasoner.
        questions: ``(n, L)`` questions in the task's answer space (Sudoku: digits, 0 = blank).
        answers: ``(n, L)`` answers (only used by the ``any_correct`` oracle, never by the solver).
        cell: Grid cell.
        options: Shared settings (``options.task`` encodes, decodes and scores).
        seed: Seed of this chunk (initial states and path noise).

    For a reasoner that solves an inner equilibrium (:func:`solves_inner`) the cell's solver
    solves that equilibrium in every outer step and the outer steps are plain iteration; for
    any other reasoner the cell's solver runs the outer map.

    Returns:
        ``correct`` (bool); ``nfe`` (float: the compute spent, in applications of one block of the
        weight-tied stack, all starts together: outer steps × ``model.blocks_per_map()``, so that
        rows with equal ``nfe`` spent equal compute whatever the solver or reasoner); ``steps``
        (float: outer steps, i.e. calls of ``map``, all starts together) and ``residual`` (float:
        final relative residual of the chosen start), each of shape ``(n,)``.
    """
    from eqsolve.scaling import solve_many
    from eqsolve.solvers._registry import resolve_solver
    task = get_task(options.task)
    device = next(model.parameters()).device
    tokens = task.encode(questions).to(device)
    halt = None if options.halt == "none" else options.halt
    inner_before = getattr(model, "inner_solver", None)
    outer_solver = assign_solver(model, resolve_solver(cell.solver, dict(cell.options)))
    try:
        blocks = int(model.blocks_per_map()) if hasattr(model, "blocks_per_map") else 1
        with torch.no_grad():
            result = solve_many(
                model, tokens, depth=cell.depth, breadth=cell.breadth,
                solver=outer_solver, residual=options.stop,
                aggregate=options.aggregate, halt=halt, halt_tol=options.halt_tol,
                noise=options.noise, init=options.init, seed=seed,
                predict=task.predictor(model),  # the task's answer space (Sudoku: digits 1..9)
                # the oracle compares with predictions, which are answers (not tokens)
                answers=torch.as_tensor(answers, device=device) if options.aggregate == "any_correct" else None,
            )
    finally:
        if hasattr(model, "inner_solver"):
            model.inner_solver = inner_before
    predictions = result.predictions.cpu().numpy()
    return {
        "correct": np.asarray(task.check_batch(predictions, questions), dtype=bool),
        "nfe": blocks * result.nfe.detach().cpu().double().numpy().reshape(-1),
        "steps": result.nfe.detach().cpu().double().numpy().reshape(-1),
        "residual": result.residual.detach().cpu().double().numpy().reshape(-1),
    }


# ----------------------------------------------------------------------------- grid, sharding
def run_grid(
    model: torch.nn.Module, puzzles: Any, cells: Sequence[Cell], options: RunOptions,
    evaluate: Evaluator | None = None, progress: bool = False, journal: ChunkJournal | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Evaluate every cell on every puzzle (this rank's chunks), then gather across ranks.

    Args:
        model: The reasoner.
        puzzles: Puzzles with ``questions`` and ``answers`` (a ``TaskData``).
        cells: Grid cells.
        options: Shared settings.
        evaluate: Chunk evaluator (None: :func:`evaluate_chunk`; tests inject others).
        progress: Show a tqdm bar.
        journal: Where each finished chunk is recorded, and where chunks of an interrupted run
            are found instead of evaluated again (:class:`~eqsolve.bench.journal.ChunkJournal`).

    Returns:
        ``(per_puzzle, seconds)``: per cell key, arrays over all puzzles in input order; and
        per cell key, the time of the slowest rank (the sum of its chunks' times, recorded ones
        included).
    """
    from tqdm import tqdm

    evaluate = evaluate_chunk if evaluate is None else evaluate
    rank, world = rank_and_world()
    n = len(puzzles)
    starts = list(range(0, n, options.batch_size))
    mine = [c for c in range(len(starts)) if c % world == rank]
    per_puzzle: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    bar = tqdm(total=len(cells) * len(mine), disable=not progress, desc="bench", unit="chunk")
    for cell in cells:
        local: dict[int, dict[str, np.ndarray]] = {}
        elapsed = 0.0
        for c in mine:
            rows = slice(starts[c], min(starts[c] + options.batch_size, n))
            seed = options.seed + c
            found = journal.lookup(cell.key, c, seed, rows.stop - rows.start) if journal is not None else None
            if found is not None:
                local[c], took = found
            else:
                began = time.perf_counter()
                local[c] = evaluate(model, puzzles.questions[rows], puzzles.answers[rows], cell, options, seed)
                took = time.perf_counter() - began
                if journal is not None:
                    journal.record(cell.key, c, seed, local[c], took)
            elapsed += took
            bar.update(1)
        chunks, seconds[cell.key] = _gather(local, elapsed, world)
        per_puzzle[cell.key] = {
            name: np.concatenate([chunks[c][name] for c in range(len(starts))]) for name in chunks[0]
        }
    bar.close()
    return per_puzzle, seconds


def _gather(local: dict[int, dict[str, np.ndarray]], elapsed: float, world: int) -> tuple[dict, float]:
    """Merge every rank's chunk results (all ranks receive all); time = slowest rank."""
    if world == 1:
        return local, elapsed
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, (local, elapsed))
    merged: dict[int, dict[str, np.ndarray]] = {}
    for part, _ in gathered:
        merged.update(part)
    return merged, max(t for _, t in gathered)


# ----------------------------------------------------------------------------- summaries
def summarize(cell: Cell, arrays: Mapping[str, np.ndarray], buckets: np.ndarray, seconds: float,
              names: Sequence[str] = BUCKETS) -> dict[str, Any]:
    """One table row from per-puzzle arrays.

    Args:
        cell: The grid cell.
        arrays: ``correct``, ``nfe``, ``residual`` over all puzzles.
        buckets: Difficulty bucket name per puzzle.
        seconds: Wall time of the cell.
        names: The task's bucket names, in column order (default: Sudoku's).

    Returns:
        JSON-able row: solver, depth, breadth, n, nfe_mean (block applications per puzzle),
        steps_mean (outer steps per puzzle), accuracy, accuracy_by_bucket, bucket_counts,
        residual_mean, seconds, puzzles_per_s.

    Examples:
        >>> row = summarize(Cell("anderson", 4, 1), {"correct": np.array([True, False]),
        ...     "nfe": np.array([4.0, 2.0]), "residual": np.array([0.1, 0.3])},
        ...     np.array(["easy", "hard"]), 2.0)
        >>> row["accuracy"], row["nfe_mean"], row["accuracy_by_bucket"]["hard"], row["puzzles_per_s"]
        (0.5, 3.0, 0.0, 1.0)
    """
    correct = np.asarray(arrays["correct"], dtype=bool)
    residual = np.asarray(arrays["residual"], dtype=float)
    finite = residual[np.isfinite(residual)]
    by_bucket = {b: float(correct[buckets == b].mean()) if (buckets == b).any() else None for b in names}
    return {
        "solver": cell.solver, "solver_options": dict(cell.options), "label": cell.label, "depth": cell.depth, "breadth": cell.breadth, "n": int(correct.size),
        "nfe_mean": float(np.mean(arrays["nfe"])),
        "steps_mean": float(np.mean(arrays.get("steps", arrays["nfe"]))),
        "accuracy": float(correct.mean()),
        "accuracy_by_bucket": by_bucket,
        "bucket_counts": {b: int((buckets == b).sum()) for b in names},
        "residual_mean": float(finite.mean()) if finite.size else None,
        "nonfinite_residuals": int(residual.size - finite.size),
        "seconds": float(seconds),
        "puzzles_per_s": float(correct.size / seconds) if seconds > 0 else None,
    }


def format_table(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> str:
    """Render bench rows as a fixed-width text table, one accuracy column per bucket.

    Args:
        rows: :func:`summarize` rows (bucket columns in the order of ``accuracy_by_bucket``).
        labels: Short column headings per bucket name (default: Sudoku's, ``medium`` -> ``med``).

    Examples:
        >>> print(format_table([{"solver": "anderson", "depth": 4, "breadth": 1, "nfe_mean": 4.0,
        ...     "accuracy": 0.5, "accuracy_by_bucket": {"easy": 1.0, "medium": None, "hard": 0.0},
        ...     "residual_mean": 0.01, "puzzles_per_s": 12.5}]).splitlines()[2])
        anderson         4       1     4.0   50.0  100.0      -    0.0   1.00e-02     12.5
    """
    labels = {"medium": "med"} if labels is None else labels
    names = list(rows[0]["accuracy_by_bucket"]) if rows else list(BUCKETS)
    heads = [f"{labels.get(b, b)}%" for b in names]
    widths = [max(6, len(h)) for h in heads]
    header = (f"{'solver':<20} {'depth':>5} {'breadth':>7} {'NFE':>7} {'acc%':>6} "
              + "".join(f"{h:>{w}} " for h, w in zip(heads, widths)) + f"{'residual':>10} {'puz/s':>8}")
    lines = [header, "-" * len(header)]

    def pct(value: Any) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    for r in rows:
        b = r["accuracy_by_bucket"]
        residual = "-" if r["residual_mean"] is None else f"{r['residual_mean']:.2e}"
        speed = "-" if r["puzzles_per_s"] is None else f"{r['puzzles_per_s']:.1f}"
        lines.append(
            f"{r.get('label', r['solver']):<20} {r['depth']:>5} {r['breadth']:>7} {r['nfe_mean']:>7.1f} {pct(r['accuracy']):>6} "
            + "".join(f"{pct(b.get(name)):>{w}} " for name, w in zip(names, widths)) + f"{residual:>10} {speed:>8}"
        )
    return "\n".join(lines)


def depth_pairs(cells: Sequence[Cell], per_puzzle: Mapping[str, Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Consecutive depths of every (solver label, breadth), compared puzzle by puzzle.

    Accuracy can rise with depth because deeper runs solve new puzzles, or hide losses behind
    gains; the paired counts tell: ``gained`` (solved only at the deeper depth), ``lost`` (only at
    the shallower one) and the exact McNemar p-value of that split
    (:func:`~eqsolve.bench.stats.consecutive_depth_pairs`, which the journal's progress view shares).

    Examples:
        >>> cells = [Cell("anderson", 16, 1), Cell("anderson", 64, 1)]
        >>> per = {"anderson/d16/b1": {"correct": np.array([1, 0, 0, 1], bool)},
        ...        "anderson/d64/b1": {"correct": np.array([1, 1, 1, 1], bool)}}
        >>> depth_pairs(cells, per)[0]["gained"], depth_pairs(cells, per)[0]["lost"]
        (2, 0)
    """
    return consecutive_depth_pairs({(c.label, c.breadth, c.depth): {0: per_puzzle[c.key]["correct"]} for c in cells})


def format_depth_pairs(pairs: Sequence[Mapping[str, Any]]) -> str:
    """One line per consecutive depth pair (see :func:`depth_pairs`)."""
    return "\n".join(f"depth {p['from_depth']} -> {p['to_depth']} ({p['label']}, breadth {p['breadth']}): "
                     f"+{p['gained']} solved, -{p['lost']} lost of {p['n']} (exact McNemar p = {p['p_value']:.3g})"
                     for p in pairs)


def describe_run(cfg: Any, inner: bool, blocks_per_step: int, n_puzzles: int) -> str:
    """The lines printed above the table: what ran, what the solver solves, the compute unit."""
    task = get_task(cfg.task.name)
    name = reasoner_name(cfg.reasoner, task)
    what = f"checkpoint {cfg.checkpoint}" if cfg.checkpoint else f"shipped reasoner {name!r}"
    shipped_set = ("the shipped eval set (generated Sudoku-Extreme-style puzzles, not the official test split)"
                   if task.name == "sudoku-extreme" else f"the shipped {task.name} eval set")
    data = cfg.task.data or shipped_set
    solved = ("the solver solves the inner equilibrium of every outer step; depth = outer steps"
              if inner else "the solver runs the outer map; depth = outer steps")
    lines = [f"{what} on {n_puzzles} puzzles of {data}",
             f"{solved}; NFE = block applications ({blocks_per_step} per outer step), equal for equal compute"]
    others = [other for other in task.shipped_reasoners if other != name]
    if not cfg.checkpoint and others:
        lines.append("the other shipped reasoner: " + ", ".join(f"eqsolve bench --model {n}" for n in others)
                     + "; a real list: --data FILE" + (" (e.g. the Sudoku-Extreme test CSV from `eqsolve data fetch`)"
                                                        if task.name == "sudoku-extreme" else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point
def _option_value(text: str) -> Any:
    """``"0.5"`` -> 0.5, ``"3"`` -> 3, ``"true"`` -> True; anything else stays a string."""
    import yaml

    return yaml.safe_load(text)


def make_cells(cfg: Any) -> list[Cell]:
    """The grid of a bench config: (solver, then baseline) × depth × breadth."""
    b = cfg.bench
    if cfg.solver.tol:
        raise ValueError(
            f"solver.tol={cfg.solver.tol} is not used by the bench (every row gets its NFE budget); "
            "stop rows early with bench.halt=residual bench.halt_tol=..."
        )
    if cfg.solver.max_iter is not None:
        raise ValueError(f"solver.max_iter={cfg.solver.max_iter} is not used by the bench; set bench.depth")
    from eqsolve.scaling import AGGREGATIONS

    if b.aggregate not in AGGREGATIONS:
        raise ValueError(f"bench.aggregate={b.aggregate!r} is not one of {', '.join(AGGREGATIONS)}")
    if b.halt not in HALT_MODES:
        raise ValueError(f"bench.halt={b.halt!r} is not one of {', '.join(HALT_MODES)}")
    for name, values in (("depth", b.depth), ("breadth", b.breadth)):
        if not values or any(int(v) < 1 for v in values):
            raise ValueError(f"bench.{name} must be a non-empty list of positive ints, got {list(values)}")
    solvers = [(cfg.solver.name, dict(cfg.solver.options))]
    if b.baseline and b.baseline != cfg.solver.name:
        solvers.append((b.baseline, {}))
    for extra in b.extra_baselines or []:  # e.g. "fixed_point:tau=0.5"
        name, _, opts = str(extra).partition(":")
        options = {k: _option_value(v) for k, v in (o.split("=", 1) for o in opts.split(",") if o)}
        if (name, options) not in solvers:
            solvers.append((name, options))
    return [Cell(name, int(d), int(w), opts)
            for name, opts in solvers for d in b.depth for w in b.breadth]


def _rank0_folder(run_dir: Path | None, world: int) -> Path | None:
    """Rank 0's run folder on every rank (under torchrun only rank 0 is given one)."""
    if world == 1:
        return run_dir
    box = [str(run_dir) if run_dir is not None else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return None if box[0] is None else Path(box[0])


def open_journal(folder: Path | None, rank: int, resume: bool) -> ChunkJournal | None:
    """The chunk journal of a run folder (None without a folder); ``resume`` reads it back.

    Raises:
        ValueError: ``resume`` on a folder whose run is complete, or that holds no journal.
    """
    if folder is None:
        if resume:
            raise ValueError("bench.resume needs the run folder of the interrupted run: pass --out DIR")
        return None
    if resume:
        if (folder / "results.json").exists():
            raise ValueError(f"--out {folder} holds a complete bench (results.json): nothing to resume")
        if not any(folder.glob(JOURNAL_GLOB)):
            raise ValueError(f"--out {folder} holds no bench journal ({JOURNAL_GLOB}): nothing to resume")
    journal = ChunkJournal(folder, rank, resume=resume)
    if resume and rank == 0:
        log.info("bench: resuming %s: %d chunk(s) already evaluated", folder, len(journal.done))
    return journal


def run_bench(cfg: Any, run_dir: Path | None = None) -> dict[str, Any] | None:
    """Run the bench described by a validated ``config_bench`` config.

    Args:
        cfg: Composed config (``eqsolve.config.compose("config_bench", ...)``).
        run_dir: Run folder for plots (``None`` on ranks other than 0: nothing is written).

    Returns:
        The ``results.json`` payload on rank 0 (``None`` on other ranks).
    """
    from eqsolve.solvers._registry import resolve_solver

    cells = make_cells(cfg)
    for cell in {(c.solver, tuple(sorted(c.options.items()))) for c in cells}:
        resolve_solver(cell[0], dict(cell[1]))  # unknown solver/option: fail before any work
    with process_group(group_backend(str(cfg.device))):  # torchrun: join (and leave cleanly)
        rank, world = rank_and_world()
        threads = max(1, int(cfg.bench.threads) // world)
        torch.set_num_threads(threads)  # pinned: timings are only comparable at a fixed thread count
        model = load_model(cfg)
        limit = cfg.task.limit if cfg.task.limit is not None else cfg.bench.limit
        puzzles = load_puzzles(cfg, limit)
        options = RunOptions(aggregate=cfg.bench.aggregate, halt=cfg.bench.halt, halt_tol=float(cfg.bench.halt_tol),
                             noise=cfg.bench.noise, init=cfg.bench.init, stop=cfg.solver.stop,
                             batch_size=int(cfg.bench.batch_size), seed=int(cfg.seed), task=str(cfg.task.name))
        log.info("bench: %d puzzles, %d cells, %d process(es) × %d thread(s)", len(puzzles), len(cells), world, threads)
        journal = open_journal(_rank0_folder(run_dir, world), rank, bool(cfg.bench.resume))
        per_puzzle, seconds = run_grid(model, puzzles, cells, options, progress=rank == 0 and sys.stderr.isatty(),
                                       journal=journal)
    if rank != 0:
        return None
    task = get_task(cfg.task.name)
    buckets = np.array(task.bucket(puzzles.ratings))
    names = task.bucket_names(buckets.tolist())
    rows = [summarize(c, per_puzzle[c.key], buckets, seconds[c.key], names) for c in cells]
    inner = solves_inner(model)
    blocks_per_step = int(model.blocks_per_map()) if hasattr(model, "blocks_per_map") else 1
    labels = {name: task.bucket_labels.get(name, name) for name in names}
    table = describe_run(cfg, inner, blocks_per_step, len(puzzles)) + "\n" + format_table(rows, labels)
    pairs = depth_pairs(cells, per_puzzle)
    if pairs:
        table += "\n\npaired, puzzle by puzzle:\n" + format_depth_pairs(pairs)
    print(table)
    log.debug("bench results\n%s", table)  # printed on stdout already; DEBUG keeps it in log.txt only
    payload: dict[str, Any] = {
        "rows": rows,
        "depth_pairs": pairs,
        "options": asdict(options),
        "n_puzzles": len(puzzles),
        "data": cfg.task.data or "shipped eval set",
        "task": task.name,
        "checkpoint": cfg.checkpoint or str(shipped_reasoner(cfg.reasoner, task)),
        "reasoner": None if cfg.checkpoint else reasoner_name(cfg.reasoner, task),
        "solver_solves": "inner equilibrium" if inner else "outer map",
        "nfe_unit": f"block applications ({blocks_per_step} per outer step)",
        "torch_threads": threads, "world_size": world,
        "per_puzzle": {key: {k: v.tolist() for k, v in arrays.items()} for key, arrays in per_puzzle.items()},
        "ratings": puzzles.ratings.tolist(),
    }
    for row in rows:
        if row["nonfinite_residuals"]:  # e.g. NaN weights: wrong answers, reported per row
            log.warning("bench: %s/d%d/b%d: %d of %d puzzles ended in a non-finite state (counted as wrong)",
                        row["solver"], row["depth"], row["breadth"], row["nonfinite_residuals"], row["n"])
    if run_dir is not None:
        from eqsolve.bench.plots import write_bench_plots
        from eqsolve.runs import write_results

        # results first: a plotting error must not cost the run (the CLI rewrites the file
        # with the plot names once they exist)
        write_results(run_dir, "bench", payload)
        try:
            payload["plots"] = write_bench_plots(rows, run_dir, residual=cfg.solver.stop)
        except Exception as exc:
            raise RuntimeError(f"the bench plots failed ({type(exc).__name__}: {exc}); the results "
                               f"are in {run_dir / 'results.json'}") from exc
    return payload

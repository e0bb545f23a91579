"""The ``eqsolve`` command line: GNU flags for the common knobs plus trailing hydra overrides.

Examples:
    eqsolve bench --solver anderson --task sudoku-extreme
    eqsolve bench --solver broyden --depth 4,8,16 --breadth 1,8 --limit 32 bench.noise=0.01
    eqsolve bench --task maze-unique --checkpoint runs/train-maze/last.pt --depth 16,64,256
    eqsolve train --data sudoku.csv --grad implicit train.steps=2000
    eqsolve train --task maze-unique --out runs/train-maze
    eqsolve diagnose --checkpoint eqr.pth --limit 20
    eqsolve data generate --n 100 --seed 0 --out puzzles.csv
    eqsolve data fetch sudoku-extreme --out data/
    eqsolve solvers
    eqsolve import-checkpoint eqr.pth reasoner.pt
    eqsolve export runs/train/last.pt reasoner.pt

Each flag becomes a hydra override (``--depth 4,8`` → ``bench.depth=[4,8]``) placed *before* the
trailing overrides, so an explicit override wins. Subcommands import their module only when
called, so a broken or missing optional module never breaks the others.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import itertools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqsolve import __version__
from eqsolve._errors import unknown_key

log = logging.getLogger("eqsolve.cli")

#: Errors in what the user gave (values, files, paths): exit status 2. Other ``OSError``s
#: (permission denied, disk full, ...) are failures of the environment: exit status 1.
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError,
                NotADirectoryError)

#: Exit status of a run stopped early by SIGTERM (128 + 15, as a shell reports a SIGTERM kill).
EXIT_SIGTERM = 143

@dataclass(frozen=True)
class RunCommand:
    """How a run command composes its config and where its run folder and seed live.

    Attributes:
        config: Primary config in ``eqsolve/conf`` (``config_<command>.yaml``).
        entry: Entry point ``"module:function"``, imported only when the command runs. It is
            called as ``entry(cfg, run_dir=...)`` if it has a ``run_dir`` parameter, else as
            ``entry(plain_dict_of_cfg)`` (the run folder is then the config's ``out_key``).
        out_key: Config key of the run folder (``--out``).
        seed_key: Config key of the seed (``--seed``), recorded in ``meta.json``.
        resumable: The run folder may already hold a run that this one continues (training
            resumes in place when ``resume_key`` is set).
        drop_keys: Bulky entries of the entry's return value left out of ``results.json``
            (the entry keeps them elsewhere in the run folder).
        resume_key: Config key that asks to continue the run in ``--out`` (resumable commands).
        run_files: Globs of the files that mark an earlier run in ``--out``; without a resume
            such a folder is refused, never overwritten.
        figures: ``"module:function"`` called as ``function(run_dir)`` once ``results.json`` is
            written (rank 0); its failure is a warning, never a lost result.
        same_config_on_resume: A resumed run continues with the configuration its folder's
            ``config.yaml`` recorded (``--out DIR --resume`` is enough); a setting given anyway
            must have the recorded value.
    """

    config: str
    entry: str
    out_key: str = "out"
    seed_key: str = "seed"
    resumable: bool = False
    drop_keys: tuple[str, ...] = ()
    resume_key: str | None = None
    run_files: tuple[str, ...] = ("results.json",)
    figures: str | None = None
    same_config_on_resume: bool = False


RUN_COMMANDS: dict[str, RunCommand] = {
    # every finished chunk is journaled (chunks-rank*.jsonl): an interrupted bench resumes
    "bench": RunCommand("config_bench", "eqsolve.bench.grid:run_bench", resumable=True, resume_key="bench.resume",
                        run_files=("results.json", "chunks-rank*.jsonl"), same_config_on_resume=True),
    "diagnose": RunCommand("config_diagnose", "eqsolve.diagnostics:run_diagnose"),
    # per-step losses are in the run's metrics.jsonl
    "train": RunCommand("config_train", "eqsolve.training.run:main", "train.out", "train.seed", resumable=True,
                        drop_keys=("losses",), resume_key="train.resume",
                        run_files=("last.pt", "ckpt_*.pt", "metrics.jsonl", "config.json", "results.json"),
                        figures="eqsolve.training.run:plot_curves"),
    "compare-grads": RunCommand("config_compare_grads", "eqsolve.training.compare_grads:run", "train.out", "train.seed"),
}

#: Flags whose config key moves into the ``train`` section for training commands.
_TRAIN_KEYS = {"seed": "train.seed", "device": "train.device", "out": "train.out", "data": "train.data",
               "resume": "train.resume"}


# ----------------------------------------------------------------------------- flag → override
def int_list(text: str) -> list[int]:
    """Parse ``"4,8,16"`` (or ``"4"``) into a list of positive ints, for ``--depth``/``--breadth``.

    Examples:
        >>> int_list("4,8, 16")
        [4, 8, 16]
    """
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _quote(value: Any) -> str:
    """Render a Python value as a hydra override value (strings quoted when needed)."""
    if isinstance(value, list):
        return "[" + ",".join(_quote(v) for v in value) + "]"
    if value is None:
        return "null"
    text = str(value)
    if isinstance(value, str) and any(c in text for c in " ,[]{}()='\"\\:") or text == "":
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def _solver_override(name: str) -> str:
    """``--solver X``: the YAML option ``solver=X`` when one exists, else ``solver.name=X``."""
    from eqsolve.config import group_options

    return f"solver={name}" if name in group_options("solver") else f"solver.name={_quote(name)}"


def _task_override(name: str) -> str:
    """``--task sudoku-extreme`` selects ``task/sudoku_extreme.yaml``; a task registered in
    Python (:func:`eqsolve.tasks.base.register_task`) without a YAML file sets ``task.name``."""
    from eqsolve.config import group_options
    from eqsolve.tasks.base import available_tasks

    option = name.replace("-", "_")
    files = group_options("task")
    if option in files:
        return f"task={option}"
    registered = available_tasks()
    if name not in registered:
        valid = sorted(set(registered) | {v.replace("_", "-") for v in files})
        raise ValueError(unknown_key("task", name, valid))
    return f"task.name={_quote(name)}"


def _task_presets(command: str, name: str, user: Sequence[str]) -> list[str]:
    """The task's default presets: its bench grid (bench), its model and training recipe
    (train, compare-grads); a group the user chose in a trailing override is left alone."""
    from eqsolve.tasks.base import get_task

    task = get_task(name)
    chosen = {o.split("=", 1)[0].lstrip("+") for o in user if "=" in o}
    groups = {"bench": {"bench": task.bench_config},
              "train": {"model": task.model_config, "train": task.train_config},
              "compare-grads": {"model": task.model_config}}.get(command, {})
    return [f"{group}={option}" for group, option in groups.items() if group not in chosen]


def _flag_overrides(command: str, args: argparse.Namespace) -> list[str]:
    """Translate the parsed GNU flags of ``command`` into hydra overrides."""
    section = {"bench": "bench", "diagnose": "diagnose"}.get(command)
    out: list[str] = []
    if getattr(args, "task", None):
        if command in ("train", "compare-grads"):
            from eqsolve.tasks.base import get_task

            task = f"train.task={_quote(get_task(args.task).name)}"
        else:
            task = _task_override(args.task)
        out.extend(_task_presets(command, args.task, getattr(args, "overrides", [])) + [task])
    if getattr(args, "solver", None):
        out.append(_solver_override(args.solver))
    training = command in ("train", "compare-grads")
    for flag, key in (("seed", "seed"), ("device", "device"), ("out", "out"),
                      ("checkpoint", "checkpoint"), ("data", "task.data"), ("resume", "resume"),
                      ("model", "reasoner")):
        value = getattr(args, flag, None)
        if value is not None:
            key = _TRAIN_KEYS.get(flag, key) if training else f"{section}.resume" if flag == "resume" else key
            plain = flag == "seed" or value is True  # ints and the bare --resume stay unquoted
            out.append(f"{key}={str(value).lower() if value is True else value}" if plain
                       else f"{key}={_quote(str(value))}")
    if getattr(args, "grad", None):
        out.append(f"train.grad={_quote(args.grad)}")
    if getattr(args, "modes", None):
        out.append(f"compare.modes={_quote([m.strip() for m in args.modes.split(',') if m.strip()])}")
    if section is not None:
        for flag in ("depth", "breadth", "starts"):
            value = getattr(args, flag, None)
            if value is not None:
                out.append(f"{section}.{flag}={_quote(value)}")
        if getattr(args, "limit", None) is not None:
            out.append(f"{section}.limit={args.limit}")
        for flag in ("aggregate", "halt"):
            value = getattr(args, flag, None)
            if value is not None:
                out.append(f"{section}.{flag}={_quote(value)}")
    return out


# ----------------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser, *, model_flags: bool) -> None:
    """Flags shared by the run commands, and the trailing hydra overrides."""
    if model_flags:
        p.add_argument("--task", help="task (default sudoku-extreme)")
    p.add_argument("--data", help="puzzle file: Sudoku-Extreme CSV or one puzzle per line")
    p.add_argument("--out", help="run folder (default runs/<command>-<timestamp>)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda")
    p.add_argument("--seed", type=int, help="base random seed")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved, validated configuration as YAML and exit (no run folder)")
    p.add_argument("-m", "--multirun", action="store_true",
                   help="sweep: run every combination of the comma-separated override values "
                        "(key=a,b), each in its own folder under --out, indexed in sweep.json")
    if model_flags:
        p.add_argument("--solver", help="registered solver name (see `eqsolve solvers`)")
        p.add_argument("--model", help="shipped reasoner: deq (inner equilibrium) | eqr (plain inner updates)")
        p.add_argument("--checkpoint",
                       help="eqsolve checkpoint or official eqr.pth (default: shipped reasoner; 'random': untrained)")
        p.add_argument("--limit", type=int, help="number of puzzles")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="hydra overrides, e.g. model.hidden_size=128")


def build_parser() -> argparse.ArgumentParser:
    """The ``eqsolve`` argument parser (all subcommands).

    Returns:
        The parser; ``parse_args`` yields a namespace with ``command`` set.
    """
    examples = __doc__.split("Examples:\n")[1].split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog="eqsolve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fixed-point solvers and test-time scaling for deep-equilibrium reasoners. Every run "
                    "command takes GNU flags plus trailing hydra overrides (key=value).",
        epilog="examples:\n" + examples,
    )
    parser.add_argument("--version", action="version", version=f"eqsolve {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    bench = sub.add_parser("bench", help="solver × depth × breadth grid on the shipped reasoner")
    _add_common(bench, model_flags=True)
    bench.add_argument("--depth", type=int_list, help="NFE budgets per start, e.g. 4,8,16")
    bench.add_argument("--breadth", type=int_list, help="starts per puzzle, e.g. 1,4")
    bench.add_argument("--aggregate", help="min_residual | logit_change | vote | weighted_vote | any_correct")
    bench.add_argument("--halt", help="none | residual | logit")
    bench.add_argument("--resume", action="store_true", default=None,
                       help="continue the interrupted bench in --out (same configuration): chunks it "
                            "finished are read from its journal, the rest are evaluated")

    diagnose = sub.add_parser("diagnose", help="residual traces, spectral radius, attractor census")
    _add_common(diagnose, model_flags=True)
    diagnose.add_argument("--depth", type=int, help="NFE budget per start")
    diagnose.add_argument("--starts", type=int, help="starting points per puzzle")

    train = sub.add_parser("train", help="train an equilibrium reasoner")
    train.add_argument("--task", help="task (default sudoku-extreme); also picks its model and train presets")
    _add_common(train, model_flags=False)
    train.add_argument("--resume", nargs="?", const=True, metavar="PATH",
                       help="continue from <out>/last.pt, or from the checkpoint PATH")
    train.add_argument("--grad", help="gradient mode: sot (the paper's recipe: supervised outer steps, deep supervision, gradient through the last H-cycle only) | implicit | phantom | onestep | unrolled")

    compare = sub.add_parser("compare-grads", help="implicit vs unrolled training side by side")
    _add_common(compare, model_flags=False)
    compare.add_argument("--modes", help="gradient modes, e.g. unrolled,implicit,phantom,onestep,unrolled:4")

    data = sub.add_parser("data", help="fetch or generate puzzle data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="action")
    fetch = data_sub.add_parser("fetch", help="download a dataset (needs the 'hub' extra)")
    fetch.add_argument("dataset", choices=sorted(_FETCHERS),
                       help="sudoku-extreme (sapientinc/sudoku-extreme), maze-30x30-hard (HRM's "
                            "sapientinc/maze-30x30-hard-1k, the CSV layout of --task maze-unique) or "
                            "maze-unique (the EqR authors' Maze-Unique split from locuslab/EqR-data: "
                            "a folder of official arrays; pass it to --data)")
    fetch.add_argument("--out", default="data", help="destination folder (default: data)")
    fetch.add_argument("--split", default="test", choices=["train", "test"])
    fetch.add_argument("--revision", help="branch, tag or commit of the dataset repository "
                                          "(default: its main branch); pin one for reproducible numbers")
    generate = data_sub.add_parser("generate", help="generate rated Sudoku-Extreme-like puzzles → CSV")
    generate.add_argument("--n", type=int, required=True, help="number of puzzles")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", required=True, help="CSV file to write")
    generate.add_argument("--workers", type=int, default=1, help="generator processes")

    solvers = sub.add_parser("solvers", help="list registered solvers and their options")
    solvers.add_argument("--json", action="store_true", help="machine-readable output")

    export = sub.add_parser("export", help="training checkpoint → shippable reasoner file")
    export.add_argument("checkpoint", help="a training checkpoint (RUN/last.pt) or a run folder")
    export.add_argument("dest", help="reasoner file to write (loads with --checkpoint, EqR.from_checkpoint)")
    export.add_argument("--live", action="store_true", help="the live weights, not the EMA ones")

    imp = sub.add_parser("import-checkpoint", help="official eqr.pth → eqsolve checkpoint")
    imp.add_argument("source", help="official checkpoint (eqr.pth)")
    imp.add_argument("dest", help="eqsolve checkpoint to write")
    imp.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA ones")
    return parser


# ----------------------------------------------------------------------------- dispatch
def load_entry(spec: str) -> Callable[..., Any]:
    """Import ``"module:function"`` lazily, with an error naming what is missing.

    Args:
        spec: ``"package.module:function"``.

    Returns:
        The function.

    Raises:
        RuntimeError: If the module cannot be imported or lacks the function.
    """
    module_name, function = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(f"{module_name} is not available ({exc}); this command needs it") from exc
    entry = getattr(module, function, None)
    if entry is None:
        raise RuntimeError(f"{module_name} has no {function}(); this command needs it")
    return entry


def _rank() -> int:
    """Process rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (a run records the seed in meta.json)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_command(command: str, overrides: Sequence[str]) -> tuple[Path | None, dict[str, Any] | None]:
    """Compose the config of a run command, make its run folder and call its entry point.

    Only rank 0 (under torchrun) creates the run folder and writes ``results.json``; other ranks
    get ``run_dir=None`` and must not write.

    Args:
        command: One of :data:`RUN_COMMANDS`.
        overrides: Hydra overrides (flags already translated).

    Returns:
        ``(run_dir, payload)``; ``run_dir`` is ``None`` on ranks other than 0.
    """
    import torch
    from omegaconf import OmegaConf

    from eqsolve import runs
    from eqsolve.config import to_yaml

    spec = RUN_COMMANDS[command]
    cfg = _run_config(command, overrides)
    entry = load_entry(spec.entry)
    seed = int(OmegaConf.select(cfg, spec.seed_key))
    seed_everything(seed)
    run_dir = None
    handler = None
    lock = None
    startup: set[str] | None = None  # the run folder's files once the run started, if it made the folder
    discard = False
    if _rank() == 0:
        out = OmegaConf.select(cfg, spec.out_key)
        made_here = out is None or not Path(out).exists()
        resume = bool(OmegaConf.select(cfg, spec.resume_key)) if spec.resume_key else False
        # locked for the whole run, then checked: one run per folder, nothing of another overwritten
        run_dir, lock = runs.claim_run_dir(command.replace("-", "_"), out, run_files=spec.run_files,
                                           resumable=spec.resumable, resume=resume)
    try:
        if run_dir is not None:
            meta = runs.run_metadata(
                {"seed": seed}, command=command, overrides=list(overrides),
                torch_threads=torch.get_num_threads(), world_size=int(os.environ.get("WORLD_SIZE", "1")),
            )
            handler = runs.start_run(run_dir, to_yaml(cfg), meta)
            log.info("eqsolve %s: run folder %s", command, run_dir)
            startup = set(os.listdir(run_dir)) if made_here else None
        if "run_dir" in inspect.signature(entry).parameters:
            payload = entry(cfg, run_dir=run_dir)
        else:
            # entries that own their output folder get a plain dict with it filled in
            plain = OmegaConf.to_container(cfg, resolve=True)
            if run_dir is not None:
                _set_dotted(plain, spec.out_key, str(run_dir))
            payload = entry(plain)
        if run_dir is not None and payload is not None:
            runs.write_results(run_dir, command, {k: v for k, v in payload.items() if k not in spec.drop_keys})
            if spec.figures is not None:
                _draw_figures(command, spec.figures, run_dir)
    except USAGE_ERRORS:
        # bad input found before the run produced anything: leave no folder behind
        discard = startup is not None and set(os.listdir(run_dir)) == startup
        raise
    finally:
        if handler is not None:
            runs.finish_run(handler)
        if lock is not None:
            lock.release()
        if discard:
            _discard_run_dir(run_dir, startup)
    return run_dir, payload


def _draw_figures(command: str, spec: str, run_dir: Path) -> None:
    """Call a command's figure function after its results are written; a failure only warns."""
    try:
        load_entry(spec)(run_dir)
    except Exception as exc:  # a figure is never worth the run: results.json is complete
        log.warning("eqsolve %s: the figures failed (%s: %s); the results are in %s", command,
                    type(exc).__name__, exc, run_dir / "results.json")


def resolved_config(command: str, overrides: Sequence[str]) -> str:
    """The configuration a run command would run with, as YAML (``--print-config``).

    It is composed and validated exactly as :func:`run_command` does, so a typo fails the same
    way; nothing is written and no run folder is made.

    Args:
        command: One of :data:`RUN_COMMANDS`.
        overrides: Hydra overrides (flags already translated).

    Returns:
        The YAML text that the run would store as ``config.yaml``.
    """
    from eqsolve.config import to_yaml

    return to_yaml(_run_config(command, overrides))


def _run_config(command: str, overrides: Sequence[str]) -> Any:
    """The composed, validated configuration of a run command; a resumed bench's is the recorded one."""
    from omegaconf import OmegaConf

    from eqsolve import runs
    from eqsolve.config import compose

    spec = RUN_COMMANDS[command]
    cfg = compose(spec.config, overrides)
    if spec.same_config_on_resume and spec.resume_key and OmegaConf.select(cfg, spec.resume_key):
        out = OmegaConf.select(cfg, spec.out_key)
        if out is None:
            raise ValueError("--resume needs the folder of the run to continue: pass --out DIR")
        # every rank reads the recorded configuration (they share the folder), so all agree
        cfg = runs.resumed_config(out, cfg, overrides, keep=(spec.resume_key, spec.out_key))
    return cfg


def _discard_run_dir(run_dir: Path, files: set[str]) -> None:
    """Remove a run folder this command made, holding only the ``files`` it wrote at start."""
    for name in files:
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass  # something else appeared meanwhile: keep it


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree["a"]["b"] = value`` for ``key="a.b"``."""
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def _cmd_solvers(args: argparse.Namespace) -> int:
    """Print the registered solvers and their options."""
    from eqsolve.solvers import describe_solvers

    entries = describe_solvers()
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return 0
    for entry in entries:
        aliases = f" (aliases: {', '.join(entry['aliases'])})" if entry["aliases"] else ""
        print(f"{entry['name']}{aliases}: {entry['doc']}")
        for opt in entry["options"]:
            doc = f"  {opt['doc']}" if opt["doc"] else ""
            print(f"    {opt['name']} = {opt['default']!r} ({opt['type']}){doc}")
    return 0


#: ``eqsolve data fetch`` datasets -> their download function
_FETCHERS = {"sudoku-extreme": "eqsolve.tasks.sudoku:fetch_sudoku_extreme",
             "maze-30x30-hard": "eqsolve.tasks.maze:fetch_maze_csv",
             "maze-unique": "eqsolve.tasks.maze:fetch_maze_unique"}


def _cmd_data(args: argparse.Namespace) -> int:
    """``eqsolve data fetch|generate``."""
    if args.data_command == "fetch":
        fetch = load_entry(_FETCHERS[args.dataset])
        path = fetch(Path(args.out), split=args.split, revision=args.revision)
        print(f"wrote {path}")
        return 0
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    out = Path(args.out)
    check_writable_file(out, "--out")  # before generating, which takes minutes
    # iter_generate yields the puzzles of generate(n, seed) one by one, in order, so that a bar
    # can follow this step, which takes minutes for a few hundred puzzles
    iter_generate = load_entry("eqsolve.tasks.sudoku:iter_generate")
    from eqsolve.runs import progress_bar
    from eqsolve.tasks.sudoku import SudokuSet, save_csv

    items = []
    with progress_bar(args.n, "generate", unit="puzzle") as bar:
        for _, item, _ in iter_generate(args.seed, 0, args.n, workers=args.workers):
            items.append(item)
            bar.update(1)
    data = SudokuSet.from_items(items, f"eqsolve-generate-seed{args.seed}")
    save_csv(data, out)
    print(f"wrote {len(data)} puzzles to {out} (mean rating {data.ratings.mean():.1f})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """``eqsolve export CKPT DST``: a training checkpoint's weights → a small reasoner file."""
    from eqsolve.training.export import export_reasoner

    source = Path(args.checkpoint)
    source = source / "last.pt" if source.is_dir() else source
    if not source.is_file():
        raise FileNotFoundError(f"no training checkpoint at {source}; give RUN/last.pt or a run folder")
    check_writable_file(Path(args.dest), "DEST", "reasoner.pt")
    info = export_reasoner(source, args.dest, use_ema=not args.live)
    print(f"wrote {args.dest} ({'live' if args.live else 'EMA'} weights of step {info.get('step')})")
    return 0


def _cmd_import_checkpoint(args: argparse.Namespace) -> int:
    """``eqsolve import-checkpoint SRC DST``: official release checkpoint → native eqsolve one."""
    from eqsolve.models.eqr import EqR

    check_writable_file(Path(args.dest), "DEST", "reasoner.pt")
    try:
        model = EqR.from_official(args.source, prefer_ema=not args.no_ema)
    except ValueError:
        if _is_native_checkpoint(args.source):
            raise ValueError(f"{args.source} is already an eqsolve checkpoint, not an official eqr.pth; "
                             "use it as it is (--checkpoint), no import needed") from None
        raise
    model.save_checkpoint(args.dest, extra={"imported_from": str(args.source), "ema": not args.no_ema})
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.dest} ({params:,} parameters, hidden_size={model.config.hidden_size})")
    return 0


def check_writable_file(path: Path, name: str, example: str = "out.csv") -> None:
    """Fail now, naming ``name``, unless ``path`` can be written as a file (parents are made).

    Args:
        path: Destination file.
        name: How the user gave it (``--out``, ``DEST``).
        example: A file name for the advice when ``path`` is a folder.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: A parent of ``path`` is a file.
        OSError: The folder cannot be written (permission, read-only or virtual file system).
    """
    import tempfile

    if path.is_dir():
        raise IsADirectoryError(f"{name} {path} is a folder; give a file path, e.g. {path / example}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{name} {path}: {parent} is a file, not a folder")
            break
    missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass  # the write goes through a temp file in the same folder: that must be allowed
    except OSError as exc:
        for folder in missing:  # deepest first: leave nothing behind for a failed command
            if folder.is_dir():
                folder.rmdir()
        raise OSError(f"{name} {path}: cannot write in {path.parent} ({exc.strerror or exc}); "
                      "choose a folder you may write to") from None


def _is_native_checkpoint(source: str) -> bool:
    """Whether ``source`` loads as an eqsolve (native or training) checkpoint."""
    from eqsolve.models.loading import load_checkpoint

    try:
        load_checkpoint(source)
    except Exception:  # any failure: it is not one, and the import's own error stands
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eqsolve`` console script and ``python -m eqsolve``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        Process exit status: 0 on success, 2 on a usage/config error (:data:`USAGE_ERRORS`: a
        bad value, file or path), 1 on a runtime failure (including permission and I/O errors),
        143 (:data:`EXIT_SIGTERM`) when SIGTERM stopped a training run early (its checkpoint and
        ``results.json``, with ``"stopped": "signal"``, are written).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)  # run folders log DEBUG to log.txt; the console shows INFO
    if args.verbose:
        return _dispatch(parser, args)  # -v: let tracebacks through
    try:
        return _dispatch(parser, args)
    except USAGE_ERRORS as exc:
        print(f"eqsolve {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (RuntimeError, ImportError, OSError) as exc:
        print(f"eqsolve {args.command}: failed: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; an ``OSError`` names its path and says what to do."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        advice = {PermissionError: "choose a path you may write to",
                  IsADirectoryError: "give a file path, not a folder",
                  NotADirectoryError: "a parent of this path is a file, not a folder",
                  FileExistsError: "choose another path"}.get(type(exc), "check the path")
        text = f"{exc.filename}: {exc.strerror}; {advice}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # multi-line messages (omegaconf, state dicts) on one line


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """Every combination of the sweep overrides (hydra syntax: ``key=a,b``, ``range(1,4)``,
    ``choice(a,b)``), in order; ordinary overrides are in every combination.

    Examples:
        >>> expand_sweep(["bench.limit=16,32", "solver=anderson,broyden", "bench.depth=[4,8]"])[:2]
        [['bench.limit=16', 'solver=anderson', 'bench.depth=[4,8]'], ['bench.limit=16', 'solver=broyden', 'bench.depth=[4,8]']]
        >>> len(expand_sweep(["a=range(0,3)", "b=x,y"]))
        6
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(list(overrides))):
        if parsed.is_sweep_override():
            key = text.split("=", 1)[0]
            # lists and dicts stay as written; a string with hydra's special characters is quoted
            axes.append([f"{key}={v if v[:1] in '[{' else _quote(v)}" for v in parsed.sweep_string_iterator()])
        else:
            axes.append([text])
    return [list(combo) for combo in itertools.product(*axes)]


def _run_sweep(args: argparse.Namespace) -> int:
    """``-m``: one run per combination of the sweep, sequentially, under one sweep folder.

    Each run gets ``<sweep>/<index>`` (three digits) as its run folder; ``<sweep>/sweep.json`` (rewritten
    atomically after every run) lists each run's overrides, folder and outcome. A failed run is
    recorded and the sweep goes on; the exit status is 1 if any run failed.
    """
    from eqsolve._io import atomic_write_json

    spec = RUN_COMMANDS[args.command]
    base = Path(args.out) if args.out else Path("runs") / f"{args.command}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    args.out = None  # each run's folder is set below
    if getattr(args, "resume", None):
        raise ValueError("--resume does not apply to a sweep (-m); resume one of its runs by its folder")
    jobs = expand_sweep(_flag_overrides(args.command, args) + list(args.overrides))
    if args.print_config:
        print("\n".join(" ".join(job) for job in jobs))
        return 0
    if (base / "sweep.json").exists():
        raise FileExistsError(f"{base} already holds a sweep (sweep.json); choose a new --out")
    base.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"command": args.command, "runs": []}
    failed = 0
    for index, job in enumerate(jobs):
        run_dir = base / f"{index:03d}"
        entry: dict[str, Any] = {"index": index, "overrides": job, "run_dir": str(run_dir)}
        print(f"[sweep {index + 1}/{len(jobs)}] {' '.join(job)}", flush=True)
        try:
            _, payload = run_command(args.command, [*job, f"{spec.out_key}={_quote(str(run_dir))}"])
            entry["status"] = "done"
            if isinstance(payload, dict) and payload.get("stopped") == "signal":
                entry["status"] = "stopped"
        except Exception as exc:  # record it and go on with the next combination
            failed += 1
            entry.update(status="failed", error=_one_line(exc))
            print(f"eqsolve {args.command}: run {index} failed: {entry['error']}", file=sys.stderr)
        record["runs"].append(entry)
        if _rank() == 0:  # under torchrun every rank runs the sweep; one writes its index
            atomic_write_json(base / "sweep.json", record)
        if entry["status"] == "stopped":
            return EXIT_SIGTERM
    print(f"sweep folder: {base} ({len(jobs) - failed} of {len(jobs)} runs done)")
    return 1 if failed else 0


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the chosen subcommand; exceptions propagate to :func:`main`."""
    if args.command in RUN_COMMANDS and getattr(args, "multirun", False):
        return _run_sweep(args)
    if args.command in RUN_COMMANDS:
        if isinstance(getattr(args, "resume", None), str) and "=" in args.resume:
            # a bare `--resume` followed by overrides: argparse took the first override as PATH
            args.overrides.insert(0, args.resume)
            args.resume = True
        overrides = _flag_overrides(args.command, args) + list(args.overrides)
        if args.print_config:
            print(resolved_config(args.command, overrides), end="")
            return 0
        out = getattr(args, "out", None)
        if out is not None and Path(out).exists() and not Path(out).is_dir():
            raise FileExistsError(f"--out {out} is an existing file, not a run folder; give a new "
                                  "or empty folder")
        run_dir, payload = run_command(args.command, overrides)
        if run_dir is not None:
            print(f"run folder: {run_dir}")
        if isinstance(payload, dict) and payload.get("stopped") == "signal":
            # stopped early by SIGTERM (a scheduler's preemption): the shell's code for "killed by
            # SIGTERM", so that job systems see an unfinished run, while results.json and the
            # checkpoint at the step reached are complete
            print(f"eqsolve {args.command}: stopped by SIGTERM at step {payload.get('step')}; "
                  "continue with --resume", file=sys.stderr)
            return EXIT_SIGTERM
        return 0
    handlers = {"solvers": _cmd_solvers, "data": _cmd_data, "import-checkpoint": _cmd_import_checkpoint,
                "export": _cmd_export}
    return handlers[args.command](args)

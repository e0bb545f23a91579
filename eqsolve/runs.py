"""Run folders: one directory per command invocation, with everything needed to reproduce it.

A run folder holds

- ``config.yaml``: the fully composed configuration,
- ``meta.json``: command line, start time, seeds, git commit, package versions, torch threads,
- ``log.txt``: the ``eqsolve`` logger's output during the run,
- ``results.json``: machine-readable results with a versioned schema (see :data:`RESULTS_SCHEMA`),
- plots and whatever else the command writes.

Every write that matters goes through :func:`atomic_write_text` (temp file in the same folder,
then ``os.replace``), so a reader never sees half a file, even if the process is killed.

A run folder belongs to one run: :func:`claim_run_dir` locks it (an exclusive ``flock`` on
``.eqsolve.lock``, held until the run ends and dropped by the kernel if the process dies, ``kill
-9`` included) and only then checks that it holds no other run's files, so two commands given
the same ``--out`` cannot both write there.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from eqsolve._git import git_commit
from eqsolve._io import atomic_write_json, atomic_write_text

#: Schema tag of ``results.json``. Bump the version on any incompatible change of its layout.
RESULTS_SCHEMA = "eqsolve.results/1"

#: Lock file of a run folder (see :func:`lock_run_dir`).
LOCK_NAME = ".eqsolve.lock"
#: Files that make a folder a training run already (``pool.npz`` is a validated cache, not a run).
TRAIN_RUN_FILES = ("last.pt", "ckpt_*.pt", "metrics.jsonl", "config.json", "results.json")

_PACKAGES = ("eqsolve", "torch", "numpy", "hydra-core", "omegaconf", "matplotlib", "scipy")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def make_run_dir(kind: str, out: str | os.PathLike | None = None, root: str | os.PathLike = "runs") -> Path:
    """Create the run folder of a command.

    Args:
        kind: Command name, used in the default folder name (``runs/<kind>-<timestamp>``).
        out: Explicit folder (``--out``). Created if missing; an existing folder is reused only
            if it holds no ``results.json`` (so one run never overwrites another's results).
        root: Parent of default folders.

    Returns:
        The created folder.

    Raises:
        FileExistsError: If ``out`` already holds a ``results.json``.

    Examples:
        >>> import tempfile
        >>> make_run_dir("bench", root=tempfile.mkdtemp()).name.startswith("bench-")
        True
    """
    if out is not None:
        path = Path(out)
        if (path / "results.json").exists():
            raise FileExistsError(f"--out {path} already holds results.json; choose another folder")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{kind}-{stamp}"
    for suffix in range(1000):
        path = base if suffix == 0 else base.with_name(f"{base.name}-{suffix}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue  # two runs started in the same second: take the next free name
    raise FileExistsError(f"could not find a free run folder name next to {base}")


class RunFolderBusy(RuntimeError):
    """The run folder is locked by another live eqsolve process."""


#: Locks this process holds: lock file path -> [file descriptor, nesting count]. flock locks
#: belong to an open file, so a second open() of the same file in this process would conflict
#: with the first; nested claims (the CLI, then the training entry) share one descriptor instead.
_HELD: dict[str, list[int]] = {}


class RunLock:
    """An acquired run-folder lock; :meth:`release` it (or use ``with``) when the run ends."""

    def __init__(self, key: str | None) -> None:
        self._key = key

    def release(self) -> None:
        """Drop this claim; the lock itself goes when the outermost claim is released."""
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            fd, _ = _HELD.pop(key)
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run_dir(path: str | os.PathLike) -> RunLock:
    """Take the exclusive lock of run folder ``path`` for this process, or fail at once.

    Args:
        path: An existing run folder.

    Returns:
        The lock (re-entrant within one process).

    Raises:
        RunFolderBusy: Another live process holds the lock (its pid is named).

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with lock_run_dir(folder), lock_run_dir(folder):  # nested claims of one process
        ...     pass
    """
    lock_file = Path(path) / LOCK_NAME
    key = os.path.realpath(lock_file)
    if key in _HELD:
        _HELD[key][1] += 1
        return RunLock(key)
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no advisory locks; the folder checks still apply
        return RunLock(None)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        owner = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise RunFolderBusy(f"run folder {path} is in use by another eqsolve run (pid {owner}); "
                            "wait for it to end, or choose another --out folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the other process's message
    _HELD[key] = [fd, 1]
    return RunLock(key)


def existing_run_files(path: str | os.PathLike, patterns: tuple[str, ...]) -> list[str]:
    """Names of the files in ``path`` that match ``patterns`` (glob), sorted.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "ckpt_0000002.pt").write_bytes(b"")
        >>> existing_run_files(folder, TRAIN_RUN_FILES)
        ['ckpt_0000002.pt']
    """
    folder = Path(path)
    return sorted({p.name for pattern in patterns for p in folder.glob(pattern)})


def refuse_existing_run(path: str | os.PathLike, patterns: tuple[str, ...], *,
                        resumable: bool = False) -> None:
    """Raise if run folder ``path`` already holds another run's files.

    Args:
        path: The run folder.
        patterns: Globs of the files that mark a run (``results.json``, ``last.pt``...).
        resumable: The command can continue a run with ``--resume`` (named in the message).

    Raises:
        FileExistsError: Naming the folder, what it holds and the way out.
    """
    found = existing_run_files(path, patterns)
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        way_out = "continue that run with --resume, or choose a new --out folder" if resumable \
            else "choose another --out folder"
        raise FileExistsError(f"--out {path} already holds a run ({shown}); {way_out}")


def claim_run_dir(kind: str, out: str | os.PathLike | None = None, root: str | os.PathLike = "runs", *,
                  run_files: tuple[str, ...] = ("results.json",), resumable: bool = False,
                  resume: bool = False) -> tuple[Path, RunLock]:
    """Create (or reuse) a command's run folder and lock it for the whole run.

    The lock is taken before the folder is checked, so a second command started with the same
    ``--out`` either finds it locked or, once the first has finished, finds its files.

    Args:
        kind: Command name (default folder ``<root>/<kind>-<timestamp>``).
        out: Explicit folder (``--out``); created if missing.
        root: Parent of default folders.
        run_files: Globs of the files that mark an earlier run (refused unless ``resume``).
        resumable: The command can ``--resume`` (named in the refusal).
        resume: This invocation continues the run in ``out``.

    Returns:
        ``(folder, lock)``; release the lock when the run ends.

    Raises:
        FileExistsError: ``out`` is a file, or already holds a run (without ``resume``).
        RunFolderBusy: Another live process is running in ``out``.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> path, lock = claim_run_dir("bench", folder)
        >>> _ = (path / "results.json").write_text("{}"); lock.release()
        >>> claim_run_dir("bench", folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileExistsError: --out .../run already holds a run (results.json); choose another --out folder
    """
    if out is None:
        path = make_run_dir(kind, root=root)  # a fresh name: nobody else's
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"--out {path} is a file, not a folder; choose a folder path")
        path.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(path)
    try:
        if not resume:
            refuse_existing_run(path, run_files, resumable=resumable)
    except BaseException:
        lock.release()
        raise
    return path, lock


def resumed_config(run_dir: str | os.PathLike, composed: Any, overrides: Sequence[str],
                   keep: tuple[str, ...] = ()) -> Any:
    """The configuration a resumed run continues with: the one its folder recorded.

    Args:
        run_dir: The folder of the run being resumed (its ``config.yaml`` is read).
        composed: The configuration composed from this invocation's overrides (an OmegaConf
            ``DictConfig``).
        overrides: This invocation's ``key=value`` overrides (flags translated): each key must
            have the recorded value, so a resume never mixes results of two configurations (a
            group choice, ``task=...``, is compared by the group's ``name`` where it has one).
        keep: Dotted keys taken from ``composed`` instead (the resume flag, the folder itself).

    Returns:
        The recorded configuration, with the ``keep`` keys of ``composed``.

    Raises:
        ValueError: The folder has no readable ``config.yaml``, or an override asks for another
            value than the recorded one (each named with both values).
    """
    from omegaconf import OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"--out {run_dir} has no config.yaml: not a run folder to resume")
    try:
        recorded = OmegaConf.load(path)
    except Exception as exc:  # a YAML or OmegaConf error: the file is broken
        raise ValueError(f"{path}: cannot read the run's configuration: {exc}") from None
    diff = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if "=" not in item or key in keep:
            continue
        then, now = OmegaConf.select(recorded, key), OmegaConf.select(composed, key)
        if OmegaConf.is_dict(now):
            # a group choice (task=..., bench=..., also implied by --task): the other keys of the
            # group come from its preset, not from the user; compare what names the group, if
            # anything does (a task's or solver's name)
            if not (OmegaConf.is_config(then) and "name" in now and "name" in then):
                continue
            key, then, now = f"{key}.name", then.name, now.name
        if OmegaConf.is_config(then):  # a list
            then = OmegaConf.to_container(then, resolve=True)
        if OmegaConf.is_config(now):
            now = OmegaConf.to_container(now, resolve=True)
        if then != now:
            diff.append(f"{key}: {then!r} in the run, {now!r} now")
    if diff:
        raise ValueError(f"--resume {run_dir}: {'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''}: a resume "
                         "continues the run with its recorded configuration; drop these settings or choose a new --out")
    for key in keep:
        OmegaConf.update(recorded, key, OmegaConf.select(composed, key), force_add=True)
    return recorded


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that shape a run's numbers (``None`` if absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_metadata(seeds: Mapping[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    """Everything a run records about where and how it ran.

    Args:
        seeds: Named seeds used by the run.
        **extra: Further JSON-able entries (for example ``torch_threads``, ``world_size``).

    Returns:
        A JSON-able dict: argv (the program by its name only: ``sys.argv[0]`` is an absolute
        path into the machine's environment, which a committed ``meta.json`` should not carry),
        start time (UTC, ISO 8601), host, git commit, package versions, seeds and ``extra``.
    """
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
    return {
        "argv": argv,
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "seeds": dict(seeds or {}),
        **extra,
    }


def start_run(run_dir: str | os.PathLike, config_yaml: str, meta: Mapping[str, Any]) -> logging.Handler:
    """Write ``config.yaml`` and ``meta.json`` and route the ``eqsolve`` logger to ``log.txt``.

    Args:
        run_dir: The run folder (from :func:`make_run_dir`).
        config_yaml: The composed configuration, as YAML text.
        meta: Output of :func:`run_metadata`.

    Returns:
        The file handler attached to the ``eqsolve`` logger; pass it to :func:`finish_run`.
    """
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "config.yaml", config_yaml)
    atomic_write_json(run_dir / "meta.json", meta)
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("eqsolve")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # handlers filter; the console handler stays at INFO
    return handler


def finish_run(handler: logging.Handler) -> None:
    """Detach and close the log handler returned by :func:`start_run`."""
    logging.getLogger("eqsolve").removeHandler(handler)
    handler.close()


def write_results(run_dir: str | os.PathLike, kind: str, payload: Mapping[str, Any]) -> Path:
    """Write ``results.json`` (schema :data:`RESULTS_SCHEMA`) atomically.

    Args:
        run_dir: The run folder.
        kind: Command that produced the results (``"bench"``, ``"train"``, ...).
        payload: Command-specific JSON-able results, stored under ``"results"``.

    Returns:
        Path of ``results.json``.

    Examples:
        >>> import tempfile
        >>> p = write_results(tempfile.mkdtemp(), "bench", {"rows": []})
        >>> read_results(p)["kind"]
        'bench'
    """
    document = {
        "schema": RESULTS_SCHEMA,
        "kind": kind,
        "written_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "results": dict(payload),
    }
    return atomic_write_json(Path(run_dir) / "results.json", document)


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Load a ``results.json`` and check its schema tag.

    Args:
        path: The file, or the run folder holding it.

    Returns:
        The parsed document.

    Raises:
        ValueError: If the file is not an eqsolve results file of a supported schema version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema != RESULTS_SCHEMA:
        raise ValueError(f"{path}: schema {schema!r} is not supported (expected {RESULTS_SCHEMA!r})")
    return document


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr for long work, shown only when stderr is a terminal.

    Logs, pipes and CI output stay free of bar redraws; the returned object is a disabled bar
    there, which accepts the same calls (``update``, ``set_postfix``, ``close``) and draws
    nothing.

    Args:
        total: Number of units of work (``None``: unknown).
        desc: Label shown before the bar.
        enabled: ``False`` disables it regardless (e.g. on ranks other than 0).
        **kwargs: Passed on to ``tqdm``.

    Returns:
        The ``tqdm`` bar (a context manager).
    """
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()),
                dynamic_ncols=True, **kwargs)

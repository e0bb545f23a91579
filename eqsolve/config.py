"""Configuration: hydra composition of ``eqsolve/conf`` plus validation against dataclass schemas.

Every command has a primary config ``eqsolve/conf/config_<command>.yaml`` that pulls its groups
(``task/``, ``solver/``, ``bench/``, ``diagnose/``, ``model/``, ``train/``) through a defaults
list. :func:`compose` composes it with hydra's compose API and trailing overrides
(``bench.depth=[4,8]``, ``solver=broyden``, ``model.hidden_size=128``) and then validates the
result: an unknown key anywhere, in a YAML file or in an override, is a ``ValueError`` that
names the offending key and lists the valid ones; a value of the wrong type is a ``ValueError``
naming the key. Nothing is silently ignored.

Defaults are written once. The ``bench`` and ``diagnose`` sections take theirs from
:class:`BenchConfig` and :class:`DiagnoseConfig` (registered as the groups' ``default`` option,
:data:`SCHEMA_DEFAULTS`); ``task``/``solver`` YAML files name only what differs, the root
dataclasses fill the rest when the config is validated. YAML files are presets (``bench/maze``,
``model/small``, ``train/gpu``), not copies of the defaults.

Sections whose schema belongs to another module (``model`` → ``EqRConfig`` of
:mod:`eqsolve.models.eqr`, ``train`` → ``TrainConfig`` of :mod:`eqsolve.training.config`, ``compare`` →
``CompareConfig`` of :mod:`eqsolve.training.compare_grads`) are checked against that dataclass, imported
lazily. Where a root holds the whole section (training commands), the owner's defaults are
filled in, so ``config.yaml`` of a run shows every field; the bench's ``model`` holds only
overrides (for ``checkpoint=random``).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eqsolve._errors import unknown_key

CONF_DIR = Path(__file__).resolve().parent / "conf"

#: Sections validated against a dataclass owned by another module ("module:attribute").
EXTERNAL_SCHEMAS: dict[str, str] = {
    "model": "eqsolve.models.eqr:EqRConfig",
    "train": "eqsolve.training.config:TrainConfig",
    "compare": "eqsolve.training.compare_grads:CompareConfig",
}


@dataclass
class TaskConfig:
    """Which puzzles to use.

    Attributes:
        name: Task name (``sudoku-extreme``).
        data: CSV (``source,question,answer,rating``) or one-puzzle-per-line file; ``None`` uses
            the shipped evaluation set (or, for training, the project's generator).
        limit: Use ``limit`` puzzles, a random subset seeded by ``seed`` (``None`` = all; for
            the bench it overrides ``bench.limit``).
        min_rating: Keep only puzzles with at least this rating.
    """

    name: str = "sudoku-extreme"
    data: str | None = None
    limit: int | None = None
    min_rating: int | None = None


@dataclass
class SolverConfig:
    """A registered fixed-point solver and its options.

    Attributes:
        name: Registered solver name (``eqsolve solvers`` lists them).
        tol: Stopping tolerance on the residual kind ``stop`` (diagnose); must stay ``0`` for the
            bench, whose early stopping is ``bench.halt``.
        stop: ``"rel"`` or ``"abs"`` residual (also the residual the bench reports and aggregates).
        max_iter: Iteration cap for diagnose (``None``: its ``depth``); the bench uses
            ``bench.depth`` and refuses this key.
        options: Solver options (``solver.options.m=5``); ``name`` and these become one solver
            object, once, through ``resolve_solver(name, options)`` (which validates them).
    """

    name: str = "anderson"
    tol: float = 0.0
    stop: str = "rel"
    max_iter: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchConfig:
    """The depth × breadth grid of ``eqsolve bench``.

    Attributes:
        depth: NFE budgets per start (one NFE = one outer EqR iteration).
        breadth: Numbers of random starts per puzzle (run as one batch).
        aggregate: How to pick one answer from the starts: ``min_residual``, ``logit_change``,
            ``vote``, ``weighted_vote`` or ``any_correct`` (oracle, for analysis).
        halt: Per-row halting: ``none``, ``residual`` (latent residual of kind ``solver.stop``
            below ``halt_tol``) or ``logit`` (learned halting logit > 0).
        halt_tol: Threshold of ``halt: residual``.
        baseline: Solver run at equal NFE for comparison (``null`` to skip).
        extra_baselines: More solvers run at equal NFE, each ``"name"`` or
            ``"name:option=value,..."`` (e.g. ``"fixed_point:tau=0.5"``, damped plain iteration).
        noise: Path-noise scale at inference (``null`` = the model's own).
        init: Initial states: ``random`` or ``zeros``.
        batch_size: Puzzles per chunk (each chunk has its own seed, so results do not depend on
            how chunks are spread over processes).
        threads: torch intra-op threads (pinned and recorded).
        limit: Puzzles evaluated by default (``--limit`` / ``task.limit`` override it).
        resume: Continue the interrupted bench in ``out`` (``--resume``): the chunks in its journal
            are not evaluated again; the configuration must be the one it ran with.
    """

    depth: list[int] = field(default_factory=lambda: [4, 8, 16, 28])
    breadth: list[int] = field(default_factory=lambda: [1, 2])
    aggregate: str = "min_residual"
    halt: str = "none"
    halt_tol: float = 1e-3
    baseline: str | None = "fixed_point"
    extra_baselines: list[str] = field(default_factory=lambda: ["fixed_point:tau=0.5"])
    noise: float | None = 0.0
    init: str = "random"
    batch_size: int = 24
    threads: int = 1
    limit: int | None = 48
    resume: bool = False


@dataclass
class DiagnoseConfig:
    """Options of ``eqsolve diagnose`` (read by :func:`eqsolve.diagnostics.run_diagnose`).

    Attributes:
        starts: Starting points per puzzle (attractor census).
        depth: NFE budget per start (``None``: ``solver.max_iter``).
        limit: Puzzles analysed (``task.limit`` wins when set).
        tol: Relative residual of a "converged" start (used when ``solver.tol`` is 0).
        batch_rows: (puzzles × starts) rows per batched census solve.
        threads: torch intra-op threads.
        checkpoints: Depths at which accuracy and residual are recorded.
        probe_steps: Plain-iteration steps used to detect cycles on unconverged starts.
        spectral_iters: Power/Arnoldi JVP products per attractor.
        latent_rtol: Latent clustering distance, relative to the median end-state norm.
        target_accuracy: Accuracy target for the implied halting threshold.
        min_spurious_basin: Mode rule: smallest basin share of a spurious attractor.
        spurious_residual_factor: Mode rule: residual factor marking a spurious attractor.
        broad_basin: Mode rule: basin share counted as broad.
    """

    starts: int = 16
    depth: int | None = 16
    limit: int = 8
    tol: float = 1e-2
    batch_rows: int = 512
    threads: int = 2
    checkpoints: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    probe_steps: int = 16
    spectral_iters: int = 20
    latent_rtol: float = 0.05
    target_accuracy: float = 0.95
    min_spurious_basin: float = 0.05
    spurious_residual_factor: float = 10.0
    broad_basin: float = 0.5


@dataclass
class _ReasonerRunRoot:
    """Keys shared by every command that loads a reasoner and a puzzle set (bench, diagnose)."""

    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    reasoner: str | None = None
    checkpoint: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    task: TaskConfig = field(default_factory=TaskConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)


@dataclass
class BenchRoot(_ReasonerRunRoot):
    """Top level of ``config_bench.yaml``.

    Attributes:
        seed: Base seed (chunk ``c`` uses ``seed + c``).
        device: torch device.
        out: Run folder (``None`` = ``runs/bench-<timestamp>``).
        reasoner: Which shipped reasoner runs when ``checkpoint`` is ``None`` (``--model``; ``None``:
            the task's first):
            ``deq`` (inner equilibrium) or ``eqr`` (plain inner updates).
        checkpoint: eqsolve checkpoint or official ``eqr.pth``; ``None`` = shipped reasoner;
            ``"random"`` = a randomly initialised EqR built from ``model``.
        model: ``EqRConfig`` fields for ``checkpoint: random``.
    """

    bench: BenchConfig = field(default_factory=BenchConfig)


@dataclass
class DiagnoseRoot(_ReasonerRunRoot):
    """Top level of ``config_diagnose.yaml`` (same model/data rules as bench)."""

    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)


@dataclass
class TrainRoot:
    """Top level of ``config_train.yaml``.

    Everything (seed, device, data, out, resume) lives in ``train``, validated against
    ``eqsolve.training.config.TrainConfig``; ``model`` is validated against ``EqRConfig``.
    """

    model: Any = None
    train: Any = None


@dataclass
class CompareRoot:
    """Top level of ``config_compare_grads.yaml``: ``model``, ``train`` (as for training) and
    ``compare`` (validated against ``eqsolve.training.compare_grads.CompareConfig``)."""

    model: Any = None
    train: Any = None
    compare: Any = None


#: Primary config name → root schema.
SCHEMAS: dict[str, type] = {
    "config_bench": BenchRoot,
    "config_diagnose": DiagnoseRoot,
    "config_train": TrainRoot,
    "config_compare_grads": CompareRoot,
}


def _valid_keys_error(key_path: str, key: str, valid: Sequence[str], where: str) -> ValueError:
    """Build the error for an unknown key, with a 'did you mean' hint (:func:`eqsolve._errors.unknown_key`)."""
    return ValueError(unknown_key("config key", key, valid, f" in {where}", shown=key_path))


def _load_external_schema(section: str) -> type | None:
    """Import the dataclass that validates ``section``; ``None`` if its module is not there yet."""
    spec = EXTERNAL_SCHEMAS.get(section)
    if spec is None:
        return None
    module_name, attribute = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    schema = getattr(module, attribute, None)
    return schema if dataclasses.is_dataclass(schema) else None


def _schema_at(schema: type, parts: Sequence[str]) -> tuple[type | None, str]:
    """Walk ``parts`` down ``schema``; return the dataclass owning the last key and its path."""
    current: type | None = schema
    for depth, part in enumerate(parts[:-1]):
        if current is None:
            return None, ""
        fields = {f.name: f for f in dataclasses.fields(current)}
        if part not in fields:
            path = ".".join(parts[: depth + 1])
            where = ".".join(parts[:depth]) or "the config"
            raise _valid_keys_error(path, part, list(fields), f"'{where}'" if depth else where)
        nested = _field_dataclass(current, part)
        current = nested if nested is not None else _load_external_schema(part) if depth == 0 else None
    return current, ".".join(parts[:-1])


def _field_dataclass(schema: type, name: str) -> type | None:
    """The dataclass type of field ``name`` of ``schema``, if it is one."""
    for f in dataclasses.fields(schema):
        if f.name == name and f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            return type(value) if dataclasses.is_dataclass(value) else None
    return None


def check_override_keys(overrides: Sequence[str], schema: type) -> None:
    """Check the keys of ``key=value`` overrides against ``schema`` before composing.

    Group selections (``solver=broyden``) and deletions (``~key``) are left to hydra.

    Args:
        overrides: Hydra override strings.
        schema: Root dataclass of the config.

    Raises:
        ValueError: Naming the unknown key and the valid keys at that level.

    Examples:
        >>> check_override_keys(["bench.depth=[4]"], BenchRoot)
        >>> check_override_keys(["bench.dept=[4]"], BenchRoot)
        Traceback (most recent call last):
        ...
        ValueError: unknown config key 'bench.dept' (did you mean 'depth'?) in 'bench'; valid: aggregate, baseline, batch_size, breadth, depth, extra_baselines, halt, halt_tol, init, limit, noise, resume, threads
    """
    for override in overrides:
        if "=" not in override or override.startswith("~"):
            continue
        key = override.split("=", 1)[0].lstrip("+")
        parts = key.split(".")
        owner, prefix = _schema_at(schema, parts)
        if owner is None:
            continue  # free-form dict (solver.options, model without schema): validated later
        names = [f.name for f in dataclasses.fields(owner)]
        if parts[-1] not in names:
            where = f"'{prefix}'" if prefix else "the config"
            raise _valid_keys_error(key, parts[-1], names, where)


def check_keys(node: Any, schema: type, prefix: str = "") -> None:
    """Recursively check that every key of ``node`` is a field of ``schema``.

    Args:
        node: Mapping (DictConfig or dict) to check.
        schema: Dataclass describing it.
        prefix: Dotted path of ``node`` (for messages).

    Raises:
        ValueError: On the first unknown key, naming it and the valid keys.
    """
    if not isinstance(node, Mapping | DictConfig):
        return
    names = [f.name for f in dataclasses.fields(schema)]
    for key in node:
        key_path = f"{prefix}{key}"
        if key not in names:
            where = f"'{prefix[:-1]}'" if prefix else "the config"
            raise _valid_keys_error(key_path, str(key), names, where)
        nested = _field_dataclass(schema, str(key))
        if nested is None and not prefix:
            nested = _load_external_schema(str(key))
        if nested is not None:
            check_keys(node[key], nested, f"{key_path}.")


def validate(cfg: DictConfig, schema: type) -> DictConfig:
    """Validate a composed config against ``schema``; fill defaults and coerce types.

    Args:
        cfg: Composed config.
        schema: Root dataclass (one of :data:`SCHEMAS`).

    Returns:
        A typed, read-only copy of ``cfg`` (assigning a wrong type later raises too).

    Raises:
        ValueError: On an unknown key or a value of the wrong type, naming the key.
    """
    check_keys(cfg, schema)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        for section in EXTERNAL_SCHEMAS:
            external = _load_external_schema(section)
            node = merged.get(section) if section in merged else None
            whole_section = getattr(schema(), section, "") is None  # TrainRoot: the full section, not overrides
            if whole_section and external is not None and isinstance(node, DictConfig) \
                    and _all_fields_defaulted(external):
                # fill the owner's defaults and check types, so every field is visible in config.yaml
                merged[section] = OmegaConf.merge(OmegaConf.structured(external), node)
    except Exception as exc:  # omegaconf's ValidationError and friends: re-raise as ValueError
        raise _value_error(exc) from exc
    check_finite(merged)
    check_ranges(merged)
    OmegaConf.set_readonly(merged, True)
    return merged


def check_finite(node: Any, prefix: str = "") -> None:
    """Refuse NaN and infinite numbers anywhere in a config: no option means them.

    A NaN noise scale or tolerance would otherwise run and spoil every result silently.

    Args:
        node: Config (DictConfig, ListConfig, dict or list) or a leaf value.
        prefix: Dotted path of ``node`` (for messages).

    Raises:
        ValueError: Naming the key and its value.

    Examples:
        >>> check_finite({"bench": {"noise": float("nan")}})
        Traceback (most recent call last):
        ...
        ValueError: bench.noise=nan is not a finite number; give a finite value (or null where allowed)
    """
    from omegaconf import ListConfig

    if isinstance(node, Mapping | DictConfig):
        for key in node:
            check_finite(node[key], f"{prefix}{key}.")
    elif isinstance(node, list | tuple | ListConfig):
        for index, value in enumerate(node):
            check_finite(value, f"{prefix[:-1]}[{index}].")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f"{prefix[:-1]}={node} is not a finite number; give a finite value "
                         "(or null where allowed)")


def _value_error(exc: Exception) -> ValueError:
    """One line naming the key of an omegaconf validation error, and how to write the value."""
    key = getattr(exc, "full_key", None)
    if not key:
        return ValueError(f"invalid config value: {' '.join(str(exc).split())}")
    problem = str(getattr(exc, "msg", exc)).splitlines()[0]
    value = getattr(exc, "value", None)
    if "ListConfig" in problem or "list" in problem.lower():
        problem = f"expected a list, got {value!r}; write it as a list, e.g. {key}=[{value}]"
    return ValueError(f"invalid config value for {key}: {problem}")


#: Smallest valid value of integer options that must be positive (``None`` stays allowed where
#: the schema allows it), with the flag that sets them, for the message.
MIN_VALUES: dict[str, tuple[int, str | None]] = {
    "task.limit": (1, "--limit"), "bench.limit": (1, "--limit"), "bench.batch_size": (1, None),
    "bench.threads": (1, None), "diagnose.limit": (1, "--limit"), "diagnose.starts": (1, "--starts"),
    "diagnose.depth": (1, "--depth"), "diagnose.batch_rows": (1, None), "diagnose.threads": (1, None),
}


def check_ranges(cfg: Any) -> None:
    """Refuse integer options below their minimum (:data:`MIN_VALUES`), before a run starts.

    Args:
        cfg: A composed config.

    Raises:
        ValueError: Naming the key (and its flag) and the valid range.

    Examples:
        >>> check_ranges(OmegaConf.create({"bench": {"batch_size": 0}}))
        Traceback (most recent call last):
        ...
        ValueError: bench.batch_size=0: must be an integer >= 1
    """
    for key, (low, flag) in MIN_VALUES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, int) and value < low:
            where = f"{flag} {value} ({key})" if flag else f"{key}={value}"
            allowed = "; leave it out (null) for all puzzles" if key.endswith(".limit") else ""
            raise ValueError(f"{where}: must be an integer >= {low}{allowed}")


def _all_fields_defaulted(schema: type) -> bool:
    """True if every field of ``schema`` has a default (so it can be turned into a config)."""
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(schema))


def _normalise_overrides(overrides: Sequence[str]) -> list[str]:
    """Let ``model.x=v`` / ``train.x=v`` / ``solver.options.x=v`` set keys their YAML leaves out.

    Hydra refuses to override a key the YAML does not hold (and a group override such as
    ``train=gpu`` changes which keys those are). ``model``/``train`` keys were already checked
    against the section's dataclass by :func:`check_override_keys`, and solver options are
    checked by name when the solver is built, so adding them (``++``) is safe.
    """
    result = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if "=" in override and not key.startswith(("+", "~")) and "." in key:
            section = key.split(".")[0]
            if section in EXTERNAL_SCHEMAS or key.startswith("solver.options."):
                override = "++" + override
        result.append(override)
    return result


#: Config groups whose ``default`` option is the schema's dataclass itself (hydra's ConfigStore),
#: so each default is written once, in the dataclass; YAML files in these groups are presets that
#: differ from it (``bench/maze.yaml``).
SCHEMA_DEFAULTS: dict[str, type] = {"bench": BenchConfig, "diagnose": DiagnoseConfig}


def _store_schema_defaults() -> None:
    """Register ``<group>/default`` for every group of :data:`SCHEMA_DEFAULTS` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in SCHEMA_DEFAULTS.items():
        store.store(group=group, name="default", node=schema)


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``eqsolve/conf/<config_name>.yaml`` with hydra and validate it.

    Args:
        config_name: Primary config, e.g. ``"config_bench"``.
        overrides: Hydra overrides (``key=value``, ``group=option``, ``+key=value``).

    Returns:
        The validated config (read-only).

    Raises:
        ValueError: Unknown key (naming the valid keys), unknown group option, or bad value.

    Examples:
        >>> cfg = compose("config_bench", ["bench.depth=[2,4]", "solver=broyden"])
        >>> list(cfg.bench.depth), cfg.solver.name
        ([2, 4], 'broyden')
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    schema = SCHEMAS.get(config_name)
    if schema is None:
        raise ValueError(unknown_key("config", config_name, SCHEMAS))
    check_override_keys(overrides, schema)
    _store_schema_defaults()
    # initialize_config_dir (not _module) so that the yaml files are found in editable and wheel
    # installs alike; the folder is eqsolve/conf either way.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="eqsolve"):
        try:
            cfg = hydra_compose(config_name=config_name, overrides=_normalise_overrides(overrides))
        except (HydraException, OmegaConfBaseException) as exc:
            cause = exc.__cause__
            if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
                raise _value_error(cause) from exc  # a typed default (SCHEMA_DEFAULTS) refused the value
            raise ValueError(f"cannot compose {config_name} with overrides {list(overrides)}: {exc}") from exc
    return validate(cfg, schema)


def group_options(group: str) -> list[str]:
    """Names of the YAML options of a config group (``solver`` → ``["anderson", ...]``)."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def to_yaml(cfg: DictConfig) -> str:
    """Render a config as YAML (what a run folder stores as ``config.yaml``)."""
    return OmegaConf.to_yaml(cfg, resolve=True)

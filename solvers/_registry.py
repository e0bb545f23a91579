"""Solvers by name: :func:`get_solver`, :func:`register_solver`, :func:`available_solvers`."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ._base import Solver, describe_options

__all__ = ["available_solvers", "describe_solvers", "get_solver", "register_solver", "resolve_solver"]

_REGISTRY: dict[str, type] = {}
_ALIASES: dict[str, str] = {}


def register_solver(name: str, cls: type) -> None:
    """Make a solver class available by name (config files, CLI, ``solve(solver=name)``).

    Args:
        name: the registry key.
        cls: a dataclass type with ``init`` and ``step`` methods (normally a frozen dataclass
            subclassing :class:`~eqsolve.solvers.Solver`).

    Raises:
        TypeError: if ``cls`` is not a dataclass type with ``init``/``step``.
        ValueError: if ``name`` is empty or already taken by another class.

    Examples:
        >>> from dataclasses import dataclass
        >>> from eqsolve.solvers import FixedPointIteration, get_solver
        >>> @dataclass(frozen=True)
        ... class HalfStep(FixedPointIteration):
        ...     tau: float = 0.5
        >>> register_solver("half_step", HalfStep)
        >>> get_solver("half_step").tau
        0.5
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"solver name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"solver class must be a dataclass type, got {cls!r}")
    if not (callable(getattr(cls, "init", None)) and callable(getattr(cls, "step", None))):
        raise TypeError(f"solver class {cls.__name__} needs init(f, z0, args) and step(f, state, args)")
    known = _REGISTRY.get(name) or (_REGISTRY.get(_ALIASES[name]) if name in _ALIASES else None)
    if known is not None and known is not cls:
        raise ValueError(f"solver name {name!r} is already registered to {known.__name__}")
    _REGISTRY[name] = cls


def register_alias(alias: str, name: str) -> None:
    """Make ``alias`` another name of the registered solver ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"cannot alias unknown solver {name!r}")
    _ALIASES[alias] = name


def available_solvers() -> dict[str, type]:
    """Registered solvers, name -> class (aliases included).

    Examples:
        >>> sorted(available_solvers())[:3]
        ['anderson', 'broyden', 'fixed_point']
    """
    out = dict(_REGISTRY)
    out.update({alias: _REGISTRY[name] for alias, name in _ALIASES.items()})
    return out


def _unknown(kind: str, name: str, valid: list[str], context: str = "") -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}{context}; valid: {', '.join(sorted(valid)) or '(none)'}"


def get_solver(name: str, **options: Any) -> Solver:
    """Build a registered solver by name with validated options.

    Args:
        name: a name from :func:`available_solvers` (e.g. ``"anderson"``).
        **options: the solver's options (dataclass fields).

    Returns:
        The solver object.

    Raises:
        ValueError: unknown name, unknown option (both messages list the valid ones), or an
            option value out of range.

    Examples:
        >>> get_solver("fixed_point", tau=0.5)
        FixedPointIteration(tau=0.5)
        >>> get_solver("fixed_point", taus=0.5)
        Traceback (most recent call last):
        ...
        ValueError: unknown option 'taus' (did you mean 'tau'?) for solver 'fixed_point'; valid: tau
    """
    solvers = available_solvers()
    if name not in solvers:
        raise ValueError(_unknown("solver", str(name), list(solvers)))
    cls = solvers[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in valid:
            raise ValueError(_unknown("option", key, valid, f" for solver {name!r}"))
    return cls(**options)


def resolve_solver(solver: Any, options: dict[str, Any]) -> Any:
    """A solver object from a name (with options) or an object (then ``options`` must be empty)."""
    if isinstance(solver, str):
        return get_solver(solver, **options)
    if options:
        raise ValueError(
            f"solver options {sorted(options)} can only be given with a solver name; "
            f"got a solver object {solver!r} (set its fields instead)"
        )
    if not (callable(getattr(solver, "init", None)) and callable(getattr(solver, "step", None))):
        raise TypeError(f"solver must be a registered name or an object with init/step, got {solver!r}")
    return solver


def describe_solvers() -> list[dict[str, Any]]:
    """Registered solvers with their options, for listings (``eqsolve solvers``).

    Returns:
        One dict per registered name (aliases listed with their target): ``name``, ``class``
        (qualified name), ``aliases``, ``doc`` (first docstring line) and ``options``: a list of
        ``{"name", "default", "type", "doc"}``.

    Examples:
        >>> entry = next(d for d in describe_solvers() if d["name"] == "fixed_point")
        >>> entry["aliases"], entry["options"][0]["name"], entry["options"][0]["default"]
        (['naive'], 'tau', 1.0)
    """
    out = []
    for name, cls in sorted(_REGISTRY.items()):
        options = describe_options(cls)
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({
            "name": name,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "aliases": sorted(a for a, n in _ALIASES.items() if n == name),
            "doc": doc[0] if doc else "",
            "options": options,
        })
    return out

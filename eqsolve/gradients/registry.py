"""Gradient strategies by name: :func:`get_gradient`, :func:`register_gradient`,
:func:`available_gradients` — the same shape, and the same errors, as the solver registry
(:func:`eqsolve.solvers.get_solver`).

Examples:
    >>> sorted(available_gradients())[:3]
    ['bptt', 'ift', 'implicit']
    >>> get_gradient("phantom", taus=0.5)
    Traceback (most recent call last):
    ...
    ValueError: unknown option 'taus' (did you mean 'tau'?) for gradient 'phantom'; valid: k, tau
"""

from __future__ import annotations

import dataclasses
from typing import Any

from eqsolve._errors import check_keys, unknown_key
from eqsolve.gradients.base import GradientStrategy
from eqsolve.gradients.implicit import Implicit
from eqsolve.gradients.unrolled import OneStep, Phantom, Unrolled
from eqsolve.solvers._base import describe_options

__all__ = ["available_gradients", "describe_gradients", "get_gradient", "register_gradient"]

_REGISTRY: dict[str, type[GradientStrategy]] = {}


def register_gradient(name: str, cls: type[GradientStrategy]) -> None:
    """Make a gradient strategy class available by name (configs, ``DEQ(grad=name)``).

    Args:
        name: the registry key (looked up case-insensitively by :func:`get_gradient`).
        cls: a frozen dataclass subclassing :class:`~eqsolve.gradients.GradientStrategy`
            (its fields are its options).

    Raises:
        TypeError: ``cls`` is not a frozen dataclass subclass of ``GradientStrategy``.
        ValueError: ``name`` is empty or already taken by another class.

    Examples:
        >>> from dataclasses import dataclass
        >>> from eqsolve.gradients import Phantom
        >>> @dataclass(frozen=True)
        ... class TwoStep(Phantom):
        ...     k: int = 2
        >>> register_gradient("two_step", TwoStep)
        >>> get_gradient("two_step", tau=1.0)
        TwoStep(k=2, tau=1.0)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"gradient name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, GradientStrategy) and dataclasses.is_dataclass(cls)
            and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise TypeError(f"gradient class must be a frozen dataclass subclassing GradientStrategy, got {cls!r}")
    key = name.lower()
    known = _REGISTRY.get(key)
    if known is not None and known is not cls:
        raise ValueError(f"gradient name {name!r} is already registered to {known.__name__}")
    _REGISTRY[key] = cls


for _name, _cls in (("implicit", Implicit), ("ift", Implicit), ("phantom", Phantom), ("onestep", OneStep),
                    ("one_step", OneStep), ("jfb", OneStep), ("unrolled", Unrolled), ("bptt", Unrolled)):
    register_gradient(_name, _cls)


def available_gradients() -> dict[str, type[GradientStrategy]]:
    """Names accepted by :func:`get_gradient` (aliases included) and their classes."""
    return dict(_REGISTRY)


def get_gradient(name: str | GradientStrategy, **options: Any) -> GradientStrategy:
    """Build a gradient strategy by name, e.g. from a config.

    Args:
        name: ``"implicit"`` (``"ift"``), ``"phantom"``, ``"onestep"`` (``"jfb"``),
            ``"unrolled"`` (``"bptt"``), any name given to :func:`register_gradient`, or a
            strategy object (returned as is; then no options).
        **options: the strategy's options (its fields; for ``implicit`` also the options of
            its adjoint solver).

    Returns:
        The strategy object.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones), or an option
            value out of range.

    Examples:
        >>> get_gradient("phantom", k=3, tau=0.7)
        Phantom(k=3, tau=0.7)
    """
    if isinstance(name, GradientStrategy):
        if options:
            raise ValueError(f"gradient options {sorted(options)} can only be given with a gradient name; "
                             f"got a strategy object {name!r} (set its fields instead)")
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(unknown_key("gradient", name, _REGISTRY))
    cls = _REGISTRY[key]
    if cls is not Implicit:  # Implicit checks its own keys together with its solver's
        check_keys("option", options, cls.option_names(), f" for gradient {key!r}")
    return cls(**options)


def describe_gradients() -> list[dict[str, Any]]:
    """Registered strategies with their options, for listings (like ``describe_solvers``).

    Returns:
        One dict per class: ``name``, ``class``, ``aliases``, ``doc`` (first docstring line) and
        ``options`` (``{"name", "default", "type", "doc"}`` each).
    """
    by_class: dict[type, list[str]] = {}
    for name, cls in _REGISTRY.items():
        by_class.setdefault(cls, []).append(name)
    out = []
    for cls, names in by_class.items():
        options = describe_options(cls)
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"name": names[0], "class": f"{cls.__module__}.{cls.__qualname__}",
                    "aliases": sorted(names[1:]), "doc": doc[0] if doc else "", "options": options})
    return sorted(out, key=lambda d: d["name"])

"""The names under which gradient strategies are picked from a config: :func:`get_gradient`.

Examples:
    >>> sorted(available_gradients())[:3]
    ['bptt', 'ift', 'implicit']
"""

from __future__ import annotations

from typing import Any

from eqsolve.gradients.base import GradientStrategy
from eqsolve.gradients.implicit import Implicit
from eqsolve.gradients.unrolled import OneStep, Phantom, Unrolled

__all__ = ["available_gradients", "get_gradient"]

_REGISTRY: dict[str, type[GradientStrategy]] = {
    "implicit": Implicit, "ift": Implicit,
    "phantom": Phantom,
    "onestep": OneStep, "one_step": OneStep, "jfb": OneStep,
    "unrolled": Unrolled, "bptt": Unrolled,
}


def available_gradients() -> dict[str, type[GradientStrategy]]:
    """Names accepted by :func:`get_gradient` (aliases included) and their classes."""
    return dict(_REGISTRY)


def get_gradient(name: str | GradientStrategy, **options: Any) -> GradientStrategy:
    """Build a gradient strategy by name, e.g. from a config.

    Args:
        name: ``"implicit"`` (``"ift"``), ``"phantom"``, ``"onestep"`` (``"jfb"``),
            ``"unrolled"`` (``"bptt"``), or a strategy object (returned as is; no options).
        **options: constructor arguments of that strategy.

    Returns:
        The strategy object.

    Raises:
        ValueError: unknown name or option (the message lists the valid ones).

    Examples:
        >>> get_gradient("phantom", k=3, tau=0.7)
        Phantom(k=3, tau=0.7)
    """
    if isinstance(name, GradientStrategy):
        if options:
            raise ValueError(f"get_gradient: options {sorted(options)} given with a strategy object")
        return name
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown gradient {name!r}; valid: {sorted(_REGISTRY)}")
    cls = _REGISTRY[key]
    try:
        return cls(**options)
    except TypeError as err:  # unexpected keyword: name the valid ones
        import inspect

        valid = [p for p in inspect.signature(cls).parameters if p != "solver_options"]
        raise ValueError(f"gradient {key!r}: {err}; valid options: {valid}") from err

"""The one format of an "unknown name" error, used by every registry and config reader.

``unknown <what> 'x' (did you mean 'y'?)<context>; valid: a, b, c`` — the same wording as the
solver registry (:func:`eqsolve.solvers.get_solver`), so a misspelled solver, solver option,
gradient strategy, gradient option or config key all read alike.

Examples:
    >>> unknown_key("option", "taus", ["tau"], " for solver 'fixed_point'")
    "unknown option 'taus' (did you mean 'tau'?) for solver 'fixed_point'; valid: tau"
    >>> check_keys("train config key", {"stepz": 1}, ["steps", "lr"])
    Traceback (most recent call last):
    ...
    ValueError: unknown train config key 'stepz' (did you mean 'steps'?); valid: lr, steps
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["check_keys", "unknown_key"]


def unknown_key(what: str, name: object, valid: Iterable[str], context: str = "",
                shown: str | None = None) -> str:
    """The message for an unknown ``name`` among ``valid`` (sorted, with a did-you-mean hint).

    Args:
        what: what the name is, e.g. ``"solver"``, ``"option"``, ``"config key"``.
        name: the name given.
        valid: the names accepted there.
        context: text placed after the hint, e.g. ``" for solver 'anderson'"``.
        shown: how to print the name (e.g. its dotted path ``bench.dept``; default ``name``);
            the hint still compares ``name`` with ``valid``.
    """
    valid = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    label = str(name) if shown is None else shown
    return f"unknown {what} {label!r}{hint}{context}; valid: {', '.join(valid) or '(none)'}"


def check_keys(what: str, given: Iterable[str], valid: Iterable[str], context: str = "") -> None:
    """Raise ``ValueError(unknown_key(...))`` for the first (sorted) key of ``given`` not in ``valid``."""
    valid = list(valid)
    unknown = sorted(set(map(str, given)) - set(valid))
    if unknown:
        raise ValueError(unknown_key(what, unknown[0], valid, context))

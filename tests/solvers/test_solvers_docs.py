"""The examples in the solvers' docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["eqsolve.solvers", "eqsolve.solvers._solution", "eqsolve.solvers._base", "eqsolve.solvers._registry",
           "eqsolve.solvers._loop", "eqsolve.solvers.fixed_point", "eqsolve.solvers.anderson",
           "eqsolve.solvers.broyden", "eqsolve.solvers.torchdeq"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.endswith("torchdeq"):
        pytest.importorskip("torchdeq")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no runnable example"

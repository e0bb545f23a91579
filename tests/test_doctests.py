"""Every docstring example in the package runs and prints what it shows (doctest); every module
of the solver library has at least one.

Modules are imported by their installed names (``eqsolve.solvers._registry``, not the
``solvers/`` folder's own name), so each example sees the same registry and classes a user does.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import eqsolve
import eqsolve.solvers

# Every module is imported, so one that cannot be imported on a plain install fails here too.
MODULES = sorted(
    {"eqsolve", "eqsolve.solvers"}
    | {info.name for pkg in (eqsolve, eqsolve.solvers)
       for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + ".")}
)


def test_the_walk_finds_the_package():
    assert {"eqsolve.solvers", "eqsolve.solvers._registry", "eqsolve.models.eqr"} <= set(MODULES)
    assert len(MODULES) > 40


@pytest.fixture
def solver_registry():
    """Examples may register solvers (``register_solver``); other tests must not see them."""
    from eqsolve.solvers import _registry

    saved = (dict(_registry._REGISTRY), dict(_registry._ALIASES))
    yield
    for live, copy in zip((_registry._REGISTRY, _registry._ALIASES), saved):
        live.clear()
        live.update(copy)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, solver_registry):
    if name == "eqsolve.solvers.torchdeq":
        pytest.importorskip("torchdeq")  # the adapter's optional peer
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (run with -s to see them)"
    if name.startswith("eqsolve.solvers"):  # the reusable library documents every module by example
        assert result.attempted > 0, f"{name} has no runnable example"

"""Registry, descriptions for the CLI, and the package's public surface."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import eqsolve.solvers as solvers
from eqsolve.solvers import (
    Anderson,
    Broyden,
    FixedPointIteration,
    available_solvers,
    describe_solvers,
    get_solver,
    register_solver,
    solve,
)


def test_builtin_names_and_alias():
    names = available_solvers()
    assert names["fixed_point"] is FixedPointIteration and names["naive"] is FixedPointIteration
    assert names["anderson"] is Anderson and names["broyden"] is Broyden
    assert get_solver("naive", tau=0.5) == FixedPointIteration(tau=0.5)
    assert get_solver("broyden", memory=7).memory == 7


def test_register_a_custom_solver_and_use_it_by_name():
    @dataclass(frozen=True)
    class Halving(FixedPointIteration):
        """Damped iteration with tau = 0.5 by default."""

        tau: float = 0.5

    register_solver("test_halving", Halving)
    register_solver("test_halving", Halving)  # idempotent for the same class
    with pytest.raises(ValueError, match="already registered"):
        register_solver("test_halving", FixedPointIteration)
    sol = solve(lambda z: 0.5 * z + 1.0, torch.zeros(2, 2, dtype=torch.float64), solver="test_halving", tol=1e-9,
                max_iter=200)
    assert sol.converged.all()
    assert "test_halving" in available_solvers()


def test_register_rejects_non_solvers():
    with pytest.raises(TypeError, match="dataclass"):
        register_solver("x", object)
    with pytest.raises(ValueError, match="non-empty"):
        register_solver("", FixedPointIteration)


def test_describe_solvers_lists_every_option_with_default_and_doc():
    entries = {d["name"]: d for d in describe_solvers()}
    assert {"fixed_point", "anderson", "broyden"} <= set(entries)
    assert entries["fixed_point"]["aliases"] == ["naive"]
    for name, entry in entries.items():
        cls = available_solvers()[name]
        assert entry["class"].endswith(cls.__qualname__)
        defaults = cls()
        for opt in entry["options"]:
            assert opt["default"] == getattr(defaults, opt["name"])
            assert isinstance(opt["doc"], str)
    anderson = {o["name"]: o for o in entries["anderson"]["options"]}
    assert set(anderson) == {"m", "beta", "ridge", "max_cond", "delay", "compile"}
    assert all(o["doc"] for o in anderson.values())


def test_public_surface_is_explicit():
    for name in solvers.__all__:
        assert hasattr(solvers, name), name
    assert {"solve", "Solution", "Status", "get_solver", "register_solver", "available_solvers",
            "describe_solvers", "FixedPointIteration", "Anderson", "Broyden"} <= set(solvers.__all__)

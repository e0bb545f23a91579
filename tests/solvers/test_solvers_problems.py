"""Every solver on every named problem: MUST_WORK solvers converge to the known solution,
KNOWN_BAD solvers fail with the expected status; nothing ever returns a non-finite z."""

from __future__ import annotations

import pytest
import torch
from solver_problems import SOLVERS, problems

from eqsolve.solvers import Status, solve

CASES = [(p, s) for p in problems() for s in SOLVERS]


@pytest.mark.parametrize("problem,solver", CASES, ids=[f"{p.name}-{s}" for p, s in CASES])
@pytest.mark.parametrize("compact", [True, False], ids=["compact", "frozen"])
def test_problem_suite(problem, solver, compact):
    sol = solve(problem.f, problem.z0, *problem.args, solver=solver, tol=problem.tol, stop=problem.stop,
                max_iter=problem.max_iter[solver], compact=compact, **problem.options)
    assert torch.isfinite(sol.z).all(), "a solver returned a non-finite z"
    status = sol.status.tolist()
    good_rows = [r for r in range(problem.z0.shape[0]) if r not in problem.bad_rows]
    for r, expected in problem.bad_rows.items():
        assert status[r] == expected, f"row {r}: {Status(status[r]).name}, expected {expected.name}"
    if solver in problem.must_work:
        assert all(status[r] == Status.CONVERGED for r in good_rows), sol.describe_failures()
        # The harness recomputes the residual instead of trusting the solver's.
        fz = problem.f(sol.z, *problem.args)
        residual = torch.linalg.vector_norm(fz - sol.z, dim=1)[good_rows]
        assert (residual <= problem.tol * (1 + 1e-6)).all()
        # Equal up to round-off (f on a sub-batch may round differently from f on the whole batch).
        torch.testing.assert_close(residual, sol.abs_residual[good_rows], rtol=1e-6, atol=1e-3 * problem.tol)
        err = torch.linalg.vector_norm(sol.z - problem.z_star, dim=1)[good_rows]
        assert (err <= problem.err_factor * problem.tol * (1 + 1e-6)).all(), f"far from z*: {err.max():.2e}"
    else:
        expected = problem.known_bad[solver]
        assert any(status[r] != Status.CONVERGED for r in good_rows)
        assert {status[r] for r in good_rows} <= {int(expected), int(Status.CONVERGED)}, status


def test_suite_covers_the_required_problem_kinds():
    names = {p.name for p in problems()}
    assert {"tanh_contractive", "linear_sym_0.95", "linear_nonnormal", "linear_below_-1", "nan_rows",
            "mixed_easy_hard", "mixer_nonnormal", "tanh_slow"} <= names

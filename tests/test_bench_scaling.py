"""The README measurement script (benchmarks/bench_scaling.py): its helpers and its anytime curves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scaling.py"


@pytest.fixture(scope="module")
def bs():
    spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_depth_reaching(bs):
    acc = np.array([0.0, 0.25, 0.5, 0.5, 0.75])
    assert bs.first_depth_reaching(acc, 0.5) == 3
    assert bs.first_depth_reaching(acc, 0.8) is None


def test_simulate_halting_stops_at_first_true_step(bs):
    curves = {"correct": np.array([[False, True, True], [False, False, True], [True, True, False]])}
    stop = np.array([[False, True, True], [False, False, False], [True, False, False]])
    accuracy, mean_nfe = bs.simulate_halting(curves, stop)
    # row 0 stops at NFE 2 (right), row 1 never stops -> NFE 3 (right), row 2 stops at NFE 1 (right)
    assert accuracy == 1.0 and mean_nfe == pytest.approx((2 + 3 + 1) / 3)


def _tiny_problem(n: int, seed: int):
    """An untrained tiny EqR, ``n`` generated easy puzzles and seeded random starts."""
    from eqsolve.models import EqR, EqRConfig
    from eqsolve.tasks.sudoku import generate_easy

    torch.manual_seed(0)
    model = EqR(EqRConfig(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1, expansion=2.0)).eval()
    questions = np.stack([q for q, _, _ in generate_easy(n, seed=seed)])
    return model, questions, model.init_state(n, generator=torch.Generator().manual_seed(1))


def test_anytime_curves_match_solve_many_answers(bs):
    from eqsolve.scaling import solve_many
    from eqsolve.tasks.sudoku import encode_tokens

    model, questions, init = _tiny_problem(3, seed=2)
    for solver in ("fixed_point", "anderson"):
        curves = bs.anytime_curves(model, questions, solver, 5, init, batch_size=2)
        assert curves["digits"].shape == (3, 5, 81) and np.isfinite(curves["residual"]).all()
        assert (curves["digits"][:, 0] != curves["digits"][:, 4]).any()  # the comparison below is not vacuous
        for depth in (1, 3, 5):
            with torch.no_grad():
                result = solve_many(model, encode_tokens(questions), depth=depth, solver=solver, noise=0.0,
                                    init=init, residual="rel", predict=bs.DIGITS(model))
            np.testing.assert_array_equal(result.predictions.numpy(), curves["digits"][:, depth - 1])


def test_parse_solver_spec(bs):
    assert bs.parse_solver_spec("broyden") == ("broyden", {})
    assert bs.parse_solver_spec("anderson:m=5:beta=0.5") == ("anderson", {"m": 5, "beta": 0.5})
    with pytest.raises(ValueError, match="key=value"):
        bs.parse_solver_spec("anderson:m")


def test_cheapest_stopping_keeps_the_target_at_the_fewest_nfe(bs):
    # two rows, three steps: row 0 is right from step 2 on, row 1 only at step 3
    curves = {"correct": np.array([[False, True, True], [False, False, True]]),
              "residual": np.array([[0.5, 0.2, 0.01], [0.5, 0.2, 0.01]])}
    best = bs.cheapest_stopping(curves, target=0.5, tols=(0.3, 0.1))
    # tol 0.3 stops both rows at step 2 (NFE 2): row 0 right, row 1 wrong -> 50%, the cheapest
    assert best == {"tol": 0.3, "accuracy": 0.5, "mean_nfe": 2.0}
    best = bs.cheapest_stopping(curves, target=1.0, tols=(0.3, 0.1))
    assert best == {"tol": 0.1, "accuracy": 1.0, "mean_nfe": 3.0}
    assert bs.cheapest_stopping(curves, target=1.0, tols=(0.3,)) is None


def test_simulated_stopping_matches_solve_many_with_residual_halting(bs):
    """What the per-row stopping table simulates from the curves is what solve_many does."""
    model, questions, init = _tiny_problem(6, seed=3)
    for solver in ("fixed_point", "anderson:m=2"):
        curves = bs.anytime_curves(model, questions, solver, 8, init, batch_size=4)
        tol = float(np.median(curves["residual"][:, 3]))  # some rows stop early, others later or never
        steps = bs.stop_steps(curves["residual"] <= tol)
        assert len(set(steps.tolist())) > 1  # rows stop at different steps: the check is not vacuous
        check = bs.stopping_consistency(model, questions, init, curves, solver, tol, 8)
        assert check["agree"] == 1.0 and check["nfe_agree"] == 1.0, check


def test_the_measured_model_is_named_not_the_tasks_default(bs):
    # The script measures the shipped `eqr` reasoner (reasoner.pt) unless told otherwise: the
    # task's default reasoner changed to `deq` once, and a run then measured that model while its
    # report still said reasoner.pt. The config and the report's label follow --model.
    for argv, model, path in (([], "eqr", "reasoner.pt"), (["--model", "deq"], "deq", "reasoner_deq.pt")):
        args = bs.build_parser().parse_args(argv)
        cfg = bs.bench_config(args)
        assert cfg.reasoner == model and bs.model_label(args, cfg) == path

"""solve_many: aggregation rules, halting, continuous batching and NFE accounting.

Synthetic reasoners with known attractors make the right choice known in advance.
"""

from __future__ import annotations

import pytest
import torch

from eqsolve.models import EqR, EqRConfig
from eqsolve.scaling import AGGREGATIONS, aggregate_starts, solve_many


class Attractors:
    """Points a_j in R^k; a state contracts to its nearest a_j at rate (1 - rate_j).

    Problem input x (K,) holds the per-attractor rates: rate 1 jumps in one step, rate 0.1
    crawls (a high residual for many steps), rate 2 reflects through a_j (a 2-cycle, never
    converges). decode gives logits -||z - a_j||^2, so the answer is the basin index.
    """

    def __init__(self, points):
        self.points = points  # (K, k)
        self.rows_evaluated = 0

    def init_state(self, batch, generator=None, std=None, device=None):
        k = self.points.shape[1]
        if std == 0.0:
            return torch.zeros(batch, k)
        return 3 * torch.randn(batch, k, generator=generator)

    def _nearest(self, z):
        return torch.cdist(z, self.points).argmin(1)

    def map(self, s, x, noise=None):
        self.rows_evaluated += s.shape[0]
        j = self._nearest(s)
        rate = x.gather(1, j[:, None])
        return s + rate * (self.points[j] - s)

    def decode(self, s):
        return -torch.cdist(s, self.points) ** 2


POINTS = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def near(j, n=1, jitter=0.5):
    g = torch.Generator().manual_seed(j)
    return POINTS[j] + jitter * torch.randn(n, 2, generator=g)


def starts(*basins):
    """Explicit initial states: one start near each listed attractor (a different offset each)."""
    return torch.cat([near(j, 1) + 0.1 * i for i, j in enumerate(basins)])


def test_each_aggregation_picks_what_it_should():
    # rates: attractor 0 slow (0.1), 1 fast (0.9), 2 a 2-cycle (rate 2: reflection, residual stays)
    x = torch.tensor([[0.1, 0.9, 2.0]])
    init = starts(0, 0, 0, 1, 2)  # majority in slow basin 0, the fastest converges to 1
    r = {agg: solve_many(Attractors(POINTS), x, depth=8, breadth=5, init=init, aggregate=agg,
                         answers=torch.tensor([2]) if agg == "any_correct" else None)
         for agg in AGGREGATIONS}
    assert r["vote"].predictions.item() == 0 and r["vote"].chosen.item() in (0, 1, 2)
    assert r["min_residual"].chosen.item() == 3 and r["min_residual"].predictions.item() == 1
    assert r["logit_change"].chosen.item() == 3
    assert r["any_correct"].chosen.item() == 4 and bool(r["any_correct"].correct.item())
    # weighted: 3 slow starts (residual ~ (0.9^8) * 0.5) vs one converged start (~1e-8): B wins
    assert r["weighted_vote"].predictions.item() == 1
    # the 2-cycle start never converges: its residual stays at 2 * distance
    res = r["vote"].row_residual[0]
    assert res[4] > 0.5 and res[3] < 1e-4 and (res[:3] > 1e-3).all()


def test_weighted_vote_follows_the_majority_when_residuals_are_alike():
    x = torch.tensor([[0.5, 0.5, 0.5]])
    r = solve_many(Attractors(POINTS), x, depth=6, breadth=5, init=starts(0, 0, 0, 0, 1),
                   aggregate="weighted_vote")
    assert r.predictions.item() == 0
    # and the vote's chosen start is the lowest-residual member of the winning answer
    r = solve_many(Attractors(POINTS), x, depth=6, breadth=5, init=starts(1, 0, 0, 1, 0), aggregate="vote")
    best = r.row_residual[0][[1, 2, 4]].argmin()
    assert r.chosen.item() == [1, 2, 4][best]


def test_vote_ties_go_to_the_lowest_residual_group():
    preds = torch.tensor([[[1], [1], [2], [2]]])
    res = torch.tensor([[0.5, 0.4, 0.3, 0.9]])
    assert aggregate_starts("vote", preds, res).item() == 2
    assert aggregate_starts("min_residual", preds, torch.tensor([[0.5, float("nan"), 0.3, 0.1]])).item() == 3
    with pytest.raises(ValueError, match="needs answers"):
        aggregate_starts("any_correct", preds, res)
    with pytest.raises(ValueError, match="valid"):
        aggregate_starts("mode", preds, res)


def test_any_correct_falls_back_to_min_residual_without_a_hit():
    x = torch.tensor([[0.3, 0.9, 0.3]])
    r = solve_many(Attractors(POINTS), x, depth=5, breadth=3, init=starts(0, 1, 0),
                   aggregate="any_correct", answers=torch.tensor([2]))
    assert r.chosen.item() == 1 and not bool(r.correct.item())


def test_residual_halting_keeps_converged_answers_and_saves_nfe():
    x = torch.tensor([[0.1, 0.9, 2.0], [0.9, 0.1, 0.5]])
    init = torch.cat([starts(0, 1, 2, 1), starts(0, 1, 2, 2)])
    full = solve_many(Attractors(POINTS), x, depth=30, breadth=4, init=init)
    halted = solve_many(Attractors(POINTS), x, depth=30, breadth=4, init=init, halt="residual", halt_tol=1e-4)
    converged = (full.trace <= 1e-4).any(-1)
    assert converged.sum() >= 4 and not converged.all()
    assert torch.equal(halted.row_predictions[converged], full.row_predictions[converged])
    assert (halted.row_nfe[converged] < 30).all() and halted.row_halted[converged].all()
    assert (halted.row_nfe[~converged] == 30).all() and not halted.row_halted[~converged].any()
    # the halted row stops at the first iteration that meets the tolerance
    first = (full.trace <= 1e-4).float().argmax(-1) + 1
    assert torch.equal(halted.row_nfe[converged], first[converged])


def test_nfe_accounting_adds_up_with_refills():
    x = torch.tensor([[0.1, 0.9, 0.6]] * 3)
    for solver, max_rows in (("fixed_point", None), ("fixed_point", 2), ("anderson", 3)):
        reasoner = Attractors(POINTS)
        r = solve_many(reasoner, x, depth=12, breadth=4, solver=solver, max_rows=max_rows,
                       refill_threshold=1, halt="residual", halt_tol=1e-5, seed=1)
        assert int(r.nfe.sum()) == reasoner.rows_evaluated, solver
        assert torch.equal(r.nfe, r.row_nfe.sum(1))
        assert (r.row_nfe >= 1).all() and (r.row_nfe <= 12).all()
        assert torch.equal(r.row_halted, r.row_nfe < 12) or solver == "anderson"
        steps = torch.isfinite(r.trace).sum(-1)
        assert torch.equal(steps, r.row_nfe)  # one observation per NFE for these solvers


def test_continuous_batching_matches_one_batch():
    x = torch.tensor([[0.1, 0.9, 0.6], [0.7, 0.2, 0.4], [0.5, 0.5, 0.05]])
    init = 3 * torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    one = solve_many(Attractors(POINTS), x, depth=20, breadth=4, init=init, halt="residual", halt_tol=1e-3)
    for max_rows in (1, 3, 5):
        refilled = solve_many(Attractors(POINTS), x, depth=20, breadth=4, init=init, halt="residual",
                              halt_tol=1e-3, max_rows=max_rows, refill_threshold=1)
        assert torch.equal(refilled.row_nfe, one.row_nfe)
        assert torch.equal(refilled.row_predictions, one.row_predictions)
        torch.testing.assert_close(refilled.trace, one.trace, equal_nan=True)


def small_eqr(**kw):
    base = dict(hidden_size=16, num_heads=2, H_cycles=1, L_cycles=2, L_layers=1)
    base.update(kw)
    torch.manual_seed(0)
    return EqR(EqRConfig(**base))


def tokens(n):
    return torch.randint(1, 11, (n, 81), generator=torch.Generator().manual_seed(n))


def test_eqr_depth_matches_plain_iteration_and_breadth_rows_are_independent():
    model = small_eqr()
    tok = tokens(2)
    init = model.init_state(6, generator=torch.Generator().manual_seed(4))
    r = model.reason(tok, depth=5, breadth=3, noise=0.0, init=init, aggregate="min_residual")
    assert r.predictions.shape == (2, 81) and r.row_predictions.shape == (2, 3, 81)
    assert torch.equal(r.row_nfe, torch.full((2, 3), 5)) and torch.equal(r.nfe, torch.tensor([15, 15]))
    x = model.embed(tok).repeat_interleave(3, 0)
    s = init
    with torch.no_grad():
        residuals, logits = [], []
        for _ in range(5):
            fs = model.map(s, x, noise=0.0)
            residuals.append((fs - s).flatten(1).norm(dim=1))
            logits.append(model.decode(fs))
            s = fs
    assert torch.equal(r.row_predictions.view(6, 81), model.predict(s))  # tokens: the task-agnostic readout
    expected = torch.stack(residuals[-3:]).mean(0).view(2, 3)
    torch.testing.assert_close(r.row_residual, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(r.chosen, expected.argmin(1))
    # the release's score: per-cell norm of the logit change, mean over cells and the last 3 changes
    changes = [(b - a).norm(dim=-1).mean(-1) for a, b in zip(logits[:-1], logits[1:])]
    torch.testing.assert_close(r.row_logit_change, torch.stack(changes[-3:]).mean(0).view(2, 3),
                               rtol=1e-5, atol=1e-5)
    by_logits = model.reason(tok, depth=5, breadth=3, noise=0.0, init=init.view(2, 3, 2, 81, 16),
                             aggregate="logit_change")
    assert torch.equal(by_logits.chosen, r.row_logit_change.argmin(1))
    assert r.predictions.min() >= 0 and r.predictions.max() <= 10  # tokens
    # the Sudoku task's readout gives digits, with everything else the same
    from eqsolve.tasks.base import get_task

    digits = model.reason(tok, depth=5, breadth=3, noise=0.0, init=init, aggregate="min_residual",
                          predict=get_task("sudoku-extreme").predictor(model))
    assert torch.equal(digits.row_predictions.view(6, 81), model.predict_digits(s))
    assert torch.equal(digits.chosen, r.chosen) and digits.predictions.min() >= 1


def test_eqr_logit_halting_and_answers():
    model = small_eqr()
    tok = tokens(3)
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # halting logit > 0 from the first iteration on
    halted = model.reason(tok, depth=6, breadth=2, noise=0.0, init="zeros", halt="logit")
    one_step = model.reason(tok, depth=1, breadth=2, noise=0.0, init="zeros")
    assert torch.equal(halted.row_nfe, torch.ones(3, 2, dtype=torch.long)) and halted.row_halted.all()
    assert torch.equal(halted.row_predictions, one_step.row_predictions)
    answers = one_step.predictions.clone()
    answers[1, 0] = answers[1, 0] % 9 + 1
    scored = model.reason(tok, depth=1, breadth=2, noise=0.0, init="zeros", answers=answers)
    assert scored.correct.tolist() == [True, False, True]
    assert scored.summary()["accuracy"] == pytest.approx(2 / 3)


def test_eqr_converged_rows_keep_their_answer_when_halted():
    model = small_eqr()
    with torch.no_grad():  # strong input injection, weak blocks: a contraction (random EqRs are not)
        model.embed_tokens.embedding_weight.mul_(10.0)
        for p in model.L_level.parameters():
            p.mul_(0.1)
    tok = tokens(4)
    full = model.reason(tok, depth=60, breadth=2, noise=0.0, seed=3)
    halted = model.reason(tok, depth=60, breadth=2, noise=0.0, seed=3, halt="residual", halt_tol=1e-3)
    assert halted.row_halted.all() and (halted.row_nfe < 40).all()
    assert torch.equal(halted.row_predictions, full.row_predictions)
    assert (full.row_residual < 1e-4).all()


def test_noise_and_seed_are_reproducible():
    model = small_eqr(noise_scale=0.05)
    tok = tokens(2)
    a = model.reason(tok, depth=3, breadth=2, seed=7)
    b = model.reason(tok, depth=3, breadth=2, seed=7)
    c = model.reason(tok, depth=3, breadth=2, seed=8)
    assert torch.equal(a.trace, b.trace) and not torch.equal(a.trace, c.trace)


def test_bad_arguments_are_clear_errors():
    model = small_eqr()
    tok = tokens(1)
    with pytest.raises(ValueError, match="aggregate"):
        model.reason(tok, aggregate="best")
    with pytest.raises(ValueError, match="needs answers"):
        model.reason(tok, aggregate="any_correct")
    with pytest.raises(ValueError, match="depth"):
        model.reason(tok, depth=0)
    with pytest.raises(ValueError, match="init tensor"):
        model.reason(tok, breadth=2, init=torch.zeros(3, 2, 81, 16))
    with pytest.raises(ValueError, match="halt"):
        model.reason(tok, halt="sometimes")
    with pytest.raises(ValueError, match="halt_logit"):
        solve_many(Attractors(POINTS), torch.ones(1, 3), halt="logit")

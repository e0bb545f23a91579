"""Training with the Jacobian penalty (``train.jac_weight``): the split map, the estimate, the loss."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_models import tiny_config

from eqsolve.models.eqr import EqR, EqRConfig
from eqsolve.training.config import TrainConfig
from eqsolve.training.run import run_training
from eqsolve.training.steps import DeqForward, SotSegment, make_strategy

TWO_CYCLES = EqRConfig(hidden_size=8, num_heads=2, H_cycles=2, L_cycles=1, L_layers=1,
                       mixer="sudoku_pool")
TINY = tiny_config()


def _model_and_batch(config: EqRConfig, rows: int = 2) -> tuple[EqR, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = EqR(config).double()
    tokens = torch.randint(1, 11, (rows, 81))
    return model, tokens, model.init_state(rows, generator=torch.Generator().manual_seed(1))


def test_map_split_into_h_cycles_is_the_whole_map_with_the_same_noise():
    model, tokens, s = _model_and_batch(TWO_CYCLES)
    x = model.embed(tokens)
    whole = model.map(s, x, 0.05, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    split = model.map(model.map(s, x, 0.05, generator=gen, h_cycles=1), x, 0.05, generator=gen, h_cycles=1)
    assert torch.equal(whole, split)
    other = model.map(s, x, 0.05, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(whole, other)  # the noise is really drawn (the check above can fail)
    with pytest.raises(ValueError, match="h_cycles must be an int >= 1"):
        model.map(s, x, h_cycles=0)


def test_sot_segment_with_the_estimate_returns_the_same_step():
    model, tokens, s = _model_and_batch(TWO_CYCLES)
    plain = SotSegment(model)(s, tokens, 0.05, torch.Generator().manual_seed(5))
    with_jac = SotSegment(model, jacobian=True)(s, tokens, 0.05, torch.Generator().manual_seed(5))
    for a, b in zip(plain[:3], with_jac[:3]):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert "jac" not in plain[3] and with_jac[3]["jac"].shape == (2,)
    # the gradient of the CE path is the same (the estimate only adds its own graph)
    grads = []
    for out in (plain, with_jac):
        model.zero_grad()
        out[1].square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def _exact_jacobian_norm(model: EqR, s: torch.Tensor, x: torch.Tensor, h_cycles: int | None = 1) -> float:
    """||J||_F^2 / n of ``h_cycles`` H-cycles (None: the whole map) at one row, from the dense Jacobian."""
    jac = torch.autograd.functional.jacobian(lambda s: model.map(s, x, 0.0, h_cycles=h_cycles), s)
    return float(jac.pow(2).sum() / s.numel())


def test_sot_estimate_is_unbiased_for_the_last_h_cycle():
    model, tokens, s = _model_and_batch(TWO_CYCLES, rows=1)
    x = model.embed(tokens).detach()
    with torch.no_grad():
        s_last = model.map(s, x, 0.0, h_cycles=1)  # the input of the last of the two H-cycles
    exact = _exact_jacobian_norm(model, s_last, x)
    segment = SotSegment(model, jacobian=True)
    probes = [float(segment(s, tokens, 0.0, torch.Generator().manual_seed(k))[3]["jac"].detach())
              for k in range(40)]
    assert exact > 0
    assert abs(sum(probes) / len(probes) - exact) < 0.1 * exact
    # and a wrong input state (the segment's own input instead of the last cycle's) is far off:
    # the check above can tell them apart
    assert abs(_exact_jacobian_norm(model, s, x) - exact) > 0.1 * exact


def test_deq_forward_estimate_is_taken_at_the_solution():
    model, tokens, s = _model_and_batch(TWO_CYCLES, rows=1)
    cfg = TrainConfig(grad="onestep", depth=6, jac_weight=1.0)
    forward = DeqForward(model, make_strategy(cfg), solver="fixed_point", tol=1e-12, depth=6, jacobian=True)
    z, _, _, info = forward(s, tokens, 0.0)
    assert info["jac"].requires_grad  # kept for the penalty
    x = model.embed(tokens).detach()
    exact = _exact_jacobian_norm(model, z.detach(), x, h_cycles=None)  # the whole map, at z*
    probes = [float(forward(s, tokens, 0.0, torch.Generator().manual_seed(k))[3]["jac"].detach()) for k in range(40)]
    assert abs(sum(probes) / len(probes) - exact) < 0.1 * exact
    assert abs(_exact_jacobian_norm(model, s, x, h_cycles=None) - exact) > 0.1 * exact  # not at s0


@pytest.mark.parametrize("grad", ["sot", "onestep"])
def test_jac_weight_enters_the_loss_and_is_logged(tmp_path, grad):
    cfg = TrainConfig(grad=grad, steps=3, batch_size=4, gen_easy=6, depth=3, out=str(tmp_path),
                      checkpoint_every=3, log_every=1, eval_size=2, eval_depth=1, progress=False,
                      warmup_steps=1, noise=0.01, jac_weight=2.5)
    run_training(cfg, TINY)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert math.isfinite(line["jac"]) and line["jac"] > 0
        expected = line["ce"] + cfg.halt_weight * line["halt_loss"] + cfg.jac_weight * line["jac"]
        assert line["loss"] == pytest.approx(expected, rel=1e-5)


def test_jac_weight_off_logs_nothing_and_negative_is_refused(tmp_path):
    with pytest.raises(ValueError, match="jac_weight=-1"):
        TrainConfig(jac_weight=-1.0)
    cfg = TrainConfig(grad="sot", steps=1, batch_size=2, gen_easy=4, out=str(tmp_path), log_every=1,
                      eval_size=2, eval_depth=1, progress=False, warmup_steps=1)
    run_training(cfg, TINY)
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert "jac" not in line and line["loss"] == pytest.approx(line["ce"] + 0.5 * line["halt_loss"], rel=1e-5)


def test_the_penalty_lowers_the_jacobian_norm(tmp_path):
    """With a dominant weight, training mostly minimises ||J||_F^2 / n: it must come down."""
    cfg = TrainConfig(grad="onestep", steps=30, batch_size=4, gen_easy=8, depth=2, out=str(tmp_path),
                      checkpoint_every=30, log_every=1, eval_size=2, eval_depth=1, progress=False,
                      warmup_steps=1, lr=3e-3, noise=0.0, jac_weight=100.0, ema_decay=0.0)
    run_training(cfg, TINY)
    jac = [json.loads(x)["jac"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(jac[-5:]) / 5 < 0.5 * sum(jac[:5]) / 5

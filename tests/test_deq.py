"""The DEQ layer: budgets, train/eval modes, strategies by name, trajectory supervision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eqsolve.deq import DEQ, correction_loss
from eqsolve.gradients import GradSolution, Implicit, OneStep, Phantom, Unrolled
from eqsolve.solvers import Status

D = torch.float64


class Cell(nn.Module):
    def __init__(self, n: int = 6, rho: float = 0.9, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(n, n, generator=gen, dtype=D)
        self.W = nn.Parameter(rho * w / torch.linalg.matrix_norm(w, 2))
        self.b = nn.Parameter(torch.zeros(n, dtype=D))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.W.T + x + self.b)


def inputs(batch: int = 3, n: int = 6) -> torch.Tensor:
    return torch.randn(batch, n, generator=torch.Generator().manual_seed(1), dtype=D)


def test_module_registers_f_parameters_and_returns_grad_solution() -> None:
    cell = Cell()
    deq = DEQ(cell, solver="anderson", grad=Implicit(tol=1e-10), tol=1e-10, max_iter=100)
    assert {id(p) for p in deq.parameters()} == {id(p) for p in cell.parameters()}
    z, sol = deq(torch.zeros(3, 6, dtype=D), inputs())
    assert isinstance(sol, GradSolution) and sol.converged.all()
    assert z.requires_grad and z.dtype == D
    z.sum().backward()
    assert cell.W.grad is not None and sol.backward.ran


def test_train_and_eval_budgets_are_separate() -> None:
    """Test-time depth: a small training budget does not cap evaluation."""
    deq = DEQ(Cell(rho=0.95), solver="fixed_point", max_iter=3, tol=1e-8, eval_max_iter=400, eval_tol=1e-9)
    z0, x = torch.zeros(3, 6, dtype=D), inputs()
    _, sol = deq(z0, x)
    assert (sol.nstep == 3).all() and (sol.status == int(Status.MAX_ITER)).all()
    deq.eval()
    z, sol = deq(z0, x)
    assert sol.converged.all() and (sol.nstep > 3).all() and (sol.rel_residual <= 1e-9).all()
    assert not z.requires_grad and sol.backward is None
    # Training mode under no_grad (e.g. a validation loop that forgot .eval()) uses the eval budget too.
    deq.train()
    with torch.no_grad():
        _, sol = deq(z0, x)
    assert sol.converged.all()


def test_eval_mode_gives_no_gradient_by_default() -> None:
    deq = DEQ(Cell(), grad=Implicit(tol=1e-10), tol=1e-10, max_iter=100).eval()
    x = inputs().requires_grad_()
    z, sol = deq(torch.zeros(3, 6, dtype=D), x)
    assert not z.requires_grad and sol.backward is None
    assert "grad_in_eval" not in repr(deq)


@pytest.mark.parametrize("grad", ["implicit", "unrolled", "onestep"])
def test_grad_in_eval_gives_the_training_gradient_with_the_eval_budget(grad) -> None:
    """The switch (torchdeq issue #4): an eval-mode DEQ differentiates like a training one."""
    z0, x = torch.zeros(3, 6, dtype=D), inputs()
    grads = {}
    for mode in ("train", "eval"):
        cell = Cell(rho=0.8)
        deq = DEQ(cell, solver="fixed_point", grad=grad, max_iter=2, tol=1e-12,
                  eval_max_iter=300, eval_tol=1e-12, grad_in_eval=True)
        if mode == "train":  # the same budget as eval gets, for a like-for-like gradient
            deq.max_iter, deq.tol = 300, 1e-12
        else:
            deq.eval()
        xi = x.clone().requires_grad_()
        z, sol = deq(z0, xi)
        assert z.requires_grad and (sol.nstep > 2).all()  # the eval budget, not max_iter=2
        z.pow(2).sum().backward()
        grads[mode] = (xi.grad, cell.W.grad)
    for a, b in zip(grads["train"], grads["eval"]):
        assert a.abs().sum() > 0 and torch.allclose(a, b, atol=1e-8)


def test_grad_in_eval_respects_no_grad_and_skips_states() -> None:
    deq = DEQ(Cell(rho=0.95), solver="fixed_point", grad=Implicit(tol=1e-10), max_iter=200,
              tol=1e-9, n_states=3, grad_in_eval=True).eval()
    assert "grad_in_eval=True" in repr(deq)
    x = inputs().requires_grad_()
    with torch.no_grad():
        z, sol = deq(torch.zeros(3, 6, dtype=D), x)
    assert not z.requires_grad
    z, sol = deq(torch.zeros(3, 6, dtype=D), x)
    assert z.requires_grad and sol.states is None  # trajectory supervision is for training
    z.sum().backward()
    assert x.grad is not None and sol.backward.ran


@pytest.mark.parametrize("grad", ["implicit", "phantom", "onestep", "unrolled", Phantom(k=2, tau=0.7), Unrolled(k=2)])
def test_every_strategy_trains_through_the_layer(grad) -> None:
    cell = Cell()
    deq = DEQ(cell, grad=grad, max_iter=60, tol=1e-8)
    z, _ = deq(torch.zeros(3, 6, dtype=D), inputs())
    z.pow(2).sum().backward()
    assert torch.isfinite(cell.W.grad).all() and cell.W.grad.abs().sum() > 0


def test_trajectory_supervision_samples_iterates_with_graph() -> None:
    cell = Cell(rho=0.95)
    deq = DEQ(cell, solver="fixed_point", grad=Implicit(tol=1e-10), max_iter=200, tol=1e-9, n_states=4)
    x = inputs()
    z, sol = deq(torch.zeros(3, 6, dtype=D), x)
    assert len(sol.states) == 4 and sol.states[-1] is z
    assert all(s.requires_grad for s in sol.states)
    # Earlier samples lie farther from z*, in trajectory order, and none is z0 itself.
    dist = torch.stack([(s.detach() - sol.z).norm(dim=1) for s in sol.states])
    assert (dist[:-1] > 0).all() and (dist[0] > dist[1]).all() and (dist[1] > dist[2]).all()
    target = torch.zeros_like(z)
    loss = correction_loss(sol.states, lambda s: (s - target).pow(2).sum(), gamma=0.8)
    loss.backward()
    assert cell.W.grad.abs().sum() > 0 and sol.backward.ran
    # The intermediate states carry the OneStep graph: f applied once to the sampled iterate.
    with torch.no_grad():
        sampled = sol.states[0]
        assert (cell(sampled, x) - sampled).norm() > 0


def test_trajectory_samples_follow_each_rows_own_path() -> None:
    """Rows that converge at different times are each sampled along their own trajectory."""
    cell = Cell(rho=0.95)
    deq = DEQ(cell, solver="fixed_point", grad=OneStep(), max_iter=300, tol=1e-9, n_states=2)
    x = inputs()
    x[0] = 0.0  # row 0 starts at its fixed point z*=tanh(b)=0: a trajectory of length 1
    z, sol = deq(torch.zeros(3, 6, dtype=D), x)
    assert sol.nstep[0] == 0 and (sol.nstep[1:] > 10).all()
    mid = sol.states[0].detach()
    ref = torch.zeros(3, 6, dtype=D)
    with torch.no_grad():
        for row in (1, 2):  # the mid sample is f applied to the iterate halfway along that row's path
            it = ref[row:row + 1]
            half = int(sol.nfe[row]) // 2
            for _ in range(half):
                it = cell(it, x[row:row + 1])
            assert torch.allclose(mid[row], cell(it, x[row:row + 1])[0], atol=1e-12)


def test_invalid_configuration_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_iter"):
        DEQ(Cell(), max_iter=0)
    with pytest.raises(ValueError, match="stop"):
        DEQ(Cell(), stop="relative")
    with pytest.raises(ValueError, match="unknown gradient"):
        DEQ(Cell(), grad="implict")
    with pytest.raises(ValueError, match="n_states"):
        DEQ(Cell(), grad=Unrolled(), n_states=3)


def test_correction_loss_weights() -> None:
    states = [torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0)]
    assert correction_loss(states, lambda s: s, gamma=0.5).item() == pytest.approx(1 + 0.5 + 0.25)
    with pytest.raises(ValueError):
        correction_loss([], lambda s: s)


class LazyCell(Cell):
    """A map that builds a tensor on its first call and keeps it (as rotary-embedding caches do)."""

    def __init__(self) -> None:
        super().__init__()
        self.gain: torch.Tensor | None = None

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.gain is None:
            self.gain = torch.full((z.shape[-1],), 0.9, dtype=z.dtype)
        return torch.tanh((z @ self.W.T) * self.gain + x + self.b)  # the product saves gain for backward


@pytest.mark.parametrize("grad", ["implicit", "phantom", "unrolled"])
def test_evaluating_before_training_leaves_no_inference_tensor_in_the_module(grad) -> None:
    cell = LazyCell()
    deq = DEQ(cell, solver="anderson", grad=grad, tol=1e-8, max_iter=60)
    deq.eval()
    with torch.no_grad():
        deq(torch.zeros(3, 6, dtype=D), inputs())  # the cache is built here
    assert cell.gain is not None and not cell.gain.is_inference()
    deq.train()
    z, _ = deq(torch.zeros(3, 6, dtype=D), inputs())
    z.sum().backward()
    assert cell.W.grad is not None and torch.isfinite(cell.W.grad).all()


def test_a_direct_solve_under_no_grad_runs_f_in_inference_mode_unless_told_not_to() -> None:
    from eqsolve.solvers import solve

    for inference, expect in ((None, True), (False, False)):
        cell = LazyCell()
        with torch.no_grad():
            solve(cell, torch.zeros(3, 6, dtype=D), inputs(), tol=1e-8, inference=inference)
        assert cell.gain is not None and cell.gain.is_inference() == expect


@pytest.mark.parametrize("grad", ["implicit", "phantom", "one_step"])
def test_training_first_leaves_no_inference_tensor_in_the_module(grad) -> None:
    cell = LazyCell()
    deq = DEQ(cell, solver="anderson", grad=grad, tol=1e-8, max_iter=60)
    z, _ = deq(torch.zeros(3, 6, dtype=D), inputs())  # the cache is built in the forward solve
    z.sum().backward()
    assert cell.gain is not None and not cell.gain.is_inference() and cell.W.grad is not None

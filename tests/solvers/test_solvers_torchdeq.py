"""eqsolve's solvers inside torchdeq 0.1.0 (registry names, call and return conventions)."""

from __future__ import annotations

import pytest
import torch

torchdeq = pytest.importorskip("torchdeq")

from torchdeq.solver import get_solver as torchdeq_get_solver  # noqa: E402

import eqsolve.solvers.torchdeq as adapter  # noqa: E402

NAMES = ("eqsolve_fixed_point", "eqsolve_anderson", "eqsolve_broyden")


class TinyDEQ(torch.nn.Module):
    """z = tanh(W z + U x), with ||W|| = 0.5 so every solver converges."""

    def __init__(self, d: int = 12):
        super().__init__()
        self.w = torch.nn.Linear(d, d, bias=False)
        self.u = torch.nn.Linear(d, d)
        with torch.no_grad():
            self.w.weight.mul_(0.5 / torch.linalg.matrix_norm(self.w.weight, ord=2))

    def forward(self, x, deq):
        u = self.u(x)
        z, info = deq(lambda z: torch.tanh(self.w(z) + u), torch.zeros_like(x))
        return z[-1], info


def _deq(f_solver, **kw):
    return torchdeq.get_deq(f_solver=f_solver, b_solver=f_solver, f_max_iter=40, b_max_iter=40, f_tol=1e-6,
                            b_tol=1e-6, f_stop_mode="abs", b_stop_mode="abs", **kw)


def test_names_are_registered():
    assert set(NAMES) <= set(adapter.register())
    for name in NAMES:
        assert torchdeq_get_solver(name).func is adapter.torchdeq_solver


@pytest.mark.parametrize("name", NAMES)
def test_get_deq_runs_unchanged_and_matches_torchdeq(name):
    torch.manual_seed(0)
    model = TinyDEQ()
    x = torch.randn(5, 12)
    model.eval()
    z_ref, _ = model(x, _deq("anderson"))
    z, info = model(x, _deq(name))
    torch.testing.assert_close(z, z_ref, rtol=0, atol=1e-5)
    assert info["abs_lowest"].shape == (5,) and (info["abs_lowest"] <= 1e-6).all()
    assert info["abs_trace"].shape[0] == 5 and info["rel_trace"].shape == info["abs_trace"].shape
    assert (info["status"] == 0).all()
    # Training: torchdeq's IFT backward runs eqsolve as b_solver; gradients match torchdeq's.
    model.train()
    for p in model.parameters():
        p.grad = None
    z, _ = model(x, _deq(name, grad=1))
    z.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    z, _ = model(x, _deq("anderson", grad=1))
    z.square().sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-5)


def test_indexing_returns_states_at_the_requested_evaluations():
    f = lambda z: 0.5 * z + 1.0  # noqa: E731
    z, traj, info = adapter.torchdeq_solver(f, torch.zeros(2, 3, dtype=torch.float64), max_iter=30, tol=1e-12,
                                            stop_mode="abs", indexing=[1, 2, 4], solver="fixed_point")
    assert [t[0, 0].item() for t in traj] == [0.0, 1.0, 1.75]
    assert z.shape == (2, 3) and info["nstep"].tolist() == [30.0, 30.0]  # 30 evaluations = torchdeq's max_iter


def test_scalar_and_vector_inputs_like_torchdeq_examples():
    z, _, info = adapter.torchdeq_solver(torch.cos, torch.tensor(0.0), max_iter=100, tol=1e-6, solver="anderson")
    assert z.shape == () and abs(z.item() - 0.739085) < 1e-5


def test_options_translate_or_fail_loudly():
    f = lambda z: 0.5 * z  # noqa: E731
    z0 = torch.ones(2, 2)
    adapter.torchdeq_solver(f, z0, solver="anderson", m=3, tau=0.9)  # torchdeq's names
    adapter.torchdeq_solver(f, z0, solver="broyden", ls=True, LBFGS_thres=5, check_every=2)
    with pytest.raises(ValueError, match="unknown option 'lam'.*valid: beta, compile, delay, m, max_cond, ridge"):
        adapter.torchdeq_solver(f, z0, solver="anderson", lam=1e-4)
    with pytest.raises(ValueError, match="return_final"):
        adapter.torchdeq_solver(f, z0, solver="anderson", return_final=True)


def test_adapter_solves_outside_inference_mode_unless_asked():
    """torchdeq runs its solver under no_grad and then trains the module: a tensor the module
    caches in that solve must stay an ordinary one (eqsolve's solve would default to inference mode)."""
    made = []

    def func(z):
        made.append(torch.ones_like(z))  # what a lazily built cache would keep
        return 0.5 * z + made[-1]

    with torch.no_grad():
        adapter.torchdeq_solver(func, torch.zeros(3, 4), tol=1e-6)
        assert not any(t.is_inference() for t in made)
        made.clear()
        adapter.torchdeq_solver(func, torch.zeros(3, 4), tol=1e-6, inference=True)
        assert made and all(t.is_inference() for t in made)

"""A model written against torchdeq's API, run on torchdeq's solvers and on eqsolve's.

The model below only uses torchdeq (``get_deq``, ``z_out, info = deq(func, z0)``). Importing
``eqsolve.solvers.torchdeq`` registers ``eqsolve_fixed_point`` / ``eqsolve_anderson`` /
``eqsolve_broyden`` in torchdeq's registry, so switching is a change of solver name. For each
pair the script trains the same model for a few steps and compares the solver statistics
torchdeq reports (steps, residuals, rows under tolerance) plus wall time.

Run: ``python examples/torchdeq_model.py --steps 20``
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torchdeq import get_deq

import eqsolve.solvers.torchdeq  # noqa: F401  (registers eqsolve_* solvers in torchdeq)

PAIRS = [("fixed_point_iter", "eqsolve_fixed_point"), ("anderson", "eqsolve_anderson"), ("broyden", "eqsolve_broyden")]
TOL = 1e-4


class TorchDEQRegressor(nn.Module):
    """Plain torchdeq usage: a tanh cell with input injection, IFT gradient."""

    def __init__(self, solver: str, width: int = 48) -> None:
        super().__init__()
        torch.manual_seed(0)  # same weights for every solver
        self.encoder, self.cell, self.head = nn.Linear(8, width), nn.Linear(width, width), nn.Linear(width, 1)
        self.deq = get_deq(f_solver=solver, f_max_iter=40, f_tol=TOL, ift=True, b_solver=solver,
                           b_max_iter=40, b_tol=1e-5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        inj = self.encoder(x)
        z_out, info = self.deq(lambda z: torch.tanh(self.cell(z) + inj), torch.zeros_like(inj))
        return self.head(z_out[-1]), info


def run(solver: str, steps: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model = TorchDEQRegressor(solver)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = time.perf_counter()
    for _ in range(steps):
        pred, info = model(x)
        loss = (pred - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        _, info = model(x)
    return {"loss": loss.item(), "train_s": train_s, "nstep_mean": info["nstep"].float().mean().item(),
            "abs_max": info["abs_lowest"].max().item(),
            "under_tol": (info["abs_lowest"] <= TOL).float().mean().item()}


def main(steps: int = 20) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 8, generator=gen)
    y = (x[:, :3].sum(1, keepdim=True)).tanh()
    results = {}
    print(f"{'solver':22s} {'loss':>8s} {'train s':>8s} {'steps':>6s} {'abs res max':>12s} {'rows<=tol':>9s}")
    for pair in PAIRS:
        for solver in pair:
            results[solver] = r = run(solver, steps, x, y)
            print(f"{solver:22s} {r['loss']:8.4f} {r['train_s']:8.2f} {r['nstep_mean']:6.1f} "
                  f"{r['abs_max']:12.2e} {r['under_tol']:9.2f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per solver")
    main(parser.parse_args().steps)

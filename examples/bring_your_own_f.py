"""Bring your own f: the shortest complete use of ``solve`` and ``DEQ`` on your own nn.Module.

Run: ``python examples/bring_your_own_f.py --steps 50``
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from eqsolve.deq import DEQ
from eqsolve.gradients import Implicit
from eqsolve.solvers import solve


class MyCell(nn.Module):
    """Any map z -> f(z, x) with z's shape works; rows must not interact (no batch norm)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mix = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.tanh(self.mix(z)) + x)


def main(steps: int = 50) -> dict[str, float]:
    torch.manual_seed(0)
    cell, head = MyCell(32), nn.Linear(32, 1)
    x = torch.randn(64, 32)
    y = x[:, :4].sum(1, keepdim=True).sin()

    # 1) Just find the fixed point (no graph): one call, per-row statistics back.
    sol = solve(cell, torch.zeros_like(x), x, solver="anderson", tol=1e-5, max_iter=60)
    print("solve:", {k: round(v, 4) for k, v in sol.summary().items() if k in ("converged", "nfe_mean", "residual_max")})

    # 2) Train through it: implicit gradient (adjoint solved with Anderson as well).
    deq = DEQ(cell, solver="anderson", grad=Implicit(tol=1e-6, max_iter=60), tol=1e-5, max_iter=60)
    opt = torch.optim.Adam([*deq.parameters(), *head.parameters()], lr=3e-3)
    for step in range(steps):
        z, sol = deq(torch.zeros_like(x), x)
        loss = (head(z) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step:3d}  loss {loss.item():.4f}  forward nfe {sol.nfe.float().mean():.1f}  "
                  f"backward nfe {sol.backward.nfe.float().mean():.1f}  "
                  f"backward converged {sol.backward.converged.float().mean():.2f}")
    return {"loss": loss.item(), "forward_converged": sol.converged.float().mean().item(),
            "backward_converged": sol.backward.converged.float().mean().item()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps")
    main(parser.parse_args().steps)

"""A DEQ classifier on scikit-learn's 8×8 digits, trained with Implicit vs Unrolled gradients.

Same data, initialisation, solver and budget for both; prints test accuracy, training time and
the memory the backward pass keeps (bytes of tensors saved for backward per training step,
counted exactly with ``torch.autograd.graph.saved_tensors_hooks``).

Run: ``python examples/implicit_vs_unrolled_digits.py --steps 300``
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from eqsolve.deq import DEQ
from eqsolve.gradients import GradientStrategy, Implicit, Unrolled


class DigitsDEQ(nn.Module):
    """Encoder -> z* = tanh(W z + U x) with LayerNorm -> linear head."""

    def __init__(self, grad: GradientStrategy, width: int = 64, max_iter: int = 30) -> None:
        super().__init__()
        torch.manual_seed(0)  # identical initial weights for every gradient strategy
        self.encoder = nn.Linear(64, width)
        self.mix = nn.Linear(width, width, bias=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)
        # Test-time depth: evaluation may iterate longer than training did.
        self.deq = DEQ(self.cell, solver="anderson", grad=grad, tol=1e-4, max_iter=max_iter,
                       eval_max_iter=3 * max_iter)

    def cell(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.tanh(self.mix(z) + x))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, object]:
        x = self.encoder(images)
        z, sol = self.deq(torch.zeros_like(x), x)
        return self.head(z), sol


def load_digits_split(seed: int = 0) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits  # examples-only dependency

    data = load_digits()
    images = torch.tensor(data.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train, test = order[:1400], order[1400:]
    return images[train], labels[train], images[test], labels[test]


class SavedBytes:
    """Counts the bytes autograd saves for backward while active (the graph's memory).

    Each storage is counted once, so weights saved by every iteration are not double counted.
    """

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[int] = set()

    def __enter__(self) -> SavedBytes:
        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in self._seen:
                self._seen.add(storage.data_ptr())
                self.total += storage.nbytes()
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def train(grad: GradientStrategy, steps: int, batch: int = 128, max_iter: int = 30) -> dict[str, float]:
    x_train, y_train, x_test, y_test = load_digits_split()
    model = DigitsDEQ(grad, max_iter=max_iter)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    graph_bytes, start = 0, time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(y_train), (batch,), generator=gen)
        with SavedBytes() as saved:
            logits, sol = model(x_train[idx])
            loss = nn.functional.cross_entropy(logits, y_train[idx])
        graph_bytes = max(graph_bytes, saved.total)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        logits, sol = model(x_test)
    return {"test_accuracy": (logits.argmax(1) == y_test).float().mean().item(), "train_seconds": train_s,
            "graph_mib_per_step": graph_bytes / 2**20, "final_train_loss": loss.item(),
            "eval_converged": sol.converged.float().mean().item()}


def main(steps: int = 300, batch: int = 128, max_iter: int = 30) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    results = {}
    for name, grad in (("implicit", Implicit(tol=1e-4, max_iter=40)), ("unrolled", Unrolled())):
        results[name] = r = train(grad, steps, batch, max_iter)
        print(f"{name:9s} accuracy {r['test_accuracy']:.3f}  train {r['train_seconds']:.1f} s  "
              f"graph {r['graph_mib_per_step']:.2f} MiB/step  (eval converged {r['eval_converged']:.2f})")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per strategy")
    parser.add_argument("--batch", type=int, default=128, help="training batch size")
    parser.add_argument("--max-iter", type=int, default=30, help="forward solver budget")
    a = parser.parse_args()
    main(a.steps, a.batch, a.max_iter)

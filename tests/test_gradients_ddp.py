"""Implicit gradients under DistributedDataParallel: 2 CPU processes (gloo) == 1 process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from eqsolve.deq import DEQ
from eqsolve.distributed import gloo_threads, init_process_group, leave_process_group
from eqsolve.gradients import Implicit

D = torch.float64
GLOBAL_BATCH = 8


class Model(nn.Module):
    """Encoder -> DEQ (input injection) -> head: every part needs gradients that DDP reduces."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 6).double()
        self.cell = nn.Linear(6, 6).double()
        with torch.no_grad():
            self.cell.weight.mul_(0.7 / torch.linalg.matrix_norm(self.cell.weight, 2))
        self.deq = DEQ(lambda z, x: torch.tanh(self.cell(z) + x), solver="anderson",
                       grad=Implicit(tol=1e-12, max_iter=200), tol=1e-12, max_iter=200)
        self.head = nn.Linear(6, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inj = self.encoder(x)
        z, _ = self.deq(torch.zeros_like(inj), inj)
        # A second call on the same layer before backward (weight-tied refinement from z).
        z2, _ = self.deq(z.detach(), inj + 0.1 * z)
        return self.head(z + z2)


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 4, generator=gen, dtype=D), torch.randn(GLOBAL_BATCH, 3, generator=gen, dtype=D)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = (model(x) - y).pow(2).sum(1).mean()
    loss.backward()
    opt.step()


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_process_group("gloo", rank=rank, world_size=world)
    clean = False
    try:
        model = Model()
        ddp = nn.parallel.DistributedDataParallel(model)
        x, y = global_batch()
        shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        train_step(ddp, x[shard], y[shard])
        torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
        del ddp, model  # the DDP reducer holds the group: release it before leaving
        clean = True
    finally:
        leave_process_group(clean=clean)  # barrier (if clean), then destroy
    # gloo threads still alive at interpreter exit can abort the process (eqsolve.distributed)
    (Path(out_dir) / f"threads{rank}.txt").write_text(",".join(gloo_threads()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned interpreters: ~20-40 s on a shared 2-core machine
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo backend not built")
def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = Model()
    before = {k: v.clone() for k, v in single.state_dict().items()}
    train_step(single, *global_batch())
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [(tmp_path / f"threads{r}.txt").read_text() for r in range(2)] == ["", ""]
    for name, value in single.state_dict().items():
        assert not torch.equal(value, before[name]), f"{name} did not move: the test would be vacuous"
        for r, state in enumerate(ranks):
            assert torch.allclose(state[name], value, rtol=1e-9, atol=1e-12), (name, r)

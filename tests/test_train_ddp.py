"""DDP training (2 gloo processes) ends with the weights of a 1-process run on the same global batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tiny_models import TRAIN_MODEL

from eqsolve.distributed import gloo_threads
from eqsolve.models.eqr import EqR, EqRConfig
from eqsolve.training.checkpoint import load_training_checkpoint
from eqsolve.training.config import TrainConfig
from eqsolve.training.run import run_training

TINY = TRAIN_MODEL


def _cfg(out, grad: str) -> TrainConfig:
    # noise off: path noise is drawn per rank, so it is the one thing that cannot match
    grad, _, jac = grad.partition("+")
    return TrainConfig(grad=grad, steps=4, batch_size=4, gen_easy=6, depth=3, sup_steps=2,
                       out=str(out), checkpoint_every=2, log_every=1, eval_size=2, eval_depth=1,
                       progress=False, noise=0.0, warmup_steps=1, reveal_start=0.3,
                       reveal_end=0.3, threads=1, jac_weight=1.0 if jac else 0.0)


def _worker(rank: int, world: int, port: int, out: str, grad: str) -> None:
    """One torchrun-like rank: run_training joins the group and leaves it before returning."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    run_training(_cfg(out, grad), EqRConfig(**TINY))
    # gloo threads alive at interpreter exit are what aborted rank 1 (eqsolve.distributed)
    Path(out, f"threads{rank}.json").write_text(json.dumps(
        {"initialized": dist.is_initialized(), "gloo_threads": gloo_threads()}))


def _assert_left_cleanly(out: Path) -> None:
    """Both ranks left the group with every gloo thread stopped (Linux: /proc lists threads)."""
    for rank in range(2):
        state = json.loads((out / f"threads{rank}.json").read_text())
        assert state == {"initialized": False, "gloo_threads": []}, (rank, state)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("grad", ["sot", "onestep"])
def test_two_process_ddp_matches_single_process(tmp_path, grad):
    single = run_training(_cfg(tmp_path / "one", grad), EqRConfig(**TINY))
    assert single["step"] == 4
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "two"), grad), nprocs=2,
                       join=True, start_method="spawn")
    one = load_training_checkpoint(tmp_path / "one" / "last.pt")
    two = load_training_checkpoint(tmp_path / "two" / "last.pt")
    _assert_left_cleanly(tmp_path / "two")
    assert two["train"]["world"] == 2 and len(two["train"]["carry"]) == 2
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    torch.manual_seed(0)  # the runs' seed: their common initial weights
    init = EqR(EqRConfig(**TINY)).state_dict()
    assert any((init[k] - one["model"][k]).abs().max() > 1e-4 for k in init)  # not vacuous


@pytest.mark.slow
def test_two_process_ddp_trains_with_the_jacobian_penalty(tmp_path):
    """The penalty's double backward goes through DDP's gradient hooks. Its probes are drawn per rank
    (like path noise), so the weights cannot equal a 1-process run's; they must differ from a run
    without the penalty and stay finite."""
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "jac"), "sot+jac"), nprocs=2,
                       join=True, start_method="spawn")
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "plain"), "sot"), nprocs=2,
                       join=True, start_method="spawn")
    jac = load_training_checkpoint(tmp_path / "jac" / "last.pt")
    plain = load_training_checkpoint(tmp_path / "plain" / "last.pt")
    _assert_left_cleanly(tmp_path / "jac")
    assert jac["train"]["world"] == 2 and jac["train"]["train_config"]["jac_weight"] == 1.0
    assert all(torch.isfinite(v).all() for v in jac["model"].values())
    assert any((jac["model"][k] - plain["model"][k]).abs().max() > 1e-5 for k in plain["model"])

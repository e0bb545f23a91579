"""Device and backend selection under torchrun, checked on CPU with a faked CUDA.

Every rank must compute on its own GPU (``LOCAL_RANK`` → ``torch.cuda.set_device``) and CUDA
ranks must join with nccl; training and the bench both take that from
:func:`eqsolve.distributed.select_device`.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

import eqsolve.distributed as distributed
from eqsolve.distributed import CPU_BACKEND, CUDA_BACKEND, select_device


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend two GPUs exist; record the ``set_device`` calls."""
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(int(index)))
    return calls


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)


def _torchrun(monkeypatch, local_rank: int, world: int = 2) -> None:
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))


def test_cpu_is_gloo_and_touches_no_gpu(fake_cuda, monkeypatch):
    _torchrun(monkeypatch, 1)
    assert select_device("cpu") == (torch.device("cpu"), CPU_BACKEND)
    assert fake_cuda == []


@pytest.mark.parametrize("local_rank", [0, 1])
def test_each_rank_takes_its_own_gpu_and_nccl(fake_cuda, monkeypatch, local_rank):
    _torchrun(monkeypatch, local_rank)
    device, backend = select_device("cuda")
    assert device == torch.device("cuda", local_rank)
    assert fake_cuda == [local_rank]
    assert backend == CUDA_BACKEND and "cuda:nccl" in backend.split(",")


def test_auto_follows_cuda_availability(fake_cuda, monkeypatch, no_torchrun):
    assert select_device("auto") == (torch.device("cuda", 0), CUDA_BACKEND)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == (torch.device("cpu"), CPU_BACKEND)


def test_single_process_explicit_index(fake_cuda, no_torchrun):
    assert select_device("cuda:1")[0] == torch.device("cuda", 1)
    assert fake_cuda == [1]


def test_explicit_index_of_another_rank_is_refused(fake_cuda, monkeypatch):
    _torchrun(monkeypatch, 1)
    with pytest.raises(ValueError, match="another rank's GPU"):
        select_device("cuda:0")
    assert select_device("cuda:1")[0] == torch.device("cuda", 1)  # its own: fine


def test_more_ranks_than_gpus_is_refused(fake_cuda, monkeypatch):
    _torchrun(monkeypatch, 2, world=3)
    with pytest.raises(ValueError, match="LOCAL_RANK=2.*2 GPU"):
        select_device("cuda")
    assert fake_cuda == []


def test_cuda_without_cuda_and_bad_names(monkeypatch, no_torchrun):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        select_device("gpu0")
    with pytest.raises(ValueError, match="only cpu and cuda"):
        select_device("meta")


def test_training_joins_with_the_selected_backend(monkeypatch, fake_cuda):
    import eqsolve.training.run as train
    from eqsolve.training.config import TrainConfig

    _torchrun(monkeypatch, 1)
    joined: list[str] = []

    @contextmanager
    def fake_group(backend):
        joined.append(backend)
        yield False

    monkeypatch.setattr(train, "process_group", fake_group)
    monkeypatch.setattr(train, "_run_training", lambda cfg, model_config: {"ok": True})
    assert train.run_training(TrainConfig(device="cuda", progress=False)) == {"ok": True}
    assert joined == [CUDA_BACKEND] and fake_cuda == [1]
    assert train.run_training(TrainConfig(device="cpu", progress=False)) == {"ok": True}
    assert joined == [CUDA_BACKEND, CPU_BACKEND] and fake_cuda == [1]


@pytest.mark.parametrize("cuda", [True, False])
def test_bench_joins_with_the_selected_backend(monkeypatch, fake_cuda, cuda):
    """The bench joins through eqsolve.distributed (group_backend + process_group), like training."""
    import inspect

    from eqsolve.bench import grid

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    _torchrun(monkeypatch, 1)
    joined: list[str] = []
    monkeypatch.setattr(distributed, "init_process_group", lambda backend, **kw: joined.append(backend))
    monkeypatch.setattr(distributed, "leave_process_group", lambda **kw: None)
    with distributed.process_group(distributed.group_backend()) as started:
        assert started is True
    assert joined == [CUDA_BACKEND if cuda else CPU_BACKEND]
    assert fake_cuda == ([1] if cuda else [])
    source = inspect.getsource(grid.run_bench)
    assert "process_group(group_backend(" in source and "rank_and_world()" in source


def test_bench_alone_joins_nothing(monkeypatch, no_torchrun):
    monkeypatch.setattr(distributed, "init_process_group",
                        lambda *a, **k: pytest.fail("no group for one process"))
    monkeypatch.setattr(distributed, "select_device", lambda *a: pytest.fail("no device choice for one process"))
    assert distributed.group_backend("cuda") == CPU_BACKEND
    with distributed.process_group(distributed.group_backend()) as started:
        assert started is False
    assert distributed.rank_and_world() == (0, 1)

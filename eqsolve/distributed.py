"""Joining and leaving a ``torch.distributed`` process group so that every rank exits cleanly.

Training (DDP) and the bench (sharding + gather) run under ``torchrun``. Leaving the group is the
delicate part: a gloo process group owns worker threads (``pt_gloo_runloop``, ``gloo_tcp_loop``)
that :func:`torch.distributed.destroy_process_group` joins only if nothing else still holds the
group. If they are still alive when the interpreter finalises, a worker thread that drops its
last reference to a finished collective (tensors with Python objects) must take the GIL, the
finalising interpreter ends that thread, and the process aborts with ``terminate called without
an active exception`` (SIGABRT), at random, on whichever rank loses the race.

The group outlived ``destroy_process_group`` because ``torch._dynamo`` was first imported *while
the group existed*: ``DistributedDataParallel``'s constructor imports it lazily, and that import
keeps a reference to the live default group (measured with torch 2.13 on gloo: after DDP, a
barrier and ``destroy_process_group``, three gloo threads were still running; importing
``torch._dynamo`` before ``init_process_group`` leaves none). :func:`init_process_group` therefore
imports it first, and :func:`leave_process_group` leaves in the safe order: every rank done
(barrier), the caller's models released (``gc``), then destroy.

Joining starts with :func:`select_device`, the one place that maps a requested device to this
rank's device and the backend of the group: each rank takes its own GPU (``LOCAL_RANK``), and
CUDA ranks talk over nccl for CUDA tensors and gloo for CPU ones.

This module is the one home of the distributed set-up of every command: training and the bench
both join with :func:`process_group` (the bench's backend from :func:`group_backend`) and read
their place with :func:`rank_and_world`.
"""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = ["CPU_BACKEND", "CUDA_BACKEND", "gloo_threads", "group_backend", "init_process_group",
           "leave_process_group", "process_group", "rank_and_world", "select_device",
           "several_processes"]

#: Backend of a group whose ranks compute on the CPU.
CPU_BACKEND = "gloo"
#: Backend of a group whose ranks compute on CUDA: nccl carries CUDA tensors (DDP's gradient
#: all-reduce) and gloo the CPU ones (logged metrics, stop flags, ``all_gather_object``), which
#: nccl alone refuses ("No backend type associated with device type cpu").
CUDA_BACKEND = "cpu:gloo,cuda:nccl"


def select_device(requested: str = "auto") -> tuple[torch.device, str]:
    """This process's device and the process-group backend that goes with it.

    Under ``torchrun`` every rank must compute on its own GPU: ``"cuda"`` means
    ``cuda:LOCAL_RANK`` and becomes the current CUDA device (:func:`torch.cuda.set_device`), so
    that ``torch.device("cuda")`` elsewhere, nccl and ``all_gather_object`` all use that GPU.
    Outside ``torchrun`` ``LOCAL_RANK`` is unset and ``"cuda"`` means ``cuda:0``.

    Args:
        requested: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` (``"cuda"`` when CUDA is
            available, else ``"cpu"``). Under ``torchrun`` with several processes an explicit
            ``"cuda:N"`` must be this rank's own GPU (``N == LOCAL_RANK``).

    Returns:
        ``(device, backend)``: the resolved device (``cuda:N`` with its index, or ``cpu``) and
        :data:`CPU_BACKEND` or :data:`CUDA_BACKEND`.

    Raises:
        ValueError: The name is not a CPU/CUDA device, CUDA is requested but unavailable, this
            rank has no GPU of its own (more processes than GPUs), or ``cuda:N`` under
            ``torchrun`` names another rank's GPU.

    Examples:
        >>> select_device("cpu")
        (device(type='cpu'), 'gloo')
    """
    name = str(requested)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={requested!r} is not a torch device; valid: cpu, cuda, cuda:N, "
                         "auto") from None
    if device.type == "cpu":
        return torch.device("cpu"), CPU_BACKEND
    if device.type != "cuda":
        raise ValueError(f"device={requested!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} but CUDA is not available on this machine; "
                         "use --device cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    index = local_rank if device.index is None else device.index
    if device.index is not None and world > 1 and device.index != local_rank:
        raise ValueError(f"device={requested!r} under torchrun (WORLD_SIZE={world}) would put "
                         f"rank LOCAL_RANK={local_rank} on another rank's GPU; use --device cuda "
                         "(each rank takes cuda:LOCAL_RANK)")
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device={requested!r}: cuda:{index} does not exist (LOCAL_RANK="
                         f"{local_rank}, {count} GPU(s) visible); start at most one process per "
                         "GPU (torchrun --nproc_per_node)")
    torch.cuda.set_device(index)
    return torch.device("cuda", index), CUDA_BACKEND


def several_processes() -> bool:
    """Whether this process was launched as one of several (``torchrun``: ``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size of the default group (``0, 1`` without one).

    Examples:
        >>> rank_and_world()
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def group_backend(device: str = "auto") -> str:
    """The backend of the group a run on ``device`` joins under ``torchrun``.

    With several processes this is :func:`select_device`'s backend (which also makes this rank's
    GPU the current one); a single process joins no group, so the device is not looked at here
    and :data:`CPU_BACKEND` is returned.

    Examples:
        >>> group_backend("cpu")
        'gloo'
    """
    return select_device(device)[1] if several_processes() else CPU_BACKEND


def init_process_group(backend: str, **kwargs: object) -> None:
    """``torch.distributed.init_process_group`` after importing ``torch._dynamo`` (see module doc).

    Args:
        backend: A backend string, normally the one :func:`select_device` returns.
        **kwargs: Passed on (``rank``, ``world_size``, ``init_method``, ...).
    """
    importlib.import_module("torch._dynamo")  # imported later, it would pin the group (module doc)
    dist.init_process_group(backend, **kwargs)


def leave_process_group(*, clean: bool = True) -> None:
    """Destroy the default process group, after the other ranks are done with it.

    Args:
        clean: The caller finished normally, so every rank reaches this point: wait for them
            (barrier) before destroying. After an error a peer may never arrive, so the barrier
            is skipped (it would hang) and the group is destroyed at once.
    """
    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    gc.collect()  # models (DDP reducers) in reference cycles hold the group: release them first
    dist.destroy_process_group()


@contextmanager
def process_group(backend: str) -> Iterator[bool]:
    """Join the ``torchrun`` group for the duration of a block when ``WORLD_SIZE > 1``.

    A group that already exists (a caller's) is used as is and left to its owner.

    Args:
        backend: Backend used when this block creates the group.

    Yields:
        Whether this block created the group (and will destroy it on leaving).
    """
    started = several_processes() and not dist.is_initialized()
    if started:
        init_process_group(backend)
    clean = False
    try:
        yield started
        clean = True
    finally:
        if started:
            leave_process_group(clean=clean)


def gloo_threads() -> list[str]:
    """Names of this process's gloo threads that are alive (Linux ``/proc``; ``[]`` elsewhere).

    Tests use it to check that leaving the group really stopped them.
    """
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as handle:
                name = handle.read().strip()
        except OSError:
            continue  # the thread ended meanwhile
        if "gloo" in name:
            names.append(name)
    return sorted(names)

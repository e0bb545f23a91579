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
"""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist

__all__ = ["gloo_threads", "init_process_group", "leave_process_group", "process_group"]


def init_process_group(backend: str, **kwargs: object) -> None:
    """``torch.distributed.init_process_group`` after importing ``torch._dynamo`` (see module doc).

    Args:
        backend: ``"gloo"`` or ``"nccl"``.
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
    started = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
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

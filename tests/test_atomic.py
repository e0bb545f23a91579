"""Atomic writes keep the old file intact when a write fails half-way, and leave no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eqsolve._io import atomic_torch_save, atomic_write


def test_failed_write_keeps_old_content_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")

    def half_then_crash(handle) -> None:
        handle.write(b"new but incompl")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_torch_save_round_trip_creates_parents(tmp_path: Path) -> None:
    path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "a" / "b" / "ckpt.pt")
    assert torch.equal(torch.load(path)["w"], torch.arange(3))

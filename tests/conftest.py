"""Shared pytest setup: small, deterministic, single-threaded (CI has 2 cores)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EQSOLVE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _no_console_handler_outlives_its_test():
    """``eqsolve``'s CLI calls ``logging.basicConfig``, which binds a console handler to the
    ``sys.stderr`` of the moment. Under pytest's logging plugin the root logger already has
    handlers and nothing is added; without it (``-p no:logging``) the handler would hold one
    test's closed capture stream, and the next test's log line would print a "Logging error"
    traceback. Remove such handlers after each test."""
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler and h not in before]:
        root.removeHandler(handler)


@pytest.fixture
def shared_sudoku_dir() -> Path:
    """Folder of the real hard Sudoku lists; skips the test when they are not on this machine."""
    path = SHARED_DATA / "sudoku"
    if not path.is_dir():
        pytest.skip(f"real Sudoku lists not present at {path} (optional external data)")
    return path


@pytest.fixture(scope="module")
def puzzle_csv(tmp_path_factory) -> Path:
    """Six generated puzzles with answers as a CSV (the shipped eval set is not needed)."""
    from tiny_models import write_puzzles

    return write_puzzles(tmp_path_factory.mktemp("data") / "six.csv")

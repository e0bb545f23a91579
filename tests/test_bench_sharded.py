"""eqsolve bench under torchrun: puzzles sharded over 2 gloo processes give the one-process results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny_models import tiny_overrides, write_puzzles

from eqsolve.bench import grid as bench
from eqsolve.config import compose
from eqsolve.distributed import init_process_group, leave_process_group

TINY = tiny_overrides()


@pytest.fixture(scope="module")
def puzzle_csv(tmp_path_factory):
    """Five puzzles (not conftest's six): an odd count splits unevenly over two ranks."""
    return write_puzzles(tmp_path_factory.mktemp("data") / "five.csv", 5)


def tiny_cfg(puzzle_csv, *extra):
    return compose("config_bench", ["checkpoint=random", f"task.data={puzzle_csv}", *TINY, *extra])


def _grid(cfg):
    cfg = OmegaConf.create(cfg)  # workers get a plain dict: no hydra compose in each process
    model = bench.load_model(cfg)
    puzzles = bench.load_puzzles(cfg, 5)
    options = bench.RunOptions(batch_size=2, seed=11, noise=0.01)
    return bench.run_grid(model, puzzles, bench.make_cells(cfg), options)[0]


def _sharded_worker(rank, world, init_file, cfg, out_file):
    torch.set_num_threads(1)
    init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    clean = False
    try:
        per_puzzle = _grid(cfg)
        if rank == 0:
            np.savez(out_file, **{f"{k}|{n}": v for k, arrays in per_puzzle.items() for n, v in arrays.items()})
        clean = True
    finally:
        leave_process_group(clean=clean)  # barrier (if clean), then destroy


@pytest.mark.slow
def test_sharded_over_two_processes_equals_single_process(puzzle_csv, tmp_path):
    import torch.multiprocessing as mp

    out_file = tmp_path / "sharded.npz"
    cfg = OmegaConf.to_container(tiny_cfg(puzzle_csv, "bench.depth=[2]", "bench.breadth=[1,2]"))
    mp.spawn(_sharded_worker, args=(2, str(tmp_path / "init"), cfg, str(out_file)), nprocs=2)
    single = _grid(cfg)
    sharded = np.load(out_file)
    assert len(sharded.files) == sum(len(arrays) for arrays in single.values()) >= 3 * len(single)
    for key, arrays in single.items():
        for name, value in arrays.items():
            np.testing.assert_allclose(sharded[f"{key}|{name}"], value, rtol=1e-5, err_msg=f"{key} {name}")


def _run_bench_worker(rank, world, init_file, cfg, run_dir):
    from pathlib import Path

    torch.set_num_threads(1)
    init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    clean = False
    try:
        # as the CLI does: only rank 0 is given the run folder
        bench.run_bench(OmegaConf.create(cfg), Path(run_dir) if rank == 0 else None)
        clean = True
    finally:
        leave_process_group(clean=clean)


@pytest.mark.slow
def test_a_sharded_bench_journals_every_rank_and_resumes_in_one_process(puzzle_csv, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    cfg = OmegaConf.to_container(tiny_cfg(puzzle_csv, "bench.depth=[2]", "bench.breadth=[1]", "bench.batch_size=2",
                                          "bench.extra_baselines=[]", "bench.limit=5", "bench.threads=1"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mp.spawn(_run_bench_worker, args=(2, str(tmp_path / "init"), cfg, str(run_dir)), nprocs=2)
    # chunks 0 and 2 on rank 0, chunk 1 on rank 1, for each of the 2 cells: each rank its own journal
    lines = {r: (run_dir / f"chunks-rank{r}.jsonl").read_text().splitlines() for r in (0, 1)}
    assert (len(lines[0]), len(lines[1])) == (4, 2)
    sharded = json.loads((run_dir / "results.json").read_text())["results"]["per_puzzle"]
    # one process resumes the (here: complete, minus its results) run from both journals: no chunk runs again
    (run_dir / "results.json").unlink()
    monkeypatch.setattr(bench, "evaluate_chunk", lambda *a, **k: pytest.fail("a journaled chunk ran again"))
    cfg["bench"]["resume"] = True
    payload = bench.run_bench(OmegaConf.create(cfg), run_dir)
    assert json.loads(json.dumps(payload["per_puzzle"])) == sharded

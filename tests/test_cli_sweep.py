"""``-m`` sweeps: one run per combination, each in its own folder, indexed in sweep.json."""

from __future__ import annotations

import json

from tiny_models import tiny_overrides

from eqsolve import cli

TINY = tiny_overrides(num_heads=2)


def test_expand_sweep_takes_the_product_and_keeps_lists() -> None:
    jobs = cli.expand_sweep(["bench.limit=2,3", "solver=anderson,broyden", "bench.depth=[1,2]"])
    assert len(jobs) == 4 and all(job[2] == "bench.depth=[1,2]" for job in jobs)
    assert [j[:2] for j in jobs] == [["bench.limit=2", "solver=anderson"], ["bench.limit=2", "solver=broyden"],
                                     ["bench.limit=3", "solver=anderson"], ["bench.limit=3", "solver=broyden"]]
    assert cli.expand_sweep(["bench.limit=4"]) == [["bench.limit=4"]]


def test_bench_sweep_runs_every_combination_and_records_failures(tmp_path, capsys, puzzle_csv) -> None:
    data = puzzle_csv
    out = tmp_path / "sweep"
    argv = ["bench", "-m", "--checkpoint", "random", "--data", str(data), "--depth", "1", "--out", str(out),
            "bench.limit=2,3", "bench.baseline=null", "bench.extra_baselines=[]", "bench.batch_size=0,2", *TINY]
    assert cli.main(argv) == 1  # batch_size=0 is invalid: those two runs fail, the others run
    record = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["failed", "done", "failed", "done"]
    assert "batch_size" in record["runs"][0]["error"]
    done = [json.loads((out / f"{r['index']:03d}" / "results.json").read_text())["results"]["n_puzzles"]
            for r in record["runs"] if r["status"] == "done"]
    assert done == [2, 3]
    assert "2 of 4 runs done" in capsys.readouterr().out
    # a second sweep into the same folder is refused, nothing overwritten
    assert cli.main(argv) == 2


def test_sweep_print_config_lists_the_runs(capsys) -> None:
    assert cli.main(["bench", "-m", "--print-config", "bench.limit=2,3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("bench.limit=2") and lines[1].endswith("bench.limit=3")

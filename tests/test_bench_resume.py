"""An interrupted bench loses at most the chunk it was computing: --resume finishes it exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import tiny_overrides

from eqsolve import cli
from eqsolve.bench import grid as bench
from eqsolve.bench.journal import ChunkJournal
from eqsolve.runs import read_results

TINY = tiny_overrides()


def argv(puzzle_csv, out, *extra, resume=False):
    return ["bench", "--checkpoint", "random", "--data", str(puzzle_csv), "--depth", "1,2", "--limit", "5",
            "--out", str(out), *(["--resume"] if resume else []), "bench.batch_size=2", "bench.threads=1",
            "bench.breadth=[1]", "bench.extra_baselines=[]", "bench.noise=0.05", *TINY, *extra]


REAL_EVALUATE = bench.evaluate_chunk


class Stop(Exception):
    pass


def stopping_after(calls: int):
    """evaluate_chunk that stops the run (as a kill would) once it has finished ``calls`` chunks."""
    done = []

    def evaluate(*args, **kwargs):
        if len(done) == calls:
            raise Stop
        done.append(args[3].key)
        return REAL_EVALUATE(*args, **kwargs)

    return evaluate, done


def test_a_resumed_bench_equals_an_uninterrupted_one(puzzle_csv, tmp_path, monkeypatch):
    assert cli.main(argv(puzzle_csv, tmp_path / "whole")) == 0
    whole = read_results(tmp_path / "whole")["results"]

    # 3 chunks per cell (5 puzzles, batch 2) x 4 cells: stop in the middle of the second cell
    evaluate, done = stopping_after(4)
    monkeypatch.setattr(bench, "evaluate_chunk", evaluate)
    with pytest.raises(Stop):
        cli.main(argv(puzzle_csv, tmp_path / "cut"))
    assert not (tmp_path / "cut" / "results.json").exists()
    lines = (tmp_path / "cut" / "chunks-rank0.jsonl").read_text().splitlines()
    assert len(lines) == 4  # every finished chunk is on disk

    # without --resume the folder is refused (never overwritten) ...
    monkeypatch.setattr(bench, "evaluate_chunk", stopping_after(10**6)[0])
    assert cli.main(argv(puzzle_csv, tmp_path / "cut")) == 2
    # ... with --out and --resume alone, the run continues with its recorded settings and only
    # the missing chunks are evaluated
    evaluate, done = stopping_after(10**6)
    monkeypatch.setattr(bench, "evaluate_chunk", evaluate)
    assert cli.main(["bench", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert len(done) == 4 * 3 - 4
    resumed = read_results(tmp_path / "cut")["results"]
    assert resumed["per_puzzle"] == whole["per_puzzle"]  # bit for bit: each chunk has its own seed
    assert [r["accuracy"] for r in resumed["rows"]] == [r["accuracy"] for r in whole["rows"]]
    # a complete run is not resumed again
    assert cli.main(argv(puzzle_csv, tmp_path / "cut", resume=True)) == 2


def test_resume_refuses_another_configuration_and_a_folder_without_a_journal(puzzle_csv, tmp_path, monkeypatch,
                                                                              capsys):
    evaluate, _ = stopping_after(1)
    monkeypatch.setattr(bench, "evaluate_chunk", evaluate)
    with pytest.raises(Stop):
        cli.main(argv(puzzle_csv, tmp_path / "cut"))
    capsys.readouterr()
    assert cli.main(argv(puzzle_csv, tmp_path / "cut", "bench.noise=0.1", resume=True)) == 2
    err = capsys.readouterr().err
    assert "bench.noise: 0.05 in the run, 0.1 now" in err
    assert cli.main(["bench", "--out", str(tmp_path / "cut"), "--resume", "--depth", "1,3"]) == 2
    assert "bench.depth: [1, 2] in the run, [1, 3] now" in capsys.readouterr().err
    # naming the recorded task again is fine (its preset does not count as a setting) ...
    assert cli.main(["bench", "--task", "sudoku-extreme", "--out", str(tmp_path / "cut"), "--resume",
                     "--print-config"]) == 0
    capsys.readouterr()
    # ... another task is not
    assert cli.main(["bench", "--task", "maze-unique", "--out", str(tmp_path / "cut"), "--resume"]) == 2
    assert "task.name: 'sudoku-extreme' in the run, 'maze-unique' now" in capsys.readouterr().err
    # --print-config shows what a resume would run with: the recorded settings
    assert cli.main(["bench", "--out", str(tmp_path / "cut"), "--resume", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "noise: 0.05" in printed and "resume: true" in printed
    # the recorded settings, given again, are fine
    monkeypatch.setattr(bench, "evaluate_chunk", REAL_EVALUATE)
    assert cli.main(argv(puzzle_csv, tmp_path / "cut", "bench.noise=0.05", resume=True)) == 0
    (tmp_path / "empty").mkdir()
    assert cli.main(argv(puzzle_csv, tmp_path / "empty", resume=True)) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_the_journal_skips_only_an_unfinished_last_line(tmp_path):
    journal = ChunkJournal(tmp_path)
    arrays = {"correct": np.array([True, False]), "nfe": np.array([4.0, 4.0]),
              "residual": np.array([1e-3 / 3, float("nan")])}
    journal.record("anderson/d4/b1", 0, 7, arrays, 0.25)
    journal.record("anderson/d4/b1", 1, 8, arrays, 0.5)
    path = tmp_path / "chunks-rank0.jsonl"
    with open(path, "a") as fh:
        fh.write('{"cell": "anderson/d4/b1", "chu')  # the process stopped mid-write
    again = ChunkJournal(tmp_path, resume=True)
    found, seconds = again.lookup("anderson/d4/b1", 1, 8, 2)
    assert seconds == 0.5 and found["correct"].tolist() == [True, False]
    assert found["residual"][0] == 1e-3 / 3 and np.isnan(found["residual"][1])  # exact round trip
    assert again.lookup("anderson/d4/b1", 2, 9, 2) is None
    with pytest.raises(ValueError, match="seed 7 on 2 puzzles, this run asks for seed 3"):
        again.lookup("anderson/d4/b1", 0, 3, 2)
    # a broken line that is not the last one is an error naming the file and line
    lines = path.read_text().split("\n")
    path.write_text("\n".join([lines[0], "garbage", lines[1], ""]))
    with pytest.raises(ValueError, match=r"chunks-rank0\.jsonl:2: not a JSON record"):
        ChunkJournal(tmp_path, resume=True)
    path.write_text(json.dumps({"cell": "x"}) + "\n")
    with pytest.raises(ValueError, match=r":1: not a bench chunk record"):
        ChunkJournal(tmp_path, resume=True)


def test_journal_pairs_compare_depths_on_the_chunks_both_have_done(tmp_path, capsys):
    from eqsolve.bench.journal import _main, journal_pairs, journal_progress

    journal = ChunkJournal(tmp_path)
    shallow = [np.array([True, False, False]), np.array([True, True, False])]
    deep = [np.array([True, True, False])]  # the deeper cell is still running: chunk 1 not done
    for c, correct in enumerate(shallow):
        journal.record("anderson/d16/b1", c, c, {"correct": correct}, 1.0)
    journal.record("anderson/d64/b1", 0, 0, {"correct": deep[0]}, 4.0)
    progress = {r["cell"]: r for r in journal_progress(tmp_path)}
    assert progress["anderson/d16/b1"]["puzzles"] == 6 and progress["anderson/d64/b1"]["solved"] == 2
    (pair,) = journal_pairs(tmp_path)
    assert (pair["from_depth"], pair["to_depth"], pair["n"], pair["gained"], pair["lost"]) == (16, 64, 3, 1, 0)
    assert pair["p_value"] == 1.0  # one puzzle gained is no evidence
    assert _main([str(tmp_path)]) == 0
    assert "depth 16 -> 64 (anderson, breadth 1) on the 3 puzzles both have done" in capsys.readouterr().out

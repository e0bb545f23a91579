"""Run folders: contents, atomic writes, results schema."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from eqsolve import _io, runs


def test_atomic_json_writes_strict_json_and_leaves_no_temp(tmp_path):
    path = _io.atomic_write_json(tmp_path / "r.json", {"acc": float("nan"), "x": [1, 2.5], "inf": float("inf")})
    assert json.loads(path.read_text()) == {"acc": None, "x": [1, 2.5], "inf": None}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "r.json"
    _io.atomic_write_json(path, {"v": 1})
    with pytest.raises(TypeError, match="object"):
        _io.atomic_write_json(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_numpy_and_torch_values_are_converted(tmp_path):
    np = pytest.importorskip("numpy")
    import torch

    path = _io.atomic_write_json(tmp_path / "r.json", {"a": np.float32(0.5), "b": torch.tensor([1, 2]),
                                                        "c": np.array([True, False])})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2], "c": [True, False]}


def test_make_run_dir_default_names_are_unique(tmp_path):
    first = runs.make_run_dir("bench", root=tmp_path)
    second = runs.make_run_dir("bench", root=tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.startswith("bench-") and first.parent == tmp_path


def test_make_run_dir_refuses_to_overwrite_results(tmp_path):
    out = runs.make_run_dir("bench", out=tmp_path / "mine")
    runs.write_results(out, "bench", {"rows": []})
    with pytest.raises(FileExistsError, match="results.json"):
        runs.make_run_dir("bench", out=out)


def test_start_run_records_config_meta_and_log(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/home/someone/.venv/bin/eqsolve", "bench", "--data", "x.csv"])
    meta = runs.run_metadata({"seed": 3}, command="bench")
    handler = runs.start_run(tmp_path, "seed: 3\n", meta)
    logging.getLogger("eqsolve.bench.grid").info("hello from the bench")
    runs.finish_run(handler)
    logging.getLogger("eqsolve.bench.grid").info("after the run")
    assert (tmp_path / "config.yaml").read_text() == "seed: 3\n"
    recorded = json.loads((tmp_path / "meta.json").read_text())
    assert recorded["seeds"] == {"seed": 3} and recorded["command"] == "bench"
    assert recorded["argv"] == ["eqsolve", "bench", "--data", "x.csv"]  # no machine path
    assert recorded["versions"]["torch"] and recorded["versions"]["python"]
    assert "git_commit" in recorded  # None outside a checkout, a hash inside
    log_text = (tmp_path / "log.txt").read_text()
    assert "hello from the bench" in log_text and "after the run" not in log_text


def test_git_commit_is_a_hash_in_this_checkout():
    commit = runs.git_commit()
    if commit is None:
        pytest.skip("not running from a git checkout")
    assert len(commit.split("-")[0]) == 40


def test_results_schema_roundtrip_and_rejection(tmp_path):
    path = runs.write_results(tmp_path, "bench", {"rows": [{"accuracy": 0.5}]})
    document = runs.read_results(tmp_path)
    assert document["schema"] == runs.RESULTS_SCHEMA and document["kind"] == "bench"
    assert document["results"]["rows"][0]["accuracy"] == 0.5
    path.write_text(json.dumps({"schema": "eqsolve.results/0", "results": {}}))
    with pytest.raises(ValueError, match="not supported"):
        runs.read_results(path)

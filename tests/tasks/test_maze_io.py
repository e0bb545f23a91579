"""Maze files: round trips, validated loading with file:line errors, the hub path, the shipped set."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from maze_cases import ROOM, sample

from eqsolve.tasks.maze import (
    GOAL,
    OPEN,
    PATH,
    WALL,
    MazeSet,
    canonical_keys,
    check_batch,
    default_eval_set,
    encode_tokens,
    eval_set_keys,
    fetch_maze_csv,
    fetch_maze_unique,
    format_grid,
    grid_to_string,
    load_any,
    load_csv,
    load_jsonl,
    load_npy_dir,
    load_text,
    save_csv,
)

HEADER = "source,question,answer,rating\n"


def good() -> tuple[str, str]:
    data = sample()
    return grid_to_string(data.questions[0]), grid_to_string(data.answers[0])


def edit(text: str, index: int, ch: str) -> str:
    return text[:index] + ch + text[index + 1:]


def first(text: str, ch: str) -> int:
    return text.index(ch)


def unreachable() -> str:
    q, _ = good()
    g = int(first(q, "G"))
    for nb in (g - 30, g + 30, g - 1, g + 1):
        if q[nb] == " ":
            q = edit(q, nb, "#")
    return q


def not_unique() -> str:
    return grid_to_string(ROOM)


def csv_row(q: str, a: str = "", rating: str = "1", source: str = "t") -> str:
    return f"{source},{q},{a},{rating}\n"


# (file name, content builder, expected "file:line" suffix, message regex, loader options)
BAD = [
    ("a.csv", lambda q, a: HEADER + csv_row(q[:-1], a), ":2:", "not a square grid", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, a) + csv_row(q[:841], ""), ":3:", "29×29 grid", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(edit(q, 45, "X"), a), ":2:", "unknown symbol 'X' at row 2, column 16", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q.replace("S", " "), ""), ":2:", "no start 'S'", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q.replace("G", " "), ""), ":2:", "no goal 'G'", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(edit(q, q.index(" "), "S"), ""), ":2:", "2 of start", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(edit(q, q.index(" "), "o"), ""), ":2:", "path symbol 'o' in a question", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, a) + "\n" + csv_row(unreachable()), ":4:", "unreachable", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, edit(a, a.index("o"), " ")), ":2:", "not a valid shortest path: the answer marks", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, edit(a, a.index(" "), "o")), ":2:", "not a valid shortest path", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, edit(a, 0, " ")), ":2:", "changes the question at row 1, column 1", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, a[:-2]), ":2:", "bad answer: .*not a square grid", {}),
    ("a.csv", lambda q, a: HEADER + f"t,{q},{a}\n", ":2:", "3 fields, the header has 4", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, a, rating="hard"), ":2:", "rating must be an integer", {}),
    ("a.csv", lambda q, a: f"x,y\n1,{q}\n", ":1:", "header must name a 'question'", {}),
    ("a.csv", lambda q, a: HEADER + csv_row(q, a) + csv_row(not_unique()), ":3:", "not unique", {"unique": True}),
    ("a.jsonl", lambda q, a: json.dumps({"question": q}) + "\n{bad\n", ":2:", "not JSON", {}),
    ("a.jsonl", lambda q, a: json.dumps({"answer": a}) + "\n", ":1:", "'question'", {}),
    ("a.txt", lambda q, a: "\n".join(q[i:i + 30] for i in range(0, 900, 30)[:7]) + "\n" + q[210:239] + "\n", ":8:", "row has 29 symbols", {}),
    ("a.txt", lambda q, a: "\n".join(q[i:i + 30] for i in range(0, 870, 30)) + "\n", ":1:", "29 rows", {}),
    ("a.txt", lambda q, a: "\n".join(q[i:i + 30] for i in range(0, 900, 30)) + "\n\n" + "\n".join(
        edit(q, 95, "?")[i:i + 30] for i in range(0, 900, 30)) + "\n", ":35:", "unknown symbol '\\?' at column 6", {}),
]


@pytest.mark.parametrize("name, build, where, message, options", BAD, ids=[f"{b[0]}-{b[3][:24]}" for b in BAD])
def test_bad_input_names_file_and_line(tmp_path, name, build, where, message, options):
    q, a = good()
    path = tmp_path / name
    path.write_text(build(q, a), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_any(path, **options)
    assert f"{path}{where}" in str(info.value)


def test_bad_official_arrays_name_file_and_record(tmp_path):
    data = sample()
    q, a = data.tokens()
    a = a.numpy().copy()
    a[1, 7] = 9
    np.save(tmp_path / "all__inputs.npy", q.numpy())
    np.save(tmp_path / "all__labels.npy", a)
    with pytest.raises(ValueError, match=r"all__labels\.npy:2: token 9 at cell 7"):
        load_npy_dir(tmp_path)
    np.save(tmp_path / "all__labels.npy", np.zeros((3, 899), np.int64))
    with pytest.raises(ValueError, match=r"expected \(N, 900\)"):
        load_npy_dir(tmp_path)
    np.save(tmp_path / "all__labels.npy", np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="cannot read"):  # never unpickles
        load_npy_dir(tmp_path)


def test_round_trips_in_every_format(tmp_path):
    data = sample().subset(np.arange(4))
    save_csv(data, tmp_path / "m.csv")
    back = load_csv(tmp_path / "m.csv", unique=True)
    for field in ("questions", "answers", "lengths", "ratings"):
        np.testing.assert_array_equal(getattr(back, field), getattr(data, field))
    assert back.sources == data.sources
    assert (tmp_path / "m.csv").stat().st_mode & 0o044 == 0o044  # readable by others
    assert len(load_csv(tmp_path / "m.csv", limit=2)) == 2
    rows = [{"question": format_grid(q).splitlines(), "source": "j"} for q in data.questions]
    (tmp_path / "m.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    np.testing.assert_array_equal(load_jsonl(tmp_path / "m.jsonl").answers, data.answers)
    (tmp_path / "m.txt").write_text("\n".join(format_grid(q) for q in data.questions))
    txt = load_text(tmp_path / "m.txt")
    np.testing.assert_array_equal(txt.answers, data.answers)
    q, a = data.tokens()
    np.save(tmp_path / "all__inputs.npy", q.numpy().astype(np.uint8))
    np.save(tmp_path / "all__labels.npy", a.numpy().astype(np.uint8))
    np.testing.assert_array_equal(load_any(tmp_path).answers, data.answers)
    with pytest.raises(ValueError, match="unknown maze file type"):
        load_any(tmp_path / "m.parquet")


def test_an_hrm_style_file_loads_from_the_hub(tmp_path, monkeypatch):
    """HRM's maze-30x30-hard-1k layout: open cells anywhere in the 30 x 30 grid, several paths allowed."""
    g = np.full((30, 30), OPEN, np.uint8)
    g[0, 0], g[29, 29] = 3, GOAL
    g[5, :25] = WALL
    q = grid_to_string(g)
    answer = g.copy()
    answer[0, 1:], answer[1:29, 29] = PATH, PATH
    calls = {}

    def fake_download(repo_id, filename, repo_type, local_dir, revision):
        calls.update(repo_id=repo_id, filename=filename, repo_type=repo_type, revision=revision)
        out = tmp_path / "dl" / filename
        out.write_text(HEADER + f"hrm,{q},{grid_to_string(answer)},7\n")
        return str(out)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=fake_download))
    data = load_csv(fetch_maze_csv(tmp_path / "dl", split="test"))
    assert calls == {"repo_id": "sapientinc/maze-30x30-hard-1k", "filename": "test.csv", "repo_type": "dataset",
                     "revision": None}
    assert data.sources == ["hrm"] and data.ratings.tolist() == [7] and data.lengths.tolist() == [58]
    with pytest.raises(ValueError, match="not unique"):
        load_csv(tmp_path / "dl" / "test.csv", unique=True)
    with pytest.raises(ValueError, match="split"):
        fetch_maze_csv(tmp_path, split="dev")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"eqsolve\[hub\]"):
        fetch_maze_csv(tmp_path)


def test_mazeset_fields_agree():
    data = sample()
    with pytest.raises(ValueError, match="disagree"):
        MazeSet(data.questions, data.answers[:2])
    q, a = data.tokens()
    assert q.shape == a.shape == (len(data), 900)
    assert MazeSet(encode_tokens(data.questions), a).lengths.tolist() == data.lengths.tolist()


def test_the_shipped_eval_set_loads_and_every_record_checks():
    from eqsolve.tasks.maze.build_eval import EVAL_SEED, training_keys

    data = default_eval_set()
    assert len(data) >= 500
    assert check_batch(*reversed(data.tokens())).all()
    assert ((data.lengths >= 100) & (data.lengths <= 140)).all()
    assert np.bincount(data.lengths - 100, minlength=41).min() > 0
    keys = canonical_keys(data.questions)
    assert len(set(keys)) == len(data)
    assert not set(keys) & training_keys(1, 200)
    assert eval_set_keys() == frozenset(keys)  # what a training run passes as generate(exclude=...)
    assert all(s.startswith(f"maze-unique:seed={EVAL_SEED}:") for s in data.sources)


def _write_official_split(folder, data, seq_len=900):
    """A split in the layout of the EqR authors' build_maze_unique_dataset.py."""
    folder.mkdir(parents=True)
    q, a = data.tokens()
    np.save(folder / "all__inputs.npy", q.numpy().astype(np.uint8))
    np.save(folder / "all__labels.npy", a.numpy().astype(np.uint8))
    (folder / "dataset.json").write_text(json.dumps({"seq_len": seq_len, "vocab_size": 6, "pad_id": 0,
                                                     "total_groups": len(data), "sets": ["all"]}))


@pytest.mark.parametrize("under_data", [False, True], ids=["top_level", "under_data"])
def test_the_eqr_maze_unique_split_loads_from_the_hub(tmp_path, monkeypatch, under_data):
    """locuslab/EqR-data (faked: no network here): only the split is fetched; the folder loads as is."""
    data = sample().subset(np.arange(3))
    calls = {}

    def fake_snapshot(repo_id, repo_type, local_dir, revision, allow_patterns):
        calls.update(repo_id=repo_id, repo_type=repo_type, revision=revision, allow_patterns=allow_patterns)
        root = Path(local_dir) / ("data" if under_data else "")
        if any("/test/" in p for p in allow_patterns):  # the fake repository has only this split
            _write_official_split(root / "maze-30x30-unique-1k" / "test", data)
        return str(local_dir)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=fake_snapshot))
    folder = fetch_maze_unique(tmp_path / "dl", split="test", revision="abc123")
    assert calls["repo_id"] == "locuslab/EqR-data" and calls["repo_type"] == "dataset"
    assert calls["revision"] == "abc123"
    assert all("/test/" in p for p in calls["allow_patterns"])
    back = load_any(folder, unique=True)
    np.testing.assert_array_equal(back.answers, data.answers)
    np.testing.assert_array_equal(back.lengths, data.lengths)
    with pytest.raises(FileNotFoundError, match="no Maze-Unique train split"):
        fetch_maze_unique(tmp_path / "dl", split="train")


def test_official_split_metadata_is_checked(tmp_path):
    _write_official_split(tmp_path / "s", sample().subset(np.arange(2)), seq_len=81)
    with pytest.raises(ValueError, match=r"dataset\.json: not a 30 × 30 maze split: \{'seq_len': 81\}"):
        load_npy_dir(tmp_path / "s")

"""Loaders (CSV and plain files), file:line errors, the shipped set and the hub path."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sudoku_cases import INKALA, WIKI, WIKI_SOLUTION

from eqsolve.tasks.sudoku import (
    SudokuSet,
    board_to_string,
    check_batch,
    fetch_sudoku_extreme,
    generate_easy,
    load_any,
    load_csv,
    load_lines,
    rate,
    save_csv,
    solve,
)
from eqsolve.tasks.sudoku import io as sudoku_io

INKALA_SOLUTION = board_to_string(solve(INKALA).solution)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_round_trip(tmp_path):
    data = SudokuSet.from_items(generate_easy(5, seed=4), "gen")
    save_csv(data, tmp_path / "set.csv")
    back = load_csv(tmp_path / "set.csv")
    np.testing.assert_array_equal(back.questions, data.questions)
    np.testing.assert_array_equal(back.answers, data.answers)
    np.testing.assert_array_equal(back.ratings, data.ratings)
    assert back.sources == ["gen"] * 5
    assert load_any(tmp_path / "set.csv", limit=2).questions.shape == (2, 81)


def test_csv_missing_answers_and_ratings_are_solved(tmp_path):
    path = write(
        tmp_path / "partial.csv",
        f"source,question,answer,rating\na,{WIKI},,\nb,{INKALA},{INKALA_SOLUTION},\nc,{WIKI},,7\n",
    )
    data = load_csv(path)
    assert check_batch(data.answers, data.questions).all()
    assert data.answers[0].tolist() == [int(c) for c in WIKI_SOLUTION]
    assert data.ratings.tolist() == [0, rate(INKALA), 7]
    assert data.sources == ["a", "b", "c"]


def test_csv_question_only_column(tmp_path):
    data = load_any(write(tmp_path / "q.txt", f"question\n{WIKI}\n"))
    assert len(data) == 1 and data.answers[0].tolist() == [int(c) for c in WIKI_SOLUTION]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (f"x,{WIKI},{INKALA_SOLUTION},0", "answer is not a valid solution"),
        (f"x,{WIKI[:-1]},,0", "bad question: .*81 characters"),
        (f"x,{WIKI},{WIKI_SOLUTION[:-1]}?,0", "bad answer: bad character"),
        (f"x,{WIKI},,zero", "bad rating 'zero'"),
        (f"x,{WIKI},", "expected 4 fields, got 3"),
        (f"x,{'55' + '.' * 79},,", "contradictory givens: digit 5 twice in row 1"),
        (f"x,{'.' * 81},,", "only 0 givens: a Sudoku needs at least 17"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, row, match):
    text = f"source,question,answer,rating\nok,{WIKI},{WIKI_SOLUTION},0\n\n{row}\n"
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=f"bad.csv:4: {match}"):
        load_csv(path)


def test_csv_header_errors(tmp_path):
    with pytest.raises(ValueError, match="no 'question' column"):
        load_csv(write(tmp_path / "h.csv", "source,puzzle\nx,y\n"))
    with pytest.raises(ValueError, match="empty file"):
        load_csv(write(tmp_path / "e.csv", ""))


def test_plain_lines_skip_comments_and_report_bad_lines(tmp_path):
    path = write(tmp_path / "p.txt", f"# two puzzles\n{WIKI}\n\n{INKALA} extra fields\n")
    data = load_lines(path)
    assert len(data) == 2 and data.sources == ["p.txt", "p.txt"]
    assert check_batch(data.answers, data.questions).all()
    assert data.ratings[1] > data.ratings[0] == 0
    assert len(load_any(path, min_rating=1)) == 1
    bad = write(tmp_path / "b.txt", f"{WIKI}\n{WIKI.replace('5', 'x', 1)}\n")
    with pytest.raises(ValueError, match=r"b.txt:2: bad puzzle: bad character 'x'"):
        load_any(bad)


def test_selection_options_are_explicit_and_seeded(tmp_path):
    data = SudokuSet.from_items(generate_easy(8, seed=5), "gen")
    path = tmp_path / "s.csv"
    save_csv(data, path)
    a = load_csv(path, subsample=3, seed=1)
    b = load_csv(path, subsample=3, seed=1)
    assert len(a) == 3 and a.questions.tolist() == b.questions.tolist()
    assert len(load_csv(path, limit=4)) == 4
    aug = load_csv(path, limit=2, augment=3, seed=0)
    assert len(aug) == 8 and check_batch(aug.answers, aug.questions).all()
    with pytest.raises(ValueError, match="subsample must be >= 0"):
        load_csv(path, subsample=-1)


def test_shipped_eval_set_loads():
    if not sudoku_io.EVAL_SET_PATH.is_file():
        pytest.skip("shipped evaluation set not generated yet")
    data = sudoku_io.default_eval_set()
    assert len(data) >= 100
    assert check_batch(data.answers, data.questions).all()
    hard = (data.ratings > 20).mean()
    assert 0.6 <= hard <= 0.85 and (data.ratings <= 2).mean() >= 0.15


def test_fetch_uses_the_hub_download_and_loads(tmp_path, monkeypatch):
    """The hub path on a local CSV: a fake huggingface_hub module writes the file."""
    import types

    calls = {}

    def fake_download(repo_id, filename, repo_type, local_dir, revision):
        calls.update(repo_id=repo_id, filename=filename, repo_type=repo_type, revision=revision)
        out = tmp_path / "dl" / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"source,question,answer,rating\nhub,{WIKI},{WIKI_SOLUTION},0\n")
        return str(out)

    monkeypatch.setitem(
        sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=fake_download)
    )
    path = fetch_sudoku_extreme(tmp_path / "dl", split="test", revision="abc123")
    assert calls == {
        "repo_id": "sapientinc/sudoku-extreme",
        "filename": "test.csv",
        "repo_type": "dataset",
        "revision": "abc123",
    }
    assert load_any(path).sources == ["hub"]
    with pytest.raises(ValueError, match="split"):
        fetch_sudoku_extreme(tmp_path, split="dev")


def test_fetch_without_the_extra_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"eqsolve\[hub\]"):
        fetch_sudoku_extreme(tmp_path)


def test_real_lists_load_and_rate(shared_sudoku_dir):
    data = load_lines(shared_sudoku_dir / "magictour_top1465.txt", limit=15)
    assert len(data) == 15 and check_batch(data.answers, data.questions).all()
    easy = SudokuSet.from_items(generate_easy(15, seed=0), "easy")
    assert np.median(data.ratings) > np.median(easy.ratings)


def test_sample_parses_only_the_drawn_rows(tmp_path):
    import numpy as np

    # row 7 (line 9) is malformed: loading everything fails, a sample that misses it does not
    rows = [f"r{i},{WIKI},{WIKI_SOLUTION},3\n" for i in range(50)]
    rows[7] = "bad,123,,\n"
    path = tmp_path / "big.csv"
    path.write_text("source,question,answer,rating\n" + "".join(rows))
    with pytest.raises(ValueError, match=r"big\.csv:9"):
        load_csv(path)
    draws = {seed: sorted(np.random.default_rng(seed).choice(50, size=5, replace=False).tolist())
             for seed in range(20)}
    seed = next(s for s, d in draws.items() if 7 not in d)
    picked = load_csv(path, sample=5, seed=seed, unique=False)
    assert picked.sources == [f"r{i}" for i in draws[seed]]  # the drawn rows, in file order
    hit = next(s for s, d in draws.items() if 7 in d)
    with pytest.raises(ValueError, match=r"big\.csv:9"):  # a drawn bad row is still an error
        load_csv(path, sample=5, seed=hit, unique=False)
    with pytest.raises(ValueError, match="not both"):
        load_csv(path, limit=3, sample=3)


def test_training_data_limit_samples_the_file(tmp_path):
    from eqsolve.tasks.base import get_task

    rows = "".join(f"r{i},{WIKI},{WIKI_SOLUTION},3\n" for i in range(30))
    path = tmp_path / "train.csv"
    path.write_text("source,question,answer,rating\n" + rows)
    task = get_task("sudoku-extreme")
    a = task.load_training(str(path), limit=6, seed=0)
    assert a.questions.shape == (6, 81)
    assert len(task.load_training(str(path)).questions) == 30
    # a plain puzzle-per-line file samples the same way (only the drawn lines are solved)
    plain = tmp_path / "train.txt"
    plain.write_text("# comment\n" + "".join(f"{WIKI}\n" for _ in range(30)))
    assert task.load_training(str(plain), limit=4, seed=0).questions.shape == (4, 81)
    assert len(task.load_training(str(plain)).questions) == 30

"""Progress bars: drawn on a terminal for long commands (data generate, compare-grads, diagnose),
never into logs or pipes."""

from __future__ import annotations

import io
import json
import sys

from eqsolve import cli
from eqsolve.runs import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> Terminal:
    """Make stderr a terminal; returns it, to read what was drawn.

    Called in the test body: pytest's output capture reinstalls its own stderr between a
    fixture's setup and the test call.
    """
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    return screen


def test_progress_bar_only_on_a_terminal(monkeypatch):
    terminal = on_terminal(monkeypatch)
    with progress_bar(3, "work") as bar:
        assert not bar.disable
        bar.update(3)
    assert "work" in terminal.getvalue() and "3/3" in terminal.getvalue()
    with progress_bar(3, "quiet", enabled=False) as bar:
        assert bar.disable
        bar.update(3)
    assert "quiet" not in terminal.getvalue()
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with progress_bar(3, "piped") as bar:
        assert bar.disable
        bar.update(3)
    assert pipe.getvalue() == ""


def _fake_generator(monkeypatch):
    from eqsolve.tasks import sudoku

    # the real hard generator takes seconds per puzzle; the CLI's loop is under test
    monkeypatch.setattr(sudoku, "iter_generate", lambda seed, start, stop, workers: (
        (k, item, 1) for k, item in enumerate(sudoku.generate_easy(stop - start, seed=seed), start)))
    return sudoku


def test_data_generate_draws_a_bar_on_a_terminal(monkeypatch, tmp_path):
    sudoku = _fake_generator(monkeypatch)
    terminal = on_terminal(monkeypatch)
    out = tmp_path / "p.csv"
    assert cli.main(["data", "generate", "--n", "4", "--seed", "2", "--out", str(out)]) == 0
    assert "generate" in terminal.getvalue() and "4/4" in terminal.getvalue()
    assert len(sudoku.load_any(out)) == 4


def test_data_generate_is_silent_in_a_pipe(monkeypatch, tmp_path, capsys):
    _fake_generator(monkeypatch)
    assert cli.main(["data", "generate", "--n", "2", "--out", str(tmp_path / "p.csv")]) == 0
    assert "2/2" not in capsys.readouterr().err


def test_compare_grads_counts_every_step_of_every_mode(monkeypatch, tmp_path):
    from tiny_models import tiny_config

    from eqsolve.training.compare_grads import CompareConfig, run_compare
    from eqsolve.training.config import TrainConfig

    tiny = tiny_config(L_cycles=1, inner_solver="anderson", inner_iter=4)
    train = TrainConfig(steps=2, batch_size=4, depth=2, gen_easy=6, out=str(tmp_path),
                        warmup_steps=1, halt_weight=0.0)
    terminal = on_terminal(monkeypatch)
    run_compare(tiny, train, CompareConfig(modes=["onestep", "unrolled"], cosine_every=0,
                                           eval_size=0, isolate=False))
    assert "compare-grads" in terminal.getvalue() and "4/4" in terminal.getvalue()


def test_compare_grads_isolated_workers_report_steps():
    import queue

    from eqsolve.training.compare_grads import _wait

    class Done:
        exitcode = 0

        def is_alive(self) -> bool:
            return True

        def join(self) -> None:
            pass

    reports = queue.Queue()
    for item in [("tick", None), ("tick", None), ("ok", {"mode": "x"})]:
        reports.put(item)
    ticks = []
    assert _wait(Done(), reports, "x", lambda: ticks.append(1)) == ("ok", {"mode": "x"})
    assert ticks == [1, 1]


def test_diagnose_draws_a_bar_on_a_terminal(monkeypatch, tmp_path):
    from eqsolve.config import compose
    from eqsolve.diagnostics import run_diagnose
    from eqsolve.tasks.sudoku import generate_easy

    csv = tmp_path / "puzzles.csv"
    rows = ["source,question,answer,rating"]
    for q, a, r in generate_easy(2, seed=0):
        rows.append(f"test,{''.join(map(str, q))},{''.join(map(str, a))},{r}")
    csv.write_text("\n".join(rows) + "\n")
    cfg = compose("config_diagnose", [
        "checkpoint=random", f"task.data={csv}", "solver=fixed_point", "diagnose.depth=2",
        "diagnose.starts=2", "diagnose.spectral_iters=2", "diagnose.threads=1",
        "diagnose.batch_rows=2", "model.hidden_size=16", "model.H_cycles=1", "model.L_cycles=1",
        "model.L_layers=1", "model.num_heads=2",
    ])
    terminal = on_terminal(monkeypatch)
    summary = run_diagnose(cfg, tmp_path)
    assert summary["n_puzzles"] == 2
    assert "diagnose" in terminal.getvalue() and "2/2" in terminal.getvalue()
    assert json.loads((tmp_path / "diagnostics.json").read_text())["n_problems"] == 2

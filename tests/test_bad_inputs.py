"""Bad inputs end in one clear line: a table of every bad input found (add rows; never remove them).

Every CLI row runs ``eqsolve`` in-process, so an uncaught exception (a raw traceback) fails the
test. Each row asserts the exit status (2: the user's input is wrong, 1: the environment failed),
that the last line on stderr is the ``eqsolve <command>: ...`` line and holds the expected text,
that no traceback was printed and that no run folder was left behind.
"""

from __future__ import annotations

import gzip
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eqsolve import cli
from eqsolve.tasks.sudoku.board import board_to_string
from eqsolve.tasks.sudoku.io import EVAL_SET_PATH, load_csv
from eqsolve.tasks.sudoku.solver import solve

HEADER = "source,question,answer,rating\n"
ROW = EVAL_SET_PATH.read_text().splitlines()[1].split(",")  # source, question, answer, rating
Q, A = ROW[1], ROW[2]
FAST = ["--limit", "1", "--depth", "1", "--breadth", "1"]


def _several_solutions() -> str:
    """``Q`` with one given removed so that it has two solutions (``A`` is still one of them)."""
    board = [0 if c == "." else int(c) for c in Q]
    for cell, digit in enumerate(board):
        if digit:
            board[cell] = 0
            if solve(board, limit=2).n_solutions > 1:
                return board_to_string(board)
            board[cell] = digit
    raise AssertionError("no single removal makes the shipped puzzle ambiguous")


def _write(tmp: Path, name: str, text: str, encoding: str = "utf-8") -> str:
    path = tmp / name
    path.write_text(text, encoding=encoding, newline="")
    return str(path)


def _official_checkpoint(tmp: Path) -> None:
    """A tiny checkpoint in eqsolve's own format, ``native.pt`` (what import-checkpoint writes)."""
    from eqsolve.models import EqR, EqRConfig

    model = EqR(EqRConfig(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1))
    model.save_checkpoint(tmp / "native.pt")


# Each file builder gets the test's tmp folder and returns the path to put in the command.
FILES: dict[str, Callable[[Path], str]] = {
    "big_field": lambda t: _write(t, "big.csv", HEADER + "x" * 200_000 + f",{Q},{A},3\n"),
    "rating_inf": lambda t: _write(t, "inf.csv", HEADER + f"s,{Q},{A},inf\n"),
    "gzip": lambda t: (t / "p.csv.gz").write_bytes(gzip.compress((HEADER + f"s,{Q},{A},3\n").encode()))
    and str(t / "p.csv.gz"),
    "latin1": lambda t: _write(t, "latin.csv", HEADER + f"sé,{Q},{A},3\n", "latin-1"),
    "dup_header": lambda t: _write(t, "dup.csv", "source,question,question,answer,rating\n"
                                   f"s,{Q},{Q},{A},3\n"),
    "blank_grid": lambda t: _write(t, "blank.csv", HEADER + f"s,{'.' * 81},{A},3\n"),
    "several_solutions": lambda t: _write(t, "multi.csv", HEADER + f"s,{_several_solutions()},{A},3\n"),
    "a_file": lambda t: _write(t, "a_file", "not a folder\n"),
}


@dataclass(frozen=True)
class Case:
    """One bad input: the command (``{name}`` = a file from :data:`FILES`, ``{tmp}`` = the tmp
    folder), the exit status and a piece of the message."""

    argv: tuple[str, ...]
    code: int
    message: str
    patch: Callable[[pytest.MonkeyPatch], None] | None = field(default=None, compare=False)


def _deny_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an unwritable folder does (the tests run as root, where chmod does not deny)."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)


CASES: dict[str, Case] = {
    "csv field over the size limit": Case(("bench", "--data", "{big_field}", *FAST), 2, "big.csv:2: not a readable CSV row"),
    "rating inf": Case(("bench", "--data", "{rating_inf}", *FAST), 2, "inf.csv:2: bad rating 'inf'"),
    "gzip file": Case(("bench", "--data", "{gzip}", *FAST), 2, "p.csv.gz: gzip-compressed"),
    "latin-1 file": Case(("bench", "--data", "{latin1}", *FAST), 2, "latin.csv: not UTF-8 text"),
    "duplicated header column": Case(("bench", "--data", "{dup_header}", *FAST), 2,
                                     "dup.csv:1: column 'question' appears more than once"),
    "all-blank grid with an answer": Case(("bench", "--data", "{blank_grid}", *FAST), 2,
                                          "blank.csv:2: only 0 givens"),
    "several solutions with an answer": Case(("bench", "--data", "{several_solutions}", *FAST), 2,
                                             "multi.csv:2: puzzle has more than one solution"),
    "bench.depth as a scalar": Case(("bench", "bench.depth=4"), 2, "bench.depth=[4]"),
    "misspelt solver option": Case(("bench", "--solver", "anderson", "solver.options.mm=3", *FAST), 2,
                                   "unknown option 'mm' (did you mean 'm'?) for solver 'anderson'; valid: "),
    "misspelt config key": Case(("bench", "bench.dept=[4]", *FAST), 2,
                                "unknown config key 'bench.dept' (did you mean 'depth'?) in 'bench'; valid: "),
    "negative --limit": Case(("bench", "--limit", "-3"), 2, "--limit -3"),
    "bench.batch_size=0": Case(("bench", "bench.batch_size=0", *FAST), 2, "bench.batch_size=0: must be"),
    "diagnose --starts 0": Case(("diagnose", "--starts", "0", "--limit", "1"), 2, "--starts 0 (diagnose.starts)"),
    "--out is an existing file": Case(("bench", *FAST, "--out", "{a_file}"), 2, "is an existing file"),
    "--out under a file": Case(("bench", *FAST, "--out", "{a_file}/run"), 2, "a_file"),
    "data generate into a folder": Case(("data", "generate", "--n", "1", "--out", "{tmp}"), 2, "is a folder"),
    "data generate under a file": Case(("data", "generate", "--n", "1", "--out", "{a_file}/p.csv"), 2,
                                       "is a file, not a folder"),
    "data generate into an unwritable folder": Case(("data", "generate", "--n", "1", "--out", "{tmp}/p.csv"), 1,
                                                    "cannot write in", _deny_writes),
    "import-checkpoint into a folder": Case(("import-checkpoint", "{tmp}/native.pt", "{tmp}"), 2, "is a folder"),
    "import-checkpoint of an eqsolve checkpoint": Case(("import-checkpoint", "{tmp}/native.pt", "{tmp}/again.pt"), 2,
                                                       "already an eqsolve checkpoint"),
    "import-checkpoint into an unwritable folder": Case(("import-checkpoint", "{tmp}/native.pt", "{tmp}/x/c.pt"), 1,
                                                        "cannot write in", _deny_writes),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_cli_input_ends_in_one_clear_line(name, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default run folders would appear under work/runs
    _official_checkpoint(tmp_path)
    paths = {key: build(tmp_path) for key, build in FILES.items() if any(f"{{{key}}}" in a for a in case.argv)}
    argv = [a.format(tmp=tmp_path, **paths) for a in case.argv]
    out = tmp_path / "run"
    if argv[0] in cli.RUN_COMMANDS and "--out" not in argv:
        argv += ["--out", str(out)]
    if case.patch is not None:
        case.patch(monkeypatch)
    before = sorted(p.name for p in tmp_path.iterdir())

    code = cli.main(argv)

    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, (argv, err)
    assert "Traceback" not in err
    assert lines and lines[-1].startswith(f"eqsolve {argv[0]}: "), err
    assert case.message in lines[-1], lines[-1]
    assert not out.exists(), f"{name}: the run folder was left behind"
    assert not (work / "runs").exists() or not any((work / "runs").iterdir())
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == before, f"{name}: created {set(made) - set(before)}"


def test_utf8_bom_keeps_the_first_column(tmp_path):
    """A byte-order mark (Excel's "CSV UTF-8") no longer hides the first column's name."""
    path = _write(tmp_path, "bom.csv", "\ufeffsource,question,answer,rating\n" + f"mine,{Q},{A},3\n")
    data = load_csv(path)
    assert data.sources == ["mine"] and data.ratings.tolist() == [3]


def test_several_solutions_without_the_check_is_documented_trust(tmp_path):
    """``unique=False`` trusts the file (the training pool's choice); the default refuses."""
    path = _write(tmp_path, "multi.csv", HEADER + f"s,{_several_solutions()},{A},3\n")
    assert len(load_csv(path, unique=False)) == 1
    with pytest.raises(ValueError, match="multi.csv:2: puzzle has more than one solution"):
        load_csv(path)


# Library calls: (call, exception, a piece of the message).
CALLS: dict[str, tuple[Callable[[], object], type[Exception], str]] = {
    "Implicit(max_iters=3)": (lambda: __import__("eqsolve.gradients", fromlist=["Implicit"]).Implicit(max_iters=3),
                              ValueError, "did you mean 'max_iter'?"),
    "load_csv(limit=-3)": (lambda: load_csv(EVAL_SET_PATH, limit=-3), ValueError, "limit must be >= 0"),
    # Unknown names and keys: one format everywhere (eqsolve._errors.unknown_key), checked below.
    "get_solver('andersen')": (lambda: _api("eqsolve.solvers", "get_solver")("andersen"), ValueError,
                               "unknown solver 'andersen' (did you mean 'anderson'?); valid: anderson, "),
    "get_solver(mm=3)": (lambda: _api("eqsolve.solvers", "get_solver")("anderson", mm=3), ValueError,
                         "unknown option 'mm' (did you mean 'm'?) for solver 'anderson'; valid: "),
    "get_gradient('implicitt')": (lambda: _api("eqsolve.gradients", "get_gradient")("implicitt"), ValueError,
                                  "unknown gradient 'implicitt' (did you mean 'implicit'?); valid: bptt, "),
    "get_gradient('phantom', taus=.5)": (lambda: _api("eqsolve.gradients", "get_gradient")("phantom", taus=0.5),
                                         ValueError, "unknown option 'taus' (did you mean 'tau'?) for gradient "
                                         "'phantom'; valid: k, tau"),
    "Implicit(mm=3)": (lambda: _api("eqsolve.gradients", "Implicit")(mm=3), ValueError,
                       "unknown option 'mm' (did you mean 'm'?) for gradient 'implicit' (adjoint solver "
                       "'anderson'); valid: "),
    "DEQ(solver='andersen')": (lambda: _api("eqsolve.deq", "DEQ")(lambda z: z, solver="andersen"), ValueError,
                               "unknown solver 'andersen' (did you mean 'anderson'?)"),
    "solve_many(solver=a name and options together)": (
        lambda: _api("eqsolve.scaling", "solve_many")(None, __import__("torch").ones(1, 81), solver="anderson",
                                                      m=3),
        TypeError, "unexpected keyword argument 'm'"),
    "dataclass_from_dict(stepz)": (
        lambda: _api("eqsolve.training.config", "dataclass_from_dict")(
            _api("eqsolve.training.config", "TrainConfig"), {"stepz": 1}, "train"),
        ValueError, "unknown train config key 'stepz' (did you mean 'steps'?); valid: "),
    "EqRConfig.from_dict(hidden_sise)": (
        lambda: _api("eqsolve.models", "EqRConfig").from_dict({"hidden_sise": 8}), ValueError,
        "unknown EqRConfig key 'hidden_sise' (did you mean 'hidden_size'?); valid: "),
    "config_from_arch(bogus)": (lambda: _api("eqsolve.models.checkpoint", "config_from_arch")({"bogus": 1}),
                                ValueError, "unknown official arch config key 'bogus'"),
    "compose(bench.dept)": (lambda: _api("eqsolve.config", "compose")("config_bench", ["bench.dept=[4]"]),
                            ValueError, "unknown config key 'bench.dept' (did you mean 'depth'?) in 'bench'; "
                            "valid: "),
    "compose(config name)": (lambda: _api("eqsolve.config", "compose")("config_bnch"), ValueError,
                             "unknown config 'config_bnch' (did you mean 'config_bench'?); valid: "),
    "get_task('sudoku-extrem')": (lambda: _api("eqsolve.tasks.base", "get_task")("sudoku-extrem"), ValueError,
                                  "unknown task 'sudoku-extrem' (did you mean 'sudoku-extreme'?); valid: "),
    "cross_entropy(kind)": (lambda: _api("eqsolve.training.losses", "cross_entropy")(
        __import__("torch").zeros(1, 3), __import__("torch").tensor([0]), kind="stablemx"), ValueError,
        "unknown loss kind 'stablemx' (did you mean 'stablemax'?); valid: "),
    "train run(config group)": (lambda: _api("eqsolve.training.run", "main")({"trian": {}}), ValueError,
                                "unknown config group 'trian' (did you mean 'train'?); valid: model, train"),
}


def _api(module: str, name: str):
    return getattr(__import__(module, fromlist=[name]), name)


UNKNOWN = re.compile(r"^unknown [\w ]+ '[^']+'( \(did you mean '[^']+'\?\))?[^;]*; valid: [^;]+$")


@pytest.mark.parametrize("name", list(CALLS))
def test_bad_library_call_names_the_fix(name):
    call, error, message = CALLS[name]
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)
    if message.startswith("unknown "):  # the one format of eqsolve._errors.unknown_key
        assert UNKNOWN.match(str(info.value)), str(info.value)

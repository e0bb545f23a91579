"""The eqsolve CLI: flag parsing, flag → hydra override mapping, lazy dispatch, small commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from eqsolve import cli
from eqsolve.config import compose


def overrides_for(argv):
    """What the CLI would hand to hydra for ``eqsolve <argv>``."""
    args = cli.build_parser().parse_args(argv)
    return cli._flag_overrides(args.command, args) + list(args.overrides)


def test_bench_flags_become_validated_config(tmp_path):
    data = tmp_path / "my puzzles.csv"
    argv = ["bench", "--solver", "broyden", "--depth", "4,8", "--breadth", "1,16", "--limit", "5",
            "--halt", "residual", "--aggregate", "vote", "--data", str(data), "--checkpoint", "random",
            "--seed", "3", "--device", "cpu", "--out", str(tmp_path / "run"), "bench.noise=0.01"]
    cfg = compose("config_bench", overrides_for(argv))
    assert cfg.solver.name == "broyden"
    assert list(cfg.bench.depth) == [4, 8] and list(cfg.bench.breadth) == [1, 16]
    assert cfg.bench.limit == 5 and cfg.bench.halt == "residual" and cfg.bench.aggregate == "vote"
    assert cfg.task.data == str(data)  # the space in the path survives quoting
    assert cfg.checkpoint == "random" and cfg.seed == 3 and cfg.out == str(tmp_path / "run")
    assert cfg.bench.noise == pytest.approx(0.01)


def test_trailing_override_wins_over_flag():
    cfg = compose("config_bench", overrides_for(["bench", "--limit", "5", "bench.limit=7"]))
    assert cfg.bench.limit == 7


def test_solver_without_yaml_goes_to_solver_name():
    assert "solver=anderson" in overrides_for(["bench", "--solver", "anderson"])
    assert "solver.name=my_solver" in overrides_for(["bench", "--solver", "my_solver"])


def test_task_flag_accepts_dashed_name_and_rejects_unknown():
    assert "task=sudoku_extreme" in overrides_for(["bench", "--task", "sudoku-extreme"])
    with pytest.raises(ValueError, match="unknown task .*; valid: maze-unique, sudoku-extreme"):
        overrides_for(["bench", "--task", "maze"])


@pytest.mark.parametrize("value", ["4,x", "0", ",", "-2"])
def test_bad_int_list_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "--depth", value])
    assert info.value.code == 2
    assert "--depth" in capsys.readouterr().err


def test_override_typo_exits_2_naming_valid_keys(capsys):
    assert cli.main(["bench", "bench.dpeth=[4]"]) == 2
    err = capsys.readouterr().err
    assert "bench.dpeth" in err and "did you mean 'depth'" in err and "breadth" in err


def test_missing_entry_module_fails_cleanly_without_breaking_others(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(cli.RUN_COMMANDS, "diagnose", cli.RunCommand("config_diagnose", "eqsolve.no_such_module:run"))
    assert cli.main(["diagnose", "--out", str(tmp_path / "d")]) == 1
    assert "eqsolve.no_such_module is not available" in capsys.readouterr().err
    assert cli.main(["solvers"]) == 0  # other commands unaffected


def test_run_command_passes_run_dir_and_writes_results(monkeypatch, tmp_path):
    seen = {}

    def fake_entry(cfg, run_dir):
        seen["cfg"], seen["run_dir"] = cfg, run_dir
        return {"answer": 42}

    monkeypatch.setattr(cli, "load_entry", lambda spec: fake_entry)
    run_dir, payload = cli.run_command("diagnose", [f"out={tmp_path / 'd'}", "diagnose.depth=3"])
    assert run_dir == tmp_path / "d" and seen["run_dir"] == run_dir and seen["cfg"].diagnose.depth == 3
    document = json.loads((run_dir / "results.json").read_text())
    assert document["kind"] == "diagnose" and document["results"] == {"answer": 42}
    assert "depth: 3" in (run_dir / "config.yaml").read_text()
    assert json.loads((run_dir / "meta.json").read_text())["overrides"][-1] == "diagnose.depth=3"


def test_solvers_lists_registered_solvers_with_options(capsys):
    assert cli.main(["solvers"]) == 0
    text = capsys.readouterr().out
    assert "fixed_point (aliases: naive)" in text and "tau = 1.0" in text and "anderson" in text
    assert cli.main(["solvers", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    from eqsolve.solvers import available_solvers

    assert {e["name"] for e in entries} >= set(available_solvers()) - {"naive"}


def test_data_generate_writes_loadable_csv(monkeypatch, tmp_path, capsys):
    from eqsolve.tasks import sudoku

    # the real hard generator is slow; the CLI plumbing is what is under test here
    monkeypatch.setattr(sudoku, "iter_generate", lambda seed, start, stop, workers: (
        (k, item, 1) for k, item in enumerate(sudoku.generate_easy(stop - start, seed=seed), start)))
    out = tmp_path / "sub" / "p.csv"
    assert cli.main(["data", "generate", "--n", "3", "--seed", "1", "--out", str(out)]) == 0
    data = sudoku.load_any(out)
    assert len(data) == 3 and (data.answers > 0).all()
    assert sudoku.check_batch(data.answers, data.questions).all()
    assert cli.main(["data", "generate", "--n", "0", "--out", str(out)]) == 2


def test_import_checkpoint_round_trips_official_weights(tmp_path, capsys):
    from eqsolve.models import EqR, EqRConfig
    from eqsolve.models.loading import load_checkpoint

    torch.manual_seed(0)
    model = EqR(EqRConfig(hidden_size=16, H_cycles=1, L_cycles=1, L_layers=1))
    arch = {"hidden_size": 16, "H_cycles": 1, "L_cycles": 1, "L_layers": 1, "expansion": 4, "num_heads": 2,
            "mlp_t": True, "lambda_": 0.95, "noise_scale": 0.01, "H_init_std": 1.0, "L_init_std": 1.0}
    official = {"model": {f"_orig_mod.model.inner.{k}": v for k, v in model.state_dict().items()},
                "config": {"arch": arch}}
    torch.save(official, tmp_path / "eqr.pth")
    assert cli.main(["import-checkpoint", str(tmp_path / "eqr.pth"), str(tmp_path / "native.pt")]) == 0
    loaded = load_checkpoint(tmp_path / "native.pt")
    assert loaded.config.hidden_size == 16
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "eqsolve", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("eqsolve ")


def test_diagnose_flags_map_to_diagnose_section():
    cfg = compose("config_diagnose", overrides_for(["diagnose", "--depth", "8", "--starts", "4", "--limit", "3",
                                                    "--solver", "fixed_point", "diagnose.checkpoints=[1,8]"]))
    assert (cfg.diagnose.depth, cfg.diagnose.starts, cfg.diagnose.limit) == (8, 4, 3)
    assert list(cfg.diagnose.checkpoints) == [1, 8] and cfg.solver.name == "fixed_point"


def test_train_flags_land_in_the_train_section(tmp_path):
    argv = ["train", "--data", str(tmp_path / "d.csv"), "--seed", "4", "--grad", "implicit", "--out",
            str(tmp_path / "t"), "--resume", "ckpt.pt", "train.steps=2", "model.hidden_size=32"]
    cfg = compose("config_train", overrides_for(argv))
    assert cfg.train.data == str(tmp_path / "d.csv") and cfg.train.seed == 4 and cfg.train.grad == "implicit"
    assert cfg.train.resume == "ckpt.pt"
    assert cfg.train.out == str(tmp_path / "t") and cfg.train.steps == 2 and cfg.model.hidden_size == 32
    assert compose("config_train", overrides_for(["train", "--resume"])).train.resume is True
    with pytest.raises(ValueError, match="in 'train'; valid: "):
        compose("config_train", ["train.stepz=2"])


def test_bare_resume_before_overrides_keeps_the_override(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(cli, "run_command", lambda command, overrides: (seen.setdefault("o", overrides), None))
    assert cli.main(["train", "--resume", "train.steps=5"]) == 0
    cfg = compose("config_train", seen["o"])
    assert cfg.train.resume is True and cfg.train.steps == 5


def test_data_fetch_calls_the_hub_download(monkeypatch, tmp_path, capsys):
    from eqsolve.tasks import sudoku

    calls = []
    monkeypatch.setattr(sudoku, "fetch_sudoku_extreme",
                        lambda dest, split, revision: calls.append((dest, split, revision)) or dest / f"{split}.csv")
    assert cli.main(["data", "fetch", "sudoku-extreme", "--out", str(tmp_path), "--split", "train"]) == 0
    assert calls == [(tmp_path, "train", None)] and "train.csv" in capsys.readouterr().out
    assert cli.main(["data", "fetch", "sudoku-extreme", "--out", str(tmp_path), "--revision", "v1.0"]) == 0
    assert calls[-1] == (tmp_path, "test", "v1.0")

    def no_hub(dest, split, revision):
        raise ImportError("downloading Sudoku-Extreme needs huggingface_hub")

    monkeypatch.setattr(sudoku, "fetch_sudoku_extreme", no_hub)
    assert cli.main(["data", "fetch", "sudoku-extreme", "--out", str(tmp_path)]) == 1
    assert "huggingface_hub" in capsys.readouterr().err


def test_compare_grads_config_validates_the_compare_section(tmp_path):
    cfg = compose("config_compare_grads", overrides_for(["compare-grads", "--modes", "implicit, unrolled:4",
                                                         "--out", str(tmp_path), "compare.cosine_every=2"]))
    assert list(cfg.compare.modes) == ["implicit", "unrolled:4"] and cfg.compare.cosine_every == 2
    assert cfg.train.out == str(tmp_path) and cfg.compare.eval_size >= 0  # defaults filled from CompareConfig
    with pytest.raises(ValueError, match="did you mean 'modes'"):
        compose("config_compare_grads", ["compare.mode=[implicit]"])


def test_train_results_leave_out_per_step_losses(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "load_entry", lambda spec: lambda cfg: {"step": 2, "losses": [1.0, 0.5]})
    run_dir, _ = cli.run_command("train", [f"train.out={tmp_path / 't'}"])
    assert json.loads((run_dir / "results.json").read_text())["results"] == {"step": 2}

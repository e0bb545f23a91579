"""``--print-config``: every run command prints its resolved, validated config and runs nothing."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from eqsolve import cli
from eqsolve.config import compose

CASES = {
    "bench": (["--solver", "broyden", "--depth", "4,8", "--limit", "5"], ["bench.noise=0.01"],
              {"solver.name": "broyden", "bench.depth": [4, 8], "bench.limit": 5, "bench.noise": 0.01}),
    "diagnose": (["--starts", "3"], ["diagnose.depth=6"], {"diagnose.starts": 3, "diagnose.depth": 6}),
    "train": (["--grad", "implicit", "--seed", "7"], ["train.steps=12"],
              {"train.grad": "implicit", "train.seed": 7, "train.steps": 12}),
    "compare-grads": (["--modes", "unrolled,implicit", "--seed", "2"], [],
                      {"compare.modes": ["unrolled", "implicit"], "train.seed": 2}),
}


@pytest.mark.parametrize("command", sorted(CASES))
def test_print_config_prints_the_composed_config_and_makes_no_folder(command, tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)  # the default run folder would be ./runs/<command>-<time>
    flags, trailing, expected = CASES[command]
    argv = [command, *flags, "--out", str(tmp_path / "run"), "--print-config", *trailing]
    monkeypatch.setattr(cli, "run_command", lambda *a: pytest.fail("--print-config ran the command"))
    assert cli.main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cfg = OmegaConf.create(printed)
    for key, value in expected.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, key
    # the very config a run would store as config.yaml (every default filled in)
    args = cli.build_parser().parse_args(argv)
    overrides = cli._flag_overrides(command, args) + list(args.overrides)
    assert printed == OmegaConf.to_container(compose(cli.RUN_COMMANDS[command].config, overrides))
    assert list(tmp_path.iterdir()) == []  # no run folder, neither --out nor ./runs


def test_print_config_validates(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--print-config", "bench.nosie=0.1"]) == 2
    err = capsys.readouterr().err
    assert "nosie" in err and "noise" in err
    assert list(tmp_path.iterdir()) == []


def test_every_run_command_has_the_flag():
    parser = cli.build_parser()
    for command in cli.RUN_COMMANDS:
        assert parser.parse_args([command, "--print-config"]).print_config is True

"""Config composition and validation: hydra overrides, typos name the valid keys."""

from __future__ import annotations

import pytest

from eqsolve.config import BenchConfig, BenchRoot, check_override_keys, compose, group_options


def test_defaults_compose_and_match_schema_defaults():
    cfg = compose("config_bench")
    assert cfg.solver.name == "anderson"
    assert cfg.task.name == "sudoku-extreme" and cfg.task.data is None
    assert list(cfg.bench.depth) == BenchConfig().depth
    assert cfg.checkpoint is None


def test_bench_and_diagnose_defaults_are_the_dataclasses():
    import dataclasses

    from eqsolve.config import DiagnoseConfig

    assert dict(compose("config_bench").bench) == dataclasses.asdict(BenchConfig())
    assert dict(compose("config_diagnose").diagnose) == dataclasses.asdict(DiagnoseConfig())


def test_overrides_apply_and_coerce_types():
    cfg = compose("config_bench", ["solver=broyden", "bench.depth=[2,3]", "seed=7", "bench.halt_tol=1e-2",
                                   "model.hidden_size=16"])
    assert cfg.solver.name == "broyden"
    assert list(cfg.bench.depth) == [2, 3]
    assert cfg.seed == 7 and isinstance(cfg.seed, int)
    assert cfg.bench.halt_tol == pytest.approx(1e-2)
    assert cfg.model.hidden_size == 16


@pytest.mark.parametrize(
    ("override", "bad_key", "a_valid_key"),
    [
        ("bench.dept=[4]", "bench.dept", "depth"),
        ("solvr.name=anderson", "solvr", "solver"),
        ("task.limt=3", "task.limt", "min_rating"),
        ("model.hidden_sise=8", "model.hidden_sise", "hidden_size"),
    ],
)
def test_typo_is_error_naming_valid_keys(override, bad_key, a_valid_key):
    with pytest.raises(ValueError) as info:
        compose("config_bench", [override])
    message = str(info.value)
    assert f"'{bad_key}'" in message
    assert a_valid_key in message and "; valid: " in message


def test_unknown_group_option_lists_available_options():
    with pytest.raises(ValueError, match="brodyen") as info:
        compose("config_bench", ["solver=brodyen"])
    assert "broyden" in str(info.value) and "fixed_point" in str(info.value)


def test_wrong_type_is_error_naming_the_key():
    with pytest.raises(ValueError, match="bench.batch_size"):
        compose("config_bench", ["bench.batch_size=many"])


def test_composed_config_is_read_only():
    cfg = compose("config_bench")
    with pytest.raises(Exception, match="read-only"):
        cfg.seed = 3


def test_check_override_keys_skips_free_form_and_group_overrides():
    # solver.options is a free dict (validated by get_solver), groups are hydra's business
    check_override_keys(["solver.options.m=5", "solver=broyden", "~bench.limit", "+model.hidden_size=8"], BenchRoot)
    with pytest.raises(ValueError, match="hidden_size"):
        check_override_keys(["+model.x=1"], BenchRoot)
    with pytest.raises(ValueError, match="did you mean 'breadth'"):
        check_override_keys(["bench.bredth=2"], BenchRoot)


def test_every_group_yaml_validates():
    for option in group_options("solver"):
        assert compose("config_bench", [f"solver={option}"]).solver.name == option
    assert compose("config_diagnose").diagnose.depth > 0
    assert "sudoku_extreme" in group_options("task")


def test_unknown_config_name():
    with pytest.raises(ValueError, match="config_bench"):
        compose("config_nope")


def test_section_keys_and_solver_options_need_no_plus_after_a_group_switch():
    # `train=gpu` replaces the train group: its keys must still be settable without `+`, and
    # solver options (an open dict in the YAML) too; misspelt ones still fail by name.
    from eqsolve.config import compose
    from eqsolve.solvers import get_solver

    cfg = compose("config_train", ["train=gpu", "train.threads=1", "model.hidden_size=32"])
    assert (cfg.train.threads, cfg.train.batch_size, cfg.model.hidden_size) == (1, 768, 32)
    bench = compose("config_bench", ["solver=anderson", "solver.options.delay=8"])
    assert dict(bench.solver.options) == {"delay": 8}
    with pytest.raises(ValueError, match="did you mean 'threads'"):
        compose("config_train", ["train=gpu", "train.thredas=1"])
    with pytest.raises(ValueError, match="dleay"):
        get_solver("anderson", **dict(compose("config_bench", ["solver.options.dleay=8"]).solver.options))

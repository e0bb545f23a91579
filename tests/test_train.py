"""Training: config validation, losses, every gradient mode, exact resume, checkpoint errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_models import tiny_config

from eqsolve.models.eqr import EqR, EqRConfig
from eqsolve.training.checkpoint import load_training_checkpoint
from eqsolve.training.config import GRAD_MODES, TrainConfig
from eqsolve.training.losses import cross_entropy, halting_bce, stablemax_log_probs
from eqsolve.training.run import load_preset, main, run_training

TINY = tiny_config()


def tiny_cfg(tmp_path, **overrides) -> TrainConfig:
    values = dict(steps=6, batch_size=4, gen_easy=6, augment=True, depth=3, out=str(tmp_path),
                  checkpoint_every=3, log_every=1, eval_size=2, eval_depth=1, progress=False,
                  reveal_start=0.5, reveal_end=0.1, curriculum_steps=4, sup_steps=3,
                  warmup_steps=2, noise=0.01)
    values.update(overrides)
    return TrainConfig(**values)


def test_config_rejects_unknown_key_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown train config key 'stepz' \(did you mean 'steps'\?\); valid: .*grad"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="grad='bptt2'"):
        TrainConfig(grad="bptt2")
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="ema_decay=1.5"):
        TrainConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match="unknown config group"):
        main({"modle": {}})


def test_presets_are_valid_and_eqr_matches_paper():
    for name in ("small", "eqr"):
        TrainConfig.from_dict(load_preset("train", name))
        EqRConfig.from_dict(load_preset("model", name))
    paper = TrainConfig.from_dict(load_preset("train", "eqr"))
    assert (paper.batch_size, paper.lr, paper.weight_decay, paper.steps) == (768, 1e-4, 1.0, 50000)
    model = EqRConfig.from_dict(load_preset("model", "eqr"))
    assert (model.hidden_size, model.L_layers, model.H_cycles, model.L_cycles) == (512, 2, 3, 6)
    with pytest.raises(ValueError, match="no train preset 'nope'"):
        load_preset("train", "nope")


def test_stablemax_is_a_distribution_and_ce_matches_definition():
    logits = torch.tensor([[-3.0, 0.0, 2.5]])
    probs = stablemax_log_probs(logits).exp()
    s = torch.tensor([1 / 4, 1.0, 3.5])
    assert torch.allclose(probs[0], (s / s.sum()).double())
    ce = cross_entropy(logits, torch.tensor([2]), kind="stablemax")
    assert math.isclose(float(ce), -math.log(3.5 / 4.75), rel_tol=1e-6)
    soft = cross_entropy(logits, torch.tensor([2]), kind="softmax")
    assert math.isclose(float(soft), float(-torch.log_softmax(logits, -1)[0, 2]), rel_tol=1e-6)
    big = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)  # stays finite, unlike exp()
    cross_entropy(big, torch.tensor([1])).sum().backward()
    assert torch.isfinite(big.grad).all()
    assert float(halting_bce(torch.tensor([-20.0]), torch.tensor([True]))) > 19


@pytest.mark.parametrize("grad", GRAD_MODES)
def test_every_gradient_mode_trains_and_logs(tmp_path, grad):
    cfg = tiny_cfg(tmp_path, grad=grad, steps=2, checkpoint_every=2)
    result = run_training(cfg, TINY)
    assert result["step"] == 2 and len(result["losses"]) == 2
    assert all(math.isfinite(x) for x in result["losses"])
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for key in ("loss", "cell_acc", "exact", "nfe", "residual", "steps_per_s", "lr"):
        assert math.isfinite(lines[-1][key]), key
    if grad == "sot":
        assert lines[-1]["nfe"] == 1.0
    else:  # forward solves with the DEQ budget (noise keeps it from converging early)
        assert 1.0 <= lines[-1]["nfe"] <= cfg.depth + 1  # + the initial f(z0) of the solver
    # weights moved away from the seed's initial weights
    torch.manual_seed(cfg.seed)
    init = EqR(TINY).state_dict()
    trained = load_training_checkpoint(tmp_path / "last.pt")["model"]
    assert any(not torch.equal(init[k], trained[k]) for k in init)


def test_sot_replaces_rows_after_sup_steps(tmp_path):
    from eqsolve.training.data import build_pool
    from eqsolve.training.loop import Trainer

    cfg = tiny_cfg(tmp_path, sup_steps=2, halt_weight=0.0)
    trainer = Trainer(TINY, cfg, build_pool(None, limit=None, gen_easy=4, gen_hard=0, seed=0))
    trainer.train_step()
    first = trainer.carry["tokens"].clone()
    assert not trainer.carry["halted"].any()
    trainer.train_step()  # second supervised step: every row has used its budget
    assert trainer.carry["halted"].all()
    trainer.train_step()  # rows were refilled with new draws and fresh states
    assert trainer.carry["count"].tolist() == [2] * 4
    assert not torch.equal(first, trainer.carry["tokens"])


@pytest.mark.parametrize("grad", ["sot", "implicit"])
def test_resume_reproduces_uninterrupted_losses(tmp_path, grad):
    opts = {"grad": grad, "backward_max_iter": 5}
    full = run_training(tiny_cfg(tmp_path / "full", **opts), TINY)
    part = run_training(tiny_cfg(tmp_path / "part", steps=3, **opts), TINY)
    assert part["losses"] == full["losses"][:3]
    rest = run_training(tiny_cfg(tmp_path / "part", resume=True, **opts), TINY)
    assert rest["losses"] == full["losses"][3:]  # exactly, not approximately
    a = load_training_checkpoint(tmp_path / "full" / "last.pt")
    b = load_training_checkpoint(tmp_path / "part" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_resume_errors_are_clear(tmp_path):
    run_training(tiny_cfg(tmp_path, steps=3), TINY)
    other = tiny_config(hidden_size=32)
    with pytest.raises(ValueError, match=r"model.hidden_size: checkpoint 16 != run 32"):
        run_training(tiny_cfg(tmp_path, resume=True), other)
    with pytest.raises(ValueError, match=r"train.lr: checkpoint 0.001 != run 0.01"):
        run_training(tiny_cfg(tmp_path, resume=True, lr=0.01), TINY)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        run_training(tiny_cfg(tmp_path, resume=str(tmp_path / "torn.pt")), TINY)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        run_training(tiny_cfg(tmp_path / "empty", resume=True), TINY)


def test_checkpoint_loads_as_a_model_for_bench(tmp_path):
    run_training(tiny_cfg(tmp_path, steps=2, checkpoint_every=1, keep_checkpoints=1), TINY)
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_0000002.pt"]
    model = EqR.from_checkpoint(tmp_path / "last.pt")
    ckpt = load_training_checkpoint(tmp_path / "last.pt")
    assert all(torch.equal(v, ckpt["ema"][k]) for k, v in model.state_dict().items())
    assert ckpt["extra"]["commit"] and ckpt["train"]["train_config"]["steps"] == 2


def test_trains_on_a_user_csv_and_rejects_a_missing_file(tmp_path):
    import numpy as np

    from eqsolve.tasks.sudoku.easy_generator import generate_easy
    from eqsolve.tasks.sudoku.io import SudokuSet, save_csv

    items = generate_easy(3, seed=7)
    data = SudokuSet(np.stack([i[0] for i in items]), np.stack([i[1] for i in items]),
                     np.array([i[2] for i in items]), ["gen"] * 3)
    save_csv(data, tmp_path / "train.csv")
    cfg = tiny_cfg(tmp_path / "run", data=str(tmp_path / "train.csv"), steps=1, gen_easy=0)
    assert run_training(cfg, TINY)["step"] == 1
    from eqsolve.training.data import PuzzlePool

    pool = PuzzlePool.load(tmp_path / "run" / "pool.npz")
    assert np.array_equal(pool.questions, data.questions) and "train.csv" in pool.source
    with pytest.raises(ValueError, match="training data file not found"):
        run_training(tiny_cfg(tmp_path / "run2", data=str(tmp_path / "nope.csv")), TINY)


def test_a_cached_pool_of_another_config_is_refused(tmp_path):
    # pool.npz is cached per run folder; a fresh run with other data settings must not use it
    run_training(tiny_cfg(tmp_path, steps=1), TINY)
    for path in tmp_path.iterdir():  # leave only the cache (a folder with a run is refused)
        if path.name != "pool.npz":
            path.unlink()
    with pytest.raises(ValueError, match="holds the pool 'generate_easy\\(6, seed=0\\)'.*generate_easy\\(5, seed=0\\)"):
        run_training(tiny_cfg(tmp_path, steps=1, gen_easy=5), TINY)


def test_init_from_starts_a_new_run_from_given_weights(tmp_path):
    # fine-tuning: a run started from exported weights begins exactly at them (EMA too), and a
    # file of another architecture is refused by name
    from eqsolve.training.data import PuzzlePool
    from eqsolve.training.export import export_reasoner
    from eqsolve.training.loop import Trainer

    run_training(tiny_cfg(tmp_path / "a", steps=2), TINY)
    export_reasoner(tmp_path / "a" / "last.pt", tmp_path / "w.pt")
    weights = EqR.from_checkpoint(tmp_path / "w.pt").state_dict()
    pool = PuzzlePool.load(tmp_path / "a" / "pool.npz")
    trainer = Trainer(TINY, tiny_cfg(tmp_path / "b", init_from=str(tmp_path / "w.pt")), pool)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[name]) and torch.equal(trainer.ema[name], weights[name])
    other = tiny_config(hidden_size=32)
    with pytest.raises(ValueError, match="another architecture.*hidden_size: run 32 != file 16"):
        Trainer(other, tiny_cfg(tmp_path / "c", init_from=str(tmp_path / "w.pt")), pool)
    result = run_training(tiny_cfg(tmp_path / "d", steps=2, init_from=str(tmp_path / "w.pt")), TINY)
    assert all(math.isfinite(x) for x in result["losses"])

"""Checkpoint files are untrusted: no entry point runs code from one, and a bad file is one line.

A malicious pickle (its ``__reduce__`` would ``touch`` a marker file) is given to every place
that reads a checkpoint: the library (``EqR.from_official``/``from_checkpoint``,
``eqsolve.models.loading.load_checkpoint``, ``train.init_from``, ``resume=PATH``) and the command line
(``bench``/``diagnose --checkpoint``, ``import-checkpoint``, ``train --resume PATH``,
``train train.init_from=PATH``). The marker must never appear, and the error must name the file.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from tiny_models import tiny_config

from eqsolve import cli
from eqsolve.models.eqr import EqR
from eqsolve.models.loading import load_checkpoint
from eqsolve.training.checkpoint import load_training_checkpoint
from eqsolve.training.config import TrainConfig
from eqsolve.training.run import run_training

TINY = tiny_config()
TINY_TRAIN = ["train.steps=1", "train.batch_size=2", "train.gen_easy=4", "train.eval_size=1",
              "train.eval_depth=1", "train.progress=false", "train.threads=1", "model.hidden_size=16",
              "model.num_heads=2", "model.H_cycles=1", "model.L_cycles=2", "model.L_layers=1"]


class Exploit:
    """Unpickling this calls ``os.system`` (what an attacker's checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture
def evil(tmp_path):
    """``(path, marker)``: a checkpoint-shaped dict whose model entry runs a shell command."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"format": "eqsolve.eqr/1", "config": TINY.to_dict(), "model": Exploit(marker),
                "train": {"version": 1}}, path)
    return path, marker


def test_the_exploit_is_live_when_unpickled_unsafely(evil):
    # the control: the same file *does* run its command under weights_only=False, so the
    # "marker absent" checks below can fail
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("raw_pickle", [False, True], ids=["torch-zip", "legacy-pickle"])
@pytest.mark.parametrize("entry", ["from_official", "from_checkpoint", "load_checkpoint",
                                   "load_training_checkpoint", "resume", "init_from"])
def test_library_entry_points_refuse_the_exploit(tmp_path, evil, entry, raw_pickle):
    path, marker = evil
    if raw_pickle:  # the pre-1.6 torch layout: a bare pickle stream
        with open(path, "wb") as handle:
            pickle.dump({"model": Exploit(marker)}, handle, protocol=2)
    calls = {
        "from_official": lambda: EqR.from_official(path),
        "from_checkpoint": lambda: EqR.from_checkpoint(path),
        "load_checkpoint": lambda: load_checkpoint(path),
        "load_training_checkpoint": lambda: load_training_checkpoint(path),
        "resume": lambda: run_training(TrainConfig(steps=1, batch_size=2, gen_easy=4, progress=False,
                                                   out=str(tmp_path / "run"), resume=str(path)), TINY),
        "init_from": lambda: run_training(TrainConfig(steps=1, batch_size=2, gen_easy=4, progress=False,
                                                      out=str(tmp_path / "run"), init_from=str(path)), TINY),
    }
    with pytest.raises(ValueError, match=r"refused to load .*evil\.pt.*posix\.system|evil\.pt"):
        calls[entry]()
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["bench", "--checkpoint", "{evil}", "--limit", "1", "--depth", "1", "--breadth", "1", "--out", "{out}"],
    ["diagnose", "--checkpoint", "{evil}", "--limit", "1", "--out", "{out}"],
    ["import-checkpoint", "{evil}", "{out}/native.pt"],
    ["train", "--out", "{out}", "--resume", "{evil}", *TINY_TRAIN],
    ["train", "--out", "{out}", "train.init_from={evil}", *TINY_TRAIN],
], ids=["bench", "diagnose", "import-checkpoint", "train-resume", "train-init_from"])
def test_cli_entry_points_refuse_the_exploit_in_one_line(tmp_path, evil, argv, capsys):
    path, marker = evil
    out = tmp_path / "out"
    argv = [a.format(evil=path, out=out) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "refused to load" in lines[0] and str(path) in lines[0], err
    assert "Traceback" not in err
    assert not (out / "native.pt").exists()


def bad_files(tmp_path):
    """Files that are not checkpoints, each written as a ``.pt``."""
    full = tmp_path / "full.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, full)
    data = full.read_bytes()
    rng = np.random.default_rng(0)
    files = {
        "random": b"\x13" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "random-pickle-magic": b"\x80" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "empty": b"",
        "text": b"question,answer\n1.3,123\n",
        "truncated": data[: len(data) // 2],
        "not-a-dict": None,
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        if content is None:
            torch.save([torch.zeros(2)], paths[name])
        else:
            paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize("kind", ["random", "random-pickle-magic", "empty", "text", "truncated", "not-a-dict"])
@pytest.mark.parametrize("command", ["bench", "import-checkpoint", "train-resume"])
def test_bad_bytes_are_one_clear_line_naming_the_file(tmp_path, kind, command, capsys):
    path = bad_files(tmp_path)[kind]
    out = tmp_path / "out"
    argv = {"bench": ["bench", "--checkpoint", str(path), "--limit", "1", "--out", str(out)],
            "import-checkpoint": ["import-checkpoint", str(path), str(tmp_path / "native.pt")],
            "train-resume": ["train", "--out", str(out), "--resume", str(path), *TINY_TRAIN]}[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "UnpicklingError" not in err.split("(")[0]
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and str(path) in lines[0], err
    if kind != "not-a-dict":
        assert "not a torch checkpoint" in lines[0] or "empty file" in lines[0]


def test_a_folder_given_as_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} is a folder"):
        EqR.from_checkpoint(tmp_path)


OFFICIAL_WRITER = textwrap.dedent("""
    # writes a checkpoint the way the official code's save_checkpoint does (utils/checkpoint.py):
    # its carry dataclasses, numpy and python RNG states, config.model_dump() as a dict
    import dataclasses, random, sys, types
    import numpy as np, torch
    pkg = types.ModuleType("models"); mod = types.ModuleType("models.eqr")
    @dataclasses.dataclass
    class LatentCarry:
        z_H: torch.Tensor
        z_L: torch.Tensor
    @dataclasses.dataclass
    class ModelCarry:
        inner_carry: LatentCarry
        steps: torch.Tensor
        halted: torch.Tensor
        current_data: dict
        global_step: int = None
    for cls in (LatentCarry, ModelCarry):
        cls.__module__ = "models.eqr"; setattr(mod, cls.__name__, cls)
    sys.modules["models"], sys.modules["models.eqr"] = pkg, mod
    src = torch.load(sys.argv[1], weights_only=True)
    carry = ModelCarry(LatentCarry(torch.zeros(2, 81, 8), torch.zeros(2, 81, 8)), torch.zeros(2),
                       torch.ones(2, dtype=torch.bool), {"inputs": torch.zeros(2, 81)}, 7)
    ckpt = {"step": 7, "total_steps": 10, "model": src["model"], "optimizers": [], "optimizer_lrs": [1e-4],
            "carry": carry, "rng": {"torch": torch.random.get_rng_state(), "cuda": None},
            "numpy": np.random.get_state(), "python": random.getstate(),
            "train_dataset": {"split": "train", "_iters": 3, "train_state": None}, "iteration": 3,
            "config": src["config"], "ema": src["ema"], "wandb_run_id": None}
    torch.save(ckpt, sys.argv[2])
""")


def test_an_official_training_checkpoint_loads_without_the_official_code(tmp_path, capsys):
    """The release layout (``model``, ``ema`` {mu, shadow}, ``config`` with ``arch``) plus what
    the official trainer also saves (its carry dataclasses, numpy RNG state) loads weights-only,
    in a process where the official ``models`` package does not exist."""
    from eqsolve.models.checkpoint import config_from_arch

    arch = {"name": "eqr@EqRModel", "loss": {"name": "losses@ACTLossHead"}, "H_cycles": 2, "L_cycles": 2,
            "H_layers": 0, "L_layers": 1, "hidden_size": 16, "num_heads": 2, "expansion": 2,
            "pos_encodings": "rope", "mlp_t": True, "lambda_": 0.9, "noise_scale": 0.02}
    model, ema = EqR(config_from_arch(arch)), EqR(config_from_arch(arch))
    parts = {"model": {f"_orig_mod.model.inner.{k}": v for k, v in model.state_dict().items()},
             "ema": {"mu": 0.999, "shadow": {f"model.inner.{k}": v for k, v in ema.named_parameters()}},
             "config": {"arch": arch, "lr": 1e-4, "global_batch_size": 768}}
    torch.save(parts, tmp_path / "parts.pt")
    subprocess.run([sys.executable, "-c", OFFICIAL_WRITER, str(tmp_path / "parts.pt"), str(tmp_path / "eqr.pth")],
                   check=True, cwd=tmp_path)
    assert "models.eqr.ModelCarry" in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "eqr.pth")
    loaded = EqR.from_official(tmp_path / "eqr.pth")
    for name, value in ema.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name  # the EMA weights, bit for bit
    assert cli.main(["import-checkpoint", str(tmp_path / "eqr.pth"), str(tmp_path / "native.pt")]) == 0
    native = EqR.from_checkpoint(tmp_path / "native.pt")
    assert all(torch.equal(native.state_dict()[k], v) for k, v in ema.state_dict().items())
    assert "is already an eqsolve checkpoint" in _import_error(tmp_path / "native.pt", tmp_path, capsys)


def _import_error(source, tmp_path, capsys):
    assert cli.main(["import-checkpoint", str(source), str(tmp_path / "again.pt")]) == 2
    return capsys.readouterr().err


def test_native_files_hold_plain_data_and_old_ones_still_load(tmp_path):
    # new training checkpoints need no allow-list at all (the numpy RNG state is a tensor now)
    run_training(TrainConfig(steps=2, batch_size=2, gen_easy=4, progress=False, eval_size=1, eval_depth=1,
                             checkpoint_every=1, out=str(tmp_path)), TINY)
    for name in ("last.pt", "ckpt_0000001.pt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / name) == []
        torch.load(tmp_path / name, weights_only=True)
    # the shipped weights load with torch's plain weights-only loader
    from eqsolve.bench.grid import SHIPPED_REASONER

    assert torch.serialization.get_unsafe_globals_in_checkpoint(SHIPPED_REASONER) == []
    EqR.from_checkpoint(SHIPPED_REASONER)


def test_a_training_checkpoint_from_before_plain_rng_state_still_resumes(tmp_path):
    """Checkpoints written by earlier versions hold numpy's RNG state as an array; they resume."""
    cfg = dict(steps=3, batch_size=2, gen_easy=4, progress=False, eval_size=1, eval_depth=1,
               checkpoint_every=1, keep_checkpoints=0)
    full = run_training(TrainConfig(**cfg, out=str(tmp_path / "full")), TINY)
    run_training(TrainConfig(**dict(cfg, steps=2), out=str(tmp_path / "old")), TINY)
    ckpt = torch.load(tmp_path / "old" / "last.pt", weights_only=True)
    state = ckpt["train"]["rng"]["numpy"]  # back to the old layout: numpy's own tuple
    ckpt["train"]["rng"]["numpy"] = (state["kind"], state["key"].numpy().astype(np.uint32), state["pos"],
                                     state["has_gauss"], state["cached_gaussian"])
    torch.save(ckpt, tmp_path / "old" / "last.pt")
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "old" / "last.pt")
    rest = run_training(TrainConfig(**cfg, out=str(tmp_path / "old"), resume=True), TINY)
    assert rest["losses"] == full["losses"][2:]

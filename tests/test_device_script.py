"""``scripts/device_train.sh`` (how the shipped reasoner was trained) runs end to end on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_device_script_trains_exports_and_measures_on_cpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "dev"), DEVICE="cpu", TRAIN_S="60", MEASURE_S="120",
               PY=sys.executable, SETS="eval:4", GRID="2x1",
               EXTRA="train.steps=3 train.batch_size=4 train.threads=1 train.eval_size=2 "
                     "train.eval_depth=1 model.hidden_size=16")
    subprocess.run(["bash", str(REPO / "scripts" / "device_train.sh")], cwd=REPO, env=env, check=True,
                   timeout=600, capture_output=True)
    out = tmp_path / "dev"
    assert (out / "a.pt").is_file(), (out / "a.train.log").read_text()
    result = json.loads((out / "a.measure.json").read_text())
    row = result["sets"]["eval"][0]
    assert (row["depth"], row["breadth"], row["n"]) == (2, 1, 4)
    assert result["device"] == "cpu"

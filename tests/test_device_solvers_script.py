"""``scripts/device_solvers.sh`` (the GPU solver measurements in one call) runs end to end on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("torchdeq")


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_device_solvers_script_measures_every_configuration_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "dev"
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", RUNS="1", TESTS="0", BUDGET_S="300", PY=sys.executable,
               CONFIGS="4x16:float32 4x16:bfloat16")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device_solvers.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (out / "log").read_text()
    assert proc.returncode == 0, proc.stdout[-2000:] + log[-3000:]
    with tarfile.open(out / "solvers-results.tgz") as tar:
        names = sorted(n.lstrip("./") for n in tar.getnames() if n.endswith((".json", ".md")))
        assert names == ["solvers.json", "solvers.md", "solvers_cpu_bfloat16_b4_d16.json",
                         "solvers_cpu_bfloat16_b4_d16.md"]
        member = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("bfloat16_b4_d16.json")))
        assert member is not None
        bf16 = json.loads(member.read())
    # the first configuration runs every problem, the later ones only the large ones
    assert "small_tanh_rho0.99" not in bf16["problems"] and "mixer_block" in bf16["problems"]
    assert bf16["meta"]["dtype"] == "bfloat16" and bf16["meta"]["device"] == "cpu"
    assert "== 4x16:float32" in log and "done in" in log

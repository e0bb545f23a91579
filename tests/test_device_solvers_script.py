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
    # (the compile check through dynamo's "eager" backend: traced, no code generated, seconds)
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", RUNS="1", TESTS="0", BUDGET_S="300", PY=sys.executable,
               CONFIGS="4x16:float32 4x16:bfloat16", THREADS="1", OFFICIAL=str(tmp_path / "no-official-code"),
               COMPILE_BACKEND="eager")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device_solvers.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (out / "log").read_text()
    assert proc.returncode == 0, proc.stdout[-2000:] + log[-3000:]
    with tarfile.open(out / "solvers-results.tgz") as tar:
        names = sorted(n.lstrip("./") for n in tar.getnames() if n.endswith((".json", ".md")))
        assert names == ["solvers.json", "solvers.md", "solvers_compile.json", "solvers_compile.md",
                         "solvers_cpu_bfloat16_b4_d16.json", "solvers_cpu_bfloat16_b4_d16.md"]
        member = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("solvers_compile.json")))
        assert member is not None
        check = json.loads(member.read())
        member = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("bfloat16_b4_d16.json")))
        assert member is not None
        bf16 = json.loads(member.read())
    # the first configuration runs every problem, the later ones only the large ones
    assert "small_tanh_rho0.99" not in bf16["problems"] and "mixer_block" in bf16["problems"]
    assert bf16["meta"]["dtype"] == "bfloat16" and bf16["meta"]["device"] == "cpu"
    assert "== 4x16:float32" in log and "done in" in log
    # the compile check ran at the first configuration's sizes, every variant without error
    assert check["meta"]["backend"] == "eager" and (check["meta"]["batch"], check["meta"]["d"]) == (4, 16)
    assert all(not v.get("error") for pr in check["problems"].values() for v in pr["results"].values())


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_device_solvers_script_measures_the_reasoner_map_when_the_official_code_is_there(tmp_path: Path) -> None:
    snapshot = Path("/work/.mirror/locuslab+EqR/repo")  # a local snapshot of github locuslab/EqR
    if not snapshot.is_dir():
        pytest.skip("no local snapshot of the official EqR code")
    official = tmp_path / "official"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "eqr_throughput.py"), "--official", str(snapshot),
                    "--export-official", str(official)], check=True, capture_output=True, timeout=120)
    out = tmp_path / "dev"
    env = dict(os.environ, OUT=str(out), DEVICE="cpu", RUNS="1", TESTS="0", BUDGET_S="400", PY=sys.executable,
               CONFIGS="4x16:float32", COMPILE_CHECK="0", THREADS="1", OFFICIAL=str(official), EQR_BATCHES="1,1", EQR_LIMIT="1",
               EQR_ARGS="--breadths 1 --depths 1")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device_solvers.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (out / "log").read_text()
    assert proc.returncode == 0, proc.stdout[-2000:] + log[-3000:]
    with tarfile.open(out / "solvers-results.tgz") as tar:
        member = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("eqr_throughput.json")))
        assert member is not None
        result = json.loads(member.read())
    assert [row["batch"] for row in result["throughput"]] == [1, 1]
    assert all(row["max_abs_state_diff"] == 0.0 for row in result["throughput"])  # same outputs as the official
    assert [(b["breadth"], b["depth"]) for b in result["bench"]] == [(1, 1)]

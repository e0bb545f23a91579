"""The distribution installs `solvers/` as `eqsolve.solvers`, also from a built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps",
           "--no-build-isolation", "-v", "-w", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stdout}\n{proc.stderr}")
    (out / "build.log").write_text(proc.stdout + proc.stderr)
    (path,) = out.glob("eqsolve-*.whl")
    return path


def test_wheel_builds_without_setuptools_warning_of_ignored_folders(wheel: Path) -> None:
    """Every folder with data (conf/, assets/) is a declared package: setuptools warns of none."""
    log = (wheel.parent / "build.log").read_text()
    assert "Installing" in log or "copying" in log, "the verbose build log is empty"
    assert "would be ignored" not in log, [line for line in log.splitlines() if "is absent from" in line]


def test_wheel_maps_solvers_folder_to_subpackage(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "eqsolve/solvers/__init__.py" in names
    # every module of the top-level solvers/ folder is shipped inside eqsolve/solvers/
    for src in (REPO_ROOT / "solvers").glob("*.py"):
        assert f"eqsolve/solvers/{src.name}" in names, src.name
    assert not any(n.startswith("solvers/") for n in names), "solvers/ leaked as a top-level package"


def test_wheel_ships_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("conf", "assets"):
        for src in (REPO_ROOT / "eqsolve" / folder).rglob("*"):
            if src.is_file() and "__pycache__" not in src.parts:
                rel = src.relative_to(REPO_ROOT).as_posix()
                assert rel in names, f"{rel} missing from the wheel"


def test_installed_wheel_imports_solvers(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                    "--target", str(target), str(wheel)], check=True)
    code = ("import eqsolve.solvers as s, pathlib; "
            "print(pathlib.Path(s.__file__).resolve())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(target.resolve())


def test_wheel_metadata_license_typing_and_one_version(wheel: Path) -> None:
    """LICENSE and py.typed ship; the version is eqsolve.__version__, written nowhere else."""
    import tomllib

    import eqsolve

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "eqsolve/py.typed" in names  # PEP 561: type checkers use the inline annotations
    dist_info = f"eqsolve-{eqsolve.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert f"Version: {eqsolve.__version__}\n" in meta
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert f"License-Expression: {project['license']}\n" in meta
    assert "MIT License" in (REPO_ROOT / "LICENSE").read_text() and project["license"] == "MIT"
    assert project["classifiers"] and all(f"Classifier: {c}\n" in meta for c in project["classifiers"])
    assert project["urls"] and all(f"Project-URL: {k}, {v}\n" in meta for k, v in project["urls"].items())


def test_version_flag_prints_the_package_version() -> None:
    import eqsolve

    proc = subprocess.run([sys.executable, "-m", "eqsolve", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"eqsolve {eqsolve.__version__}"


@pytest.mark.parametrize("module", ["hydra", "omegaconf", "matplotlib"])
def test_import_eqsolve_stays_light(module: str) -> None:
    """The core (solvers, gradients, DEQ) needs only torch: `import eqsolve` loads no app stack."""
    code = (f"import sys, eqsolve; from eqsolve import DEQ, Implicit, solve; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == {module!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"import eqsolve loaded {proc.stdout.strip()}"

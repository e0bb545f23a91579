"""The documentation site builds strictly and its Python examples run as written."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
BLOCKS = [(page, i, block) for page in PAGES
          for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))]


def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    nav = set(re.findall(r":\s*([\w/-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in PAGES}
    assert nav == pages, f"in the nav but missing: {nav - pages}; pages not in the nav: {pages - nav}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="the docs extra (mkdocs, mkdocstrings-python) is not installed")
def test_docs_build_strictly(tmp_path: Path) -> None:
    # --strict: a broken link, a missing page or an unresolvable API reference is an error
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "solvers" / "index.html").read_text().count("Anderson") > 5


@pytest.mark.parametrize(("page", "index", "code"), BLOCKS,
                         ids=[f"{p.relative_to(ROOT / 'docs').as_posix()}#{i}" for p, i, _ in BLOCKS])
def test_docs_python_example_runs(page: Path, index: int, code: str) -> None:
    # each example in a fresh interpreter: one that registers a task must not leak into others
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{page.name} example {index} failed:\n{proc.stderr[-3000:]}"

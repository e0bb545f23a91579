"""mkdocs hook: stage the sources the way they are installed, for the API reference.

`solvers/` is a top-level folder that installs as the subpackage `eqsolve.solvers`
(pyproject.toml maps it), which a static reader of the source tree cannot see. Before
mkdocstrings starts, this copies `eqsolve/` and `solvers/` into `build/docs-src/eqsolve/` in their
installed arrangement; the `paths` option of the python handler points there.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "docs-src"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "assets", "conf")


@event_priority(100)  # before mkdocstrings reads its search paths
def on_config(config: Any) -> Any:
    if STAGE.exists():
        shutil.rmtree(STAGE)
    shutil.copytree(ROOT / "eqsolve", STAGE / "eqsolve", ignore=SKIP)
    shutil.copytree(ROOT / "solvers", STAGE / "eqsolve" / "solvers", ignore=SKIP)
    return config

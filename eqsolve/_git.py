"""The git commit of this checkout, recorded by run folders, checkpoints and data provenance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["git_commit"]


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """Return the current git commit of ``repo`` (default: this package's checkout), ``-dirty`` if modified.

    Args:
        repo: Folder inside a git work tree.

    Returns:
        The commit hash, or ``None`` when not in a git checkout or git is unavailable.
        ``EQSOLVE_COMMIT`` in the environment overrides it (installed copies without git).
    """
    if os.environ.get("EQSOLVE_COMMIT"):
        return os.environ["EQSOLVE_COMMIT"]
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")

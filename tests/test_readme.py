"""The README's API example runs as written (it is the first thing users copy)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_api_example_runs_and_converges(capsys) -> None:
    blocks = _python_blocks()
    assert blocks, "README has no ```python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    sol, z = namespace["sol"], namespace["z"]
    assert bool(sol.converged.all())
    assert z.requires_grad, "DEQ output must carry a gradient"
    z.square().sum().backward()
    grads = [p.grad for p in namespace["deq"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert first_block[0].endswith("eqsolve bench --solver anderson --task sudoku-extreme")
    ci = (README.parent / ".ci" / "run").read_text()
    test_cmd = first_block[1].split("&& ")[-1]
    assert test_cmd in ci, f"CI does not run the README's test command {test_cmd!r}"

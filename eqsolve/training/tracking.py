"""Optional experiment tracking: training metrics to TensorBoard or Weights & Biases.

``metrics.jsonl`` in the run folder is always written; a tracker mirrors the same lines to an
external tool. Off by default (``train.tracking: none``). Chosen by name:

- ``tensorboard``: event files in ``<run>/tensorboard/``, written with
  :class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard`` package, the
  ``tracking`` extra). A resumed run drops events after the step it resumes from.
- ``wandb``: a Weights & Biases run in project ``train.tracking_project`` whose id is kept in
  ``<run>/wandb_id.txt``, so that ``--resume`` continues the same W&B run (needs ``wandb``;
  ``WANDB_MODE=offline`` logs locally).

Metric names keep the log's keys, grouped: ``train/loss``, ``eval/exact`` (``eval_`` keys), and
``speed/steps_per_s``; non-numeric and missing values are skipped.

Examples:
    >>> import tempfile
    >>> tracker = make_tracker("none", tempfile.mkdtemp(), {})
    >>> tracker.log({"loss": 1.0}, step=1); tracker.close()
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TRACKERS", "Tracker", "make_tracker", "scalars"]

TRACKERS = ("none", "tensorboard", "wandb")


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics line, under grouped names.

    Examples:
        >>> scalars({"loss": 0.5, "eval_exact": 0.25, "steps_per_s": 3, "step": 10, "x": None})
        {'train/loss': 0.5, 'eval/exact': 0.25, 'speed/steps_per_s': 3.0}
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        if key.startswith("eval_"):
            name = "eval/" + key[len("eval_"):]
        elif key in ("steps_per_s", "elapsed_s"):
            name = "speed/" + key
        else:
            name = "train/" + key
        out[name] = float(value)
    return out


class Tracker:
    """No tracking: the base class (``log`` and ``close`` do nothing)."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record one metrics line at ``step``."""

    def close(self) -> None:
        """Flush and release the tracker."""


class _TensorBoard(Tracker):
    def __init__(self, out: Path, config: Mapping[str, Any], start_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch imports tensorboard lazily
            raise ValueError("train.tracking=tensorboard needs the tensorboard package: "
                             "pip install 'eqsolve[tracking]' (or train.tracking=none)") from err
        # purge_step: a resumed run drops what a killed run logged after its checkpoint's step
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"),
                                    purge_step=start_step + 1 if start_step > 0 else None)
        if start_step == 0:
            self.writer.add_text("config", "```\n" + _config_text(config) + "\n```", 0)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        for name, value in scalars(metrics).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB(Tracker):
    def __init__(self, out: Path, config: Mapping[str, Any], project: str) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ValueError("train.tracking=wandb needs the wandb package: pip install wandb "
                             "(or train.tracking=none)") from err
        id_file = out / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(8)
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=project, id=run_id, resume="allow", dir=str(out),
                              config=dict(config), name=out.name)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log(scalars(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


def _config_text(config: Mapping[str, Any]) -> str:
    import json

    return json.dumps(config, indent=1, default=str)


def make_tracker(kind: str, out: str | Path, config: Mapping[str, Any], *, start_step: int = 0,
                 project: str = "eqsolve") -> Tracker:
    """The tracker ``kind`` (one of :data:`TRACKERS`) for run folder ``out``.

    Args:
        kind: ``"none"``, ``"tensorboard"`` or ``"wandb"``.
        out: the run folder.
        config: the run's resolved configuration (recorded by the tracker).
        start_step: the step the run starts or resumes from.
        project: the W&B project.

    Raises:
        ValueError: an unknown kind, or the tracker's package is not installed.
    """
    if kind == "none":
        return Tracker()
    if kind == "tensorboard":
        return _TensorBoard(Path(out), config, start_step)
    if kind == "wandb":
        return _WandB(Path(out), config, project)
    raise ValueError(f"train.tracking={kind!r} invalid; valid: {', '.join(TRACKERS)}")

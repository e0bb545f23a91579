"""Export a trained reasoner: a training checkpoint -> a small native weights file for shipping.

Usage (the shipped reasoners were exported with it)::

    python -m eqsolve.training.export runs/train-deq/last.pt eqsolve/assets/reasoner_deq.pt

The file holds the EMA weights (``--live``: the live ones) and, under ``extra``, the provenance
of the run (step, seed, commit, wall time, configs, pool fingerprint); it loads with
``EqR.from_checkpoint``. Measure it for a model card with :mod:`eqsolve.training.measure`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["export_reasoner"]


def export_reasoner(checkpoint: str | os.PathLike, dest: str | os.PathLike, *,
                    use_ema: bool = True) -> dict[str, Any]:
    """Write the weights of a training checkpoint as a small native EqR file (no optimizer).

    Args:
        checkpoint: training checkpoint (``last.pt``).
        dest: output file (atomic write), loadable with ``EqR.from_checkpoint``.
        use_ema: ship the EMA weights (the ones evaluated during training).

    Returns:
        The provenance stored under ``extra`` (step, seed, commit, wall time, configs, pool).
    """
    from eqsolve.models.checkpoint import save_checkpoint
    from eqsolve.models.eqr import EqR, EqRConfig
    from eqsolve.training.checkpoint import load_training_checkpoint

    ckpt = load_training_checkpoint(checkpoint)
    model = EqR(EqRConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["model"])
    train = ckpt["train"]
    commit = ckpt["extra"].get("commit")
    run_record = Path(checkpoint).with_name("config.json")  # written when the run started
    if run_record.is_file():
        commit = json.loads(run_record.read_text()).get("commit", commit)
    extra = {"step": train["step"], "weights": "ema" if use_ema and ckpt.get("ema") else "live",
             "commit": commit, "elapsed_s": train.get("elapsed_s"),
             "train_config": train["train_config"], "world": train.get("world", 1),
             "pool_fingerprint": train["pool_fingerprint"], "source": str(checkpoint)}
    save_checkpoint(model, dest, extra=extra)
    return extra


def main(argv: list[str] | None = None) -> None:
    """Command line: ``CHECKPOINT DEST [--live]``; prints the provenance as JSON."""
    parser = argparse.ArgumentParser(prog="python -m eqsolve.training.export",
                                     description="training checkpoint -> small weights file")
    parser.add_argument("checkpoint")
    parser.add_argument("dest")
    parser.add_argument("--live", action="store_true", help="ship the live weights, not the EMA")
    args = parser.parse_args(argv)
    print(json.dumps(export_reasoner(args.checkpoint, args.dest, use_ema=not args.live),
                     indent=1, default=str))


if __name__ == "__main__":
    main()

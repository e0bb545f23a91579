"""The bench's chunk journal: every evaluated chunk is on disk before the next one starts.

A bench run evaluates each grid cell on chunks of ``batch_size`` puzzles, each chunk with its own
seed, so a chunk's results do not depend on what ran before it. The journal appends one JSON
line per finished chunk to ``chunks-rank<r>.jsonl`` in the run folder (written, flushed and
fsynced before the next chunk starts). ``eqsolve bench --out DIR --resume`` reads the journals
of every rank back and evaluates only the chunks that are missing: a stopped run loses at most
the chunk it was computing, and the resumed results are those of an uninterrupted run.

A record is ``{"cell", "chunk", "seed", "n", "seconds", "arrays"}``: the cell key
(``label/d<depth>/b<breadth>``), the chunk index, its seed, its number of puzzles, the time it
took, and the per-puzzle arrays of :func:`eqsolve.bench.grid.evaluate_chunk` (JSON numbers are
exact for float64, so the round trip is too).

Examples:
    >>> import tempfile, numpy as np
    >>> folder = Path(tempfile.mkdtemp())
    >>> j = ChunkJournal(folder, rank=0)
    >>> j.record("anderson/d4/b1", 0, 7, {"correct": np.array([True, False])}, 0.5)
    >>> j.lookup("anderson/d4/b1", 0, 7, 2)[0]["correct"].tolist()
    [True, False]
    >>> ChunkJournal(folder, rank=0, resume=True).lookup("anderson/d4/b1", 0, 7, 2)[1]
    0.5
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from eqsolve.bench.stats import consecutive_depth_pairs

__all__ = ["JOURNAL_GLOB", "ChunkJournal", "journal_pairs", "journal_progress"]

log = logging.getLogger(__name__)

#: The journal files of a run folder (one per rank).
JOURNAL_GLOB = "chunks-rank*.jsonl"
_KEYS = {"cell", "chunk", "seed", "n", "seconds", "arrays"}


class ChunkJournal:
    """Records finished chunks of one rank; with ``resume``, first reads every rank's records.

    Args:
        folder: The run folder.
        rank: This process's rank (its own file: ranks never write to the same file).
        resume: Read the journals already in ``folder`` (an interrupted run being continued).

    Raises:
        ValueError: A journal line that is not a valid record (``file:line: problem``). Only an
            unfinished last line of a file (the process stopped while writing it) is skipped,
            with a warning.
    """

    def __init__(self, folder: str | os.PathLike, rank: int = 0, resume: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / f"chunks-rank{rank}.jsonl"
        self.done: dict[tuple[str, int], dict[str, Any]] = {}
        if resume:
            for file in sorted(self.folder.glob(JOURNAL_GLOB)):
                self._read(file)

    def _read(self, file: Path) -> None:
        lines = file.read_text(encoding="utf-8").split("\n")
        complete = lines[:-1]  # every record ends with a newline; the rest is an unfinished write
        if lines[-1].strip():
            log.warning("bench journal %s: ignoring an unfinished last record (the run stopped while "
                        "writing it); that chunk is evaluated again", file)
        for number, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{file}:{number}: not a JSON record ({exc})") from None
            if not isinstance(rec, dict) or set(rec) != _KEYS or not isinstance(rec["arrays"], dict):
                raise ValueError(f"{file}:{number}: not a bench chunk record (keys {sorted(_KEYS)})")
            if any(not isinstance(v, list) or len(v) != rec["n"] for v in rec["arrays"].values()):
                raise ValueError(f"{file}:{number}: arrays of a record disagree with its n={rec['n']}")
            self.done[(str(rec["cell"]), int(rec["chunk"]))] = rec

    def lookup(self, cell: str, chunk: int, seed: int, n: int) -> tuple[dict[str, np.ndarray], float] | None:
        """The recorded arrays and seconds of a chunk, or None if it has not run yet.

        Raises:
            ValueError: The record was made with another seed or chunk size (another grid).
        """
        rec = self.done.get((cell, chunk))
        if rec is None:
            return None
        if rec["seed"] != seed or rec["n"] != n:
            raise ValueError(f"{self.folder}: the journal's chunk {chunk} of {cell} was run with seed {rec['seed']} "
                             f"on {rec['n']} puzzles, this run asks for seed {seed} on {n}: not the same bench")
        arrays = {k: np.asarray(v, dtype=bool if k == "correct" else float) for k, v in rec["arrays"].items()}
        return arrays, float(rec["seconds"])

    def record(self, cell: str, chunk: int, seed: int, arrays: dict[str, np.ndarray], seconds: float) -> None:
        """Append a finished chunk (flushed and fsynced before returning)."""
        n = len(next(iter(arrays.values())))
        rec = {"cell": cell, "chunk": int(chunk), "seed": int(seed), "n": int(n), "seconds": float(seconds),
               "arrays": {k: np.asarray(v).tolist() for k, v in arrays.items()}}
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.done[(cell, int(chunk))] = rec


def journal_progress(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """What a bench run (running, stopped, or done) has evaluated so far, per cell.

    For each cell in the journals: the chunks and puzzles done, the exact accuracy on them, and
    the time spent. Read-only: safe on a run that is still going (an unfinished last line is
    skipped).

    Examples:
        >>> import tempfile, numpy as np
        >>> folder = Path(tempfile.mkdtemp())
        >>> ChunkJournal(folder).record("anderson/d4/b1", 0, 0, {"correct": np.array([True, False])}, 1.0)
        >>> journal_progress(folder)[0]["accuracy"]
        0.5
    """
    journal = ChunkJournal(folder, resume=True)
    cells: dict[str, dict[str, Any]] = {}
    for (cell, _), rec in sorted(journal.done.items()):
        row = cells.setdefault(cell, {"cell": cell, "chunks": 0, "puzzles": 0, "solved": 0, "seconds": 0.0})
        row["chunks"] += 1
        row["puzzles"] += rec["n"]
        row["solved"] += int(sum(bool(c) for c in rec["arrays"].get("correct", [])))
        row["seconds"] += float(rec["seconds"])
    for row in cells.values():
        row["accuracy"] = row["solved"] / row["puzzles"] if row["puzzles"] else None
    return list(cells.values())


def journal_pairs(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Consecutive depths of each (solver label, breadth), compared on the puzzles both have done.

    The paired form of :func:`journal_progress` (see :func:`eqsolve.bench.grid.depth_pairs`):
    usable while the deeper cell is still running, on the chunks it has finished.
    """
    journal = ChunkJournal(folder, resume=True)
    correct: dict[tuple[str, int, int], dict[int, np.ndarray]] = {}
    for (cell, chunk), rec in sorted(journal.done.items()):
        label, depth, breadth = cell.rsplit("/", 2)
        if not (depth.startswith("d") and breadth.startswith("b")):
            continue
        correct.setdefault((label, int(breadth[1:]), int(depth[1:])), {})[chunk] = np.asarray(
            rec["arrays"].get("correct", []), dtype=bool)
    return consecutive_depth_pairs(correct)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eqsolve.bench.journal",
                                     description="progress of a bench run folder, from its chunk journals")
    parser.add_argument("folder", help="the bench's run folder (--out)")
    args = parser.parse_args(argv)
    rows = journal_progress(args.folder)
    if not rows:
        print(f"{args.folder}: no chunk recorded yet")
        return 0
    print(f"{'cell':<28} {'chunks':>6} {'puzzles':>7} {'acc%':>6} {'seconds':>8}")
    for r in rows:
        print(f"{r['cell']:<28} {r['chunks']:>6} {r['puzzles']:>7} {100 * r['accuracy']:>6.1f} {r['seconds']:>8.1f}")
    for p in journal_pairs(args.folder):
        print(f"depth {p['from_depth']} -> {p['to_depth']} ({p['label']}, breadth {p['breadth']}) on the {p['n']} "
              f"puzzles both have done: {100 * p['acc_from']:.1f} -> {100 * p['acc_to']:.1f}%, +{p['gained']} solved, "
              f"-{p['lost']} lost (exact McNemar p = {p['p_value']:.3g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

"""Figures of ``eqsolve bench`` (matplotlib, Agg; no display needed).

Each function takes the bench's result rows (dicts with ``solver``, ``depth``, ``breadth``,
``nfe_mean``, ``accuracy``, ``n``, ``residual_mean``; see :mod:`eqsolve.bench.grid`) and writes
one PNG. Every accuracy is in percent with a binomial standard-error bar
(``sqrt(p (1 - p) / n)`` over the ``n`` problems of the cell).
Figures are built with :class:`matplotlib.figure.Figure` directly, so no global pyplot state or
interactive backend is touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eqsolve._io import atomic_write

Row = Mapping[str, Any]


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Render with the Agg canvas and write atomically (temp name + rename)."""
    path = Path(path)
    FigureCanvasAgg(fig)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, dpi=120, bbox_inches="tight"))


def binomial_se(row: Row) -> float:
    """Binomial standard error of a row's exact accuracy, in percent (0 without ``n``).

    Examples:
        >>> round(binomial_se({"accuracy": 0.5, "n": 100}), 6)
        5.0
    """
    n = int(row.get("n") or 0)
    p = float(row["accuracy"])
    return 100 * math.sqrt(p * (1 - p) / n) if n > 0 else 0.0


def _residual_label(kind: str) -> str:
    return {"rel": "relative residual ||F(z)-z|| / ||F(z)||",
            "abs": "absolute residual ||F(z)-z||"}.get(kind, f"{kind} residual")


def _solvers(rows: Sequence[Row]) -> list[str]:
    """Solver names in first-seen order."""
    return list(dict.fromkeys(_name(r) for r in rows))


def _name(row: Row) -> str:
    """A row's solver as the bench labels it: ``label`` (e.g. ``fixed_point(tau=0.5)``, so that
    one solver under two option sets is two lines), else ``solver``."""
    return str(row.get("label") or row["solver"])


def plot_accuracy_vs_nfe(rows: Sequence[Row], path: str | os.PathLike) -> Path:
    """Exact accuracy against mean NFE per puzzle, one line per (solver, breadth).

    Args:
        rows: Bench rows.
        path: Output PNG.

    Returns:
        The written path.

    Examples:
        >>> import tempfile, pathlib
        >>> rows = [{"solver": "anderson", "depth": d, "breadth": 1, "nfe_mean": d, "n": 20,
        ...          "accuracy": d / 10, "residual_mean": 1 / d} for d in (2, 4)]
        >>> plot_accuracy_vs_nfe(rows, pathlib.Path(tempfile.mkdtemp()) / "a.png").exists()
        True
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    _accuracy_lines(ax, rows, x="nfe_mean", per="breadth", label="{solver}, B={value}")
    _accuracy_axis(ax, rows)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("mean NFE per puzzle (all starts)")
    ax.set_ylabel("exact accuracy (%, ± binomial SE)")
    ax.set_title("Accuracy vs compute")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_accuracy_vs_breadth(rows: Sequence[Row], path: str | os.PathLike) -> Path:
    """Exact accuracy against breadth (random starts per problem), one line per (solver, depth).

    The paper's breadth-scaling figure: at a fixed depth, how much more is solved by running
    more starts and keeping one without a verifier (the bench's ``aggregate`` rule).

    Args:
        rows: Bench rows.
        path: Output PNG.

    Returns:
        The written path.

    Examples:
        >>> import tempfile, pathlib
        >>> rows = [{"solver": "anderson", "depth": 8, "breadth": b, "nfe_mean": 8 * b, "n": 20,
        ...          "accuracy": b / 10, "residual_mean": 0.1} for b in (1, 2, 4)]
        >>> plot_accuracy_vs_breadth(rows, pathlib.Path(tempfile.mkdtemp()) / "b.png").exists()
        True
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    _accuracy_lines(ax, rows, x="breadth", per="depth", label="{solver}, depth {value}")
    _accuracy_axis(ax, rows)
    breadths = sorted({int(r["breadth"]) for r in rows})
    if len(breadths) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(breadths, [str(b) for b in breadths])
    ax.set_xlabel("breadth (random starts per problem)")
    ax.set_ylabel("exact accuracy (%, ± binomial SE)")
    ax.set_title("Accuracy vs breadth")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))  # many lines: beside the axes
    return _save(fig, path)


def plot_accuracy_vs_residual(rows: Sequence[Row], path: str | os.PathLike, residual: str = "rel") -> Path:
    """Exact accuracy against mean final residual of the chosen start, one marker per grid cell.

    Args:
        rows: Bench rows.
        path: Output PNG.
        residual: the residual's kind, ``"rel"`` or ``"abs"`` (the bench's ``solver.stop``).

    Returns:
        The written path.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    plotted = 0
    for solver in _solvers(rows):
        cells = [r for r in rows if _name(r) == solver and _positive(r["residual_mean"])]
        plotted += len(cells)
        ax.errorbar(
            [float(r["residual_mean"]) for r in cells], [100 * float(r["accuracy"]) for r in cells],
            yerr=[binomial_se(r) for r in cells], fmt="o", capsize=3, label=solver, alpha=0.7,
        )
    _accuracy_axis(ax, rows)
    if plotted:
        ax.set_xscale("log")
        ax.legend(fontsize="small")
    else:  # every residual non-finite (a model with NaN weights): a log axis has nothing to show
        ax.text(0.5, 0.5, "no finite residual to plot", transform=ax.transAxes, ha="center")
    ax.set_xlabel(f"mean final {_residual_label(residual)} (chosen start)")
    ax.set_ylabel("exact accuracy (%, ± binomial SE)")
    ax.set_title("Accuracy vs residual (one marker per depth x breadth cell)")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _accuracy_lines(ax: Any, rows: Sequence[Row], *, x: str, per: str, label: str) -> None:
    """Accuracy (± binomial SE) against row key ``x``: one colour per solver and one line style
    per value of row key ``per``; ``label`` is formatted with ``solver`` and ``value``."""
    styles = ["-", "--", ":", "-."]
    values = sorted({int(r[per]) for r in rows})
    for index, solver in enumerate(_solvers(rows)):
        for value in sorted({int(r[per]) for r in rows if _name(r) == solver}):
            line = sorted((r for r in rows if _name(r) == solver and int(r[per]) == value),
                          key=lambda r: float(r[x]))
            ax.errorbar([float(r[x]) for r in line], [100 * float(r["accuracy"]) for r in line],
                        yerr=[binomial_se(r) for r in line], capsize=3, marker="o", color=f"C{index}",
                        linestyle=styles[values.index(value) % len(styles)],
                        label=label.format(solver=solver, value=value))


def _accuracy_axis(ax: Any, rows: Sequence[Row]) -> None:
    """Accuracy axis from 0, with head room (and a visible range when everything is 0)."""
    top = max((100 * float(r["accuracy"]) for r in rows), default=0.0)
    ax.set_ylim(0, min(100, max(5.0, 1.1 * top)))


def _positive(value: Any) -> bool:
    """True for finite positive numbers (plottable on a log axis)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(value) and value > 0


def plot_depth_breadth_heatmap(rows: Sequence[Row], path: str | os.PathLike) -> Path:
    """Exact accuracy on the depth × breadth grid, one panel per solver, values annotated.

    Args:
        rows: Bench rows.
        path: Output PNG.

    Returns:
        The written path.
    """
    solvers = _solvers(rows)
    depths = sorted({int(r["depth"]) for r in rows})
    breadths = sorted({int(r["breadth"]) for r in rows})
    fig = Figure(figsize=(3.2 * len(solvers) + 1.2, 0.5 * len(depths) + 2.2), layout="constrained")
    axes = fig.subplots(1, len(solvers), squeeze=False, sharey=True)[0]
    image = None
    for ax, solver in zip(axes, solvers):
        grid = [[math.nan] * len(breadths) for _ in depths]
        for r in rows:
            if _name(r) == solver:
                grid[depths.index(int(r["depth"]))][breadths.index(int(r["breadth"]))] = 100 * float(r["accuracy"])
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", origin="lower", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center",
                            color="white" if value < 60 else "black", fontsize=8)
        ax.set_xticks(range(len(breadths)), [str(b) for b in breadths])
        ax.set_yticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("breadth (starts)")
        ax.set_title(solver)
    axes[0].set_ylabel("depth (NFE per start)")
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="exact accuracy (%)")
    return _save(fig, path)


def write_bench_plots(rows: Sequence[Row], out_dir: str | os.PathLike, residual: str = "rel") -> dict[str, str]:
    """Write the bench figures into ``out_dir``.

    Args:
        rows: Bench rows.
        out_dir: Folder (the run folder).
        residual: the kind of the rows' residuals (``"rel"`` or ``"abs"``), for axis labels.

    Returns:
        Figure name → file name (relative to ``out_dir``).
    """
    out_dir = Path(out_dir)
    files = {
        "accuracy_vs_nfe": plot_accuracy_vs_nfe(rows, out_dir / "accuracy_vs_nfe.png"),
        "accuracy_vs_breadth": plot_accuracy_vs_breadth(rows, out_dir / "accuracy_vs_breadth.png"),
        "accuracy_vs_residual": plot_accuracy_vs_residual(rows, out_dir / "accuracy_vs_residual.png", residual),
        "depth_breadth_heatmap": plot_depth_breadth_heatmap(rows, out_dir / "depth_breadth_heatmap.png"),
    }
    return {name: p.name for name, p in files.items()}

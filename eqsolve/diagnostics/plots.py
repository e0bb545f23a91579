"""Figures of an attractor census (matplotlib, Agg backend; each function writes one PNG).

- `plot_accuracy_vs_residual`: accuracy against residual at each recorded depth, coloured by
  NFE (the paper's Figure 1 style);
- `plot_residual_traces`: residual per iteration of every start for a few problems;
- `plot_basin_fractions`: per problem, the share of starts in correct basins, spurious fixed
  points, cycles and nowhere, grouped by landscape mode;
- `plot_pca_end_states`: 2-D PCA of the end states of a few problems, coloured by correctness.

Example:
    >>> import torch, tempfile, pathlib
    >>> from eqsolve.diagnostics.census import FixedPointSystem, run_census
    >>> sys = FixedPointSystem(lambda s, x: 0.5 * s + x, lambda n, g: torch.randn(n, 2, generator=g))
    >>> run = run_census(sys, torch.ones(2, 2), n_starts=8, max_iter=30, tol=1e-6)
    >>> out = plot_residual_traces(run, pathlib.Path(tempfile.mkdtemp()) / "traces.png")
    >>> out.is_file()
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from eqsolve._io import atomic_write  # noqa: E402
from eqsolve.diagnostics.calibration import accuracy_vs_residual  # noqa: E402
from eqsolve.diagnostics.modes import MODES  # noqa: E402
from eqsolve.diagnostics.records import CensusRun  # noqa: E402

_OK, _BAD, _UNKNOWN = "tab:green", "tab:red", "tab:gray"


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Write atomically (temp file in the same folder, then rename) and close the figure."""
    try:
        return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_accuracy_vs_residual(run: CensusRun, path: str | os.PathLike, n_bins: int = 6) -> Path:
    """Accuracy against residual (quantile bins) at every recorded depth, coloured by NFE.

    Args:
        run: census with `checkpoint_correct` (needs an answer check).
        path: PNG to write.
        n_bins: residual bins per depth.

    Returns:
        The written path.
    """
    if run.checkpoint_correct is None:
        raise ValueError("accuracy vs residual needs correctness (system.is_correct)")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    nfe = run.checkpoint_nfe.reshape(run.checkpoint_nfe.shape[0], -1).mean(axis=1)
    norm = matplotlib.colors.LogNorm(vmin=max(nfe.min(), 1), vmax=max(nfe.max(), 2))
    cmap = plt.get_cmap("viridis")
    for k in range(nfe.size):
        res = run.checkpoint_residual[k].reshape(-1).astype(np.float64)
        ok = run.checkpoint_correct[k].reshape(-1)
        keep = np.isfinite(res) & (res > 0)
        if keep.sum() < 2:
            continue
        b = accuracy_vs_residual(res[keep], ok[keep], n_bins=n_bins)
        color = cmap(norm(max(nfe[k], 1)))
        ax.plot(b["mean_residual"], b["accuracy"], "o-", color=color, ms=4, lw=1)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels overlap otherwise
    ax.set_xlabel("residual at the end state (binned)")
    ax.set_ylabel("accuracy of starts")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="NFE per start")
    ax.set_title("accuracy vs residual, by depth")
    return _save(fig, path)


def plot_residual_traces(run: CensusRun, path: str | os.PathLike,
                         problems: Sequence[int] | None = None, max_starts: int = 64) -> Path:
    """Residual per iteration of every start, one panel per problem.

    Args:
        run: census (traces are recorded by `run_census`).
        path: PNG to write.
        problems: problem indices (default: the first four).
        max_starts: starts drawn per problem (the first ones).

    Returns:
        The written path.
    """
    problems = list(problems if problems is not None else range(min(4, len(run.censuses))))
    fig, axes = plt.subplots(1, len(problems), figsize=(3.2 * len(problems), 3), squeeze=False,
                             sharey=True)
    for ax, i in zip(axes[0], problems):
        c = run.censuses[i]
        lines, colors = [], []
        for s in range(min(c.n_starts, max_starts)):
            tr = c.trace[s]
            keep = np.isfinite(tr) & (tr > 0)
            if keep.sum() >= 1:
                lines.append(np.column_stack([np.flatnonzero(keep), tr[keep]]))
                colors.append(_UNKNOWN if c.correct is None else (_OK if c.correct[s] else _BAD))
        # one collection per panel: far faster than one line artist per start
        ax.add_collection(LineCollection(lines, colors=colors, linewidths=0.7, alpha=0.6))
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.autoscale()
        ax.set_title(f"problem {i}", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("residual")
    fig.suptitle("residual traces (green: correct end state, red: wrong)", fontsize=9)
    return _save(fig, path)


def basin_breakdown(run: CensusRun) -> np.ndarray:
    """(N, 4) share of starts per problem: correct attractors, spurious fixed points, wrong
    cycles/oscillations, no attractor."""
    out = np.zeros((len(run.censuses), 4))
    for i, c in enumerate(run.censuses):
        for a in c.attractors:
            col = 0 if a.correct else (1 if a.kind == "fixed_point" else 2)
            out[i, col] += a.basin_fraction
        out[i, 3] = 1.0 - out[i, :3].sum()
    return out


def plot_basin_fractions(run: CensusRun, modes: Sequence[str], path: str | os.PathLike) -> Path:
    """Stacked basin shares per problem, problems grouped by mode.

    Args:
        run: census (with correctness).
        modes: mode of each problem (see `eqsolve.diagnostics.modes`).
        path: PNG to write.

    Returns:
        The written path.
    """
    parts = basin_breakdown(run)
    order = sorted(range(len(modes)), key=lambda i: (MODES.index(modes[i]), -parts[i, 0]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(order) + 2), 3.5))
    bottom = np.zeros(len(order))
    labels = ("correct attractors", "spurious fixed points", "wrong cycles / oscillations",
              "no attractor")
    colors = (_OK, _BAD, "tab:orange", "lightgray")
    for col, (label, color) in enumerate(zip(labels, colors)):
        ax.bar(np.arange(len(order)), parts[order, col], bottom=bottom, color=color, label=label,
               width=0.85)
        bottom += parts[order, col]
    # mode group boundaries and labels
    start = 0
    for m in MODES:
        n = sum(modes[i] == m for i in order)
        if n:
            ax.axvline(start - 0.5, color="k", lw=0.6)
            ax.text(start + n / 2 - 0.5, 1.03, m, ha="center", fontsize=7)
            start += n
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylim(0, 1.12)
    ax.set_xticks([])
    ax.set_xlabel("problems, grouped by mode")
    ax.set_ylabel("fraction of starts")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    ax.set_title("basin fractions per problem, grouped by landscape mode", fontsize=9)
    return _save(fig, path)


def pca_2d(states: torch.Tensor) -> np.ndarray:
    """(S, n) states -> (S, 2) coordinates on the top two principal components."""
    x = states.double() - states.double().mean(dim=0, keepdim=True)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2))
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    coords = x @ vh[:2].T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - coords.shape[1],
                                                dtype=coords.dtype)], dim=1)
    return coords.numpy()


def plot_pca_end_states(run: CensusRun, path: str | os.PathLike,
                        problems: Sequence[int] | None = None) -> Path:
    """2-D PCA of end states per problem; colour = correctness, marker = converged or not.

    Args:
        run: census run with `keep_states=True`.
        path: PNG to write.
        problems: problem indices (default: the first four).

    Returns:
        The written path.
    """
    problems = list(problems if problems is not None else range(min(4, len(run.censuses))))
    fig, axes = plt.subplots(1, len(problems), figsize=(3.2 * len(problems), 3.1), squeeze=False)
    for ax, i in zip(axes[0], problems):
        c = run.censuses[i]
        if c.end_states is None:
            raise ValueError("PCA needs end states: run the census with keep_states=True")
        xy = pca_2d(c.end_states)
        colors = np.array([_UNKNOWN] * c.n_starts, dtype=object)
        if c.correct is not None:
            colors = np.where(c.correct, _OK, _BAD)
        conv = c.outcome == "converged"
        ax.scatter(xy[conv, 0], xy[conv, 1], c=list(colors[conv]), marker="o", s=18,
                   label="converged")
        ax.scatter(xy[~conv, 0], xy[~conv, 1], c=list(colors[~conv]), marker="x", s=18,
                   label="not converged")
        ax.set_title(f"problem {i}: {len(c.attractors)} attractor(s)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    fig.suptitle("end states, PCA (green: correct, red: wrong)", fontsize=9)
    return _save(fig, path)

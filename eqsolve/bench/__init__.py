"""``eqsolve bench``: a solver against plain iteration over a depth × breadth grid, on any task.

Modules: :mod:`~eqsolve.bench.grid` (the grid run: reasoner and puzzle loading, cells, chunks,
processes, the summary table) and :mod:`~eqsolve.bench.plots` (its figures; matplotlib is
imported only there). The package imports nothing itself.
"""

"""The solve loop: :func:`solve` runs the :class:`~eqsolve.solvers._engine.Engine` with the
:class:`~eqsolve.solvers._engine.Tolerance` stop rule, and adds compaction, traces and snapshots.

Every solver only supplies ``init``/``step``; *when* a row stops and *what* is returned (status,
best iterate, NFE) is the engine's, shared with every other driver. Bookkeeping stays on the
device; the host looks at it only every ``check_every`` steps (one sync), which is when finished rows leave the active set. By default
that is every step on the CPU (a look costs next to nothing there, and finished rows leave at
once) and every :data:`DEVICE_CHECK_EVERY` steps on an accelerator, where a look stalls the
queue of kernels; in between, rows that stopped are frozen on the device.

Finished rows leave through :func:`~eqsolve.solvers._base.compact_rows`: the solver's history
buffers are not copied, the surviving rows at the tail move into the holes instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._base import check_backend, flat_map
from ._engine import Engine, Tolerance
from ._registry import resolve_solver
from ._solution import Solution, SolveError, Status

__all__ = ["DEVICE_CHECK_EVERY", "solve"]

#: ``check_every`` used by default off the CPU (CUDA and other accelerators).
DEVICE_CHECK_EVERY = 8

def _check_inputs(z0: Any, args: tuple, stop: str, tol: Any, max_iter: Any, check_every: Any,
                  diverge_factor: Any, stall_window: Any, inference: Any = None) -> None:
    if not isinstance(z0, Tensor):
        raise TypeError(f"z0 must be a tensor, got {type(z0).__name__}")
    if z0.dim() < 1 or z0.shape[0] == 0 or z0.numel() == 0:
        raise ValueError(f"z0 must have shape (B, ...) with B >= 1 and a non-empty row, got {tuple(z0.shape)}")
    if not z0.is_floating_point():
        raise TypeError(f"z0 must be a floating-point tensor, got dtype {z0.dtype}")
    if stop not in ("rel", "abs"):
        raise ValueError(f"stop={stop!r} is invalid; valid: 'rel', 'abs'")
    if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol={tol!r} is invalid: must be a finite number >= 0")
    for name, value, low in (("max_iter", max_iter, 0), ("check_every", check_every, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}={value!r} is invalid: must be an int >= {low}")
    if diverge_factor is not None and not (isinstance(diverge_factor, (int, float)) and diverge_factor > 1):
        raise ValueError(f"diverge_factor={diverge_factor!r} is invalid: must be a number > 1 or None")
    if inference is not None and not isinstance(inference, bool):
        raise ValueError(f"inference={inference!r} is invalid: must be True, False or None")
    if stall_window is not None and not (isinstance(stall_window, int) and stall_window >= 1):
        raise ValueError(f"stall_window={stall_window!r} is invalid: must be an int >= 1 or None")
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and (a.dim() == 0 or a.shape[0] != z0.shape[0]):
            raise ValueError(
                f"args[{i}] has shape {tuple(a.shape)} but every tensor in args must be batch-first "
                f"with batch {z0.shape[0]} like z0 (put shared tensors in f's closure)"
            )


def default_check_every(device: torch.device) -> int:
    """``check_every`` when none is given: 1 on the CPU, :data:`DEVICE_CHECK_EVERY` elsewhere."""
    return 1 if torch.device(device).type == "cpu" else DEVICE_CHECK_EVERY


def solve(
    f: Callable[..., Tensor],
    z0: Tensor,
    *args: Any,
    solver: Any = "anderson",
    tol: float = 1e-4,
    stop: str = "rel",
    max_iter: int = 50,
    compact: bool = True,
    trace: bool = False,
    check_every: int | None = None,
    throw: bool = False,
    diverge_factor: float | None = 1e4,
    stall_window: int | None = 30,
    snapshots: Any = (),
    inference: bool | None = None,
    compile_bookkeeping: str | None = None,
    **solver_options: Any,
) -> Solution:
    """Find ``z`` with ``f(z, *args) = z`` for every row of a batch, each row stopping on its own.

    Args:
        f: the map, ``f(z, *args) -> `` a tensor of the shape of ``z``. Rows must be independent
            unless ``compact=False``.
        z0: ``(B, ...)`` starting point, float32 or float64, any device.
        *args: extra inputs of ``f``; every tensor in them is batch-first and is sliced with ``z``.
        solver: a registered name (see :func:`available_solvers`) or a solver object.
        tol: stop a row when its residual of kind ``stop`` is ``<= tol``.
        stop: ``"rel"`` (``||f(z)-z|| / (||f(z)|| + 1e-8)``) or ``"abs"`` (``||f(z)-z||``).
        max_iter: maximum number of solver steps after the first evaluation ``f(z0)``.
        compact: if True, rows that stopped leave the batch and ``f`` only sees running rows
            (saves compute). If False, stopped rows stay in the batch, frozen (``f`` still sees
            them): use it for maps that couple rows.
        trace: record the residual of every step in ``Solution.trace``.
        check_every: look at the stopping state on the host (one sync) only every this many
            steps; stopped rows are frozen, not advanced, in between. None: 1 on the CPU,
            :data:`DEVICE_CHECK_EVERY` on other devices. It changes no row's result.
        throw: raise :class:`SolveError` listing the failed rows if any row did not converge.
        diverge_factor: a row is ``DIVERGED`` at step ``k`` when (a) its absolute residual
            ``||f(z_k) - z_k||`` exceeds this factor times the smallest one it reached, or (b) its
            iterate ran away from the row's starting scale:
            ``||f(z_k)|| > diverge_factor * (||f(z_0)|| + ||f(z_0) - z_0||)`` (norms of the
            flattened row; the scale bounds ``||z_0||`` and ``||f(z_0)||``). (b) overrides a
            residual within ``tol``: that far out a relative residual proves nothing (``f(z) =
            z + c`` has no fixed point, yet ``||c|| / ||z + c|| -> 0`` as ``||z|| -> inf``, and in
            float32 ``f(z) - z`` even rounds to 0), and such an iterate is never returned as the
            best one. For a q-contraction the fixed point lies within ``(2 - q) / (1 - q)`` times
            that scale, and plain or damped iterates within ``(3 - q) / (1 - q)`` times it, so (b)
            only trips on a nearly non-contracting map (``1 / (1 - q)`` close to the factor) or
            on another map whose fixed point lies more than the factor times the scale away:
            give those a larger factor. None: neither test.
        stall_window: a row is ``STAGNATED`` when its best residual has not dropped by 1% in this
            many steps (None: never).
        snapshots: step numbers after which the best iterate of every row is recorded in
            ``Solution.snapshots`` (steps beyond the last one taken record the final result).
        inference: run the loop (``f`` included) in ``torch.inference_mode``: the same results
            with less per-op overhead (up to about a quarter of a small problem's time). None (default): when
            autograd is off. The returned tensors are ordinary ones either way (usable in a graph
            later, e.g. a DEQ's ``f(z*)``). Pass False when ``f`` uses autograd inside, or keeps a
            tensor it creates (a cache built on its first call would be an inference tensor, which
            a later graph cannot save for backward); eqsolve's DEQ layer, gradient strategies
            and torchdeq adapter solve with False.
        compile_bookkeeping: run each step's per-row bookkeeping (residual norms, best iterates,
            health records, stop tests) through ``torch.compile`` with this backend
            (``"inductor"``), unless the iterates carry a graph: a few fused kernels instead of
            about 30 small ops. Meant for GPUs, where every op is a kernel launch; on the CPU it
            costs 1.04-1.75x the eager time (``benchmarks/results/solvers_compile.md``), and the
            first call compiles (seconds). The same results up to the rounding of the fused norms.
            None (default): eager. (A solver's own ``compile`` option compiles its update.)
        **solver_options: options of the named solver (an error if ``solver`` is an object).

    Returns:
        A :class:`Solution` with the best iterate of every row, its residuals, NFE, steps and
        status.

    Raises:
        ValueError: invalid option or input (the message names it and lists valid values).
        SolveError: with ``throw=True``, if some rows did not converge.

    Examples:
        >>> import torch
        >>> W = 0.9 * torch.eye(8)
        >>> x = torch.randn(16, 8)
        >>> sol = solve(lambda z, x: torch.tanh(z @ W + x), torch.zeros(16, 8), x, tol=1e-6)
        >>> bool(sol.converged.all()), bool((sol.rel_residual <= 1e-6).all())
        (True, True)
    """
    algo = resolve_solver(solver, solver_options)
    if check_every is None and isinstance(z0, Tensor):
        check_every = default_check_every(z0.device)
    _check_inputs(z0, args, stop, tol, max_iter, check_every, diverge_factor, stall_window, inference)
    check_backend("compile_bookkeeping", compile_bookkeeping)
    g = flat_map(f, z0.shape[1:])
    # Rows may be frozen while still in the batch only when the host has not looked yet.
    freeze = (not compact) or check_every > 1
    # Under no_grad the whole loop runs in inference mode (less per-op bookkeeping: up to about a
    # quarter of a small problem's time); the outputs are copied out as ordinary tensors below.
    use_inference = (not torch.is_grad_enabled()) if inference is None else inference
    # (not torch.inference_mode(False): that switches autograd back on under no_grad)
    try:
        with torch.inference_mode() if use_inference else contextlib.nullcontext():
            sol = _run(algo, g, z0, args, tol=tol, stop=stop, max_iter=max_iter, compact=compact, trace=trace,
                       check_every=check_every, diverge_factor=diverge_factor, stall_window=stall_window,
                       snapshots=snapshots, freeze=freeze, compile_bookkeeping=compile_bookkeeping)
    except RuntimeError as e:
        # autograd inside f fails in inference mode, e.g. "element 0 of tensors does not require grad"
        if use_inference and any(word in str(e) for word in ("nference", "grad")):
            _add_note(e, "solve() ran f in torch.inference_mode because autograd was off; a map that needs "
                         "autograd inside, e.g. one that differentiates an energy, must pass inference=False")
        raise
    if use_inference:
        sol = sol.copied()
    if throw and not bool(sol.converged.all()):
        raise SolveError(sol.describe_failures())
    return sol


def _add_note(e: BaseException, note: str) -> None:
    """Attach a hint to an exception without changing its type (PEP 678 where available)."""
    if hasattr(e, "add_note"):  # Python >= 3.11
        e.add_note(note)
    else:
        e.args = (f"{e.args[0]}\n({note})", *e.args[1:]) if e.args else (note,)


def _run(algo: Any, g: Callable[..., Tensor], z0: Tensor, args: tuple, *, tol: float, stop: str, max_iter: int,
         compact: bool, trace: bool, check_every: int, diverge_factor: float | None, stall_window: int | None,
         snapshots: Any, freeze: bool, compile_bookkeeping: str | None) -> Solution:
    """The loop of :func:`solve` on validated inputs (``g`` is the flat map)."""
    batch, shape = z0.shape[0], z0.shape[1:]
    device, idx_dtype = z0.device, torch.int64
    # no history longer than the run (same iterates, smaller buffers and passes)
    eng = Engine(algo.sized_for(max_iter), g, Tolerance(float(tol)), stop=stop, diverge_factor=diverge_factor,
                 stall_window=stall_window, freeze=freeze, compile=compile_bookkeeping)
    eng.admit(z0.reshape(batch, -1), args)
    idx = torch.arange(batch, device=device)  # original row of each active row

    # Full-batch outputs, written when rows leave (and at the end).
    out_z = z0.reshape(batch, -1).clone()
    out_abs = z0.new_full((batch,), math.inf)
    out_rel = z0.new_full((batch,), math.inf)
    out_nfe = torch.zeros(batch, dtype=idx_dtype, device=device)
    out_nstep = torch.zeros(batch, dtype=idx_dtype, device=device)
    out_status = torch.full((batch,), int(Status.MAX_ITER), dtype=idx_dtype, device=device)
    trace_bufs = {kind: z0.new_full((batch, max_iter + 1), math.nan) for kind in ("abs", "rel")} if trace else {}
    snap_steps = sorted({int(s) for s in snapshots})
    if snap_steps and snap_steps[0] < 0:
        raise ValueError(f"snapshots={list(snapshots)!r} is invalid: steps must be >= 0")
    snaps: list[Tensor] = []

    def flush() -> None:
        assert eng.state is not None
        out_z[idx] = eng.best_z.detach().to(out_z.dtype)
        out_abs[idx], out_rel[idx] = eng.best_abs.detach(), eng.best_rel.detach()
        out_nfe[idx], out_nstep[idx], out_status[idx] = eng.state.nfe, eng.nstep, eng.status

    k = 0
    while True:
        # --- observe the current iterate of every active row (no host sync) ---
        # Without freezing the host looks at this very step: find the rows that go on with few
        # ops, and work out why the others stopped only when some did (rare).
        going = eng.observe(lazy=not freeze)
        for kind, buf in trace_bufs.items():
            value = eng.abs_residual if kind == "abs" else eng.rel_residual
            assert value is not None
            buf[idx, k] = value if eng.live is None else torch.where(eng.live, value, math.nan)

        if k in snap_steps:
            snap = out_z.clone()
            snap[idx] = eng.best_z.detach().to(snap.dtype)
            snaps.append(snap.view(batch, *shape))

        # --- host look: drop finished rows, or leave when none is left ---
        if k % check_every == 0 or k == max_iter:
            if compact:
                keep = (going if not freeze else ~eng.done).nonzero().flatten()  # the one host sync
                if keep.numel() < idx.numel():
                    if not freeze:
                        eng.settle()
                    flush()
                    if keep.numel() == 0:
                        break
                    # The history buffers stay put (no copy); everything aligned with the
                    # state's rows follows the same order.
                    idx = idx[eng.drop(keep)]
            elif bool(eng.done.all()):
                break
        if k == max_iter:
            break

        # --- one step of the solver on the active rows (frozen rows keep their state) ---
        eng.advance()
        k += 1

    flush()
    traces = {kind: buf[:, : k + 1] for kind, buf in trace_bufs.items()}
    z_out = out_z.view(batch, *shape)
    snaps += [z_out.clone() for s in snap_steps if s > k]
    sol = Solution(
        z=z_out, abs_residual=out_abs, rel_residual=out_rel, nfe=out_nfe, nstep=out_nstep,
        status=out_status, trace=traces.get(stop), stop=stop, tol=float(tol),
        abs_trace=traces.get("abs"), rel_trace=traces.get("rel"), snapshots=snaps,
    )
    return sol

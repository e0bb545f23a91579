"""The solver protocol shared by every algorithm, and the helpers that act on solver states.

A solver is a small frozen dataclass whose fields are its options. It works on flattened
iterates ``z`` of shape ``(B, n)`` and a map ``f(z, *args) -> (B, n)``:

- ``state = solver.init(f, z0, args)`` evaluates ``f(z0)`` once and returns a state;
- ``state = solver.step(f, state, args)`` takes one step (normally one evaluation of ``f``).

A state is a dataclass whose tensor fields are all batch-first, so that the solver engine in
:mod:`eqsolve.solvers._engine` can drop finished rows and freeze rows without knowing the
algorithm. Every state carries ``z`` (current iterate), ``fz = f(z)`` and ``nfe`` (``(B,)``
int64 evaluations of ``f`` spent per row).

**State ownership (the one rule).** The fields named in a state class's ``BUFFERS`` (the
preallocated history, e.g. Anderson's ``dG``/``dX``) are owned by the state:

1. When a step builds no autograd graph (autograd is off, or neither the state nor ``f``'s
   output requires grad: :func:`builds_graph`), ``step`` may write into the buffers of the
   state it is given, and the state it returns shares those buffers. The given state's buffers
   are then stale: step it again or read its history and you get the new history, not the old
   one. Keep a copy of the buffer fields (:func:`copy_buffers`) if an earlier state must be
   stepped again.
2. ``step`` never writes into a non-buffer field of the given state (``z``, ``fz``, ``nfe``,
   masks, cached products), nor into ``z0``, ``f``'s outputs or ``args``; and no non-buffer
   field of the state it returns shares memory with a buffer. So a caller may keep
   ``state.z`` and ``state.fz`` of any state without copying (they may be shared between
   states: plain iteration's new ``z`` is the old ``fz``).
3. When a step builds a graph (autograd on, and a field of the state or ``f``'s output requires
   grad), ``step`` writes into nothing it was given (buffers included: it returns updated
   copies), so unrolled steps can be differentiated, also from a state computed without a graph.
4. Whoever holds a state may reorder or shrink its rows in place (:func:`compact_rows`), which
   touches only the buffers, and only when they take part in no graph.

``tests/solvers/test_solvers_state_contract.py`` checks this rule for every registered solver.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor

__all__ = [
    "FlatMap", "Solver", "SolverState", "batched_combine", "batched_dot", "compact_rows", "copy_buffers",
    "builds_graph", "check_backend", "compiled", "const", "describe_options", "flat_map", "option", "select_rows", "slot_masks", "take_rows", "widen", "write_diff",
    "write_slot",
]

StateT = TypeVar("StateT", bound="SolverState")
FlatMap = Callable[..., Tensor]


def option(default: Any, doc: str) -> Any:
    """A solver option: a dataclass field with a default and a one-line doc (for the CLI)."""
    return field(default=default, metadata={"doc": doc})


def describe_options(cls: type) -> list[dict[str, Any]]:
    """The options of an option dataclass (a solver, a gradient strategy) as plain dicts.

    Each is ``{"name", "default", "type", "doc"}`` (``default`` None where the field has none).
    """
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append({"name": f.name, "default": default, "type": typ, "doc": f.metadata.get("doc", "")})
    return out


@dataclass
class SolverState:
    """Fields every solver state has. Subclasses add their own batch-first tensors.

    Attributes:
        z: ``(B, n)`` current iterate.
        fz: ``(B, n)`` ``f(z)``.
        nfe: ``(B,)`` int64, evaluations of ``f`` spent on each row so far.
    """

    #: Names of the history buffers the state owns (see the module docstring).
    BUFFERS: ClassVar[tuple[str, ...]] = ()

    z: Tensor
    fz: Tensor
    nfe: Tensor


class Solver(Generic[StateT]):
    """Base class of the solvers (subclasses are frozen dataclasses; fields are options).

    Generic over the state type ``StateT`` its ``init`` returns and its ``step`` takes.
    """

    def init(self, f: FlatMap, z0: Tensor, args: Sequence[Any]) -> StateT:
        """Evaluate ``f(z0, *args)`` and build the initial state. ``z0`` is ``(B, n)``."""
        raise NotImplementedError

    def step(self, f: FlatMap, state: StateT, args: Sequence[Any]) -> StateT:
        """Take one step from ``state`` and return the new state.

        Only the history buffers (``type(state).BUFFERS``) of ``state`` may be updated in place,
        and only with autograd off; see the state-ownership rule in :mod:`eqsolve.solvers._base`.
        """
        raise NotImplementedError

    def sized_for(self, steps: int) -> Solver[StateT]:
        """This solver for runs of at most ``steps`` steps per row: the same iterates, no unused history.

        A history longer than the steps a row can take is never filled; solvers with one
        (Anderson's ``m``, Broyden's ``memory``) return a copy with it shortened to ``steps``,
        so their buffers, history passes and small solves are no larger than the run needs.
        The default returns the solver itself.
        """
        return self

    @classmethod
    def option_names(cls) -> list[str]:
        """Names of the options this solver accepts."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def _check(cond: bool, name: str, value: Any, requirement: str) -> None:
    if not cond:
        raise ValueError(f"option {name}={value!r} is invalid: {requirement}")


def check_real(name: str, value: Any, low: float | None = None, high: float | None = None,
               low_open: bool = False) -> None:
    """Raise ValueError unless ``value`` is a real number in the given range."""
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), name, value, "must be a number")
    _check(value == value, name, value, "must not be NaN")
    if low is not None:
        ok = value > low if low_open else value >= low
        _check(ok, name, value, f"must be {'>' if low_open else '>='} {low}")
    if high is not None:
        _check(value <= high, name, value, f"must be <= {high}")


def check_int(name: str, value: Any, low: int) -> None:
    """Raise ValueError unless ``value`` is an int >= ``low``."""
    _check(isinstance(value, int) and not isinstance(value, bool), name, value, "must be an int")
    _check(value >= low, name, value, f"must be >= {low}")


def check_backend(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a ``torch.compile`` backend name or None."""
    _check(value is None or isinstance(value, str), name, value, "must be a torch.compile backend name or None")


@functools.cache
def compiled(fn: Callable[..., Any], backend: str) -> Callable[..., Any]:
    """``fn`` through ``torch.compile`` with ``backend`` and dynamic shapes (compaction shrinks
    the batch), made once per function and backend."""
    return torch.compile(fn, backend=backend, dynamic=True)


#: A new pair whose Schur complement against the stored ones is below this (a difference of norm
#: below ~1e-100: only in float64, far past convergence) is not stored: a kept inverse ~ 1 / Schur
#: would overflow. (Anderson's and Broyden's kept inverses.)
MIN_SCHUR = 1e-200


@functools.lru_cache(maxsize=256)
def slot_masks(n: int, slot: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(e, keep)`` for an n-slot history: the one-hot ``(n,)`` vector of ``slot`` and the ``(n, n)``
    mask that zeroes its row and column. Made once per size, slot, dtype and device (read only;
    ordinary tensors, also when first asked for in inference mode, so that a graph may use them)."""
    with torch.inference_mode(False):
        e = torch.zeros(n, dtype=dtype, device=device)
        e[slot] = 1.0
        keep = 1.0 - e
        return e, keep[:, None] * keep[None, :]


_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # (torch >= 2.3)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=512)
def _const(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # an ordinary tensor, usable in a graph later
        return torch.tensor(value, dtype=dtype, device=device)


def const(value: float, like: Tensor) -> Tensor:
    """``value`` as a cached 0-dim tensor of ``like``'s dtype and device (read only).

    An op with a Python number first wraps the number in a tensor: on the CPU that is about
    1.5 us of the 1-2.5 us a small op costs. The per-step bookkeeping of the solvers and the
    engine uses this instead; the results are the same (a 0-dim operand promotes like a number).
    It returns the number itself for float16 and bfloat16 (ops compute with a number in float32
    there, with a 0-dim tensor of that dtype in its own precision) and under ``torch.compile``
    (which takes numbers as constants).
    """
    if like.dtype in _LOW_PRECISION or _is_compiling():
        return value  # type: ignore[return-value]
    return _const(value, like.dtype, like.device)


def _rows_view(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(mask.shape[0], *([1] * (like.dim() - 1)))


def take_rows(state: StateT, index: Tensor) -> StateT:
    """Keep the rows ``index`` (an int64 index tensor) of every tensor field of ``state``."""
    updates = {
        f.name: getattr(state, f.name)[index]
        for f in dataclasses.fields(state)
        if isinstance(getattr(state, f.name), Tensor)
    }
    return dataclasses.replace(state, **updates)


def select_rows(mask: Tensor, if_true: StateT, if_false: StateT) -> StateT:
    """Row-wise ``where(mask, if_true, if_false)`` over every tensor field of two states."""
    updates = {}
    for f in dataclasses.fields(if_true):
        a, b = getattr(if_true, f.name), getattr(if_false, f.name)
        # A buffer updated in place is the same tensor in both states: nothing to select (the
        # masked rows' history then holds the step they did not take; they are finished rows).
        if isinstance(a, Tensor) and a is not b:
            updates[f.name] = torch.where(_rows_view(mask, a), a, b)
    return dataclasses.replace(if_false, **updates)


def copy_buffers(state: StateT) -> StateT:
    """``state`` with private copies of its history buffers (safe from later in-place steps)."""
    return dataclasses.replace(state, **{name: getattr(state, name).clone() for name in type(state).BUFFERS})


def compact_rows(state: StateT, keep: Tensor) -> tuple[StateT, Tensor]:
    """Keep the rows ``keep`` (sorted int64 indices) of a state, moving as little data as possible.

    The history buffers are not copied: the kept rows that lie beyond ``len(keep)`` move into
    the holes left by dropped rows below it, and the state keeps the first ``len(keep)`` rows of
    each buffer as a view (so the cost is proportional to the dropped rows, not the kept ones).
    The other fields are indexed (copied; they are small). With autograd on, or for a state
    without buffers, this is :func:`take_rows`.

    Returns:
        ``(state, order)``: the compacted state and the ``(len(keep),)`` indices of the old rows
        now at each position (apply ``order`` to anything aligned with the state's rows).
    """
    n = keep.numel()
    names = type(state).BUFFERS
    if not names or builds_graph(state):
        return take_rows(state, keep), keep
    batch = getattr(state, names[0]).shape[0]
    # Old row now at each new position: itself where it stays, a mover from the tail in a hole.
    stays = torch.zeros(batch, dtype=torch.bool, device=keep.device)
    stays[keep] = True
    head = stays[:n]
    holes = (~head).nonzero().flatten()
    movers = keep[keep >= n]
    order = torch.arange(n, device=keep.device)
    order[holes] = movers
    updates = {}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if not isinstance(value, Tensor):
            continue
        if f.name in names:
            if holes.numel():
                value[holes] = value[movers]
            updates[f.name] = value[:n]
        else:
            updates[f.name] = value[order]
    return dataclasses.replace(state, **updates), order


def flat_map(f: Callable[..., Tensor], shape: torch.Size | Sequence[int]) -> FlatMap:
    """Wrap ``f(z, *args)`` on ``(B, *shape)`` tensors as a map on flattened ``(B, n)`` rows.

    Args:
        f: the user's map; must return a tensor of the same shape as its input ``z``.
        shape: the per-row shape of ``z`` (without the batch dimension).

    Returns:
        ``g(z_flat, *args) -> (B, n)``; raises ValueError if ``f`` returns the wrong shape.

    Examples:
        >>> import torch
        >>> g = flat_map(lambda z: z.transpose(1, 2), (2, 2))
        >>> g(torch.arange(8.0).view(2, 4))[0].tolist()
        [0.0, 2.0, 1.0, 3.0]
    """
    shape = tuple(shape)

    def g(z: Tensor, *args: Any) -> Tensor:
        b = z.shape[0]
        out = f(z.view(b, *shape), *args)
        if not isinstance(out, Tensor) or tuple(out.shape) != (b, *shape):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"f(z) must return a tensor of the same shape as z {(b, *shape)}, got {got}")
        return out.reshape(b, -1)

    return g


def batched_dot(buf: Tensor, v: Tensor) -> Tensor:
    """``(B, m)`` dot products of every row ``buf[b, i]`` of ``(B, m, n)`` with ``v[b]`` of ``(B, n)``."""
    # Row-vector form: BLAS runs this about twice as fast as buf @ v[..., None] on CPU.
    return torch.bmm(v.unsqueeze(1), buf.transpose(1, 2)).squeeze(1)


def batched_combine(coef: Tensor, buf: Tensor) -> Tensor:
    """``(B, n)`` combinations ``sum_i coef[b, i] buf[b, i]`` of the rows of ``(B, m, n)``."""
    return torch.bmm(coef.unsqueeze(1), buf).squeeze(1)


def builds_graph(state: SolverState, *more: Tensor) -> bool:
    """Whether a step from ``state`` records an autograd graph (so must write into nothing it was given).

    True when autograd is on and a tensor field of ``state`` or one of ``more`` (pass ``f``'s
    output of the step) requires grad. Without a graph nothing is saved for backward, so the
    step may update its buffers in place: the copy this spares is the whole history per step,
    which matters to callers of :func:`~eqsolve.solvers.solve` that leave autograd on.
    """
    if not torch.is_grad_enabled():
        return False
    if any(t.requires_grad for t in more):
        return True
    return any(isinstance(v, Tensor) and v.requires_grad for v in vars(state).values())


def _in_place(inplace: bool | None) -> bool:
    return not torch.is_grad_enabled() if inplace is None else inplace


def widen(x: Tensor, width: int) -> Tensor:
    """``(B, k)`` per-slot values -> ``(B, width)``, zeros for the slots not filled yet."""
    k = x.shape[1]
    return x if k == width else torch.nn.functional.pad(x, (0, width - k))


def write_slot(buf: Tensor, slot: int, rows: Tensor, inplace: bool | None = None) -> Tensor:
    """``buf[:, slot] = rows`` for a ring buffer ``buf`` of shape ``(B, m, ...)``.

    Writes in place when ``inplace`` (a step passes ``not builds_graph(...)``; None: when
    autograd is off), with no copy of the whole buffer; otherwise it returns an out-of-place
    copy (an earlier op of the graph may have saved ``buf`` for backward).
    """
    if not _in_place(inplace):
        return buf.index_copy(1, torch.tensor([slot], device=buf.device), rows.unsqueeze(1))
    buf[:, slot] = rows
    return buf


def write_diff(buf: Tensor, slot: int, a: Tensor, b: Tensor, inplace: bool | None = None) -> tuple[Tensor, Tensor]:
    """``buf[:, slot] = a - b`` (computed straight into the slot when in place), and ``a - b``.

    Returns:
        ``(buf, diff)``: the buffer (the same tensor, or an updated copy as in :func:`write_slot`)
        and the difference, bit for bit the same either way.
    """
    if not _in_place(inplace):
        diff = a - b
        return write_slot(buf, slot, diff, False), diff
    diff = buf[:, slot]
    torch.sub(a, b, out=diff)
    return buf, diff


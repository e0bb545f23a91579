"""Losses for training equilibrium reasoners: stablemax / softmax cross-entropy and halting BCE.

Stablemax is the numerically safer alternative to softmax used by HRM/TRM/EqR for Sudoku:
``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` for ``x < 0``; probabilities are
``s(x_i) / sum_j s(x_j)``. It grows linearly instead of exponentially, so logits cannot blow up
the loss in float32.

Examples:
    >>> import torch
    >>> logits = torch.zeros(2, 81, 11)
    >>> labels = torch.full((2, 81), 2)
    >>> float(cross_entropy(logits, labels, kind="softmax").mean()) > 0
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from eqsolve._errors import unknown_key

__all__ = ["LOSS_KINDS", "stablemax_log_probs", "cross_entropy", "halting_bce", "reasoning_loss"]

LOSS_KINDS = ("stablemax", "softmax")


def _stablemax_s(x: Tensor) -> Tensor:
    # where() evaluates both branches; clamp keeps the unused branch finite so gradients stay finite.
    return torch.where(x >= 0, x + 1.0, 1.0 / (1.0 - torch.clamp(x, max=0.0)))


def stablemax_log_probs(logits: Tensor, dim: int = -1) -> Tensor:
    """Log-probabilities under stablemax, computed in float64 like the reference recipe.

    Args:
        logits: Tensor of logits, any shape.
        dim: Axis that holds the classes.

    Returns:
        Tensor of the same shape (float64) with ``log(s(x_i) / sum_j s(x_j))``.

    Examples:
        >>> lp = stablemax_log_probs(torch.tensor([0.0, 1.0]))
        >>> [round(v, 4) for v in lp.exp().tolist()]
        [0.3333, 0.6667]
    """
    s = _stablemax_s(logits.to(torch.float64))
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def cross_entropy(logits: Tensor, labels: Tensor, kind: str = "stablemax") -> Tensor:
    """Per-position cross-entropy (no reduction).

    Args:
        logits: ``(..., V)`` logits.
        labels: ``(...)`` integer class indices in ``[0, V)``.
        kind: ``"stablemax"`` or ``"softmax"``.

    Returns:
        ``(...)`` float32 tensor of losses.

    Examples:
        >>> cross_entropy(torch.zeros(1, 3), torch.tensor([0]), kind="softmax").item() > 1.09
        True
    """
    if kind not in LOSS_KINDS:
        raise ValueError(unknown_key("loss kind", kind, LOSS_KINDS))
    if kind == "softmax":
        logp = F.log_softmax(logits.float(), dim=-1)
    else:
        logp = stablemax_log_probs(logits, dim=-1)
    nll = -torch.gather(logp, -1, labels.long().unsqueeze(-1)).squeeze(-1)
    return nll.float()


def halting_bce(halt_logit: Tensor, exact: Tensor) -> Tensor:
    """BCE of the halting logit against "this row's answer is exactly right" (per row).

    Args:
        halt_logit: ``(B,)`` halting logits.
        exact: ``(B,)`` bool, whether every cell of the row is predicted correctly.

    Returns:
        ``(B,)`` losses.

    Examples:
        >>> halting_bce(torch.tensor([10.0]), torch.tensor([True])).item() < 1e-3
        True
    """
    return F.binary_cross_entropy_with_logits(halt_logit.float(), exact.float(), reduction="none")


def reasoning_loss(
    logits: Tensor,
    labels: Tensor,
    halt_logit: Tensor | None,
    *,
    kind: str = "stablemax",
    halt_weight: float = 0.5,
    blank_mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean per-cell cross-entropy plus optional halting BCE, with detached statistics.

    Args:
        logits: ``(B, L, V)`` logits.
        labels: ``(B, L)`` target tokens.
        halt_logit: ``(B,)`` halting logits, or None to skip the halting term.
        kind: cross-entropy kind (see :func:`cross_entropy`).
        halt_weight: weight of the halting BCE.
        blank_mask: optional ``(B, L)`` bool of the cells to score ``cell_acc`` on (the blanks);
            givens are trivially right and would inflate it.

    Returns:
        ``(loss, stats)``: scalar loss and a dict with ``ce``, ``halt``, ``cell_acc``,
        ``exact`` (per-row bool) as detached tensors.

    Examples:
        >>> loss, stats = reasoning_loss(torch.zeros(2, 81, 11), torch.full((2, 81), 3), None)
        >>> stats["exact"].tolist()
        [False, False]
    """
    ce = cross_entropy(logits, labels, kind=kind).mean(dim=-1)  # (B,)
    with torch.no_grad():
        correct = logits.argmax(dim=-1) == labels
        exact = correct.all(dim=-1)
    loss = ce.mean()
    halt = torch.zeros((), device=logits.device)
    if halt_logit is not None and halt_weight > 0:
        halt = halting_bce(halt_logit, exact).mean()
        loss = loss + halt_weight * halt
    stats = {
        "ce": ce.mean().detach(),
        "halt": halt.detach(),
        "cell_acc": (
            correct.float().mean()
            if blank_mask is None
            else (correct & blank_mask).sum() / blank_mask.sum().clamp(min=1)
        ).detach(),
        "exact": exact,
    }
    return loss, stats

"""Pieces every JKO scheme's inner loop shares: the learning-rate schedule and the divergence checks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from wgfinfer.errors import TrainingDivergedError

# points that move by more than this many times their spread (squared) have exploded
EXPLOSION_FACTOR = 1e4


def cosine_schedule(
    optimizer: torch.optim.Optimizer, decay: float, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rates following a cosine from their initial value to ``decay`` times it over ``total``
    iterations, for every parameter group alike."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: decay + (1.0 - decay) * 0.5 * (1.0 + math.cos(math.pi * it / total))
    )


def check_points(y: Tensor, step_index: int, it: int) -> None:
    """Raise :class:`TrainingDivergedError` if the transport map returned non-finite points."""
    if not bool(torch.isfinite(y).all()):
        raise TrainingDivergedError(
            f"JKO step {step_index}, iteration {it}: the transport map returned non-finite points"
        )


def transport_distance(x: Tensor, y: Tensor, step_index: int, it: int) -> Tensor:
    """``E||y - x||^2`` over the batch, or :class:`TrainingDivergedError` if it overflowed."""
    w2 = (y - x).square().sum(-1).mean()
    if not torch.isfinite(w2):
        raise TrainingDivergedError(
            f"JKO step {step_index}, iteration {it}: the transport distance overflowed "
            "(the map sends particles to infinity)"
        )
    return w2


def check_gradients(module: nn.Module, step_index: int, it: int, what: str) -> None:
    """Raise :class:`TrainingDivergedError` if a parameter gradient of ``module`` is not finite."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    # one fused reduction and one synchronisation instead of one per parameter
    if grads and not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
        raise TrainingDivergedError(
            f"JKO step {step_index}, iteration {it}: non-finite gradient of the {what}"
        )


def check_explosion(before: Tensor, after: Tensor, where: str) -> None:
    """Raise :class:`TrainingDivergedError` if points moved by far more than their own spread.

    ``E||after - before||^2 > EXPLOSION_FACTOR * (spread + 1)`` with ``spread = E||before - mean||^2``:
    the step exploded.  Such points may still be finite while the target overflows at them, so the
    check runs before the target is evaluated there.
    """
    spread = float((before - before.mean(0)).square().sum(-1).mean())
    moved = float((after - before).square().sum(-1).mean())
    if not moved <= EXPLOSION_FACTOR * (spread + 1.0):
        raise TrainingDivergedError(
            f"{where}: the transport distance exploded (E||T(x) - x||^2 = {moved:.3g} against a "
            f"particle spread of {spread:.3g})"
        )

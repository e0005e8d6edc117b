"""The forward-backward scheme for interaction energies (seed 000 §3.3, after Salim et al. 2020).

One step of ``F = W + G`` (``W`` the interaction energies, ``G`` the rest) is an explicit
(forward) Euler step on ``W`` followed by a JKO (backward) step on ``G``:

.. math::

    P_{k+1/2} = (I - a \\nabla (W * P_k)) \\# P_k, \\qquad P_{k+1} = T_{k+1/2} \\# P_{k+1/2}.

``grad(W * P_k)(x) = E_{y ~ P_k}[grad W(x - y)]`` is a Monte-Carlo convolution over ``n_reference``
particles of ``P_k``; they are kept in the step's map (:class:`ForwardStep`), so the forward step is a
deterministic map that new draws can be pushed through later.  Its density is not tracked (seed 000
§3.5): a forward-backward flow gives draws only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wgfinfer.functionals import InteractionEnergy


class ForwardStep(nn.Module):
    """``x -> x - a * sum_W grad(W * P_k)(x)`` with ``P_k`` represented by fixed reference particles.

    Parameters
    ----------
    interactions : sequence of InteractionEnergy
        The terms moved explicitly (their coefficients included).
    reference : Tensor
        ``(r, d)`` particles of ``P_k`` for the Monte-Carlo convolution.
    step_size : float
        ``a``.
    """

    def __init__(
        self, interactions: tuple[InteractionEnergy, ...], reference: Tensor, step_size: float
    ) -> None:
        super().__init__()
        if not interactions:
            raise ValueError("a forward step needs at least one interaction energy")
        self.interactions = tuple(interactions)
        self.register_buffer("reference", reference.detach().clone())
        self.step_size = float(step_size)

    def velocity(self, x: Tensor) -> Tensor:
        """``sum_W grad(W * P_k)(x)``."""
        v = torch.zeros_like(x)
        for term in self.interactions:
            v = v + term.velocity(x, self.reference)
        return v

    def transport(self, x: Tensor) -> Tensor:
        """The forward Euler map."""
        return x - self.step_size * self.velocity(x)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.transport(x)


class ComposedStep(nn.Module):
    """One forward-backward step as a single map: the forward step, then the JKO map (``None``: none)."""

    def __init__(self, forward_step: ForwardStep, backward_map: nn.Module | None) -> None:
        super().__init__()
        self.forward_step = forward_step
        self.backward_map = backward_map

    def transport(self, x: Tensor) -> Tensor:  # noqa: D102
        y = self.forward_step.transport(x)
        return y if self.backward_map is None else self.backward_map.transport(y)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.transport(x)


def forward_step(
    particles: Tensor,
    interactions: tuple[InteractionEnergy, ...],
    step_size: float,
    n_reference: int,
    generator: torch.Generator,
) -> ForwardStep:
    """Build the forward step of ``P_k`` from (a random subset of ``n_reference``) ``particles``."""
    n = particles.shape[0]
    if n_reference < n:
        idx = torch.randperm(n, generator=generator)[:n_reference].to(particles.device)
        reference = particles[idx]
    else:
        reference = particles
    return ForwardStep(interactions, reference, step_size)

"""The forward-backward scheme for interaction energies (Fan, Zhang, Taghvaei and Chen 2022, after
Salim, Korba and Luise 2020).

One step of ``F = W + G`` (``W`` the interaction energies, ``G`` the rest) is an explicit
(forward) Euler step on ``W`` followed by a JKO (backward) step on ``G``:

.. math::

    P_{k+1/2} = (I - a \\nabla (W * P_k)) \\# P_k, \\qquad P_{k+1} = T_{k+1/2} \\# P_{k+1/2}.

``grad(W * P_k)(x) = E_{y ~ P_k}[grad W(x - y)]`` is a Monte-Carlo convolution over ``n_reference``
particles of ``P_k``; they are kept in the step's map (:class:`ForwardStep`), so the forward step is a
deterministic map that new draws can be pushed through later.  Its density is not tracked: a
forward-backward flow gives draws only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer._validation import check_positive_int
from wgfinfer.flow import push_points
from wgfinfer.functionals import FreeEnergy, Functional, InteractionEnergy, as_functional
from wgfinfer.schemes.base import Info, Scheme, check_explosion, check_finite
from wgfinfer.schemes.icnn import ICNN, needs_particle_density
from wgfinfer.schemes.variational import Variational


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


@dataclass(frozen=True)
class ForwardBackward(Scheme):
    """Explicit steps on the interaction energies, then a JKO step of ``backward`` on the rest.

    Parameters
    ----------
    backward : ICNN or Variational, default Variational()
        The JKO scheme of the backward step (its options: pool size, iterations, networks).
    n_reference : int, default 10000
        Particles of ``P_k`` in the forward step's Monte-Carlo convolution (Fan et al. 2022: 10^4).
    """

    backward: ICNN | Variational = dataclasses.field(default_factory=Variational)
    n_reference: int = 10000

    name: ClassVar[str] = "forward_backward"

    def __post_init__(self) -> None:
        if isinstance(self.backward, str):
            kinds = {"icnn": ICNN, "variational": Variational}
            if self.backward not in kinds:
                raise ValueError(f"backward must be one of {tuple(kinds)}, got {self.backward!r}")
            object.__setattr__(self, "backward", kinds[self.backward]())
        if not isinstance(self.backward, (ICNN, Variational)):
            raise TypeError(
                f"backward must be an ICNN or Variational scheme, got {type(self.backward).__name__}"
            )
        object.__setattr__(self, "n_reference", check_positive_int("n_reference", self.n_reference))

    @property
    def n_monitor(self) -> int:
        """The backward scheme's ``n_monitor``."""
        return self.backward.n_monitor

    def scaled(self, lr_scale: float) -> ForwardBackward:  # noqa: D102
        return self if lr_scale == 1.0 else dataclasses.replace(self, backward=self.backward.scaled(lr_scale))


@dataclass(frozen=True)
class ForwardBackwardState:
    """The forward-backward scheme between steps.

    Attributes
    ----------
    step : int
        Steps done.
    backward : ICNNState or VariationalState
        The backward scheme's state: its pool is the pool of ``P_k``, its maps the backward maps
        (the warm starts of the next backward step).
    maps : tuple of ComposedStep
        One map per step: the forward step, then the backward map.
    """

    step: int
    backward: Any
    maps: tuple[nn.Module, ...] = ()

    @property
    def particles(self) -> Tensor:
        """The pool of ``P_k``."""
        return self.backward.particles


def _split(functional: Functional) -> tuple[tuple[InteractionEnergy, ...], Functional | None]:
    interactions = functional.interactions()
    rest = [t for t in functional.terms() if t not in interactions]
    return interactions, (FreeEnergy(rest) if rest else None)


def init(
    scheme: ForwardBackward,
    base: Distribution,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    functional: Functional | None = None,
) -> ForwardBackwardState:
    """The backward scheme's initial state (its densities are not tracked: the forward step has none)."""
    kwargs: dict[str, Any] = {"device": device, "functional": None}
    if isinstance(scheme.backward, ICNN):
        kwargs["track_density"] = False
        if functional is not None:
            rest = _split(functional)[1]
            if rest is not None and needs_particle_density(rest):
                raise ValueError(
                    "the forward-backward scheme gives no densities, which the ICNN backward step needs "
                    "for internal energies other than the entropy: use backward=Variational()"
                )
    return ForwardBackwardState(step=0, backward=scheme.backward.init(base, generator, **kwargs))


def step(
    state: ForwardBackwardState,
    functional: Functional | Callable[[Tensor], Tensor],
    step_size: float,
    generator: torch.Generator,
    *,
    scheme: ForwardBackward,
    lr_scale: float = 1.0,
    monitor: Functional | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[ForwardBackwardState, Info]:
    """The forward step on the interaction energies, then the backward scheme's step on the rest."""
    functional = as_functional(functional)
    start = time.perf_counter()
    interactions, rest = _split(functional)
    k, pool = state.step, state.particles
    where = f"step {k}"
    fwd = forward_step(pool, interactions, step_size, scheme.n_reference, generator)
    half, _ = push_points([fwd], pool)
    check_finite(half, where, "the forward step")
    backward_state = dataclasses.replace(state.backward, particles=half)
    backward_map = None
    if rest is not None:
        backward_state, info = scheme.backward.step(
            backward_state, rest, step_size, generator, lr_scale=lr_scale, callback=callback
        )
        backward_map = backward_state.maps[-1]
        # the forward step's density is not tracked, so no free energy after the step
        info = dataclasses.replace(info, energy=None, energy_se=None)
    else:
        # interaction energies only: the step is explicit, and its loss is the energy after it,
        # a U-statistic over the first n_monitor particles (no density needed)
        m = max(2, min(scheme.n_monitor, half.shape[0]))
        with torch.no_grad():
            energy = float(functional.estimate(half[:m]))
        info = Info(loss=energy, energy=energy, iterations=1)
    check_finite(backward_state.particles, where)
    check_explosion(pool, backward_state.particles, where)
    info = dataclasses.replace(info, wall_time=time.perf_counter() - start)
    new_state = ForwardBackwardState(
        step=k + 1, backward=backward_state, maps=(*state.maps, ComposedStep(fwd, backward_map))
    )
    return new_state, info

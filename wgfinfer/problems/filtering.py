"""The filtering benchmark of Mokrov 2022 §4.5 (after Frogner & Poggio's set-up), written once.

``Phi(x) = sin(2 pi x) / pi + x^2 / 4``, ``beta = 1``, ``X_0 ~ N(0, 1)``; one path simulated by
Euler-Maruyama (``dt = 1e-3``) and observed as ``Y_k = X_{t_k} + v_k``, ``v_k ~ N(0, 1)``, at
``t_k = 0.5, 1.0, ..., 4.5``; the target is ``p(X_5 | Y_1:9)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Normal

from wgfinfer.filtering.models import GaussianObservations, LangevinDiffusion

OBSERVATION_TIMES = tuple(0.5 * k for k in range(1, 10))
T_FINAL = 5.0


def sine_well_potential(x: Tensor) -> Tensor:
    """``Phi(x) = sin(2 pi x) / pi + x^2 / 4`` summed over coordinates, ``(n, d) -> (n,)``."""
    return (torch.sin(2.0 * math.pi * x) / math.pi + 0.25 * x.square()).sum(-1)


@dataclass
class FilteringProblem:
    """A diffusion, its observations, the simulated states at the observation times, ``t_final``."""

    diffusion: LangevinDiffusion
    observations: GaussianObservations
    states: Tensor
    t_final: float


def sine_well_problem(seed: int, noise_std: float = 1.0, dt: float = 1e-3) -> FilteringProblem:
    """The Mokrov 2022 §4.5 problem with the path and noise drawn from ``seed``."""
    initial = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    diffusion = LangevinDiffusion(sine_well_potential, beta=1.0, initial=initial)
    generator = torch.Generator().manual_seed(seed)
    observations, states = GaussianObservations.of_path(
        diffusion, OBSERVATION_TIMES, noise_std, generator, dt
    )
    return FilteringProblem(diffusion, observations, states, T_FINAL)

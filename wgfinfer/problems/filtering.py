"""The filtering benchmark of Mokrov 2022 §4.5 (after Frogner & Poggio's set-up), written once.

``Phi(x) = sin(2 pi x) / pi + x^2 / 4``, ``beta = 1``, ``X_0 ~ N(0, 1)``; one path simulated by
Euler-Maruyama (``dt = 1e-3``) and observed as ``Y_k = X_{t_k} + v_k``, ``v_k ~ N(0, 1)``, at
``t_k = 0.5, 1.0, ..., 4.5``; the target is ``p(X_5 | Y_1:9)``.

In ``D`` dimensions (issue 19, point 3), two models with exact references:

* :func:`separable_sine_well_problem`: the same potential in every coordinate, ``X_0 ~ N(0, I)``,
  isotropic unit observation noise; the filter factorises, and the product of the coordinates' 1-D
  grid solutions (:class:`~wgfinfer.filtering.grid.FactorisedGridFilter`) is the truth;
* :func:`rotated_ou_problem`: ``Phi(x) = x^T A x / 2`` with ``A = Q diag(0.5 ... 2) Q^T`` for a random
  rotation ``Q`` (coupled coordinates), ``X_0 ~ N(1, I)``; the Kalman filter
  (:func:`~wgfinfer.problems.gaussians.ou_kalman_filter_nd`) is the truth, and that of the
  JKO-discretised process the truth of a filter with perfect maps.

Both default to the observation times ``0.5, 1.0, ..., 2.5`` and ``t_final = 3``, a shorter horizon
than the 1-D problem's so that their benchmark runs in minutes on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from wgfinfer.filtering.models import GaussianObservations, LangevinDiffusion, separable_diffusion

OBSERVATION_TIMES = tuple(0.5 * k for k in range(1, 10))
T_FINAL = 5.0


def sine_well_potential(x: Tensor) -> Tensor:
    """``Phi(x) = sin(2 pi x) / pi + x^2 / 4`` summed over coordinates, ``(n, d) -> (n,)``."""
    return (torch.sin(2.0 * math.pi * x) / math.pi + 0.25 * x.square()).sum(-1)


@dataclass
class FilteringProblem:
    """A diffusion, its observations, the simulated states at the observation times, ``t_final``;
    ``coordinates`` (the 1-D diffusions of a separable model) and ``parameters`` (of an OU model)
    where the problem has them."""

    diffusion: LangevinDiffusion
    observations: GaussianObservations
    states: Tensor
    t_final: float
    coordinates: list[LangevinDiffusion] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def sine_well_problem(seed: int, noise_std: float = 1.0, dt: float = 1e-3) -> FilteringProblem:
    """The Mokrov 2022 §4.5 problem with the path and noise drawn from ``seed``."""
    initial = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    diffusion = LangevinDiffusion(sine_well_potential, beta=1.0, initial=initial)
    generator = torch.Generator().manual_seed(seed)
    observations, states = GaussianObservations.of_path(
        diffusion, OBSERVATION_TIMES, noise_std, generator, dt
    )
    return FilteringProblem(diffusion, observations, states, T_FINAL)


ND_OBSERVATION_TIMES = tuple(0.5 * k for k in range(1, 6))
ND_T_FINAL = 3.0


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return dim


def separable_sine_well_problem(
    dim: int, seed: int, times: tuple[float, ...] = ND_OBSERVATION_TIMES, t_final: float = ND_T_FINAL
) -> FilteringProblem:
    """The sine-well potential in each of ``dim`` coordinates, observed per coordinate with unit noise."""
    diffusion, coordinates = separable_diffusion(
        sine_well_potential, 1.0, [0.0] * _check_dim(dim), [1.0] * dim
    )
    generator = torch.Generator().manual_seed(seed)
    observations, states = GaussianObservations.of_path(diffusion, times, 1.0, generator, 1e-3)
    return FilteringProblem(diffusion, observations, states, t_final, coordinates=coordinates)


def rotated_ou_problem(
    dim: int, seed: int, times: tuple[float, ...] = ND_OBSERVATION_TIMES, t_final: float = ND_T_FINAL
) -> FilteringProblem:
    """``Phi(x) = x^T A x / 2``, ``A = Q diag(linspace(0.5, 2, dim)) Q^T`` (``Q`` a random rotation
    drawn from ``seed``), ``beta = 1``, ``X_0 ~ N(1, I)``, unit isotropic observation noise.

    ``parameters`` holds ``a``, ``b``, ``beta``, ``mean0``, ``cov0``, ``noise_std`` (numpy) for
    :func:`~wgfinfer.problems.gaussians.ou_kalman_filter_nd`.
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((_check_dim(dim), dim)))
    q = q * np.sign(np.diag(r))
    a = q @ np.diag(np.linspace(0.5, 2.0, dim)) @ q.T
    a = 0.5 * (a + a.T)
    a_t = torch.as_tensor(a, dtype=torch.float64)

    def potential(x: Tensor) -> Tensor:
        return 0.5 * ((x @ a_t.to(x.dtype)) * x).sum(-1)

    ones = torch.ones(dim, dtype=torch.float64)
    diffusion = LangevinDiffusion(potential, 1.0, Independent(Normal(ones, ones), 1))
    generator = torch.Generator().manual_seed(seed)
    observations, states = GaussianObservations.of_path(diffusion, times, 1.0, generator, 1e-3)
    parameters = dict(a=a, b=np.zeros(dim), beta=1.0, mean0=np.ones(dim), cov0=np.eye(dim), noise_std=1.0)
    return FilteringProblem(diffusion, observations, states, t_final, parameters=parameters)

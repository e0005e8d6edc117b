"""Reliability of the filters (issue 18, point 7): bad observations are refused up front, a collapse
of the particle filter's weights and a grid filter whose law reaches the grid's ends are told about,
a potential that is NaN/inf where particles go is an error, and the JKO filter retries diverged steps.

Each warning is also checked *not* to fire on the problems the filters are meant for: the seed's
sine-well problem (Mokrov 2022 §4.5) and an OU process with Gaussian observations.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import wgfinfer
from wgfinfer.filtering import (
    BootstrapParticleFilter,
    GaussianObservations,
    GridFilter1D,
    JKOFilter,
    LangevinDiffusion,
    Observations,
)

A, BETA, NOISE = 1.5, 2.0, 0.5
TIMES = [0.5, 1.0, 1.5]


def _normal(mean: float, std: float) -> Normal:
    return Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))


def _ou(potential=None, initial: Normal | None = None) -> LangevinDiffusion:
    potential = potential or (lambda x: 0.5 * A * x.square().sum(-1))
    return LangevinDiffusion(potential, BETA, initial or _normal(1.0, 0.3))


def _tiny_jko_filter(**kwargs) -> JKOFilter:
    scheme = wgfinfer.ICNN(iters_per_step=10, batch_size=64, hidden=(8,), n_particles=256)
    options = dict(scheme=scheme, step_size=0.5, n_chains=64, warmup=2, thin=1, seed=0)
    options.update(kwargs)
    return JKOFilter(_ou(), **options)


# ----------------------------------------------------------------------------- observations up front
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_observation_is_refused_at_construction(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"observation 1 \(time 1\.0\) is not finite: \[{bad}\]"):
        GaussianObservations(TIMES, torch.tensor([0.2, bad, 0.4]), NOISE)
    generic = lambda y, x: Normal(y, NOISE).log_prob(x[:, 0])  # noqa: E731
    with pytest.raises(ValueError, match=r"observation 2 \(time 1\.5\) is not finite"):
        Observations(TIMES, torch.tensor([0.2, 0.3, bad]), generic)
    # a value of several coordinates is named whole
    with pytest.raises(ValueError, match=rf"observation 0 \(time 0\.5\) is not finite: \[0\.0, {bad}\]"):
        GaussianObservations(TIMES, torch.tensor([[0.0, bad], [0.0, 0.0], [0.0, 0.0]]), NOISE)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_observation_time_is_named(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"observation time 1 is {bad}"):
        GaussianObservations([0.5, bad, 1.5], torch.zeros(3), NOISE)


def test_observations_changed_after_construction_are_checked_by_every_filter() -> None:
    """Every entry point checks again, before any work: the JKO filter used to train all its maps
    and then fail in the evidence estimate with "all 16384 log_weights are -inf"."""
    values = GaussianObservations(TIMES, torch.tensor([0.2, 0.3, 0.4]), NOISE)
    values.values[1, 0] = math.inf
    times = GaussianObservations(TIMES, torch.tensor([0.2, 0.3, 0.4]), NOISE)
    times.times[2] = math.nan
    runs = [
        lambda obs: _tiny_jko_filter().run(obs, 2.0),
        lambda obs: BootstrapParticleFilter(_ou(), n_particles=50).run(obs, 2.0),
        lambda obs: GridFilter1D(_ou(), n_points=100).run(obs, 2.0),
    ]
    for run in runs:
        with pytest.raises(ValueError, match=r"observation 1 \(time 1\.0\) is not finite: \[inf\]"):
            run(values)
        with pytest.raises(ValueError, match="observation time 2 is nan"):
            run(times)


# ---------------------------------------------------------------- the potential where particles go
def _nan_beyond(cut: float):
    """The OU potential, NaN for x > cut: its gradient there is 0 (torch.where), finite."""

    def potential(x: torch.Tensor) -> torch.Tensor:
        value = 0.5 * A * x.square().sum(-1)
        return torch.where(x[:, 0] > cut, torch.full_like(value, math.nan), value)

    return potential


def test_a_potential_that_is_nan_where_particles_go_stops_the_particle_filter() -> None:
    """Particles start inside (N(1, 0.3^2), cut at 2.5) and diffuse past it; only the gradient was
    used, which is 0 there, so they used to drift on unnoticed."""
    diffusion = _ou(_nan_beyond(2.5))
    obs = GaussianObservations(TIMES, torch.tensor([0.3, 0.8, 0.2]), NOISE)
    with pytest.raises(ValueError, match=r"potential is NaN or infinite at \d+ of 2000 particles") as info:
        BootstrapParticleFilter(diffusion, n_particles=2000, seed=0).run(obs, 2.0)
    t = float(str(info.value).split("at time ")[1].split(" ")[0])
    assert 0.0 < t < 2.0


def test_a_potential_with_a_nan_gradient_stops_the_particle_filter_at_once() -> None:
    # finite values; the gradient is NaN below 2.5, through the branch torch.where does not take
    # (its sqrt is NaN there, and 0 * NaN is NaN): the classic torch.where trap
    def potential(x: torch.Tensor) -> torch.Tensor:
        kink = torch.where(x > 2.5, (x - 2.5).sqrt(), torch.zeros_like(x))
        return (0.5 * A * x.square() + kink).sum(-1)

    obs = GaussianObservations(TIMES, torch.tensor([0.3, 0.8, 0.2]), NOISE)
    with pytest.raises(ValueError, match=r"gradient is NaN or infinite at 100 of 100 particles at time 0 "):
        BootstrapParticleFilter(_ou(potential), n_particles=100, seed=0).run(obs, 2.0)


def test_the_grid_filter_checks_the_potential_too() -> None:
    with pytest.raises(ValueError, match=r"potential is NaN or infinite at \d+ of 1999 grid interfaces"):
        GridFilter1D(_ou(_nan_beyond(2.5)))

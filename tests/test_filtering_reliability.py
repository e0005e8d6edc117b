"""Reliability of the filters (issue 18, point 7): bad observations are refused up front, a collapse
of the particle filter's weights and a grid filter whose law reaches the grid's ends are told about,
a potential that is NaN/inf where particles go is an error, and the JKO filter retries diverged steps.

Each warning is also checked *not* to fire on the problems the filters are meant for: the seed's
sine-well problem (Mokrov 2022 §4.5) and an OU process with Gaussian observations.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import Normal

import wgfinfer
import wgfinfer.schemes.icnn as icnn_scheme
from wgfinfer.errors import TrainingDivergedError
from wgfinfer.filtering import (
    BootstrapParticleFilter,
    GaussianObservations,
    GridFilter1D,
    JKOFilter,
    LangevinDiffusion,
    Observations,
)
from wgfinfer.filtering.grid import BOUNDARY_FRACTION, BOUNDARY_MASS
from wgfinfer.filtering.particle import ESS_WARNING_FRACTION, ESS_WARNING_MIN
from wgfinfer.problems.filtering import sine_well_problem

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


# ------------------------------------------------------------------------ particle filter: the ESS
def _top_m_likelihood(m: int):
    """Weight 1 on the ``m`` right-most particles, 0 on the others: the ESS is exactly ``m``."""

    def log_likelihood(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        cut = x[:, 0].kthvalue(x.shape[0] - m + 1).values
        return torch.where(x[:, 0] >= cut, 0.0, -math.inf).to(x.dtype)

    return log_likelihood


def test_the_ess_threshold_is_the_documented_one() -> None:
    n = 1000
    threshold = max(ESS_WARNING_FRACTION * n, ESS_WARNING_MIN)
    assert threshold == 10.0
    pf = BootstrapParticleFilter(_ou(), n_particles=n, seed=0)
    below = Observations([0.5, 1.0], torch.zeros(2), _top_m_likelihood(9))
    with pytest.warns(UserWarning, match=r"observation 0 \(time 0\.5\).* 9\.0 of 1000 particles") as seen:
        result = pf.run(below, 1.0)
    assert len(seen) == 1  # once per run, though both observations collapse
    assert "also at observation 1" in str(seen[0].message)
    assert "more particles" in str(seen[0].message)
    assert result.effective_sample_sizes == pytest.approx([9.0, 9.0], rel=1e-9)
    above = Observations([0.5, 1.0], torch.zeros(2), _top_m_likelihood(11))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pf.run(above, 1.0).effective_sample_sizes == pytest.approx([11.0, 11.0], rel=1e-9)


def test_an_outlier_collapsing_the_particle_filter_is_told_about() -> None:
    """y = 40 on an OU process with stationary sd 0.58: one particle takes all the weight (ESS 1 of
    500); the filter used to carry on without a word."""
    obs = GaussianObservations(TIMES, torch.tensor([0.3, 40.0, 0.2]), NOISE)
    with pytest.warns(UserWarning, match=r"observation 1 \(time 1\.0\).* of 500 particles") as seen:
        result = BootstrapParticleFilter(_ou(), n_particles=500, seed=0).run(obs, 2.0)
    assert len(seen) == 1
    assert result.effective_sample_sizes[1] < 1.01


@pytest.fixture
def one_thread():
    """One torch thread: 5000 Euler steps of 10^4 particles take 8 s so, 100 s with two threads on
    two shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_no_ess_warning_on_the_problems_the_particle_filter_is_for(one_thread) -> None:
    """The seed's sine-well problem with 10^4 particles (lowest ESS over its 9 observations: 43% of
    the particles for seed 0, 18% over seeds 0-4, 2.4% over seeds 0-39) and the OU test problem with
    500 particles."""
    problem = sine_well_problem(seed=0)
    ou_obs, _ = GaussianObservations.of_path(_ou(), TIMES, NOISE, torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = BootstrapParticleFilter(problem.diffusion, n_particles=10_000).run(
            problem.observations, problem.t_final
        )
        BootstrapParticleFilter(_ou(), n_particles=500).run(ou_obs, 2.0)
    assert min(result.effective_sample_sizes) > 0.3 * 10_000


# ----------------------------------------------------------------------- grid filter: the boundary
def test_mass_at_the_grid_ends_is_told_about() -> None:
    """y = 40 on the [-5, 5] grid: the filtering law piles up in the last cell (the ends reflect);
    the filter used to return it without a word."""
    obs = GaussianObservations(TIMES, torch.tensor([0.3, 40.0, 0.2]), NOISE)
    with pytest.warns(UserWarning, match=r"time 1\.0 .* upper end .* wider grid") as seen:
        result = GridFilter1D(_ou(), n_points=500).run(obs, 2.0)
    assert len(seen) == 1
    assert result.density(1.0)[-5:].sum() * (result.grid[1] - result.grid[0]) > 0.99


@pytest.mark.parametrize("factor, warns", [(2.0, True), (0.5, False)])
def test_the_boundary_threshold_is_the_documented_one(factor: float, warns: bool) -> None:
    """An initial law with ``factor * BOUNDARY_MASS`` beyond the start of the outer cells."""
    grid = GridFilter1D(_ou(), n_points=2000)
    n_cells = max(1, math.ceil(BOUNDARY_FRACTION * 2000))
    start = float(grid.grid[-n_cells]) - 0.5 * grid.dx  # left edge of the outer cells
    sd = 0.02
    mean = start - sd * float(Normal(0.0, 1.0).icdf(torch.tensor(1 - factor * BOUNDARY_MASS)))
    flat = Observations([1e-9], torch.zeros(1), lambda y, x: torch.zeros(x.shape[0], dtype=x.dtype))
    diffusion = _ou(initial=_normal(mean, sd))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        GridFilter1D(diffusion, n_points=2000).run(flat, 1e-9)
    assert len(seen) == int(warns), [str(w.message) for w in seen]
    if warns:
        assert "the law of X_0 at time 0" in str(seen[0].message)


def test_no_boundary_warning_on_the_problems_the_grid_filter_is_for() -> None:
    """The seed's sine-well problem (largest mass in the outer 1% of cells: 1.2e-5 for seed 0, 1.1e-3
    over seeds 0-4) and the OU test problem."""
    problem = sine_well_problem(seed=0)
    ou_obs, _ = GaussianObservations.of_path(_ou(), TIMES, NOISE, torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GridFilter1D(problem.diffusion).run(problem.observations, problem.t_final)
        GridFilter1D(_ou(), n_points=500).run(ou_obs, 2.0)


# ------------------------------------------------------------------------- JKO filter: the retries
def test_a_diverged_filter_step_is_retried_and_recorded(monkeypatch) -> None:
    real = icnn_scheme.fit_potential
    calls: list[int] = []

    def fails_once_at_step_one(*args, **kwargs):
        calls.append(kwargs["step_index"])
        if kwargs["step_index"] == 1 and calls.count(1) == 1:
            raise TrainingDivergedError("JKO step 1, iteration 3: non-finite loss (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(icnn_scheme, "fit_potential", fails_once_at_step_one)
    obs = GaussianObservations([0.5], torch.tensor([0.8]), NOISE)
    result = _tiny_jko_filter().run(obs, 1.0)
    assert calls == [0, 1, 1]
    assert [h["step"] for h in result.history] == [1, 2]
    assert [h["segment"] for h in result.history] == [0, 1]
    assert result.history[0]["retries"] == []
    assert result.history[1]["retries"] == [
        {"lr_scale": 1.0, "error": "JKO step 1, iteration 3: non-finite loss (injected)"}
    ]


def test_exhausted_filter_retries_name_the_step_and_its_interval(monkeypatch) -> None:
    real = icnn_scheme.fit_potential

    def always_fails_at_step_one(*args, **kwargs):
        if kwargs["step_index"] == 1:
            raise TrainingDivergedError("JKO step 1, iteration 0: non-finite loss (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(icnn_scheme, "fit_potential", always_fails_at_step_one)
    obs = GaussianObservations([0.5], torch.tensor([0.8]), NOISE)
    with pytest.raises(TrainingDivergedError, match="JKO step 1 diverged 3 times") as info:
        _tiny_jko_filter(max_retries=2).run(obs, 1.0)
    assert [a["lr_scale"] for a in info.value.attempts] == [1.0, 0.25, 0.0625]
    message = str(info.value)
    assert "from t = 0.5 to t = 1" in message and "lr" in message

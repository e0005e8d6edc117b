"""The documented defaults give a good answer: the sampler's on a smooth 10-D target (slow: about a
minute), the JKO filter's on the seed's 1-D filtering problem (slow: a few minutes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_spd_matrix

import wgfinfer
from wgfinfer.diagnostics import kl_divergence
from wgfinfer.filtering import JKOFilter
from wgfinfer.filtering.grid import GridFilter1D, symkl_on_grid
from wgfinfer.filtering.particle import BootstrapParticleFilter
from wgfinfer.problems.filtering import sine_well_problem


@pytest.mark.slow
def test_defaults_on_correlated_gaussian_in_ten_dimensions() -> None:
    # covariance eigenvalues 0.15 .. 6.7 (condition number 45), mean away from the origin
    dim = 10
    cov = torch.tensor(make_spd_matrix(dim, random_state=0))
    cov = cov / cov.diagonal().mean()
    mean = torch.linspace(-1, 1, dim, dtype=torch.float64)
    target = torch.distributions.MultivariateNormal(mean, cov)
    sampler = wgfinfer.WGFSampler(
        lambda x: target.log_prob(x.double()).to(x.dtype), dim=dim, progress_bar=False, seed=0
    ).run()
    n = 20000
    x, log_q = sampler.sample(n, return_log_prob=True, seed=1)
    # KL(q || p) from exact densities; measured 0.008 with the defaults. 0.02 is the stated bar for
    # "a good answer"; the initial N(0, I) is at KL 1.5 after one step and ~7 before.
    kl, kl_se = kl_divergence(log_q.double(), target.log_prob(x.double()))
    assert kl < 0.02 + 4 * kl_se
    kl_upper = kl + 4 * kl_se
    # Donsker-Varadhan with a linear test function: (E_q x_i - mu_i)^2 <= 2 KL(q||p) Sigma_ii
    bound = (2 * kl_upper * cov.diagonal()).sqrt()
    se = (cov.diagonal() / n).sqrt()
    assert bool(((x.double().mean(0) - mean).abs() < bound + 4 * se).all())


@pytest.mark.slow
def test_default_jko_filter_beats_the_particle_filter_on_the_seed_problem() -> None:
    """``JKOFilter(diffusion)`` against the 10^4-particle bootstrap filter (Gaussian KDE) on seed
    002's problem, path 0: SymKL of ``p(X_5 | Y_1:9)`` to the Chang-Cooper grid solution.

    Measured (docs/filtering.md, seed 0): 0.0087 against 0.0123; the benchmark's five paths are the
    statistical claim, this one path guards the defaults against a change that loses it."""
    problem = sine_well_problem(0)
    reference = GridFilter1D(problem.diffusion).run(problem.observations, problem.t_final)
    grid = reference.grid
    pf = BootstrapParticleFilter(problem.diffusion, n_particles=10_000, seed=0)
    pf_density = pf.run(problem.observations, problem.t_final).density_on_grid(grid)
    result = JKOFilter(problem.diffusion, seed=0).run(problem.observations, problem.t_final)
    points = torch.as_tensor(grid, dtype=torch.float64).unsqueeze(-1)
    jko_density = np.nan_to_num(torch.exp(result.log_prob(points, normalized=True)).double().numpy())
    symkl_pf = symkl_on_grid(reference.density(), pf_density, grid)
    symkl_jko = symkl_on_grid(reference.density(), jko_density, grid)
    assert symkl_jko < symkl_pf, (symkl_jko, symkl_pf)

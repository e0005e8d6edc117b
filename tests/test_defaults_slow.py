"""The documented defaults give a good answer on a smooth 10-D target (slow: about a minute)."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import make_spd_matrix

import wgfinfer
from wgfinfer.diagnostics import kl_divergence


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

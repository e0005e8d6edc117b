"""Laplace whitening: exact on Gaussians, consistent flow densities, clear failures."""

from __future__ import annotations

import math

import pytest
import torch

import wgfinfer
from wgfinfer.laplace import laplace_whitening


def correlated_gaussian() -> torch.distributions.MultivariateNormal:
    cov = torch.tensor([[2.0, 0.9, 0.0], [0.9, 1.0, -0.3], [0.0, -0.3, 0.2]], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), cov)


def test_whitening_of_a_gaussian_is_its_mean_and_covariance() -> None:
    target = correlated_gaussian()
    whitening = laplace_whitening(target.log_prob, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(whitening.loc, target.mean, rtol=0, atol=1e-7)
    cov = whitening.scale_tril @ whitening.scale_tril.T
    torch.testing.assert_close(cov, target.covariance_matrix, rtol=1e-7, atol=1e-9)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(whitening.forward(whitening.inverse(x)), x)


def test_flow_densities_stay_exact_through_the_whitening() -> None:
    target = correlated_gaussian()
    sampler = wgfinfer.WGFSampler(
        target.log_prob,
        dim=3,
        init="laplace",
        init_scale=1.5,
        n_steps=2,
        iters_per_step=30,
        hidden=(8,),
        dtype=torch.float64,
        progress_bar=False,
    ).run()
    x, log_q = sampler.sample(200, return_log_prob=True, seed=0)
    torch.testing.assert_close(sampler.log_prob(x), log_q, rtol=1e-8, atol=1e-8)
    # the flow has moved N(m, 2.25 S) towards N(m, S): its KL is below the start's
    start = 3 / 2 * (2.25 - 1.0 - math.log(2.25))  # KL(N(m, s^2 S) || N(m, S)), d = 3, s^2 = 2.25
    kl = float((log_q - target.log_prob(x)).mean())
    assert kl < 0.5 * start


def test_unbounded_and_non_convex_targets_are_reported() -> None:
    with pytest.raises(ValueError, match="init='laplace'"):
        laplace_whitening(lambda x: x.sum(-1), torch.zeros(2, dtype=torch.float64))  # no mode

    def double_well(x: torch.Tensor) -> torch.Tensor:  # the origin is a stationary saddle
        return -(x[:, 0] ** 2) + x[:, 1] ** 2 - x[:, 1] ** 4

    with pytest.warns(RuntimeWarning, match="not positive definite"):
        whitening = laplace_whitening(double_well, torch.zeros(2, dtype=torch.float64))
    assert bool(torch.isfinite(whitening.scale_tril).all())


def test_init_option_is_checked() -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        wgfinfer.WGFSampler(lambda x: -x.square().sum(-1), dim=2, init="uniform")
    with pytest.raises(TypeError, match="init must be one of"):
        wgfinfer.WGFSampler(lambda x: -x.square().sum(-1), dim=2, init=3.0)

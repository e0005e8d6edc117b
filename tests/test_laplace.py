"""Laplace whitening: exact on Gaussians, consistent flow densities, clear failures."""

from __future__ import annotations

import math

import pytest
import torch

import wgfinfer
from wgfinfer.laplace import AffineWhitening, fit_gaussian, laplace_whitening


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
        scheme=wgfinfer.ICNN(iters_per_step=30, hidden=(8,)),
        init=wgfinfer.Init("laplace", scale=1.5),
        n_steps=2,
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


def test_gaussian_fit_moves_a_wrong_start_onto_a_gaussian_target() -> None:
    target = correlated_gaussian()
    start = AffineWhitening(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    fitted = fit_gaussian(target.log_prob, start, torch.Generator().manual_seed(0), n_iter=1500)
    # KL(fitted || target) is minimised at the target itself; Adam noise leaves a small gap
    q = torch.distributions.MultivariateNormal(fitted.loc, scale_tril=fitted.scale_tril)
    assert float(torch.distributions.kl_divergence(q, target)) < 0.01
    start_q = torch.distributions.MultivariateNormal(start.loc, scale_tril=start.scale_tril)
    assert float(torch.distributions.kl_divergence(start_q, target)) > 1.0


def test_sampler_with_gaussian_init_starts_at_the_conjugate_posterior() -> None:
    from test_pyro import conjugate_posterior, linear_regression, regression_data

    x, y = regression_data()
    sampler = wgfinfer.WGFSampler(
        model=linear_regression,
        scheme=wgfinfer.ICNN(iters_per_step=5, hidden=(4,)),
        init="gaussian",
        n_steps=1,
        dtype=torch.float64,
        progress_bar=False,
    ).run(x, y)
    mean, cov = conjugate_posterior(x, y)
    whitening = sampler.flow.whitening
    fitted = torch.distributions.MultivariateNormal(whitening.loc, scale_tril=whitening.scale_tril)
    assert (
        float(torch.distributions.kl_divergence(fitted, torch.distributions.MultivariateNormal(mean, cov)))
        < 0.01
    )
    assert sampler.attrs()["init"] == "gaussian"

"""Mini-batch training of Pyro models (``subsample_size``): unbiased potential, full-data outputs."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from test_pyro import conjugate_posterior, regression_data

import wgfinfer
from wgfinfer.diagnostics import kl_divergence
from wgfinfer.pyro_target import PyroTarget


def indexed_regression(x: torch.Tensor, y: torch.Tensor) -> None:
    """Linear regression whose data are indexed by the plate's indices (mini-batch ready)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]) as idx:
        pyro.sample("y", dist.Normal((x[idx] * w).sum(-1), 1.0), obs=y[idx])


def test_mini_batch_log_joint_is_unbiased_for_the_full_one() -> None:
    x, y = regression_data(400)
    target = PyroTarget(indexed_regression, (x, y), dtype=torch.float64, subsample_size=50)
    assert target.subsample_sizes == {"data": 50}
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    full = target.log_density(z)
    draws = torch.stack([target.training_log_density(z) for _ in range(2000)])
    assert not torch.allclose(draws[0], full)  # a genuine mini-batch estimate ...
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert bool(((draws.mean(0) - full).abs() < 4 * se).all())  # ... whose mean is the full log joint


def test_mini_batch_training_reaches_the_conjugate_posterior_and_reports_full_data_lp() -> None:
    x, y = regression_data(400)
    sampler = wgfinfer.WGFSampler(
        model=indexed_regression,
        subsample_size=100,
        scheme=wgfinfer.ICNN(iters_per_step=100, hidden=(8, 8)),
        init=wgfinfer.Init("laplace", scale=2.0),
        n_steps=4,
        dtype=torch.float64,
        progress_bar=False,
    ).run(x, y)
    exact = torch.distributions.MultivariateNormal(*conjugate_posterior(x, y))
    z, log_q = sampler.sample(20000, return_log_prob=True, seed=1)
    kl, se = kl_divergence(log_q, exact.log_prob(z))
    # the start (N(mode, 4 H^-1)) is at KL = 3 (4 - 1 - log 4) / 2 = 2.42; the mini-batch
    # gradient noise leaves more error than full-batch training (KL < 0.01 there)
    assert kl < 0.05 + 4 * se
    idata = sampler.to_inference_data(num_samples=50, seed=2)
    w = torch.as_tensor(idata.posterior["w"].values[0])
    full = PyroTarget(indexed_regression, (x, y), dtype=torch.float64).log_density(w)
    np.testing.assert_allclose(idata.sample_stats["lp"].values[0], full.numpy(), rtol=1e-10)


def test_bad_subsample_options_raise_clear_errors() -> None:
    x, y = regression_data(40)

    def unindexed(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=x.dtype), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)

    with pytest.raises(ValueError, match="Index every data tensor"):
        PyroTarget(unindexed, (x, y), dtype=torch.float64, subsample_size=10)
    with pytest.raises(ValueError, match="must be an int in \\[1, 40\\]"):
        PyroTarget(indexed_regression, (x, y), dtype=torch.float64, subsample_size=0)
    with pytest.raises(ValueError, match="names plate 'rows'"):
        PyroTarget(indexed_regression, (x, y), dtype=torch.float64, subsample_size={"rows": 5})
    with pytest.raises(TypeError, match="subsample_size must be an int"):
        PyroTarget(indexed_regression, (x, y), dtype=torch.float64, subsample_size=2.5)
    with pytest.raises(TypeError, match="needs a Pyro model"):
        wgfinfer.WGFSampler(lambda v: -v.square().sum(-1), dim=2, subsample_size=10)

"""Constrained sites stay in their support (fast; accuracy is in the slow tests of test_pyro.py)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_pyro import scale_model

import wgfinfer
from wgfinfer.errors import NonFiniteLogDensityError
from wgfinfer.pyro_target import PyroTarget


def test_positive_site_draws_stay_positive() -> None:
    y = torch.tensor([0.3, -1.2, 0.8, 2.1, -0.4])
    sampler = wgfinfer.WGFSampler(
        model=scale_model,
        scheme=wgfinfer.ICNN(iters_per_step=10, hidden=(4,)),
        n_steps=1,
        progress_bar=False,
        seed=0,
    ).run(y)
    sigma = sampler.get_samples(5000, seed=1, group_by_chain=True)["sigma"]
    assert sigma.shape == (1, 5000) and bool((sigma > 0).all())
    # the unconstrained draws map to sigma by exp (Pyro's biject_to for the positive reals)
    z = sampler.sample(10, seed=2)
    torch.testing.assert_close(sampler.target.constrain(z)["sigma"], z.squeeze(-1).exp())


def test_a_distribution_rejecting_its_parameters_is_a_non_finite_log_joint() -> None:
    """A scale that reaches 0 (as a GP kernel matrix that is not numerically positive definite far
    out): Pyro's argument validation raises a ValueError there.  The target reports it as a
    non-finite log joint, which a training step treats as a divergence and retries."""

    def model() -> None:
        s = pyro.sample("s", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(0.0, 2.0 - s), obs=torch.tensor(0.5))  # scale <= 0 for s >= 2

    target = PyroTarget(model, dtype=torch.float64)
    assert bool(torch.isfinite(target.log_density(torch.tensor([[0.0], [1.0]], dtype=torch.float64))).all())
    with pytest.raises(NonFiniteLogDensityError, match="rejected its parameters") as info:
        target.log_density(torch.tensor([[0.0], [3.0]], dtype=torch.float64))
    assert "to satisfy the constraint" in str(info.value.__cause__)
    # the checks after a run take NaN where the log joint is undefined, the values elsewhere
    z = torch.tensor([[0.0], [3.0], [1.0], [2.5], [-1.0]], dtype=torch.float64)
    unchecked = target.unchecked_log_density(z)
    assert torch.isnan(unchecked[[1, 3]]).all()
    keep = [0, 2, 4]
    torch.testing.assert_close(unchecked[keep], target.log_density(z[keep]), rtol=1e-12, atol=1e-12)

"""Constrained sites stay in their support (fast; accuracy is in the slow tests of test_pyro.py)."""

from __future__ import annotations

import torch
from test_pyro import scale_model

import wgfinfer


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

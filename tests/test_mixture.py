"""2-D Gaussian mixture: component weights and moments against exact draws of the target.

Three checks, each with a tolerance derived from the sample size:

1. ``KL(q || p) = E_q[log q - log p]`` from exact flow densities is below 0.01 (the optimisation
   budget; measured 0.002-0.005 with these settings) plus 4 standard errors.
2. Raw flow component weights: ``|q(A) - p(A)| <= TV(q, p) <= sqrt(KL / 2)`` (Pinsker) for every cell
   ``A``, so the allowed gap is that bound, at the KL's upper confidence limit, plus 4 two-sample
   standard errors.
3. Self-normalised importance-weighted weights and moments (possible because ``log q`` is exact)
   are consistent estimators of the target's, so they must agree with exact draws within 4
   standard errors, with no approximation budget at all.
"""

from __future__ import annotations

import math

import torch

import wgfinfer
from wgfinfer.problems.gaussians import GaussianMixture

N = 20000


def features(s: torch.Tensor, mixture: GaussianMixture) -> torch.Tensor:
    """Component indicators, x, x^2 and x_0 x_1 per draw."""
    labels = torch.nn.functional.one_hot(mixture.component_of(s), mixture.n_components).double()
    return torch.cat([labels, s, s.square(), (s[:, 0] * s[:, 1]).unsqueeze(-1)], dim=1)


def test_two_dimensional_mixture_weights_and_moments() -> None:
    mixture = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 3.0]], dtype=torch.float64))
    sampler = wgfinfer.WGFSampler(
        mixture.log_prob,
        dim=2,
        step_size=2.0,
        n_steps=20,
        # the full 200 iterations per step: with stop_on_plateau (the default) the KL of this run is
        # 0.010 instead of 0.004 (docs/design.md), above the budget this test holds the scheme to
        scheme=wgfinfer.ICNN(iters_per_step=200, batch_size=256, hidden=(32, 32), stop_on_plateau=False),
        init=wgfinfer.Init("normal", scale=3.0),
        progress_bar=False,
        seed=0,
    ).run()
    x, log_q = sampler.sample(N, return_log_prob=True, seed=1)
    x, log_q = x.double(), log_q.double()
    exact = mixture.sample(N, torch.Generator().manual_seed(2))
    f_exact = features(exact, mixture)
    exact_mean, exact_se2 = f_exact.mean(0), f_exact.var(0) / N

    # 1. KL from exact densities
    log_ratio = log_q - mixture.log_prob(x)
    kl, kl_se = float(log_ratio.mean()), float(log_ratio.std()) / math.sqrt(N)
    assert kl < 0.01 + 4 * kl_se, kl

    # 2. raw weights, Pinsker bound
    f_flow = features(x, mixture)
    weights_gap = (f_flow[:, :3].mean(0) - exact_mean[:3]).abs()
    se = (f_flow[:, :3].var(0) / N + exact_se2[:3]).sqrt()
    pinsker = math.sqrt(max(kl + 4 * kl_se, 0.0) / 2)
    assert bool((weights_gap < pinsker + 4 * se).all()), (weights_gap, pinsker)

    # 3. importance-weighted weights and moments (self-normalised), delta-method standard errors
    w = torch.softmax(-log_ratio, dim=0)
    is_mean = (w.unsqueeze(-1) * f_flow).sum(0)
    is_se2 = (w.square().unsqueeze(-1) * (f_flow - is_mean).square()).sum(0)
    gap = (is_mean - exact_mean).abs()
    assert bool((gap < 4 * (is_se2 + exact_se2).sqrt()).all()), gap

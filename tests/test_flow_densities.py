"""Exact densities of a trained flow: tracked log q, inversion, and the Gaussian-target answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import wgfinfer
from wgfinfer.diagnostics import kl_divergence
from wgfinfer.problems.gaussians import ou_jko_gaussian

F64 = torch.float64
MEAN = torch.tensor([1.0, -0.5], dtype=F64)
SCALE = torch.tensor([0.7, 1.3], dtype=F64)


def gaussian_log_density(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - MEAN) / SCALE).square().sum(-1)


@pytest.fixture(scope="module")
def gaussian_sampler() -> wgfinfer.WGFSampler:
    return wgfinfer.WGFSampler(
        gaussian_log_density,
        dim=2,
        step_size=0.3,
        n_steps=6,
        scheme=wgfinfer.ICNN(iters_per_step=150, batch_size=256, hidden=(16, 16)),
        dtype=F64,
        progress_bar=False,
        seed=1,
    ).run()


def test_log_prob_at_draws_equals_tracked_log_q(gaussian_sampler: wgfinfer.WGFSampler) -> None:
    x, log_q = gaussian_sampler.sample(500, return_log_prob=True, seed=3)
    log_prob = gaussian_sampler.log_prob(x)
    torch.testing.assert_close(log_prob, log_q, rtol=1e-4, atol=0)


def test_inverse_of_forward_is_identity(gaussian_sampler: wgfinfer.WGFSampler) -> None:
    flow = gaussian_sampler.flow
    x0 = torch.randn(400, 2, dtype=F64, generator=torch.Generator().manual_seed(4)) * 2
    xk, _ = flow.push(x0)
    back, _, converged = flow.inverse(xk)
    assert bool(converged.all())
    torch.testing.assert_close(back, x0, rtol=0, atol=1e-8)


def test_flow_density_integrates_to_one(gaussian_sampler: wgfinfer.WGFSampler) -> None:
    # a change-of-variables density must be normalised: integrate log_prob on a grid
    grid = torch.linspace(-6, 7, 121, dtype=F64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    density = gaussian_sampler.log_prob(pts).exp()
    cell = float(grid[1] - grid[0]) ** 2
    assert abs(float(density.sum()) * cell - 1.0) < 5e-3


def test_gaussian_target_matches_exact_jko_iterate(gaussian_sampler: wgfinfer.WGFSampler) -> None:
    # A Gaussian target is an OU process; from N(0, I) the exact JKO iterates stay Gaussian
    # (wgfinfer.problems.gaussians.ou_jko_gaussian). KL(q || rho_K) = E_q[log q - log rho_K] uses the
    # flow's exact log q; its Monte-Carlo standard error on 20000 draws is ~3e-4, so 0.01 is the
    # budget for the optimisation error of 6 steps x 150 iterations.
    a = torch.diag(SCALE.pow(-2)).numpy()
    mean_k, cov_k = ou_jko_gaussian(a, MEAN.numpy(), np.zeros(2), np.eye(2), 0.3, 6)
    reference = torch.distributions.MultivariateNormal(torch.from_numpy(mean_k), torch.from_numpy(cov_k))
    x, log_q = gaussian_sampler.sample(20000, return_log_prob=True, seed=5)
    kl, se = kl_divergence(log_q, reference.log_prob(x))
    assert -4 * se < kl < 0.01
    mean_se = cov_k.diagonal() ** 0.5 / math.sqrt(x.shape[0])
    assert bool((abs(x.mean(0).numpy() - mean_k) < 4 * mean_se + 0.02).all())


def test_log_prob_reports_non_converged_points(gaussian_sampler: wgfinfer.WGFSampler) -> None:
    pts = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64)
    with pytest.warns(RuntimeWarning, match="did not converge for 2 of 2"):
        out = gaussian_sampler.log_prob(pts, max_iter=0)
    assert bool(torch.isnan(out).all())

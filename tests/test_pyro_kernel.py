"""``WGFKernel``: the flow as an independence Metropolis-Hastings kernel inside ``pyro.infer.MCMC``."""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pyro.infer.mcmc.api as mcmc_api
import pytest
import torch
from arviz_compat import from_pyro
from pyro.infer import MCMC

import wgfinfer
from wgfinfer.pyro_kernel import WGFKernel

NUM_SAMPLES = 300
N_DATA = 12
# tiny and fast; scale 2 makes the initial Laplace measure (exact for this Gaussian posterior) too
# wide, so the one short JKO step leaves a flow that the IMH correction has to fix (acceptance < 1)
FAST = dict(
    scheme=wgfinfer.ICNN(iters_per_step=20, batch_size=64, hidden=(8,)),
    init=wgfinfer.Init("laplace", scale=2.0),
    n_steps=1,
    progress_bar=False,
)


def linear_regression(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Conjugate model: w ~ N(0, I_3), y | w ~ N(x w, 1)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)


def exact_posterior(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = x.double(), y.double()
    cov = torch.linalg.inv(torch.eye(x.shape[1], dtype=x.dtype) + x.T @ x)
    return cov @ x.T @ y, cov


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N_DATA, 3, generator=gen)
    y = x @ torch.tensor([1.0, -1.0, 0.5]) + torch.randn(N_DATA, generator=gen)
    return x, y


@pytest.fixture(scope="module")
def fitted(data) -> tuple[MCMC, WGFKernel]:
    kernel = WGFKernel(linear_regression, seed=0, **FAST)
    mcmc = MCMC(kernel, num_samples=NUM_SAMPLES, warmup_steps=0, disable_progbar=True)
    mcmc.run(*data)
    return mcmc, kernel


def _ess(draws: np.ndarray) -> float:
    return float(az.ess(draws[None, :]))


def test_chain_has_mcmc_shapes_and_matches_the_exact_posterior(fitted, data) -> None:
    mcmc, kernel = fitted
    assert len(kernel.sampler.flow) == FAST["n_steps"]  # setup trained the new sampler
    w = mcmc.get_samples()["w"]
    assert w.shape == (NUM_SAMPLES, 3) and w.dtype == torch.float32
    assert mcmc.get_samples(group_by_chain=True)["w"].shape == (1, NUM_SAMPLES, 3)
    rate = mcmc.diagnostics()["acceptance rate"]["chain 0"]
    assert 0.0 < rate < 1.0  # the flow is imperfect, so the Metropolis correction rejects some draws
    mean, cov = exact_posterior(*data)
    w = w.double().numpy()
    for j in range(3):
        var = float(cov[j, j])
        # chain mean within 5 Monte Carlo standard errors sd / sqrt(ESS) of the exact mean
        assert abs(w[:, j].mean() - float(mean[j])) < 5 * math.sqrt(var / _ess(w[:, j]))
        # chain variance: for a Gaussian, sd((w - m)^2) = sqrt(2) var, its ESS from the chain of squares
        sq = (w[:, j] - float(mean[j])) ** 2
        assert abs(sq.mean() - var) < 5 * math.sqrt(2) * var / math.sqrt(_ess(sq))


def test_summary_diagnostics_and_from_pyro(fitted, capsys) -> None:
    mcmc, _ = fitted
    mcmc.summary()
    printed = capsys.readouterr().out
    assert "w[0]" in printed and "n_eff" in printed and "Number of divergences: 0" in printed
    diag = mcmc.diagnostics()
    assert diag["divergences"] == {"chain 0": []}
    assert set(diag["w"]) >= {"n_eff", "r_hat"}
    # log_likelihood=False: Pyro's Predictive cannot vectorize this model's event-dim site "w" (with
    # NUTS alike); the log-likelihood group is checked on the scale model below
    idata = from_pyro(mcmc, log_likelihood=False)
    assert idata.posterior["w"].shape == (1, NUM_SAMPLES, 3)
    np.testing.assert_array_equal(idata.posterior["w"].values[0], mcmc.get_samples()["w"].numpy())
    assert not idata.sample_stats["diverging"].values.any()
    assert idata.observed_data["y"].shape == (N_DATA,)


def scale_model(y: torch.Tensor) -> None:
    """sigma ~ HalfNormal(1), y_i ~ N(0, sigma^2): a positive site, constrained by MCMC's transforms."""
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("obs", y.shape[0]):
        pyro.sample("y", dist.Normal(0.0, sigma), obs=y)


def test_constrained_site_matches_quadrature_and_converts_to_arviz() -> None:
    y = 0.7 * torch.randn(N_DATA, generator=torch.Generator().manual_seed(1))
    mcmc = MCMC(WGFKernel(scale_model, seed=1, **FAST), num_samples=NUM_SAMPLES, warmup_steps=0)
    mcmc.run(y)
    sigma = mcmc.get_samples()["sigma"].double().numpy()
    assert sigma.shape == (NUM_SAMPLES,) and (sigma > 0).all()
    # exact posterior moments of sigma by quadrature on a fine grid
    grid = np.linspace(1e-3, 4.0, 40_001)
    log_post = -0.5 * grid**2 - N_DATA * np.log(grid) - 0.5 * float(y.double().square().sum()) / grid**2
    p = np.exp(log_post - log_post.max())
    mean = float((grid * p).sum() / p.sum())
    sd = math.sqrt(float(((grid - mean) ** 2 * p).sum() / p.sum()))
    assert abs(sigma.mean() - mean) < 5 * sd / math.sqrt(_ess(sigma))
    idata = from_pyro(mcmc)
    assert idata.posterior["sigma"].shape == (1, NUM_SAMPLES)
    assert idata.log_likelihood["y"].shape == (1, NUM_SAMPLES, N_DATA)


def test_trained_sampler_is_reused_and_chains_are_reproducible(fitted, data) -> None:
    _, kernel = fitted
    sampler = kernel.sampler
    n_history = len(sampler.history)

    def chain(k: WGFKernel, warmup: int = 0) -> torch.Tensor:
        mcmc = MCMC(k, num_samples=100, warmup_steps=warmup, disable_progbar=True)
        mcmc.run(*data)
        return mcmc.get_samples()["w"]

    first, again = chain(WGFKernel(sampler=sampler)), chain(WGFKernel(sampler=sampler))
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # same seed, same chain
    reused = WGFKernel(sampler=sampler)
    chain(reused)
    assert not torch.equal(chain(reused), first)  # the next chain of a kernel is a new one
    assert chain(WGFKernel(sampler=sampler), warmup=20).shape == (100, 3)
    assert len(sampler.history) == n_history  # no training happened


def test_initial_params_are_respected(fitted, data) -> None:
    _, trained = fitted
    kernel = WGFKernel(sampler=trained.sampler)
    start = exact_posterior(*data)[0].float()
    kernel.initial_params = {"w": start}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the flow inverts at the start without trouble
        kernel.setup(0, *data)
    torch.testing.assert_close(kernel.initial_params["w"], start)
    params = kernel.initial_params
    for _ in range(50):
        params = kernel.sample(params)
    assert params["w"].shape == (3,) and 0.0 < kernel.diagnostics()["acceptance rate"] <= 1.0
    assert kernel.diagnostics()["divergences"] == []
    kernel.cleanup()
    mcmc = MCMC(kernel, num_samples=20, warmup_steps=0, initial_params={"w": start}, disable_progbar=True)
    mcmc.run(*data)
    assert mcmc.get_samples()["w"].shape == (20, 3)


@pytest.mark.parametrize("cpus", [1, 8], ids=["sequential", "parallel"])
def test_several_chains_differ(fitted, data, monkeypatch, cpus) -> None:
    # MCMC runs chains in worker processes when it sees enough CPUs, else one after the other
    monkeypatch.setattr(mcmc_api.mp, "cpu_count", lambda: cpus)
    kernel = WGFKernel(sampler=fitted[1].sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "chains will be drawn sequentially"
        mcmc = MCMC(kernel, num_samples=50, warmup_steps=0, num_chains=2, disable_progbar=True)
    mcmc.run(*data)
    assert type(mcmc.sampler).__name__ == ("_MultiSampler" if cpus > 1 else "_UnarySampler")
    w = mcmc.get_samples(group_by_chain=True)["w"]
    assert w.shape == (2, 50, 3) and not torch.equal(w[0], w[1])
    assert set(mcmc.diagnostics()["acceptance rate"]) == {"chain 0", "chain 1"}


def test_errors() -> None:
    with pytest.raises(TypeError, match="needs a Pyro model"):
        WGFKernel()
    with pytest.raises(TypeError, match="no log_density"):
        WGFKernel(linear_regression, log_density=lambda z: -z.square().sum(-1))
    with pytest.raises(TypeError, match="must be a callable Pyro model"):
        WGFKernel("not a model")
    untrained = wgfinfer.WGFSampler(model=linear_regression, progress_bar=False)
    with pytest.raises(TypeError, match="not both"):
        WGFKernel(linear_regression, sampler=untrained)
    with pytest.raises(TypeError, match="not both.*n_steps"):
        WGFKernel(sampler=untrained, n_steps=3)
    with pytest.raises(TypeError, match="must be a wgfinfer.WGFSampler"):
        WGFKernel(sampler=object())
    log_density_sampler = wgfinfer.WGFSampler(lambda z: -z.square().sum(-1), dim=2, progress_bar=False)
    with pytest.raises(ValueError, match="built from a log_density"):
        WGFKernel(sampler=log_density_sampler)
    with pytest.raises(ValueError, match="block_size"):
        WGFKernel(sampler=untrained, block_size=0)
    with pytest.raises(RuntimeError, match="setup"):
        WGFKernel(sampler=untrained).sample({"w": torch.zeros(3)})

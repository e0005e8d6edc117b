"""Every downstream line of a Pyro + ArviZ workflow (issue 17): posterior predictive and predictions
groups, ``pyro.deterministic`` sites, LOO / WAIC / compare, ``az.from_pyro``, draw counts, summary.

One conjugate regression with two ``pyro.deterministic`` sites, trained briefly from its Laplace
start (exact for this Gaussian posterior, so the flow stays within KL ~ 0.005 of it); its closed-form
posterior gives the known answers.
"""

from __future__ import annotations

import math
import re
import warnings

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from arviz_compat import ARVIZ_1, elpd, plot_ppc
from pyro.infer import MCMC, NUTS

import wgfinfer
from wgfinfer.diagnostics import kl_divergence
from wgfinfer.pyro_kernel import WGFKernel, from_mcmc
from wgfinfer.pyro_target import PyroTarget

matplotlib.use("Agg")

N_DATA = 12
LOO_WARNING = "ignore:Estimated shape parameter of Pareto"  # LOO on 12 observations


def regression(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """w ~ N(0, I_3), y | w ~ N(x w, 1), with the mean and |w|^2 recorded as deterministic sites."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 1.0).to_event(1))
    pyro.deterministic("w_norm2", w.square().sum(-1))
    with pyro.plate("data", x.shape[0]):
        mu = pyro.deterministic("mu", (x * w).sum(-1))
        return pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def tutorial_regression(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The same model as Pyro's tutorials write it (``x @ w``): evaluated under ``torch.func.vmap``."""
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 1.0).to_event(1))
    mu = pyro.deterministic("mu", x @ w)
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N_DATA, 3, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    return x, y + torch.randn(N_DATA, generator=gen, dtype=torch.float64)


@pytest.fixture(scope="module")
def sampler(data) -> wgfinfer.WGFSampler:
    return wgfinfer.WGFSampler(
        model=regression,
        scheme=wgfinfer.ICNN(iters_per_step=10, batch_size=64, hidden=(8,)),
        n_steps=1,
        dtype=torch.float64,
        progress_bar=False,
        seed=0,
    ).run(*data)


def exact_posterior(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cov = torch.linalg.inv(torch.eye(x.shape[1], dtype=x.dtype) + x.T @ x)
    return cov @ x.T @ y, cov


@pytest.fixture(scope="module")
def idata(sampler, data):
    x, _ = data
    return sampler.to_inference_data(
        500, num_chains=4, seed=1, posterior_predictive=True, predictions_args=(x[:5],)
    )


# ---------------------------------------------------------------------- posterior predictive


def test_posterior_predictive_mean_and_variance_match_the_closed_form(sampler, idata, data) -> None:
    x, y = data
    mean, cov = exact_posterior(x, y)
    z, log_q = sampler.sample(4000, return_log_prob=True, seed=2)
    kl, kl_se = kl_divergence(log_q, torch.distributions.MultivariateNormal(mean, cov).log_prob(z))
    kl_bound = kl + 4 * kl_se
    assert kl_bound < 0.05  # the Laplace start is exact here; one short step keeps it close
    pp = idata.posterior_predictive["y"]
    assert pp.dims == ("chain", "draw", "data") and pp.shape == (4, 500, N_DATA)
    draws = pp.values.reshape(-1, N_DATA)
    # y* = x w + eps: E y* = x m, Var y* = x S x^T + 1 (diagonal)
    exact_mean = (x @ mean).numpy()
    exact_var = (torch.einsum("ij,jk,ik->i", x, cov, x) + 1.0).numpy()
    fit_var = torch.einsum("ij,jk,ik->i", x, cov, x).numpy()
    # Donsker-Varadhan for E_q x_i w against E_p x_i w, plus 4 Monte-Carlo standard errors
    bound = np.sqrt(2 * kl_bound * fit_var) + 4 * np.sqrt(exact_var / draws.shape[0])
    assert (np.abs(draws.mean(0) - exact_mean) < bound).all()
    np.testing.assert_allclose(draws.var(0), exact_var, rtol=0.15)


def test_posterior_predictive_draws_belong_to_their_posterior_draws(idata) -> None:
    # y*[c, d] ~ N(mu[c, d], 1) given the same posterior draw, whatever the flow: the residuals are
    # iid N(0, 1) (4 x 500 x 12 of them)
    resid = (idata.posterior_predictive["y"] - idata.posterior["mu"]).values.ravel()
    se = 1 / math.sqrt(resid.size)
    assert abs(resid.mean()) < 4 * se
    assert abs(resid.var() - 1.0) < 4 * math.sqrt(2) * se


def test_plot_ppc_works_in_one_call(idata) -> None:
    import matplotlib.pyplot as plt

    assert list(idata.posterior_predictive.data_vars) == list(idata.observed_data.data_vars) == ["y"]
    plot_ppc(idata, num_samples=20)
    plt.close("all")


def test_predictions_at_new_data(idata, data) -> None:
    x, _ = data
    pred = idata.predictions
    assert set(pred.data_vars) == {"y", "mu", "w_norm2"}
    assert pred["y"].dims == ("chain", "draw", "data") and pred["y"].shape == (4, 500, 5)
    w = idata.posterior["w"].values
    np.testing.assert_allclose(pred["mu"].values, w @ x[:5].numpy().T, rtol=1e-12, atol=1e-12)
    resid = (pred["y"] - pred["mu"]).values.ravel()
    assert abs(resid.mean()) < 4 / math.sqrt(resid.size)


def test_predictive_groups_are_reproducible_and_leave_the_global_rng_alone(sampler, data) -> None:
    x, _ = data
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sampler.to_inference_data(20, seed=5, posterior_predictive=True, predictions_args=(x[:2],))
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator neither used nor moved
    torch.manual_seed(7)  # a different global state changes nothing either
    again = sampler.to_inference_data(20, seed=5, posterior_predictive=True, predictions_args=(x[:2],))
    for group in ("posterior", "posterior_predictive", "predictions"):
        for name, value in getattr(first, group).data_vars.items():
            np.testing.assert_array_equal(value.values, getattr(again, group)[name].values)
    other = sampler.to_inference_data(20, seed=6, posterior_predictive=True)
    assert not np.array_equal(other.posterior_predictive["y"].values, first.posterior_predictive["y"].values)


def test_predictive_groups_need_a_pyro_model_and_summary_without_densities(capsys) -> None:
    s = wgfinfer.WGFSampler(  # a draws-only flow (residual maps) of a log-density
        lambda x: -0.5 * x.square().sum(-1),
        dim=1,
        scheme=wgfinfer.Variational(iters_per_step=2, batch_size=16, hidden=(4,)),
        n_steps=1,
        progress_bar=False,
    ).run()
    with pytest.raises(ValueError, match="Pyro model"):
        s.to_inference_data(10, posterior_predictive=True)
    with pytest.raises(ValueError, match="Pyro model"):
        s.to_inference_data(10, predictions_kwargs={})
    s.summary(num_samples=50, seed=0)
    out = capsys.readouterr().out
    assert "x[0]" in out and "by construction" in out and "Importance diagnostics: unavailable" in out


# ---------------------------------------------------------------------- deterministic sites, LOO


def test_deterministic_sites_are_in_the_posterior_and_not_likelihoods(idata, data) -> None:
    x, _ = data
    w = idata.posterior["w"].values
    assert idata.posterior["mu"].dims == ("chain", "draw", "data")
    assert idata.posterior["w_norm2"].dims == ("chain", "draw")
    np.testing.assert_allclose(idata.posterior["mu"].values, w @ x.numpy().T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(idata.posterior["w_norm2"].values, (w**2).sum(-1), rtol=1e-12)
    assert list(idata.log_likelihood.data_vars) == ["y"]
    assert list(idata.observed_data.data_vars) == ["y"]


@pytest.mark.filterwarnings(LOO_WARNING)
def test_loo_waic_and_compare_run_on_a_model_with_deterministic_sites(sampler, idata) -> None:
    loo = az.loo(idata)  # raised "Found several log likelihood arrays" before
    assert np.isfinite(elpd(loo)) and loo.n_data_points == N_DATA
    if not ARVIZ_1:  # ArviZ >= 1.0 has no WAIC
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # WAIC's variance warning on 12 points
            assert np.isfinite(az.waic(idata).elpd_waic)
    other = sampler.to_inference_data(500, num_chains=4, seed=3)
    table = az.compare({"first": idata, "second": other})
    assert set(table.index) == {"first", "second"}


def test_deterministic_sites_of_a_tutorial_style_model_under_vmap(data) -> None:
    x, y = data
    target = PyroTarget(tutorial_regression, (x, y), dtype=torch.float64)
    assert target.batching == "vmap" and target.deterministic_sites == ["mu"]
    assert list(target.observed_sites) == ["y"]
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(target.site_values(z, ["mu"])["mu"].numpy(), (z @ x.T).numpy(), rtol=1e-12)
    # the posterior predictive draws y (one model run per draw through pyro.infer.Predictive here)
    gen = torch.Generator().manual_seed(0)
    drawn = target.site_values(z, ["y"], predictive=True, generator=gen)["y"]
    assert drawn.shape == (6, N_DATA) and not torch.equal(drawn[0], y)
    assert target.pointwise_log_likelihood(z).keys() == {"y"}


def test_a_deterministic_site_that_mixes_draws_falls_back_to_predictive_with_a_warning(data) -> None:
    def mixing(x, y=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=x.dtype), 1.0).to_event(1))
        pyro.deterministic("w_mean", w.mean())  # over every dim: mixes particles in a plate
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)

    target = PyroTarget(mixing, data, dtype=torch.float64)
    assert target.batching == "plate"
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"w_mean.*one model run per draw.*w\.mean\(-1\)"):
        values = target.site_values(z, ["w_mean"])
    np.testing.assert_allclose(values["w_mean"].numpy(), z.mean(-1).numpy(), rtol=1e-12)


# ---------------------------------------------------------------------- az.from_pyro, WGFKernel


def test_from_pyro_of_a_sampler_says_what_to_use(sampler) -> None:
    if not ARVIZ_1:  # ArviZ >= 1.0 has no from_pyro
        with pytest.raises(AttributeError, match=r"not a pyro\.infer\.MCMC.*to_inference_data"):
            az.from_pyro(sampler)
    assert not hasattr(sampler, "num_chains")
    with pytest.raises(AttributeError, match="has no attribute 'nonexistent'"):
        sampler.nonexistent  # noqa: B018 - other attributes fail as usual


@pytest.mark.filterwarnings(LOO_WARNING)
def test_from_mcmc_converts_a_wgfkernel_run(sampler, data) -> None:
    x, _ = data
    mcmc = MCMC(WGFKernel(sampler=sampler), num_samples=60, warmup_steps=0, disable_progbar=True)
    with pytest.raises(RuntimeError, match="mcmc.run"):
        from_mcmc(mcmc)
    mcmc.run(*data)
    idata = from_mcmc(mcmc, posterior_predictive=True, predictions_args=(x[:3],), seed=0)
    w = mcmc.get_samples(group_by_chain=True)["w"].numpy()
    np.testing.assert_allclose(idata.posterior["w"].values, w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(idata.posterior["mu"].values, w @ x.numpy().T, rtol=1e-12, atol=1e-12)
    assert list(idata.log_likelihood.data_vars) == ["y"]  # az.from_pyro omits it for this model
    assert idata.posterior_predictive["y"].shape == (1, 60, N_DATA)
    assert idata.predictions["y"].shape == (1, 60, 3)
    assert np.isfinite(elpd(az.loo(idata)))
    rate = mcmc.diagnostics()["acceptance rate"]["chain 0"]
    assert idata.posterior.attrs["acceptance_rate"] == [rate]
    # lp is the log joint at the chain's states
    z = torch.as_tensor(w.reshape(-1, 3))
    np.testing.assert_allclose(idata.sample_stats["lp"].values.ravel(), sampler.target.log_density(z).numpy())
    with pytest.raises(TypeError, match="WGFKernel"):
        from_mcmc(MCMC(NUTS(regression), num_samples=1))
    with pytest.raises(TypeError, match="to_inference_data"):
        from_mcmc(sampler)


# ---------------------------------------------------------------------- draw counts, summary


def test_draw_counts_follow_mcmc(sampler) -> None:
    idata = sampler.to_inference_data(7, num_chains=3, seed=0, posterior_predictive=True)
    # MCMC(num_samples=7, num_chains=3): 3 chains of 7 draws each, in every group
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        dataset = getattr(idata, group)
        assert (dataset.sizes["chain"], dataset.sizes["draw"]) == (3, 7), group
    assert sampler.get_samples()["w"].shape == (1000, 3)  # the documented default
    assert sampler.get_samples(13, seed=0)["w"].shape == (13, 3)
    assert sampler.get_samples(13, seed=0, group_by_chain=True)["w"].shape == (1, 13, 3)


def test_summary_says_what_r_hat_means_here_and_prints_flow_diagnostics(sampler, capsys) -> None:
    sampler.summary(num_samples=400, seed=4)
    out = capsys.readouterr().out
    assert "w[0]" in out and "n_eff" in out and "r_hat" in out  # Pyro's table, as MCMC.summary
    assert "independent draws" in out and "by construction" in out
    expected = sampler.diagnostics(num_samples=400, seed=4)  # the same draws
    assert re.search(rf"PSIS k-hat {expected['khat']:.2f} \((good|usable|unreliable)", out)
    assert f"importance ESS {expected['ess_is']:.0f} of 400" in out
    assert f"{expected['log_evidence']:.2f} +- {expected['log_evidence_se']:.2f}" in out

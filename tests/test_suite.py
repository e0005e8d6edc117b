"""The posterior suite's registry and its exact references (wgfinfer.problems.suite)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from wgfinfer.problems import posteriordb, suite


def _funnel_draws(n: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    v = 3.0 * torch.randn(n, generator=g, dtype=torch.float64)
    x = torch.randn(n, 9, generator=g, dtype=torch.float64) * torch.exp(v / 2)[:, None]
    return torch.cat([v[:, None], x], dim=1).numpy()


def test_funnel_reference_is_neal_2003_exactly():
    ref = suite.get("funnel-10d").reference()
    assert ref.names == ("v", *(f"x[{i}]" for i in range(1, 10)))
    np.testing.assert_array_equal(ref.mean, np.zeros(10))
    assert ref.sd[0] == 3.0
    # sd(x_i) = sqrt(E[e^v]) with v ~ N(0, 9): E[e^v] = exp(9 / 2), so sd = exp(9 / 4) = 9.4877...
    np.testing.assert_allclose(ref.sd[1:], math.exp(2.25), rtol=1e-15)
    assert abs(suite.FUNNEL_X_SD - 9.487735836358526) < 1e-12
    np.testing.assert_array_equal(ref.se_mean, 0.0)


def test_funnel_log_density_and_marginal_cdf():
    x = torch.tensor(_funnel_draws(3), dtype=torch.float64)
    v, rest = x[:, 0], x[:, 1:]
    expected = torch.distributions.Normal(0.0, 3.0).log_prob(v) + torch.distributions.Normal(
        0.0, torch.exp(v / 2)[:, None]
    ).log_prob(rest).sum(-1)
    torch.testing.assert_close(suite.funnel_log_density(x), expected)
    # exact draws have uniform CDF values: KS distance of 20000 draws well under 1.63 / sqrt(n)
    ref = suite.get("funnel-10d").reference()
    u = ref.marginal_cdf(_funnel_draws(20_000, seed=1))
    from scipy.stats import kstest

    assert max(kstest(u[:, j], "uniform").statistic for j in range(10)) < 1.63 / math.sqrt(20_000)


def test_student_t_reference_sd_is_sqrt_3():
    ref = suite.get("student_t-df3-4d").reference()
    np.testing.assert_allclose(ref.sd, math.sqrt(3.0))
    np.testing.assert_array_equal(ref.mean, 0.0)
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)[:, None].expand(11, 4)
    expected = torch.distributions.StudentT(3.0).log_prob(x).sum(-1)
    torch.testing.assert_close(suite.student_t_log_density(x), expected)
    np.testing.assert_allclose(ref.marginal_cdf(np.zeros((1, 4))), 0.5)


def test_mixture_weights_moments_and_mode_weight():
    ref = suite.get("mixture-0.7-0.3-4d").reference()
    assert suite.MIXTURE_WEIGHTS == (0.7, 0.3)
    np.testing.assert_allclose(ref.mean, 0.6)  # 0.7 * 1.5 - 0.3 * 1.5
    np.testing.assert_allclose(ref.sd, 1.7)  # sqrt(1 + 0.7 * 0.3 * 3^2)
    # P(sum x > 0) = 0.7 Phi(3) + 0.3 Phi(-3)
    assert ref.mode_weight == pytest.approx(0.7 * 0.998650101968 + 0.3 * 0.001349898032, abs=1e-10)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    first = torch.rand(n, generator=g) < 0.7
    centre = torch.where(first, 1.5, -1.5).to(torch.float64)[:, None]
    x = centre + torch.randn(n, 4, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(x.mean(0).numpy(), ref.mean, atol=0.02)
    np.testing.assert_allclose(x.std(0).numpy(), ref.sd, atol=0.02)
    assert suite.mixture_mode_indicator(x.numpy()).mean() == pytest.approx(ref.mode_weight, abs=0.005)
    # normalised: the log density integrates to one along a line through both centres it peaks on
    components = torch.distributions.MultivariateNormal(
        torch.stack([torch.full((4,), 1.5), torch.full((4,), -1.5)]).double(), torch.eye(4).double()
    )
    expected = torch.logsumexp(components.log_prob(x[:5, None]) + torch.tensor([0.7, 0.3]).log(), dim=-1)
    torch.testing.assert_close(suite.mixture_log_density(x[:5]), expected)


def test_posteriordb_problems_use_the_packaged_moments_in_flatten_order():
    name = "kidiq-kidscore_interaction"
    problem = suite.get(name)
    ref = problem.reference()
    moments = posteriordb.reference_moments(name)
    assert list(ref.names) == posteriordb.coordinate_names(name) == problem.coordinate_names()
    np.testing.assert_array_equal(ref.mean[:4], moments["beta"]["mean"])
    assert ref.mean[4] == moments["sigma"]["mean"]
    draws = {"beta": np.ones((2, 4)), "sigma": np.array([1.0, math.e])}
    expected = posteriordb.flatten(name, posteriordb.unconstrain(name, draws))
    np.testing.assert_allclose(problem.coordinates(draws), expected)
    np.testing.assert_allclose(problem.coordinates(draws)[:, 4], [0.0, 1.0])  # log sigma


def test_every_posteriordb_posterior_is_in_the_suite():
    assert set(posteriordb.POSTERIORS) <= set(suite.SUITE)
    for name in posteriordb.POSTERIORS:
        ref = suite.get(name).reference()
        assert len(ref.names) == len(ref.mean) == len(ref.sd) and (ref.sd > 0).all()


def test_eight_schools_both_parameterisations_compare_on_mu_log_tau_theta():
    centred, noncentred = suite.get("eight_schools-centered"), suite.get("eight_schools-noncentered")
    assert centred.nuts_reference.key == noncentred.nuts_reference.key
    assert centred.nuts_reference.model is noncentred.model
    names = ["mu", "tau", *(f"theta[{i}]" for i in range(1, 9))]
    assert centred.coordinate_names() == noncentred.coordinate_names() == names
    mu, tau = torch.tensor([1.0, 2.0]), torch.tensor([1.0, math.e])
    trans = torch.arange(16.0).reshape(2, 8)
    theta = mu[:, None] + tau[:, None] * trans
    a = noncentred.coordinates({"mu": mu, "tau": tau, "theta_trans": trans})
    b = centred.coordinates({"mu": mu, "tau": tau, "theta": theta})
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a[:, 1], [0.0, 1.0])


def test_reference_json_round_trip_and_from_chains():
    g = np.random.default_rng(0)
    chains = g.normal(size=(2, 500, 3)) * [1.0, 2.0, 3.0]
    ref = suite.reference_from_chains(["a", "b", "c"], chains, "test")
    back = suite.Reference.from_json(ref.to_json())
    assert (back.names, back.source, back.mode_weight) == (ref.names, ref.source, ref.mode_weight)
    for key in ("mean", "sd", "se_mean", "se_sd"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ref, key))
    np.testing.assert_allclose(ref.sd, [1.0, 2.0, 3.0], rtol=0.1)
    assert (ref.se_mean > 0).all() and (ref.se_sd > 0).all()


def test_blr_problems_have_the_data_sets_weights():
    problem = suite.get("blr-breast_cancer")
    assert problem.coordinate_names()[:2] == ["alpha", "w[1]"]
    assert len(problem.coordinate_names()) == 32
    with pytest.raises(KeyError, match="no suite problem"):
        suite.get("nope")


def test_the_suite_never_imports_jax():
    code = "import sys, wgfinfer.problems.suite; assert not {'jax', 'numpyro'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)

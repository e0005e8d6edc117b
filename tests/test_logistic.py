"""The Bayesian logistic-regression model: Pyro model = hand-written posterior; predictive metrics."""

from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch
from pyro.infer import Predictive

import wgfinfer
from wgfinfer.problems.datasets import load_breast_cancer
from wgfinfer.problems.logistic import PWGF_SETTINGS, log_posterior, model, predictive_metrics
from wgfinfer.pyro_target import PyroTarget


def test_pyro_model_equals_hand_written_log_posterior() -> None:
    data = load_breast_cancer(dtype=torch.float64)
    target = PyroTarget(model, (data.x_train, data.y_train), dtype=torch.float64)
    assert target.batched and target.site_names == ["alpha", "w"]
    # Pyro orders z as [log alpha, w]; the hand-written density takes [w, log alpha]
    z = 0.3 * torch.randn(6, target.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z[:, 0] += math.log(50.0)
    theta = torch.cat([z[:, 1:], z[:, :1]], dim=1)
    torch.testing.assert_close(
        target.log_density(z), log_posterior(theta, data.x_train, data.y_train), rtol=1e-10, atol=1e-8
    )


def test_predictive_metrics_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0], dtype=torch.float64)
    w = torch.tensor([[0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    metrics = predictive_metrics(w, x, y)
    p = torch.sigmoid(w @ x.T)  # (2 draws, 2 points)
    assert metrics["accuracy"] == 0.5  # point 2: mean p(y=1) < 1/2
    expected = float(p.mean(0).log().mean())
    assert math.isclose(metrics["log_lik"], expected, rel_tol=1e-12)


def test_sampler_on_the_model_gives_predictive_draws() -> None:
    data = load_breast_cancer()
    sampler = wgfinfer.WGFSampler(
        model=model, scheme=wgfinfer.ICNN(iters_per_step=10, hidden=(8,)), n_steps=1, progress_bar=False
    ).run(data.x_train, data.y_train)
    samples = sampler.get_samples(50, seed=0)
    assert samples["w"].shape == (50, data.n_features) and bool((samples["alpha"] > 0).all())
    simulated = Predictive(model, posterior_samples=samples)(data.x_test)["y"]
    assert simulated.shape == (50, data.x_test.shape[0])
    # the Laplace start alone already predicts far better than chance on this data set
    assert predictive_metrics(samples["w"], data.x_test, data.y_test)["accuracy"] > 0.9
    pyro.clear_param_store()


@pytest.mark.slow
def test_pwgf_settings_give_reliable_importance_weights_on_breast_cancer() -> None:
    """The example's settings (``logistic.PWGF_SETTINGS``) on its data set: the flow's importance
    weights are usable (PSIS k-hat < 0.7; measured 0.15-0.54 over training and draw seeds) and
    reweighting the draws towards the posterior barely moves the predictions (slow: about a minute)."""
    data = load_breast_cancer(dtype=torch.float64)
    sampler = wgfinfer.WGFSampler(model=model, seed=0, progress_bar=False, **PWGF_SETTINGS)
    sampler.run(data.x_train, data.y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the k-hat > 0.7 warning would fail the test
        diagnostics = sampler.diagnostics(num_samples=4096, seed=1)
    assert diagnostics["khat"] < 0.7
    assert diagnostics["ess_is_fraction"] > 0.2  # measured 0.6; a planar flow reached 0.05
    flow = predictive_metrics(sampler.get_samples(4096, seed=2)["w"], data.x_test, data.y_test)
    reweighted = predictive_metrics(
        sampler.get_samples(4096, seed=3, resample=True)["w"], data.x_test, data.y_test
    )
    # the README's target tolerance against NUTS, here against the importance-corrected posterior
    assert abs(flow["log_lik"] - reweighted["log_lik"]) < 0.005
    assert flow["accuracy"] >= 0.98

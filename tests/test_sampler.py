"""The sampler's contract, for every scheme: shapes, history, determinism, no global state,
InferenceData, divergence handling."""

from __future__ import annotations

import dataclasses

import arviz as az
import numpy as np
import pytest
import torch

import wgfinfer


def log_density(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x - 1.0).square().sum(-1)


JKO = dict(iters_per_step=30, batch_size=64, hidden=(8, 8))
SCHEMES = {
    "icnn": wgfinfer.ICNN(**JKO),
    "variational-resnet": wgfinfer.Variational(map="resnet", **JKO),
    "variational-icnn": wgfinfer.Variational(map="icnn", **JKO),
    # forward Euler is explicit: 5 substeps of 0.1 for a step of 0.5
    "pwgf-planar": wgfinfer.PWGF(map="planar", n_layers=4, substeps=5, n_samples=64),
    "pwgf-coupling": wgfinfer.PWGF(map="coupling", n_layers=2, hidden=(8,), substeps=5, n_samples=64),
}
HISTORY_KEYS = {"step", "time", "loss", "kl_minus_log_z", "iterations", "wall_time", "retries"}
SCHEME_KEYS = {
    "icnn": {"w2", "potential", "log_det"},
    "variational": {"w2", "potential", "dual_objective", "kl_minus_log_z_se"},
    "pwgf": {"loss_se", "solver_iterations", "residual", "residual_max", "solves_above_tol", "grad_norm"},
}


def small(scheme: str = "icnn", **kwargs) -> wgfinfer.WGFSampler:
    options = dict(scheme=SCHEMES[scheme], dim=3, step_size=0.5, n_steps=3, progress_bar=False, seed=7)
    options.update(kwargs)
    return wgfinfer.WGFSampler(log_density, **options)


@pytest.fixture(scope="module", params=list(SCHEMES))
def scheme(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def trained(scheme: str) -> wgfinfer.WGFSampler:
    return small(scheme).run()


def test_shapes_and_history(trained: wgfinfer.WGFSampler) -> None:
    x = trained.sample(11)
    assert x.shape == (11, 3) and x.dtype == torch.float32
    if trained.flow.has_density:
        x, log_q = trained.sample(11, return_log_prob=True)
        assert log_q.shape == (11,) and bool(torch.isfinite(log_q).all())
    else:
        with pytest.raises(wgfinfer.DensityNotAvailableError, match="map='icnn'"):
            trained.sample(11, return_log_prob=True)
    assert [h["step"] for h in trained.history] == [1, 2, 3]
    expected = HISTORY_KEYS | SCHEME_KEYS[trained.method]
    assert all(expected <= set(h) for h in trained.history)
    iterations = 5 if trained.method == "pwgf" else 30  # Euler substeps for PWGF
    assert all(h["iterations"] == iterations and h["wall_time"] > 0 for h in trained.history)
    # the flow moves towards the target: the KL estimate decreases
    kls = [h["kl_minus_log_z"] for h in trained.history]
    assert kls[-1] < kls[0]


def test_same_seed_same_draws_and_history(scheme: str) -> None:
    a, b = small(scheme).run(), small(scheme).run()
    torch.testing.assert_close(a.sample(50, seed=3), b.sample(50, seed=3), rtol=0, atol=0)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = small(scheme, seed=8).run()
    assert not torch.equal(a.sample(50, seed=3), c.sample(50, seed=3))


def test_library_sets_no_global_state(scheme: str, trained: wgfinfer.WGFSampler) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    dtype, device = torch.get_default_dtype(), torch.empty(0).device
    small(scheme, n_steps=1).run().sample(10)
    trained.to_inference_data(num_samples=5)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_default_dtype() == dtype and torch.empty(0).device == device


def test_successive_draws_differ_without_seed(trained: wgfinfer.WGFSampler) -> None:
    assert not torch.equal(trained.sample(5), trained.sample(5))


def test_run_is_resumable_and_idempotent(scheme: str) -> None:
    s = small(scheme, n_steps=2).run()
    s.n_steps = 3
    s.run()
    assert len(s.flow) == 3 and [h["step"] for h in s.history] == [1, 2, 3]
    s.run()  # nothing left to do
    assert len(s.flow) == 3


def test_inference_data_groups_and_summary(trained: wgfinfer.WGFSampler) -> None:
    idata = trained.to_inference_data(num_samples=200, num_chains=2, seed=0)
    post = idata.posterior["x"]
    assert post.dims == ("chain", "draw", "x_dim_0") and post.shape == (2, 200, 3)
    stats = idata.sample_stats
    assert stats["lp"].dims == ("chain", "draw") and not stats["diverging"].any()
    if trained.flow.has_density:
        for name in ("log_q", "log_weight"):
            assert stats[name].dims == ("chain", "draw")
        np.testing.assert_allclose(stats["log_weight"], stats["lp"] - stats["log_q"], rtol=1e-6)
        assert idata.sample_stats.attrs["flow_density"] == "exact"
    else:  # draws only: the attrs say why log_q and log_weight are missing
        assert "log_q" not in stats and "log_weight" not in stats
        assert "no tractable density" in idata.sample_stats.attrs["flow_density"]
    lp = log_density(torch.as_tensor(post.values.reshape(-1, 3), dtype=torch.float32))
    np.testing.assert_allclose(stats["lp"].values.reshape(-1), lp.numpy(), rtol=1e-5, atol=1e-5)
    assert idata.posterior.attrs["method"] == trained.method
    summary = az.summary(idata)
    assert list(summary.index) == ["x[0]", "x[1]", "x[2]"]
    assert np.all(np.isfinite(summary["mean"]))


def test_progress_bar_shows_loss(capsys: pytest.CaptureFixture[str]) -> None:
    small(n_steps=2, progress_bar=True).run()
    err = capsys.readouterr().err
    assert "JKO steps" in err and "loss=" in err


@pytest.mark.cuda
def test_cuda_device() -> None:
    s = small(device="cuda").run()
    x, log_q = s.sample(100, return_log_prob=True)
    assert x.device.type == "cuda" and log_q.device.type == "cuda"
    torch.testing.assert_close(s.log_prob(x), log_q, rtol=1e-3, atol=1e-3)
    idata = s.to_inference_data(num_samples=50)
    assert idata.posterior["x"].shape == (1, 50, 3)


def test_divergence_is_detected_and_completed_steps_are_kept(scheme: str) -> None:
    s = small(scheme, n_steps=2).run()
    s.n_steps = 3
    # an absurd learning rate (PWGF: an absurd explicit Euler step) blows the next map up: the step
    # must fail loudly, not return garbage
    if s.method == "pwgf":
        s.step_size = 1e8
    else:
        s.scheme = dataclasses.replace(s.scheme, lr=1e8, lr_decay=1.0)
    with pytest.raises(wgfinfer.TrainingDivergedError, match="JKO step 2"):
        s.run()
    assert len(s.flow) == 2 and len(s.history) == 2
    x = s.sample(20)
    assert bool(torch.isfinite(x).all())
    if s.flow.has_density:
        assert bool(torch.isfinite(s.sample(20, return_log_prob=True)[1]).all())

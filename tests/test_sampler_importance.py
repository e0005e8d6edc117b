"""Sampler-level importance diagnostics and corrections on a Gaussian target with known Z."""

from __future__ import annotations

import math

import pytest
import torch

import wgfinfer

SCALE = 0.7
DIM = 2
LOG_Z = DIM * math.log(math.sqrt(2 * math.pi) * SCALE)  # of exp(-|x - 1|^2 / (2 SCALE^2))


def log_density(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - 1.0) / SCALE).square().sum(-1)


@pytest.fixture(scope="module")
def sampler() -> wgfinfer.WGFSampler:
    return wgfinfer.WGFSampler(
        log_density,
        dim=DIM,
        scheme=wgfinfer.ICNN(iters_per_step=100, hidden=(16, 16)),
        n_steps=4,
        dtype=torch.float64,
        progress_bar=False,
        seed=0,
    ).run()


def test_diagnostics_recover_known_log_evidence(sampler: wgfinfer.WGFSampler) -> None:
    d = sampler.diagnostics(num_samples=8000, seed=1)
    assert set(d) >= {"khat", "ess_is", "ess_is_fraction", "log_evidence", "log_evidence_se", "n"}
    assert d["khat"] < 0.7 and d["ess_is_fraction"] > 0.5
    assert abs(d["log_evidence"] - LOG_Z) < 4 * d["log_evidence_se"]


def test_diagnostics_warn_on_a_flow_that_misses_the_target() -> None:
    # barely trained from a narrow init towards a wide target: heavy-tailed importance weights
    poor = wgfinfer.WGFSampler(
        lambda x: -0.5 * (x / 3.0).square().sum(-1),
        dim=4,
        scheme=wgfinfer.ICNN(iters_per_step=2, hidden=(4,)),
        init=wgfinfer.Init("normal", scale=0.5),
        n_steps=1,
        progress_bar=False,
        seed=0,
    ).run()
    with pytest.warns(UserWarning, match="k-hat"):
        d = poor.diagnostics(num_samples=8000, seed=2)
    assert d["khat"] > 0.7


@pytest.mark.parametrize("how", [{"resample": True}, {"correct": "imh"}])
def test_corrected_draws_match_target_moments(sampler: wgfinfer.WGFSampler, how: dict) -> None:
    n = 8000
    x = sampler.get_samples(n, seed=3, **how)["x"]
    assert x.shape == (n, DIM)
    # corrected draws repeat proposals: with an effective sample size of at least n / 2.25 (ESS
    # fraction > 0.5 above, acceptance > 0.5 below), 4 standard errors at that size are 6 iid ones
    se = SCALE / math.sqrt(n)
    assert bool(((x.mean(0) - 1.0).abs() < 6 * se).all())
    assert bool(((x.std(0) - SCALE).abs() < 0.05 * SCALE).all())
    if "correct" in how:
        rate = sampler.last_correction["acceptance_rate"]
        assert 0.5 < rate <= 1.0


def test_get_samples_rejects_unknown_correction(sampler: wgfinfer.WGFSampler) -> None:
    with pytest.raises(ValueError, match="correct must be"):
        sampler.get_samples(10, correct="smc")

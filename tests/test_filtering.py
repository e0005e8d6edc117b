"""The JKO filter: the MH acceptance ratio (eqs. 20-21) on cases with closed-form answers, the whole
filter on an OU process with Gaussian observations against the Kalman filter, and bad input.

Tolerances: MH draws from ``n`` independent chains (one kept state each) have Monte-Carlo error
``sqrt(var / n)``; we allow 4 of those.  The filter's maps are trained briefly, so its laws may differ
from the exact ones by a KL budget of 0.01, which bounds the error of a mean by ``sqrt(2 KL var)``
(Donsker-Varadhan) and the ratio ``r`` of variances by ``(r - 1 - log r) / 2 <= KL`` (|r - 1| < 0.15).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

import wgfinfer
from wgfinfer.filtering import GaussianObservations, JKOFilter, LangevinDiffusion, Observations
from wgfinfer.filtering.jko_filter import DEFAULT_SCHEME
from wgfinfer.filtering.mcmc import FlowTrajectories, MCMCSettings, log_evidence, metropolis_hastings
from wgfinfer.problems.gaussians import ou_jko_kalman_filter, ou_kalman_filter

KL_BUDGET = 0.01


class Affine(nn.Module):
    """``T(x) = m x + c``: a map whose push-forward of N(0, 1) is N(c, m^2)."""

    def __init__(self, m: float, c: float) -> None:
        super().__init__()
        self.m, self.c = m, c

    def transport(self, x: Tensor) -> Tensor:
        return self.m * x + self.c


def standard_normal() -> Independent:
    return Independent(Normal(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)), 1)


@pytest.mark.parametrize("proposal", ["independent", "latent_rw"])
def test_acceptance_ratio_targets_the_conjugate_posterior(proposal: str) -> None:
    """One affine map N(0,1) -> N(1, 4) and one observation y = 3 with unit noise: the MH target of
    eq. 18 is the conjugate posterior N(2.6, 0.8); any error in the ratio (a stray log-det, the base
    density in the independence case) moves it."""
    obs = GaussianObservations([1.0], torch.tensor([3.0]), 1.0)
    paths = FlowTrajectories(standard_normal(), [Affine(2.0, 1.0)], obs, [1])
    n = 4000
    out = metropolis_hastings(
        paths, 1, 1, n, n, warmup=300, thin=1, proposal=proposal,
        generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
    )  # fmt: skip
    x = out.x.squeeze(-1)
    assert abs(float(x.mean()) - 2.6) < 4 * math.sqrt(0.8 / n)
    assert abs(float(x.var()) - 0.8) < 4 * 0.8 * math.sqrt(2 / n)
    assert 0.05 < out.acceptance_rate < 0.95
    # the base points are the pre-images of the states
    torch.testing.assert_close(out.x, 2.0 * out.z + 1.0)


def test_log_evidence_of_the_flow_proposals() -> None:
    obs = GaussianObservations([1.0], torch.tensor([3.0]), 1.0)
    paths = FlowTrajectories(standard_normal(), [Affine(2.0, 1.0)], obs, [1])
    estimate, se = log_evidence(paths, 1, 1, 1 << 15, torch.Generator().manual_seed(1), "cpu")
    exact = float(Normal(1.0, math.sqrt(5.0)).log_prob(torch.tensor(3.0)))  # y ~ N(1, 4 + 1)
    assert abs(estimate - exact) < 4 * se + 1e-3


A, BETA, NOISE, STEP = 1.5, 2.0, 0.7, 0.25
TIMES, VALUES, T_FINAL = [0.5, 1.0], [0.8, -0.2], 1.5


def ou_problem() -> tuple[LangevinDiffusion, GaussianObservations, dict]:
    """OU with Gaussian observations; the reference is the exact filter of the JKO-discretised
    process (the Kalman recursion through exact Gaussian JKO steps of size STEP), so only the
    optimisation and Monte-Carlo errors of the filter remain."""
    initial = Normal(torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    diffusion = LangevinDiffusion(lambda x: 0.5 * A * x.square().sum(-1), BETA, initial)
    obs = GaussianObservations(TIMES, torch.tensor(VALUES), NOISE)
    reference = ou_jko_kalman_filter(A, BETA, 0.5, 1.0, TIMES, VALUES, NOISE, T_FINAL, STEP)
    return diffusion, obs, reference


def test_jko_kalman_reference_converges_to_kalman() -> None:
    """The JKO-discretised filter approaches the continuous-time Kalman filter as h -> 0 (first order)."""
    exact = ou_kalman_filter(A, BETA, 0.5, 1.0, TIMES, VALUES, NOISE, T_FINAL)
    errors = [
        abs(ou_jko_kalman_filter(A, BETA, 0.5, 1.0, TIMES, VALUES, NOISE, T_FINAL, h)["log_evidence"]
            - exact["log_evidence"])
        for h in (0.1, 0.05, 0.025)
    ]  # fmt: skip
    assert errors[0] > errors[1] > errors[2] and errors[1] / errors[2] > 1.6, errors


@pytest.fixture(
    scope="module",
    params=[("independent", None), ("latent_rw", None), ("latent_rw", 20)],
    ids=["independent", "latent_rw", "latent_rw-continued"],
)
def ou_filter(request: pytest.FixtureRequest):
    """The filter on the OU problem; ``latent_rw-continued`` starts the chains at each later
    observation from the previous observation's draws with 20 warm-up sweeps (``warmup_continued``)."""
    diffusion, obs, kalman = ou_problem()
    scheme = wgfinfer.ICNN(iters_per_step=80, batch_size=256, hidden=(16, 16), n_particles=4096)
    proposal, warmup_continued = request.param
    result = JKOFilter(
        diffusion, scheme=scheme, step_size=STEP, n_chains=512, warmup=100, thin=1,
        proposal=proposal, warmup_continued=warmup_continued, seed=0,
    ).run(obs, T_FINAL)  # fmt: skip
    return result, kalman


def test_filter_matches_kalman_mean_and_variance(ou_filter) -> None:
    result, kalman = ou_filter
    n = 2000
    means = [*kalman["means"], kalman["final_mean"]]
    variances = [*kalman["variances"], kalman["final_variance"]]
    assert result.times == [*TIMES, T_FINAL]
    for t, mean, var in zip(result.times, means, variances, strict=True):
        x = result.sample(n, time=t, seed=5).squeeze(-1)  # n chains, one state kept each
        assert abs(float(x.mean()) - mean) < 4 * math.sqrt(var / n) + math.sqrt(2 * KL_BUDGET * var), t
        ratio = float(x.var()) / var
        assert abs(ratio - 1.0) < 4 * math.sqrt(2 / n) + 0.15, (t, ratio)
    assert set(result.acceptance_rate) == set(TIMES) and all(
        0 < r < 1 for r in result.acceptance_rate.values()
    )


def test_filter_density_and_log_evidence(ou_filter) -> None:
    result, kalman = ou_filter
    # normalised density at t_final against the Kalman predictive law: KL on a grid
    grid = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    log_q = result.log_prob(grid.unsqueeze(-1), normalized=True)
    log_p = Normal(kalman["final_mean"], math.sqrt(kalman["final_variance"])).log_prob(grid)
    dx = float(grid[1] - grid[0])
    kl = float((log_p.exp() * (log_p - log_q)).sum() * dx)
    assert kl < KL_BUDGET + 4 * result.log_evidence_se, kl
    assert abs(result.log_evidence - kalman["log_evidence"]) < 4 * result.log_evidence_se + KL_BUDGET


def test_history_and_inference_data(ou_filter) -> None:
    result, _ = ou_filter
    assert [h["step"] for h in result.history] == list(range(1, 7))  # 2 steps per interval of 0.5
    assert [h["segment"] for h in result.history] == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose([h["time"] for h in result.history], [0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    idata = result.to_inference_data(num_samples=50)
    assert idata.posterior["x"].dims == ("chain", "draw", "time", "x_dim_0")
    np.testing.assert_allclose(idata.posterior["time"].values, [0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="valid times"):
        result.sample(10, time=0.7)


def test_generic_likelihood_equals_gaussian_observations() -> None:
    gaussian = GaussianObservations(TIMES, torch.tensor(VALUES), NOISE)
    generic = Observations(TIMES, torch.tensor(VALUES), lambda y, x: Normal(y, NOISE).log_prob(x.squeeze(-1)))
    x = torch.linspace(-2, 2, 7, dtype=torch.float64).unsqueeze(-1)
    torch.testing.assert_close(generic.log_likelihood(1, x), gaussian.log_likelihood(1, x))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: GaussianObservations([1.0, 0.5], torch.zeros(2), 1.0), ValueError, "strictly increasing"),
        (lambda: GaussianObservations([0.0, 0.5], torch.zeros(2), 1.0), ValueError, "> 0"),
        (
            lambda: GaussianObservations([0.5, 1.0], torch.zeros(3), 1.0),
            ValueError,
            "one observation per time",
        ),
        (lambda: GaussianObservations([0.5], torch.zeros(1), 0.0), ValueError, "noise_std"),
        (lambda: LangevinDiffusion(lambda x: x.sum(-1), 1.0, None), TypeError, "initial"),
        (lambda: LangevinDiffusion(lambda x: x.sum(-1), -1.0, Normal(0.0, 1.0)), ValueError, "beta"),
        (lambda: JKOFilter("not a diffusion"), TypeError, "LangevinDiffusion"),
        (lambda: JKOFilter(ou_problem()[0], proposal="gibbs"), ValueError, "proposal must be one of"),
        (lambda: JKOFilter(ou_problem()[0], thin=0), ValueError, "thin"),
        (lambda: JKOFilter(ou_problem()[0], warmup_continued=-1), ValueError, "warmup_continued"),
    ],
)
def test_bad_input(make, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def test_the_defaults_are_the_measured_configuration() -> None:
    """``JKOFilter(diffusion)`` is the configuration measured in docs/filtering.md (its accuracy on
    the seed's problem: ``tests/test_defaults_slow.py``)."""
    f = JKOFilter(ou_problem()[0])
    assert f.scheme is DEFAULT_SCHEME
    assert (f.scheme.hidden, f.scheme.iters_per_step, f.scheme.batch_size) == ((32, 32), 300, 512)
    assert f.scheme.lr == 0.02
    assert f.scheme.stop_on_plateau is False and f.n_particles == 300 * 512 // 4
    assert f.mcmc == MCMCSettings(n_chains=256, warmup=200, thin=2, proposal="latent_rw", step_scale=0.5)
    assert (f.step_size, f.dtype, f.cache_proposals, f.warmup_continued) == (0.25, torch.float32, True, 50)


def test_observations_after_t_final_or_of_wrong_dimension() -> None:
    diffusion, obs, _ = ou_problem()
    with pytest.raises(ValueError, match="observations after t_final"):
        JKOFilter(diffusion).run(obs, 0.7)
    two_d = GaussianObservations(TIMES, torch.zeros(2, 2), NOISE)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        JKOFilter(diffusion).run(two_d, T_FINAL)
    with pytest.raises(TypeError, match="Observations"):
        JKOFilter(diffusion).run([0.5, 1.0], T_FINAL)

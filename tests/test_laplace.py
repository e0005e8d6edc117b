"""Laplace whitening: exact on Gaussians, consistent flow densities, clear failures."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

import wgfinfer
from wgfinfer.init import Init, StartFallbackWarning, whitening
from wgfinfer.laplace import AffineWhitening, LaplaceStartError, fit_gaussian, laplace_whitening
from wgfinfer.problems import eight_schools


def correlated_gaussian() -> torch.distributions.MultivariateNormal:
    cov = torch.tensor([[2.0, 0.9, 0.0], [0.9, 1.0, -0.3], [0.0, -0.3, 0.2]], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), cov)


def test_whitening_of_a_gaussian_is_its_mean_and_covariance() -> None:
    target = correlated_gaussian()
    whitening = laplace_whitening(target.log_prob, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(whitening.loc, target.mean, rtol=0, atol=1e-7)
    cov = whitening.scale_tril @ whitening.scale_tril.T
    torch.testing.assert_close(cov, target.covariance_matrix, rtol=1e-7, atol=1e-9)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(whitening.forward(whitening.inverse(x)), x)


def test_flow_densities_stay_exact_through_the_whitening() -> None:
    target = correlated_gaussian()
    sampler = wgfinfer.WGFSampler(
        target.log_prob,
        dim=3,
        scheme=wgfinfer.ICNN(iters_per_step=30, hidden=(8,)),
        init=wgfinfer.Init("laplace", scale=1.5),
        n_steps=2,
        dtype=torch.float64,
        progress_bar=False,
    ).run()
    x, log_q = sampler.sample(200, return_log_prob=True, seed=0)
    torch.testing.assert_close(sampler.log_prob(x), log_q, rtol=1e-8, atol=1e-8)
    # the flow has moved N(m, 2.25 S) towards N(m, S): its KL is below the start's
    start = 3 / 2 * (2.25 - 1.0 - math.log(2.25))  # KL(N(m, s^2 S) || N(m, S)), d = 3, s^2 = 2.25
    kl = float((log_q - target.log_prob(x)).mean())
    assert kl < 0.5 * start


def test_unbounded_and_non_convex_targets_are_reported() -> None:
    with pytest.raises(ValueError, match="init='laplace'"):
        laplace_whitening(lambda x: x.sum(-1), torch.zeros(2, dtype=torch.float64))  # no mode

    def double_well(x: torch.Tensor) -> torch.Tensor:  # the origin is a stationary saddle
        return -(x[:, 0] ** 2) + x[:, 1] ** 2 - x[:, 1] ** 4

    with pytest.warns(RuntimeWarning, match="not positive definite"):
        whitening = laplace_whitening(double_well, torch.zeros(2, dtype=torch.float64))
    assert bool(torch.isfinite(whitening.scale_tril).all())


def test_strict_laplace_refuses_a_saddle_and_an_unconverged_search() -> None:
    def double_well(x: torch.Tensor) -> torch.Tensor:  # the origin is a stationary saddle
        return -(x[:, 0] ** 2) + x[:, 1] ** 2 - x[:, 1] ** 4

    with pytest.raises(LaplaceStartError, match="not positive definite"):
        laplace_whitening(double_well, torch.zeros(2, dtype=torch.float64), strict=True)
    # a slowly rising ridge: L-BFGS stops after its iterations with much left to gain
    with pytest.raises(LaplaceStartError, match="did not converge|not positive definite|diverged"):
        laplace_whitening(
            lambda x: 0.01 * x[:, 0] - x[:, 1] ** 2, torch.zeros(2, dtype=torch.float64), strict=True
        )
    # a proper Gaussian passes, and its Laplace approximation is exact
    target = correlated_gaussian()
    white = laplace_whitening(target.log_prob, torch.zeros(3, dtype=torch.float64), strict=True)
    torch.testing.assert_close(white.loc, target.loc)


SIGMA, Y = eight_schools.model_args(torch.float64)


def centred_eight_schools(z: torch.Tensor) -> torch.Tensor:
    """log p(mu, log tau, theta | y) of centred eight schools (mu ~ N(0, 5), tau ~ half-Cauchy(5)),
    log-Jacobian of tau = exp(log tau) included."""
    mu, log_tau, theta = z[:, 0], z[:, 1], z[:, 2:]
    tau = log_tau.exp()
    return (
        dist.Normal(0.0, 5.0).log_prob(mu)
        + dist.HalfCauchy(5.0).log_prob(tau)
        + log_tau
        + dist.Normal(mu.unsqueeze(-1), tau.unsqueeze(-1)).log_prob(theta).sum(-1)
        + dist.Normal(theta, SIGMA).log_prob(Y).sum(-1)
    )


def test_a_funnel_without_a_mode_falls_back_to_a_gaussian_fit_with_a_warning() -> None:
    # the density grows without bound as tau -> 0 (no Laplace approximation); this used to floor the
    # Hessian's eigenvalues at 1e24 and start the flow on a point
    scheme = wgfinfer.ICNN(iters_per_step=2, batch_size=16, hidden=(4,), n_particles=64, n_monitor=32)
    sampler = wgfinfer.WGFSampler(
        centred_eight_schools,
        dim=10,
        init="laplace",
        scheme=scheme,
        n_steps=1,
        dtype=torch.float64,
        progress_bar=False,
    )
    with pytest.warns(StartFallbackWarning, match=r"(?s)init='laplace'.*full-rank Gaussian fit"):
        sampler.run()
    white = sampler.whitening
    assert white is not None and bool(torch.isfinite(white.scale_tril).all())
    # the fit covers the posterior's scale of mu (sd about 3.3), not a point
    assert 1.0 < float(white.scale_tril[0].norm()) < 10.0


def test_when_the_gaussian_fit_diverges_too_the_start_is_the_standard_normal() -> None:
    def exploding(x: torch.Tensor) -> torch.Tensor:  # rises until it is NaN: no mode, no Gaussian fit
        return torch.where(x[:, 0] < 0.5, x[:, 0], torch.nan)

    start = torch.zeros(2, dtype=torch.float64)
    with pytest.warns(StartFallbackWarning, match="diverged too.*init='normal'"):
        result = whitening(Init("laplace"), exploding, exploding, start, torch.Generator().manual_seed(0))
    assert result is None


def test_init_option_is_checked() -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        wgfinfer.WGFSampler(lambda x: -x.square().sum(-1), dim=2, init="uniform")
    with pytest.raises(TypeError, match="init must be one of"):
        wgfinfer.WGFSampler(lambda x: -x.square().sum(-1), dim=2, init=3.0)


def test_gaussian_fit_moves_a_wrong_start_onto_a_gaussian_target() -> None:
    target = correlated_gaussian()
    start = AffineWhitening(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    fitted = fit_gaussian(target.log_prob, start, torch.Generator().manual_seed(0), n_iter=1500)
    # KL(fitted || target) is minimised at the target itself; Adam noise leaves a small gap
    q = torch.distributions.MultivariateNormal(fitted.loc, scale_tril=fitted.scale_tril)
    assert float(torch.distributions.kl_divergence(q, target)) < 0.01
    start_q = torch.distributions.MultivariateNormal(start.loc, scale_tril=start.scale_tril)
    assert float(torch.distributions.kl_divergence(start_q, target)) > 1.0


def test_sampler_with_gaussian_init_starts_at_the_conjugate_posterior() -> None:
    from test_pyro import conjugate_posterior, linear_regression, regression_data

    x, y = regression_data()
    sampler = wgfinfer.WGFSampler(
        model=linear_regression,
        scheme=wgfinfer.ICNN(iters_per_step=5, hidden=(4,)),
        init="gaussian",
        n_steps=1,
        dtype=torch.float64,
        progress_bar=False,
    ).run(x, y)
    mean, cov = conjugate_posterior(x, y)
    whitening = sampler.flow.whitening
    fitted = torch.distributions.MultivariateNormal(whitening.loc, scale_tril=whitening.scale_tril)
    assert (
        float(torch.distributions.kl_divergence(fitted, torch.distributions.MultivariateNormal(mean, cov)))
        < 0.01
    )
    assert sampler.attrs()["init"] == "gaussian"


def test_mode_search_restarts_where_a_steep_start_exhausts_lbfgs() -> None:
    """ARMA(1, 1) (posteriordb arma11, packaged data) from Pyro's ``init_to_uniform`` point: one L-BFGS
    run stops at ``-log p`` = 5901, far from the mode; the restarts reach the point where the
    gradient vanishes, the same mode as a search from the prior medians."""
    from wgfinfer.laplace import find_mode
    from wgfinfer.problems import posteriordb as pdb
    from wgfinfer.pyro_target import PyroTarget

    target = PyroTarget(pdb.get("arma-arma11").model, pdb.model_args("arma-arma11"), dtype=torch.float64)
    assert float(target.log_density(target.initial_point.unsqueeze(0))) < -1e30  # the steep start
    mode = find_mode(target.log_density, target.initial_point)
    from_medians = find_mode(target.log_density, torch.zeros(target.dim, dtype=torch.float64))
    x = mode.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_density(x.unsqueeze(0)).sum(), x)
    assert float(grad.abs().max()) < 1e-5
    torch.testing.assert_close(mode, from_medians, atol=1e-6, rtol=0)


def _log_gamma_product(shape: float, dim: int):
    """``dim`` independent logs of Gamma(shape, 1) variables: ``log p = sum(shape x - exp(x))``."""
    return lambda x: (shape * x - x.exp()).sum(-1)


def test_auto_init_keeps_the_laplace_start_where_it_is_right() -> None:
    """A Gaussian target: the Laplace approximation is exact, its KL estimate is zero, and ``"auto"``
    returns it unchanged."""
    from wgfinfer.init import AUTO_REFINE_KL, laplace_kl

    target = correlated_gaussian()
    start = torch.zeros(3, dtype=torch.float64)
    laplace = whitening(
        Init("laplace"), target.log_prob, target.log_prob, start, torch.Generator().manual_seed(0)
    )
    assert laplace_kl(target.log_prob, laplace, torch.Generator().manual_seed(1)) < 1e-6 < AUTO_REFINE_KL
    auto = whitening(Init("auto"), target.log_prob, target.log_prob, start, torch.Generator().manual_seed(0))
    torch.testing.assert_close(auto.loc, laplace.loc, rtol=0, atol=0)
    torch.testing.assert_close(auto.scale_tril, laplace.scale_tril, rtol=0, atol=0)


def test_auto_init_refines_a_laplace_start_that_is_far_off() -> None:
    """Twenty skewed coordinates (logs of Gamma(0.5) variables): the Laplace approximation is more
    than one nat away, so ``"auto"`` refines it, and the refined Gaussian is closer to the target."""
    from wgfinfer.init import AUTO_REFINE_KL, laplace_kl

    log_p = _log_gamma_product(0.5, 20)
    start = torch.zeros(20, dtype=torch.float64)
    laplace = whitening(Init("laplace"), log_p, log_p, start, torch.Generator().manual_seed(0))
    before = laplace_kl(log_p, laplace, torch.Generator().manual_seed(1), n_draws=8192)
    assert before > AUTO_REFINE_KL
    auto = whitening(Init("auto"), log_p, log_p, start, torch.Generator().manual_seed(0))
    assert not torch.equal(auto.loc, laplace.loc)
    after = laplace_kl(log_p, auto, torch.Generator().manual_seed(1), n_draws=8192)
    assert after < before / 2


def test_the_auto_decision_leaves_the_random_stream_alone() -> None:
    """``laplace_kl`` draws from a copy of the generator: where ``"auto"`` keeps the Laplace start,
    the run that follows is the ``"laplace"`` run, draw for draw."""
    from wgfinfer.init import laplace_kl

    target = correlated_gaussian()
    laplace = laplace_whitening(target.log_prob, torch.zeros(3, dtype=torch.float64))
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    laplace_kl(target.log_prob, laplace, gen)
    assert torch.equal(gen.get_state(), state)


def test_mode_search_steps_back_from_a_nan_in_its_line_search() -> None:
    """hmm_drive_0 (posteriordb, packaged data) from the sampler's start and from a random one: a
    trial point of the strong-Wolfe line search overflows a positive-ordered rate (``exp`` of a large
    number, then ``inf - inf``) and Pyro refuses the NaN.  The search used to stop there with that
    error (and the sampler fell back to ``init='normal'``); now the trial point counts as far uphill
    and the line search steps back, to the mode that a search from the prior medians finds."""
    from wgfinfer.laplace import find_mode
    from wgfinfer.problems import posteriordb as pdb
    from wgfinfer.pyro_target import PyroTarget

    name = "bball_drive_event_0-hmm_drive_0"
    target = PyroTarget(pdb.get(name).model, pdb.model_args(name), dtype=torch.float64)
    from_medians = find_mode(target.log_density, torch.zeros(target.dim, dtype=torch.float64))
    random_start = (
        2.0 * torch.randn(target.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 1.0
    )
    for start in (target.initial_point, random_start):
        mode = find_mode(target.log_density, start)
        x = mode.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(target.log_density(x.unsqueeze(0)).sum(), x)
        assert float(grad.abs().max()) < 1e-4
        torch.testing.assert_close(mode, from_medians, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ the start's tails
def test_whitened_starts_have_student_t_coordinates_of_the_requested_variance() -> None:
    from torch.distributions import Normal, StudentT

    from wgfinfer.init import WHITENED_BASE_DF, base_measure

    cpu = torch.device("cpu")
    for kind in ("laplace", "gaussian", "auto"):
        base = base_measure(Init(kind, scale=2.0), 3, torch.float64, cpu)
        assert isinstance(base.base_dist, StudentT) and bool((base.base_dist.df == WHITENED_BASE_DF).all())
    # variance scale^2 per coordinate: 2e5 draws, the sample variance within 4 standard errors
    torch.manual_seed(0)
    x = base.sample((200_000,))
    kurtosis = 3.0 + 6.0 / (WHITENED_BASE_DF - 4.0)
    se = 4.0 * math.sqrt((kurtosis - 1.0) / x.shape[0])
    torch.testing.assert_close(x.var(0), torch.full((3,), 4.0, dtype=torch.float64), rtol=se, atol=0.0)
    assert isinstance(base_measure(Init("normal"), 3, torch.float64, cpu).base_dist, Normal)
    assert isinstance(base_measure(Init("laplace", df=math.inf), 3, torch.float64, cpu).base_dist, Normal)
    assert bool((base_measure(Init("normal", df=5), 3, torch.float64, cpu).base_dist.df == 5.0).all())


def test_student_t_start_keeps_the_weights_bounded_where_the_tails_are_exponential() -> None:
    """A product of logistic densities (tails exp(-|x|), heavier than its Laplace approximation's):
    with a Gaussian start the log weight ``log p - log q`` grows without bound along a ray
    (``|x|^2 / 4 - |x|``), so PSIS k-hat is large for enough draws; with the default Student-t start
    it rises to a maximum and then falls for good (``-|x|`` against a logarithm): bounded weights."""
    from wgfinfer.init import base_measure

    def logistic(x: torch.Tensor) -> torch.Tensor:
        return (-x - 2.0 * torch.nn.functional.softplus(-x)).sum(-1)

    white = laplace_whitening(logistic, torch.full((4,), 0.3, dtype=torch.float64))
    radii = torch.tensor([5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0], dtype=torch.float64)
    z = radii.unsqueeze(-1) * torch.ones(4, dtype=torch.float64) / 2.0  # whitened points on a ray
    x = white.loc + z @ white.scale_tril.T

    def log_weights(df: float | None) -> torch.Tensor:
        base = base_measure(Init("laplace", df=df), 4, torch.float64, torch.device("cpu"))
        return logistic(x) - (base.log_prob(z) - white.scale_tril.diagonal().log().sum())

    assert bool((log_weights(math.inf).diff() > 0).all())  # unbounded
    bounded = log_weights(None)
    assert bool((bounded[3:].diff() < 0).all()) and float(bounded[-1]) < float(bounded[0])


def test_init_df_is_checked() -> None:
    for bad in (2.0, 1, -3.0, math.nan):
        with pytest.raises(ValueError, match="init df must exceed 2"):
            Init("laplace", df=bad)
    for bad in ("16", True):
        with pytest.raises(TypeError, match="init df must be a real number"):
            Init("laplace", df=bad)


def test_the_variational_schemes_residual_flows_start_gaussian() -> None:
    # no density, no importance weights to keep bounded: the whitened start stays Gaussian
    from torch.distributions import Normal, StudentT

    def log_density(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.square().sum(-1)

    options = dict(dim=2, init="laplace", n_steps=1, progress_bar=False)
    tiny = dict(iters_per_step=2, batch_size=16, hidden=(4,), dual_hidden=(4,), n_particles=64)
    residual = wgfinfer.WGFSampler(log_density, scheme=wgfinfer.Variational(**tiny), **options).run()
    assert isinstance(residual.flow.base.base_dist, Normal) and residual.attrs()["init_base"] == "normal"
    linear = wgfinfer.Variational(map="linear", **tiny)
    affine = wgfinfer.WGFSampler(log_density, scheme=linear, **options).run()
    assert isinstance(affine.flow.base.base_dist, StudentT)

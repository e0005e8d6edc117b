"""The filtering references: Chang-Cooper grid filter, bootstrap particle filter, Kalman filter.

Model of the filter comparisons: OU potential ``Phi(x) = a x^2 / 2`` with ``a = 1.5``, ``beta = 2``,
``X_0 ~ N(1, 0.3^2)``, ``Y_k = X_{t_k} + N(0, 0.5^2)`` at ``t = 0.5, 1.0, 1.5``, ``t_final = 2``.
Tolerances come from the discretisation orders (deterministic tests) and from asymptotic standard
errors (particle filter); measured values are quoted next to each assertion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from wgfinfer.filtering.grid import GridFilter1D, symkl_on_grid
from wgfinfer.filtering.models import GaussianObservations, LangevinDiffusion, Observations
from wgfinfer.filtering.particle import BootstrapParticleFilter, systematic_resample
from wgfinfer.problems.gaussians import gaussian_symkl, ou_kalman_filter, ou_marginal

A, BETA, M0, S0, NOISE, T_FINAL = 1.5, 2.0, 1.0, 0.3, 0.5, 2.0
TIMES = [0.5, 1.0, 1.5]


def _normal(mean: float, std: float) -> Normal:
    return Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))


def _ou() -> LangevinDiffusion:
    return LangevinDiffusion(lambda x: 0.5 * A * x.square().sum(-1), BETA, _normal(M0, S0))


def _observations() -> GaussianObservations:
    obs, _ = GaussianObservations.of_path(_ou(), TIMES, NOISE, torch.Generator().manual_seed(1))
    return obs


def _kalman(a: float = A, beta: float = BETA) -> dict:
    obs = _observations()
    kf = ou_kalman_filter(a, beta, M0, S0**2, TIMES, obs.values.numpy(), NOISE, T_FINAL)
    kf["all_means"] = np.append(kf["means"], kf["final_mean"])
    kf["all_variances"] = np.append(kf["variances"], kf["final_variance"])
    return kf


def _moments(p: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    dx = grid[1] - grid[0]
    mean = float(np.sum(p * grid) * dx)
    return mean, float(np.sum(p * (grid - mean) ** 2) * dx)


def test_grid_stationary_law_is_second_order_in_dx() -> None:
    phi = lambda x: (torch.sin(2 * math.pi * x) / math.pi + 0.25 * x.square()).sum(-1)
    diffusion = LangevinDiffusion(phi, 1.0, _normal(0.0, 1.0))
    errors = []
    for n_points in (1000, 2000):
        # backward Euler keeps the kernel of the generator exactly, so a large dt reaches the
        # discrete stationary law; 30 time units suffice (the change from 20 to 40 is < 1e-11)
        grid_filter = GridFilter1D(diffusion, n_points=n_points, dt=0.05)
        p = grid_filter.propagate(grid_filter.initial_density(), 30.0)
        assert abs(p.sum() * grid_filter.dx - 1.0) < 1e-10  # mass is conserved (measured 5e-12)
        target = np.exp(-phi(torch.as_tensor(grid_filter.grid).unsqueeze(-1)).numpy())
        target /= target.sum() * grid_filter.dx
        errors.append(np.abs(p - target).max())
    dx, symkl = grid_filter.dx, symkl_on_grid(p, target, grid_filter.grid)  # at 2000 points
    # measured: max errors 1.65e-5 and 4.11e-6 (= 0.165 dx^2), ratio 4.00; SymKL 8.3e-11 = 0.13 dx^4
    assert 3.5 < errors[0] / errors[1] < 4.5
    assert errors[1] < dx**2
    assert symkl < dx**4


def test_grid_ou_transition_is_first_order_in_dt() -> None:
    mean0, std0, duration = 1.0, 0.3, 0.5
    diffusion = LangevinDiffusion(lambda x: 0.5 * A * x.square().sum(-1), BETA, _normal(mean0, std0))
    decay = math.exp(-A * duration)
    mean = decay * mean0
    var = decay**2 * std0**2 + (1 - decay**2) / (A * BETA)
    errors, symkls = [], []
    for dt in (1e-3, 5e-4):
        grid_filter = GridFilter1D(diffusion, dt=dt)
        p = grid_filter.propagate(grid_filter.initial_density(), duration)
        exact = np.exp(-((grid_filter.grid - mean) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)
        errors.append(np.abs(p - exact).max())
        symkls.append(symkl_on_grid(p, exact, grid_filter.grid))
    # measured: max errors 4.83e-4, 2.44e-4 (ratio 1.98); SymKL 6.1e-7 = 0.61 dt^2, then 1.6e-7
    assert 1.8 < errors[0] / errors[1] < 2.2
    assert symkls[0] < 1e-3**2
    assert 3.5 < symkls[0] / symkls[1] < 4.5


def test_grid_filter_matches_kalman() -> None:
    kf, obs = _kalman(), _observations()
    log_z_errors = []
    for dt in (1e-3, 5e-4):
        result = GridFilter1D(_ou(), dt=dt).run(obs, T_FINAL)
        log_z_errors.append(abs(result.log_evidence - kf["log_evidence"]))
    assert result.times == [*TIMES, T_FINAL]
    result = GridFilter1D(_ou(), dt=1e-3).run(obs, T_FINAL)
    for t, mean, var in zip(result.times, kf["all_means"], kf["all_variances"], strict=True):
        p = result.density(t)
        assert abs(p.sum() * (result.grid[1] - result.grid[0]) - 1.0) < 1e-10
        m, v = _moments(p, result.grid)
        # backward Euler, first order: measured |m - m_kf| / sd <= 6.3e-4, |v / v_kf - 1| <= 3.0e-4
        assert abs(m - mean) / math.sqrt(var) < 1e-3
        assert abs(v / var - 1) < 1e-3
    # measured: 7.6e-4 at dt = 1e-3, 3.9e-4 at dt = 5e-4 (the error is the dt error, halving)
    assert log_z_errors[0] < 1e-3
    assert 1.8 < log_z_errors[0] / log_z_errors[1] < 2.2


def _em_as_ou(a: float, beta: float, h: float) -> tuple[float, float]:
    """OU parameters whose exact transitions over multiples of ``h`` are the Euler-Maruyama chain's."""
    a_em = -math.log(1 - a * h) / h
    stationary_var = 2 / (beta * a * (2 - a * h))
    return a_em, 1 / (a_em * stationary_var)


def _fk_variances(a: float, beta: float, ys: np.ndarray) -> dict:
    """Asymptotic ``n * Var`` of the bootstrap filter's estimates (multinomial resampling).

    Del Moral's Feynman-Kac formulas: with predictive laws ``eta_p`` (``eta_0`` the law of ``X_0``),
    ``h_{p,n}(x) = E[prod_{j=p}^n g_j(X_j) | X_p = x]`` and the smoothing map ``P_{p,n} f``,
    ``sigma^2(log Z) = sum_p eta_p(h_{p,K}^2) / eta_p(h_{p,K})^2 - 1`` and
    ``sigma^2(f) = sum_p eta_p(h_{p,n}^2 (P_{p,n} f - pi_n f)^2) / eta_p(h_{p,n})^2``, all Gaussian
    integrals here (``f = x`` for the mean, ``(x - m_n)^2`` for the variance).
    """
    ts, r = [0.0, *TIMES, T_FINAL], NOISE**2
    n_obs = len(TIMES)
    phi = [math.exp(-a * (ts[p] - ts[p - 1])) if p else 0.0 for p in range(n_obs + 2)]
    q = [-math.expm1(-2 * a * (ts[p] - ts[p - 1])) / (a * beta) if p else 0.0 for p in range(n_obs + 2)]
    rs = [math.inf, *([r] * n_obs), math.inf]  # no likelihood at time 0 nor at t_final
    yv = [0.0, *ys.tolist(), 0.0]
    eta, post = [(M0, S0**2)], [(M0, S0**2)]
    for p in range(1, n_obs + 2):
        m, v = phi[p] * post[-1][0], phi[p] ** 2 * post[-1][1] + q[p]
        eta.append((m, v))
        post.append((m, v) if math.isinf(rs[p]) else (m + v / (v + r) * (yv[p] - m), v * r / (v + r)))

    def tilt(p: int, n: int) -> tuple[float, float, float]:
        """``eta_p(h^2) / eta_p(h)^2`` and the mean and variance of ``eta_p h^2``, normalised."""
        mu, s2 = 0.0, math.inf  # h_{p,n} as exp(-(x - mu)^2 / (2 s2))
        for j in range(n, p - 1, -1):
            if j < n and not math.isinf(s2):
                mu, s2 = mu / phi[j + 1], (q[j + 1] + s2) / phi[j + 1] ** 2
            if not math.isinf(rs[j]):
                prec = 1 / s2 + 1 / rs[j]
                mu, s2 = (mu / s2 + yv[j] / rs[j]) / prec, 1 / prec
        m, v = eta[p]
        if math.isinf(s2):
            return 1.0, m, v
        norm = [math.sqrt(s / (v + s)) * math.exp(-((m - mu) ** 2) / (2 * (v + s))) for s in (s2, s2 / 2)]
        prec = 1 / v + 2 / s2
        return norm[1] / norm[0] ** 2, (m / v + 2 * mu / s2) / prec, 1 / prec

    def smoother(p: int, n: int) -> tuple[float, float, float]:
        """``E[X_n | X_p = x, Y_{p+1:n}] = c x + d`` and the conditional variance ``w``."""
        c, d, w = 1.0, 0.0, 0.0
        for j in range(p + 1, n + 1):
            c, d, w = phi[j] * c, phi[j] * d, phi[j] ** 2 * w + q[j]
            if not math.isinf(rs[j]):
                g = w / (w + rs[j])
                c, d, w = c * (1 - g), d * (1 - g) + g * yv[j], w * (1 - g)
        return c, d, w

    out = {"log_z": sum(tilt(p, n_obs)[0] - 1 for p in range(n_obs + 1)), "mean": [], "var": []}
    for n in range(1, n_obs + 2):
        mean_n, var_n = post[n]
        s_mean = s_var = 0.0
        for p in range(n + 1):
            ratio, tm, tv = tilt(p, n)
            c, d, w = smoother(p, n)
            alpha, tau2 = c * tm + d - mean_n, c * c * tv  # P f - pi f = z or z^2 + w - var_n
            ez2, ez4 = alpha**2 + tau2, alpha**4 + 6 * alpha**2 * tau2 + 3 * tau2**2
            s_mean += ratio * ez2
            s_var += ratio * (ez4 + 2 * (w - var_n) * ez2 + (w - var_n) ** 2)
        out["mean"].append(s_mean)
        out["var"].append(s_var)
    return out


def test_particle_filter_matches_kalman() -> None:
    n, obs = 20_000, _observations()
    result = BootstrapParticleFilter(_ou(), n_particles=n, dt=1e-3, seed=0).run(obs, T_FINAL)
    # the Euler-Maruyama chain with step 1e-3 is exactly an OU process sampled at multiples of the
    # step, so this Kalman filter is the exact target of the particle filter (no dt bias; the
    # continuous model differs by < 1e-3 in every quantity, e.g. log Z by 8.6e-4)
    a_em, beta_em = _em_as_ou(A, BETA, 1e-3)
    kf = _kalman(a_em, beta_em)
    fk = _fk_variances(a_em, beta_em, obs.values.numpy().reshape(-1))
    # standard errors: Feynman-Kac asymptotic variance of the weighted estimate (multinomial
    # resampling) plus the variance that a multinomial resampling adds to the equally weighted
    # sample (v for the mean, 2 v^2 for the variance; none at t_final).  Checked against 200 runs
    # with n = 2000 (systematic resampling): n Var of the means measured 0.245 0.128 0.134 0.292
    # against 0.352 0.255 0.244 0.314 here; of the variances 0.050 0.039 0.033 0.160 against 0.081
    # 0.058 0.057 0.168; of log Z 1.69 (+-10%) against 1.65.
    resampled = [1.0, 1.0, 1.0, 0.0]
    for i, t in enumerate(result.times):
        x = result.sample(t)[:, 0].double()
        mean, var = kf["all_means"][i], kf["all_variances"][i]
        se_mean = math.sqrt((fk["mean"][i] + resampled[i] * var) / n)
        se_var = math.sqrt((fk["var"][i] + resampled[i] * 2 * var**2) / n)
        # measured |z| <= 1.3 (mean), <= 0.51 (variance)
        assert abs(float(x.mean()) - mean) < 4 * se_mean, (t, float(x.mean()), mean, se_mean)
        assert abs(float(x.var()) - var) < 4 * se_var, (t, float(x.var()), var, se_var)
    # E[log Z-hat] = log Z - sigma^2 / (2 n) to first order; measured z = 0.60
    se_log_z = math.sqrt(fk["log_z"] / n)
    assert abs(result.log_evidence - (kf["log_evidence"] - fk["log_z"] / (2 * n))) < 4 * se_log_z
    assert result.log_evidence == pytest.approx(sum(result.log_evidence_increments))
    assert all(0 < ess <= n for ess in result.effective_sample_sizes)


def test_particle_filter_is_reproducible_and_leaves_global_rng_alone() -> None:
    obs, state = _observations(), torch.random.get_rng_state()
    runs = [BootstrapParticleFilter(_ou(), n_particles=200, seed=5).run(obs, T_FINAL) for _ in range(2)]
    assert torch.equal(runs[0].sample(), runs[1].sample())
    assert torch.equal(torch.random.get_rng_state(), state)
    other = BootstrapParticleFilter(_ou(), n_particles=200, seed=6).run(obs, T_FINAL)
    assert not torch.equal(runs[0].sample(), other.sample())
    # the Gaussian KDE of a sample has the sample's mean and its variance plus the kernel's
    grid = np.linspace(-6.0, 6.0, 4001)
    p = runs[0].density_on_grid(grid, time=1.0)
    x = runs[0].sample(1.0)[:, 0].numpy()
    bandwidth2 = len(x) ** (-2 / 5) * x.var(ddof=1)  # Scott's factor squared times the covariance
    assert _moments(p, grid)[0] == pytest.approx(x.mean(), abs=1e-9)
    assert _moments(p, grid)[1] == pytest.approx(x.var() + bandwidth2, rel=1e-7)


def test_systematic_resampling_and_flat_likelihood() -> None:
    # expected copies of particle i are n w_i; one draw's count is floor or ceil of n w_i, so its
    # standard deviation is at most 1/2 and the mean over R draws has SE <= 0.5 / sqrt(R)
    weights, n_draws, generator = torch.tensor([0.1, 0.2, 0.3, 0.4]), 4000, torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(n_draws):
        counts += torch.bincount(systematic_resample(weights.log(), generator), minlength=4)
    assert torch.all((counts / n_draws - 4 * weights).abs() < 4 * 0.5 / math.sqrt(n_draws))
    # a flat likelihood: equal weights keep every particle once and each increment is the constant
    flat = lambda y, x: torch.full((x.shape[0],), -0.7, dtype=x.dtype)
    obs = Observations([0.01, 0.02], torch.zeros(2), flat)
    result = BootstrapParticleFilter(_ou(), n_particles=500, seed=1).run(obs, 0.02)
    assert result.log_evidence_increments == pytest.approx([-0.7, -0.7], abs=1e-12)
    assert result.effective_sample_sizes == pytest.approx([500.0, 500.0], rel=1e-12)
    assert torch.equal(result.sample(0.02), result.sample())


def test_kalman_without_information_is_the_ou_marginal() -> None:
    kf = ou_kalman_filter(A, BETA, M0, S0**2, [0.7], [3.0], 1e8, 1.2)
    # ou_marginal has beta = 1: scale the potential so that its temperature matches
    mean, cov = ou_marginal(np.array([[A]]), np.zeros(1), np.array([M0]), np.array([[S0**2 * BETA]]), 1.2)
    assert kf["final_mean"] == pytest.approx(mean[0], rel=1e-12)
    assert kf["final_variance"] == pytest.approx(cov[0, 0] / BETA, rel=1e-12)


def test_symkl_on_grid() -> None:
    grid = np.linspace(-20.0, 20.0, 40_001)
    p = np.exp(-0.5 * grid**2)
    q = 7.0 * np.exp(-0.5 * ((grid - 0.5) / 1.5) ** 2)  # normalised inside
    exact = gaussian_symkl(np.zeros(1), np.eye(1), np.array([0.5]), np.array([[2.25]]))
    assert symkl_on_grid(p, q, grid) == pytest.approx(exact, abs=1e-6)  # measured error 2e-15
    assert symkl_on_grid(p, p, grid) == 0.0
    assert symkl_on_grid(p, 3.0 * p, grid) == pytest.approx(0.0, abs=1e-15)  # normalised: round-off
    assert math.isfinite(symkl_on_grid(np.where(grid > 0, p, 0.0), p, grid))


def test_bad_input() -> None:
    diffusion_2d = LangevinDiffusion(
        lambda x: x.square().sum(-1), 1.0, MultivariateNormal(torch.zeros(2), torch.eye(2))
    )
    with pytest.raises(ValueError, match="1-D diffusion"):
        GridFilter1D(diffusion_2d)
    obs = _observations()
    with pytest.raises(ValueError, match="t_final"):
        GridFilter1D(_ou(), n_points=100).run(obs, 1.0)
    with pytest.raises(ValueError, match="t_final"):
        BootstrapParticleFilter(_ou(), n_particles=10).run(obs, 1.4)
    with pytest.raises(ValueError, match="n_particles"):
        BootstrapParticleFilter(_ou(), n_particles=0)
    with pytest.raises(ValueError, match="dt"):
        BootstrapParticleFilter(_ou(), dt=0.0)
    with pytest.raises(TypeError, match="Observations"):
        BootstrapParticleFilter(_ou(), n_particles=10).run(obs.values, 2.0)
    with pytest.raises(ValueError, match="same shape"):
        symkl_on_grid(np.ones(5), np.ones(4), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="non-negative"):
        symkl_on_grid(-np.ones(5), np.ones(5), np.linspace(0, 1, 5))
    result = BootstrapParticleFilter(_ou(), n_particles=10).run(obs, T_FINAL)
    with pytest.raises(ValueError, match=r"stored times \[0.5, 1.0, 1.5, 2.0\]"):
        result.sample(0.7)
    with pytest.raises(ValueError, match="1-D state"):
        BootstrapParticleFilter(diffusion_2d, n_particles=10).run(
            GaussianObservations([0.5], torch.zeros(1, 2)), 1.0
        ).density_on_grid(np.linspace(-1, 1, 5))

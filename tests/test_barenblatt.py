"""Barenblatt profiles: mass, the PDE itself, the exact sampler and the closed-form moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from wgfinfer.problems.barenblatt import BarenblattProfile

SEED000 = {"dim": 1, "m": 2.0, "t0": 0.002, "C": (3.0 / 16.0) ** (1.0 / 3.0)}


def quadrature_mass(p: BarenblattProfile, t: float) -> float:
    """``|S^{d-1}| int_0^inf r^{d-1} u(t, x0 + r e_1) dr`` with scipy's adaptive quadrature."""
    d = p.dim
    sphere = 2.0 * math.pi ** (d / 2) / math.gamma(d / 2)
    e1 = torch.zeros(d, dtype=torch.float64)
    e1[0] = 1.0
    x0 = torch.tensor(p.center, dtype=torch.float64)

    def integrand(r: float) -> float:
        return r ** (d - 1) * float(p.density((x0 + r * e1).unsqueeze(0), t)[0])

    radius = p.support_radius(t)
    value, _ = integrate.quad(integrand, 0.0, radius, epsabs=0.0, epsrel=1e-12, limit=200)
    outside, _ = integrate.quad(integrand, radius, 2.0 * radius)  # the profile vanishes there
    assert outside == 0.0
    return sphere * value


@pytest.mark.parametrize(("dim", "m"), [(1, 2.0), (2, 2.4), (3, 2.0), (5, 3.0)])
def test_unit_mass_by_quadrature(dim: int, m: float) -> None:
    p = BarenblattProfile(dim, m, t0=0.1)
    assert p.mass == 1.0 and p.probability_coefficient == 1.0
    for t in (0.0, 0.7):
        assert quadrature_mass(p, t) == pytest.approx(1.0, abs=1e-8)
    # the closed form with the stored C (rather than the flag) agrees too
    q = BarenblattProfile(dim, m, t0=0.1, C=p.C)
    assert q.mass == pytest.approx(1.0, abs=1e-12)


def test_seed000_constants_have_mass_two() -> None:
    p = BarenblattProfile(**SEED000)
    # closed form by hand: k = 1/12, M = (8 / sqrt 3) C^{3/2} = (8 / sqrt 3) (sqrt 3 / 4) = 2
    assert p.k == pytest.approx(1.0 / 12.0, rel=1e-15)
    assert 8.0 / math.sqrt(3.0) * p.C**1.5 == pytest.approx(2.0, rel=1e-14)
    assert p.mass == pytest.approx(2.0, rel=1e-14)
    assert p.probability_coefficient == pytest.approx(2.0, rel=1e-14)
    for t in (0.0, 0.5):
        assert quadrature_mass(p, t) == pytest.approx(2.0, abs=1e-8)
    x = torch.linspace(-0.5, 0.5, 7, dtype=torch.float64).unsqueeze(-1)
    torch.testing.assert_close(p.log_prob(x, 0.1), torch.log(p.density(x, 0.1) / 2.0))
    # rho = u / 2 solves d_t rho = 2 d_xx(rho^2), not d_xx(rho^2): central differences at t = 0.01
    t, h, delta = 0.01, 1e-6, 1e-4
    x = torch.linspace(-0.3, 0.3, 9, dtype=torch.float64).unsqueeze(-1)
    rho = lambda y, s: torch.exp(p.log_prob(y, s))
    dt = (rho(x, t + h) - rho(x, t - h)) / (2 * h)
    lap = (rho(x + delta, t) ** 2 - 2 * rho(x, t) ** 2 + rho(x - delta, t) ** 2) / delta**2
    torch.testing.assert_close(dt, p.probability_coefficient * lap, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(dt, lap, rtol=0.1)


@pytest.mark.parametrize(("dim", "m"), [(2, 2.4), (3, 2.0), (5, 3.0)])
def test_seed004_printed_constant_has_mass_one_over_d(dim: int, m: float) -> None:
    """Seed 004 eq. after (5.7) has an extra ``1/d`` in ``C^gamma``: its ``C`` gives mass ``1/d``."""
    p = BarenblattProfile(dim, m, t0=0.1)
    a, b = p.radial_beta_parameters
    c_seed004 = ((p.k / math.pi) ** (dim / 2) * special.gamma(a) / (dim * special.beta(a, b))) ** (
        1 / p.gamma
    )
    q = BarenblattProfile(dim, m, t0=0.1, C=c_seed004)
    assert q.mass == pytest.approx(1.0 / dim, rel=1e-12)
    assert quadrature_mass(q, 0.3) == pytest.approx(1.0 / dim, abs=1e-8)


def _time_derivative(p: BarenblattProfile, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    return (p.density(x, t + h) - p.density(x, t - h)) / (2.0 * h)


def _laplacian_of_power(p: BarenblattProfile, x: torch.Tensor, t: float, delta: float) -> torch.Tensor:
    def w(y: torch.Tensor) -> torch.Tensor:
        return p.density(y, t) ** p.m

    out = -2.0 * p.dim * w(x)
    for i in range(p.dim):
        e = torch.zeros(p.dim, dtype=x.dtype)
        e[i] = delta
        out = out + w(x + e) + w(x - e)
    return out / delta**2


@pytest.mark.parametrize(
    ("dim", "m", "t0", "C"),
    [(1, 2.0, 0.002, SEED000["C"]), (1, 3.0, 0.5, None), (2, 2.4, 0.1, None), (2, 2.0, 1.0, 0.7)],
)
def test_profile_solves_porous_medium_equation(dim: int, m: float, t0: float, C: float | None) -> None:
    """``d_t u = Delta(u^m)`` at interior points, by float64 central differences.

    Steps ``h = 1e-4 tau`` in time and ``delta = 1e-3 R`` in space.  The profile is self-similar with
    time scale ``tau`` and length scale ``R``, and ``Delta u^m`` is of order ``u / tau`` there, so the
    truncation errors ``h^2 u_ttt / 6`` and ``delta^2 d^4(u^m) / 12`` are ``O(1e-8)`` and ``O(1e-7)``
    times ``u / tau`` (inside ``0.75 R`` the bracket stays away from zero, so no derivative blows up);
    round-off is ``~ eps / 1e-6 ~ 1e-10`` of it (measured residual: at most ``7e-7 u / tau``).
    Tolerance: ``2e-5 u / tau`` (a relative tolerance per point would be ill-posed where ``d_t u``
    changes sign), and halving both steps must shrink the residual about fourfold.
    """
    p = BarenblattProfile(dim, m, t0=t0, C=C)
    gen = torch.Generator().manual_seed(11)
    for t in (0.5 * t0, 3.0 * t0):  # t - h stays >= 0
        tau, radius = t + t0, p.support_radius(t)
        x = p.sample(200, t, gen, dtype=torch.float64)
        x = x[(x.norm(dim=-1) < 0.75 * radius) & (x.norm(dim=-1) > 0.02 * radius)]
        assert x.shape[0] > 100
        lhs = _time_derivative(p, x, t, 1e-4 * tau)
        rhs = _laplacian_of_power(p, x, t, 1e-3 * radius)
        scale = p.density(x, t) / tau
        err = (lhs - rhs).abs() / scale
        assert float(err.max()) <= 2e-5, float(err.max())
        # the residual is the O(step^2) truncation error: halving both steps divides it by about 4
        lhs_half = _time_derivative(p, x, t, 0.5e-4 * tau)
        rhs_half = _laplacian_of_power(p, x, t, 0.5e-3 * radius)
        err_half = (lhs_half - rhs_half).abs() / scale
        assert float(err_half.max()) <= 0.3 * float(err.max())
        # the test has teeth: d_t u is not small compared with the scale
        assert float((lhs.abs() / scale).max()) > 0.1


def _check_moments(x: torch.Tensor, p: BarenblattProfile, t: float) -> None:
    n = x.shape[0]
    x0 = torch.tensor(p.center, dtype=torch.float64)
    z = x.double() - x0
    mean_se = z.std(dim=0) / math.sqrt(n)
    assert torch.all(z.mean(dim=0).abs() <= 5.0 * mean_se)
    r2 = z.square().sum(-1)
    assert abs(float(r2.mean()) - p.second_moment(t)) <= 5.0 * float(r2.std()) / math.sqrt(n)
    per_coord = z.square()
    assert torch.all(
        (per_coord.mean(0) - p.variance_per_coordinate(t)).abs() <= 5.0 * per_coord.std(0) / math.sqrt(n)
    )


def test_sampler_1d_exact_law() -> None:
    p = BarenblattProfile(**SEED000)
    t, n = 0.05, 20000
    x = p.sample(n, t, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (n, 1) and x.dtype == torch.float64
    assert float(x.abs().max()) <= p.support_radius(t)
    _check_moments(x, p, t)
    sample = x[:, 0].numpy()
    assert stats.kstest(sample, lambda v: p.cdf_1d(v, t)).pvalue > 1e-3
    # W1 to the exact law (quantiles at midpoints) is at the Monte Carlo scale R / sqrt(n)
    exact = p.quantile_1d((np.arange(n) + 0.5) / n, t)
    assert stats.wasserstein_distance(sample, exact) < 3.0 * p.support_radius(t) / math.sqrt(n)
    # and a wrong time is detected
    wrong = p.quantile_1d((np.arange(n) + 0.5) / n, 2 * t + p.t0)
    assert stats.wasserstein_distance(sample, wrong) > 10.0 * p.support_radius(t) / math.sqrt(n)


def test_sampler_3d_radial_law_and_center() -> None:
    p = BarenblattProfile(3, 2.0, t0=1.0, center=(0.5, -1.0, 2.0))
    t, n = 0.5, 20000
    x = p.sample(n, t, torch.Generator().manual_seed(1), dtype=torch.float32)
    assert x.shape == (n, 3) and x.dtype == torch.float32
    _check_moments(x, p, t)
    r = (x.double() - torch.tensor(p.center, dtype=torch.float64)).norm(dim=-1).numpy()
    assert r.max() <= p.support_radius(t) * (1 + 1e-6)
    assert stats.kstest(r, lambda v: p.radius_cdf(v, t)).pvalue > 1e-3
    assert torch.isfinite(p.log_prob(x, t)).all()


def test_sampler_2d_moments_and_reproducibility() -> None:
    p = BarenblattProfile(2, 2.4, t0=0.1)
    x = p.sample(20000, 0.5, torch.Generator().manual_seed(2), dtype=torch.float64)
    _check_moments(x, p, 0.5)
    y = p.sample(20000, 0.5, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(x, y)
    assert p.sample(0, 0.5, torch.Generator()).shape == (0, 2)


def test_quantile_and_cdf_are_inverse() -> None:
    p = BarenblattProfile(1, 3.0, t0=0.2, C=0.4, center=(1.5,))
    probs = np.linspace(0.0, 1.0, 41)
    q = p.quantile_1d(probs, 0.3)
    np.testing.assert_allclose(p.cdf_1d(q, 0.3), probs, atol=1e-12)
    radius = p.support_radius(0.3)
    np.testing.assert_allclose([q[0], q[20], q[-1]], [1.5 - radius, 1.5, 1.5 + radius], atol=1e-12)


def test_second_moment_scaling_and_closed_form() -> None:
    p = BarenblattProfile(2, 2.4, t0=0.1, C=1.3)
    t1, t2 = 0.0, 0.9
    ratio = ((t2 + p.t0) / (t1 + p.t0)) ** (2 * p.beta)
    assert p.second_moment(t2) / p.second_moment(t1) == pytest.approx(ratio, rel=1e-13)
    assert p.support_radius(t2) ** 2 / p.support_radius(t1) ** 2 == pytest.approx(ratio, rel=1e-13)
    # closed form against a radial quadrature of rho
    t = 0.4
    num, _ = integrate.quad(
        lambda r: r**3 * float(p.density(torch.tensor([[r, 0.0]], dtype=torch.float64), t)[0]),
        0.0,
        p.support_radius(t),
        epsrel=1e-12,
        limit=200,
    )
    assert 2 * math.pi * num / p.mass == pytest.approx(p.second_moment(t), rel=1e-9)
    assert p.variance_per_coordinate(t) == pytest.approx(p.second_moment(t) / 2, rel=1e-15)


def test_densities_dtype_support_and_shapes() -> None:
    p = BarenblattProfile(2, 2.0, t0=0.5, C=0.8)
    radius = p.support_radius(0.2)
    x = torch.tensor([[0.0, 0.0], [0.5 * radius, 0.0], [1.5 * radius, 0.0]], dtype=torch.float32)
    d, lp = p.density(x, 0.2), p.log_prob(x, 0.2)
    assert d.dtype == lp.dtype == torch.float32 and d.shape == lp.shape == (3,)
    assert d[2] == 0 and lp[2] == -math.inf and torch.isfinite(lp[:2]).all()
    torch.testing.assert_close(lp[:2], torch.log(d[:2] / p.mass))
    assert p.density(x.reshape(3, 1, 2), 0.2).shape == (3, 1)
    # the peak value is C^{1/(m-1)} tau^{-alpha}
    assert float(d[0]) == pytest.approx(0.8 * (0.7) ** (-p.alpha), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0, "m": 2.0, "t0": 1.0}, ValueError, "dim"),
        ({"dim": 1.0, "m": 2.0, "t0": 1.0}, TypeError, "dim"),
        ({"dim": True, "m": 2.0, "t0": 1.0}, TypeError, "dim"),
        ({"dim": 1, "m": 1.0, "t0": 1.0}, ValueError, "m must"),
        ({"dim": 1, "m": "2", "t0": 1.0}, TypeError, "m must"),
        ({"dim": 1, "m": math.inf, "t0": 1.0}, ValueError, "m must"),
        ({"dim": 1, "m": 2.0, "t0": 0.0}, ValueError, "t0"),
        ({"dim": 1, "m": 2.0, "t0": -1.0}, ValueError, "t0"),
        ({"dim": 1, "m": 2.0, "t0": 1.0, "C": 0.0}, ValueError, "C must"),
        ({"dim": 1, "m": 2.0, "t0": 1.0, "C": -2.0}, ValueError, "C must"),
        ({"dim": 2, "m": 2.0, "t0": 1.0, "center": (1.0,)}, ValueError, "center"),
        ({"dim": 1, "m": 2.0, "t0": 1.0, "center": (math.nan,)}, ValueError, "center"),
    ],
)
def test_bad_constructor_inputs(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        BarenblattProfile(**kwargs)


def test_bad_call_inputs() -> None:
    p = BarenblattProfile(2, 2.0, t0=1.0)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="t must"):
        p.density(x, -0.1)
    with pytest.raises(TypeError, match="t must"):
        p.log_prob(x, "1")
    with pytest.raises(ValueError, match="shape"):
        p.density(torch.zeros(4, 3), 0.0)
    with pytest.raises(TypeError, match="generator"):
        p.sample(3, 0.0, generator=None)
    with pytest.raises(ValueError, match="n must"):
        p.sample(-1, 0.0, torch.Generator())
    with pytest.raises(ValueError, match="dim == 1"):
        p.quantile_1d(0.5, 0.0)
    with pytest.raises(ValueError, match="p must"):
        BarenblattProfile(1, 2.0, t0=1.0).quantile_1d(1.5, 0.0)
    with pytest.raises(ValueError, match="support_radius|t must"):
        p.support_radius(math.nan)

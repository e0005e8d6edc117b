"""Exact references of the filters in D dimensions (issue 19, point 3): the Kalman filter of the OU
process and of its JKO discretisation (closed-form Gaussian JKO steps), and the factorised grid
filter of a separable model, checked against a direct 2-D grid solve.

Tolerances: the closed-form JKO step is compared with the L-BFGS minimiser of the JKO objective
(converged to about 1e-9); the factorised and the direct 2-D grid solutions share their spatial
discretisation and differ by the splitting of backward Euler, which is first order in ``dt``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch.distributions import Normal

from wgfinfer.filtering.grid import FactorisedGridFilter, _bernoulli
from wgfinfer.filtering.models import GaussianObservations, LangevinDiffusion, separable_diffusion
from wgfinfer.problems.filtering import sine_well_potential
from wgfinfer.problems.gaussians import (
    ou_jko_gaussian,
    ou_jko_kalman_filter,
    ou_jko_step,
    ou_kalman_filter,
    ou_kalman_filter_nd,
)


def _rotation(d: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_closed_form_jko_step_is_the_minimiser(beta: float) -> None:
    """A non-diagonal A and a covariance commuting with it: the closed form against L-BFGS on the JKO
    objective (the temperature-1/beta step of size h is the beta = 1 step of beta Phi of size h/beta)."""
    q = _rotation(2)
    a = q @ np.diag([0.7, 2.0]) @ q.T
    cov = q @ np.diag([1.3, 0.4]) @ q.T
    mean, b, h = np.array([0.5, -1.0]), np.array([0.2, 0.1]), 0.3
    m1, s1 = ou_jko_step(a, b, beta, mean, cov, h)
    m2, s2 = ou_jko_gaussian(beta * a, b, mean, cov, h / beta, 1)
    np.testing.assert_allclose(m1, m2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-8)


def test_nd_kalman_in_one_dimension_is_the_scalar_kalman() -> None:
    times, values = [0.5, 1.0, 1.7], [0.8, -0.2, 0.4]
    args = (1.5, 2.0, 0.5, 1.0, times, values, 0.7, 2.0)
    nd_args = ([[1.5]], [0.0], 2.0, [0.5], [[1.0]], times, np.array(values)[:, None], 0.7, 2.0)
    for scalar, nd in (
        (ou_kalman_filter(*args), ou_kalman_filter_nd(*nd_args)),
        (ou_jko_kalman_filter(*args, 0.25), ou_kalman_filter_nd(*nd_args, step_size=0.25)),
    ):
        assert abs(scalar["log_evidence"] - nd["log_evidence"]) < 1e-8
        np.testing.assert_allclose(nd["means"][:, 0], scalar["means"], atol=1e-8)
        np.testing.assert_allclose(nd["covariances"][:, 0, 0], scalar["variances"], atol=1e-8)
        assert abs(nd["final_covariance"][0, 0] - scalar["final_variance"]) < 1e-8


def test_nd_kalman_with_diagonal_drift_is_the_product_of_scalar_filters() -> None:
    rates, times = [0.5, 1.0, 2.0], [0.4, 1.0]
    values = np.array([[0.3, -0.5, 1.0], [0.1, 0.2, -0.4]])
    nd = ou_kalman_filter_nd(
        np.diag(rates), np.zeros(3), 1.5, [0.2, 0.0, -0.3], 0.8 * np.eye(3), times, values, 0.6, 1.3
    )
    scalars = [
        ou_kalman_filter(a, 1.5, m, 0.8, times, values[:, i], 0.6, 1.3)
        for i, (a, m) in enumerate(zip(rates, [0.2, 0.0, -0.3], strict=True))
    ]
    assert abs(nd["log_evidence"] - sum(s["log_evidence"] for s in scalars)) < 1e-12
    np.testing.assert_allclose(
        np.diag(nd["final_covariance"]), [s["final_variance"] for s in scalars], rtol=1e-12
    )


def test_jko_kalman_converges_to_kalman_at_first_order() -> None:
    d = 3
    q = _rotation(d, 1)
    a = q @ np.diag([0.5, 1.0, 2.0]) @ q.T
    times, values = [0.5, 1.0], np.array([[0.3, -0.5, 1.0], [0.1, 0.2, -0.4]])
    args = (a, np.zeros(d), 1.0, np.ones(d), 0.5 * np.eye(d), times, values, 0.8, 1.5)
    exact = ou_kalman_filter_nd(*args)["log_evidence"]
    errors = [
        abs(ou_kalman_filter_nd(*args, step_size=h)["log_evidence"] - exact) for h in (0.1, 0.05, 0.025)
    ]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(1.7 < r < 2.3 for r in ratios), (errors, ratios)


def test_jko_kalman_refuses_non_commuting_covariances() -> None:
    a = np.diag([1.0, 2.0])
    cov = np.array([[1.0, 0.3], [0.3, 1.0]])
    with pytest.raises(ValueError, match="do not commute"):
        ou_kalman_filter_nd(
            a, np.zeros(2), 1.0, np.zeros(2), cov, [0.5], np.zeros((1, 2)), 1.0, 1.0, step_size=0.1
        )
    exact = ou_kalman_filter_nd(a, np.zeros(2), 1.0, np.zeros(2), cov, [0.5], np.zeros((1, 2)), 1.0, 1.0)
    assert math.isfinite(exact["log_evidence"])
    with pytest.raises(ValueError, match=r"values \(K, 2\)"):
        ou_kalman_filter_nd(a, np.zeros(2), 1.0, np.zeros(2), cov, [0.5], np.zeros((1, 3)), 1.0, 1.0)


# ------------------------------------------------------------------------------ factorised grid filter
LOWER, UPPER, N_POINTS = -4.0, 4.0, 61
TIMES, T_FINAL = [0.4, 0.8], 1.0


def _separable_problem():
    diffusion, coordinates = separable_diffusion(sine_well_potential, 1.0, [0.3, -0.2], [1.0, 0.8])
    obs = GaussianObservations(TIMES, torch.tensor([[0.9, -0.6], [0.4, 0.1]]), 0.7)
    return diffusion, coordinates, obs


def _direct_2d_grid_filter(
    diffusion: LangevinDiffusion, obs: GaussianObservations, dt: float
) -> tuple[np.ndarray, float]:
    """Chang-Cooper finite volumes on the 2-D grid with the fluxes of the 2-D potential's gradient,
    backward Euler on the joint law (sparse LU) and Bayes updates with the 2-D likelihood."""
    grid = np.linspace(LOWER, UPPER, N_POINTS)
    dx, n, diff = grid[1] - grid[0], N_POINTS, 1.0 / diffusion.beta
    mid = 0.5 * (grid[1:] + grid[:-1])
    index = np.arange(n * n).reshape(n, n)  # index[i, j]: x_1 = grid[i], x_2 = grid[j]
    rows, cols, vals = [], [], []
    for axis in (0, 1):
        a_i, b_j = np.meshgrid(mid, grid, indexing="ij")  # interfaces along the axis, nodes across
        points = np.stack([a_i, b_j], -1) if axis == 0 else np.stack([b_j, a_i], -1)
        drift = diffusion.drift(torch.as_tensor(points.reshape(-1, 2))).numpy().reshape(n - 1, n, 2)
        w = -drift[..., axis] * dx / diff
        up, down = diff / dx * _bernoulli(-w.ravel()), diff / dx * _bernoulli(w.ravel())
        left = (index[:-1, :] if axis == 0 else index[:, :-1].T).ravel()  # p_i
        right = (index[1:, :] if axis == 0 else index[:, 1:].T).ravel()  # p_{i+1}
        # F = up p_right - down p_left flows into cell left, out of cell right
        for r, c, v in ((left, right, up), (left, left, -down), (right, right, -up), (right, left, down)):
            rows.append(r)
            cols.append(c)
            vals.append(v / dx)
    generator = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n,) * 2
    )
    points = torch.as_tensor(np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2))
    p = np.exp(diffusion.initial.log_prob(points).numpy())
    p /= p.sum() * dx * dx
    log_z, t, solvers = 0.0, 0.0, {}
    for k, t_k in enumerate([*TIMES, T_FINAL]):
        n_steps = max(1, math.ceil((t_k - t) / dt - 1e-9))
        step = (t_k - t) / n_steps
        if step not in solvers:
            solvers[step] = spla.splu(sp.identity(n * n, format="csc") - step * generator)
        for _ in range(n_steps):
            p = solvers[step].solve(p)
        if k < len(TIMES):
            lik = np.exp(obs.log_likelihood(k, points).numpy())
            mass = float((p * lik).sum() * dx * dx)
            log_z += math.log(mass)
            p = p * lik / mass
        t = t_k
    return p.reshape(n, n), log_z


def test_factorised_grid_filter_equals_a_direct_2d_solve() -> None:
    diffusion, coordinates, obs = _separable_problem()
    differences = []
    for dt in (0.02, 0.01):
        product = FactorisedGridFilter(coordinates, LOWER, UPPER, N_POINTS, dt).run(obs, T_FINAL)
        joint, log_z = _direct_2d_grid_filter(diffusion, obs, dt)
        outer = np.outer(product.density(0), product.density(1))
        dx = product.dx
        assert abs(joint.sum() * dx * dx - 1) < 1e-10
        differences.append((np.abs(outer - joint).max() / joint.max(), abs(product.log_evidence - log_z)))
    (d1, z1), (d2, z2) = differences
    # the splitting error of backward Euler, first order in dt: measured max density differences
    # 5.7e-3 and 2.9e-3 (= 0.29 dt) of the peak, log-evidence differences 1.19e-3 and 6.0e-4 (0.06 dt)
    assert d2 < 0.5 * 0.01 and 1.8 < d1 / d2 < 2.2, differences
    assert z2 < 0.1 * 0.01 and 1.8 < z1 / z2 < 2.2, differences


def test_factorised_result_draws_density_and_moments() -> None:
    _, coordinates, obs = _separable_problem()
    result = FactorisedGridFilter(coordinates, LOWER, UPPER, 401, 0.01).run(obs, T_FINAL)
    assert result.times == [*TIMES, T_FINAL]
    x = result.sample(20000, seed=1)
    var = result.variance()
    # exact draws: 4 standard errors; the within-cell jitter adds dx^2 / 12 to the variance
    assert np.all(np.abs(x.mean(0) - result.mean()) < 4 * np.sqrt(var / x.shape[0]))
    np.testing.assert_allclose(x.var(0), var + result.dx**2 / 12, rtol=4 * math.sqrt(2 / x.shape[0]))
    g = result.grid[::4]
    mesh = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = np.exp(result.log_prob(mesh)).sum() * (g[1] - g[0]) ** 2
    assert abs(mass - 1) < 1e-3
    filters = FactorisedGridFilter(coordinates, LOWER, UPPER, 401, 0.01).filters
    scalar = [f.run(obs.coordinate(i), T_FINAL).log_evidence for i, f in enumerate(filters)]
    assert abs(result.log_evidence - sum(scalar)) < 1e-12


def test_separable_model_bad_input() -> None:
    _, coordinates, obs = _separable_problem()
    with pytest.raises(ValueError, match="coordinate 2 out of range"):
        obs.coordinate(2)
    with pytest.raises(TypeError, match="must be an int"):
        obs.coordinate(0.5)
    with pytest.raises(ValueError, match="equal length"):
        separable_diffusion(sine_well_potential, 1.0, [0.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="std0"):
        separable_diffusion(sine_well_potential, 1.0, [0.0], [0.0])
    with pytest.raises(ValueError, match="dimension 2 for 3 coordinates"):
        FactorisedGridFilter([*coordinates, coordinates[0]], n_points=50).run(obs, T_FINAL)
    with pytest.raises(TypeError, match="need not factorise"):
        generic = type(obs).__mro__[1](TIMES, obs.values, lambda y, x: Normal(y, 1.0).log_prob(x).sum(-1))
        FactorisedGridFilter(coordinates, n_points=50).run(generic, T_FINAL)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        FactorisedGridFilter(coordinates, n_points=50).run(obs, T_FINAL).log_prob(np.zeros((3, 1)))


def test_the_d_dimensional_problems() -> None:
    from wgfinfer.problems.filtering import rotated_ou_problem, separable_sine_well_problem

    sine = separable_sine_well_problem(3, seed=0)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    by_coordinate = sum(c.potential(x[:, i : i + 1]) for i, c in enumerate(sine.coordinates))
    torch.testing.assert_close(sine.diffusion.potential(x), by_coordinate)
    assert sine.observations.values.shape == (5, 3) and sine.t_final == 3.0
    ou = rotated_ou_problem(3, seed=0)
    a = ou.parameters["a"]
    np.testing.assert_allclose(np.linalg.eigvalsh(a), [0.5, 1.25, 2.0])
    torch.testing.assert_close(ou.diffusion.drift(x), -x @ torch.as_tensor(a))
    with pytest.raises(ValueError, match="dim must be a positive int"):
        rotated_ou_problem(0, seed=0)

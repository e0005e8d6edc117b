"""Kernelized Stein discrepancy: quadrature known answer, null behaviour, monotonicity, blocking, inputs."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from wgfinfer import diagnostics
from wgfinfer.diagnostics import ksd, score_from_log_density


def _normal(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _stein_matrix(x: torch.Tensor, s: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Full ``(n, n)`` Stein kernel matrix from explicit differences ``r = x_i - x_j``, diagonal zeroed."""
    r = x[:, None, :] - x[None, :, :]
    sq = r.square().sum(-1)
    l2 = bandwidth**2
    s_dot_r = ((s[:, None, :] - s[None, :, :]) * r).sum(-1)
    u = torch.exp(-sq / (2 * l2)) * (s @ s.T + s_dot_r / l2 + x.shape[1] / l2 - sq / l2**2)
    return u.fill_diagonal_(0.0)


def _population_ksd_shifted_normal_1d(delta: float, bandwidth: float, nodes: int = 80) -> float:
    """``E u(X, X')`` for X, X' iid N(delta, 1) against target N(0, 1) (score -x), by Gauss-Hermite."""
    z, w = hermegauss(nodes)  # weight exp(-z^2 / 2); the weights sum to sqrt(2 pi)
    x, y = np.meshgrid(delta + z, delta + z, indexing="ij")
    r, l2 = x - y, bandwidth**2
    sx, sy = -x, -y
    u = np.exp(-(r**2) / (2 * l2)) * (sx * sy + (sx - sy) * r / l2 + 1 / l2 - r**2 / l2**2)
    return float(w @ u @ w / (2 * np.pi))


def test_known_answer_shifted_normal_matches_quadrature():
    bandwidth, delta, n = 1.0, 1.0, 3000
    exact = _population_ksd_shifted_normal_1d(delta, bandwidth)
    assert exact == pytest.approx(_population_ksd_shifted_normal_1d(delta, bandwidth, nodes=120), abs=1e-12)
    # Gaussian mean shift: S = delta^2 E k(X, X'), X - X' ~ N(0, 2), i.e. delta^2 / sqrt(1 + 2 / l^2)
    assert exact == pytest.approx(delta**2 / math.sqrt(1 + 2 / bandwidth**2), rel=1e-12)
    x = _normal(n, 1, seed=11) + delta
    estimate, se = ksd(x, lambda y: -y, bandwidth=bandwidth, return_se=True)
    assert abs(estimate - exact) < 4 * se + 1e-3


@pytest.mark.parametrize("d", [2, 5])
def test_exact_samples_give_zero_within_error(d):
    n = 1000
    x = _normal(n, d, seed=20 + d)
    estimate, se = ksd(x, -x, return_se=True)
    bandwidth = float(torch.pdist(x).median())
    u = _stein_matrix(x, -x, bandwidth)
    null_sd = math.sqrt(2 * float(u.square().sum()) / (n * (n - 1)) / (n * (n - 1)))
    assert estimate == pytest.approx(float(u.sum()) / (n * (n - 1)), abs=1e-12)
    assert abs(estimate) < 4 * se + null_sd


def test_reference_matrix_estimate_and_standard_error():
    n, d, bandwidth = 300, 3, 1.3
    x = _normal(n, d, seed=5) * 1.5 + 0.3
    s = -x
    u = _stein_matrix(x, s, bandwidth)
    pairs = n * (n - 1)
    mean = float(u.sum()) / pairs
    zeta1 = float((u.sum(1) / (n - 1)).var())
    zeta2 = float(u.square().sum()) / pairs - mean**2
    se = math.sqrt((4 * (n - 2) * zeta1 + 2 * zeta2) / pairs)
    got, got_se = ksd(x, s, bandwidth=bandwidth, block_size=64, return_se=True)
    assert got == pytest.approx(mean, rel=1e-10, abs=1e-12)
    assert got_se == pytest.approx(se, rel=1e-8)


def test_ksd_grows_with_shift():
    base = _normal(1000, 2, seed=3)
    axis = torch.tensor([1.0, 0.0], dtype=torch.float64)
    results = [ksd(base + shift * axis, lambda y: -y, return_se=True) for shift in (0.0, 0.5, 1.0, 2.0)]
    values = [v for v, _ in results]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    assert all(v > 4 * se for v, se in results[1:]), results


def test_blocking_does_not_change_result():
    x = _normal(50, 3, seed=7) + 0.4
    reference = ksd(x, lambda y: -y, return_se=True)
    for block_size in (1, 7, 49, 50):
        got = ksd(x, lambda y: -y, block_size=block_size, return_se=True)
        assert got == pytest.approx(reference, rel=1e-10, abs=1e-12), block_size


def test_score_tensor_callable_and_log_density_agree():
    x = _normal(200, 3, seed=9) * 2.0

    def log_density(y):  # product of Student-t-like factors; score -4 y / (3 + y^2)
        return -2.0 * torch.log1p(y.square() / 3.0).sum(-1)

    def score(y):
        return -4.0 * y / (3.0 + y.square())

    by_tensor = ksd(x, score(x), return_se=True)
    by_callable = ksd(x, score, return_se=True)
    with torch.no_grad():  # the autograd helper must still work under no_grad
        by_log_density = ksd(x, score_from_log_density(log_density), return_se=True)
    assert by_callable == pytest.approx(by_tensor, rel=1e-10, abs=1e-12)
    assert by_log_density == pytest.approx(by_tensor, rel=1e-10, abs=1e-12)


def test_float32_input_matches_float64():
    x = _normal(100, 2, seed=13).float()
    assert ksd(x, lambda y: -y) == pytest.approx(ksd(x.double(), lambda y: -y), rel=1e-10, abs=1e-12)


_X = _normal(10, 2, seed=1)
_X_NAN = _X.clone()
_X_NAN[3, 1] = float("nan")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"samples": _X[:, 0], "score_fn": -_X[:, 0]}, ValueError, r"shape \(n, d\)"),
        ({"samples": _X[:1], "score_fn": -_X[:1]}, ValueError, "at least 2 samples"),
        ({"samples": _X_NAN, "score_fn": -_X}, ValueError, "samples contain non-finite"),
        ({"samples": _X, "score_fn": _X_NAN}, ValueError, "scores contain non-finite"),
        ({"samples": _X, "score_fn": -_X[:, :1]}, ValueError, "does not match samples shape"),
        ({"samples": _X, "score_fn": lambda y: -y[:5]}, ValueError, "does not match samples shape"),
        ({"samples": _X, "score_fn": -_X, "bandwidth": 0.0}, ValueError, "bandwidth must be positive"),
        ({"samples": _X, "score_fn": -_X, "bandwidth": -1.0}, ValueError, "bandwidth must be positive"),
        ({"samples": _X, "score_fn": -_X, "block_size": 0}, ValueError, "block_size must be >= 1"),
        ({"samples": _X, "score_fn": -_X, "block_size": 2.0}, TypeError, "block_size must be an int"),
        ({"samples": _X.numpy(), "score_fn": -_X}, TypeError, "samples must be a torch.Tensor"),
        ({"samples": _X, "score_fn": lambda y: (-y).numpy()}, TypeError, "scores must be a torch.Tensor"),
        ({"samples": torch.ones(5, 2), "score_fn": -torch.ones(5, 2)}, ValueError, "median pairwise"),
    ],
)
def test_bad_inputs_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        ksd(**kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(diagnostics, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x = _normal(3000, 4, seed=17) + 0.2
    cpu = ksd(x, lambda y: -y, block_size=512, return_se=True)
    gpu = ksd(x.cuda(), lambda y: -y, block_size=512, return_se=True)
    assert gpu == pytest.approx(cpu, rel=1e-9, abs=1e-12)

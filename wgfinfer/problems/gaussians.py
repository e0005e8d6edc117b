"""Closed-form references for testing and benchmarking the flows.

* Ornstein-Uhlenbeck marginals: ``Phi(x) = 1/2 (x-b)^T A (x-b)``, ``beta = 1``,
  ``dX = -A (X - b) dt + sqrt(2) dW``; from ``N(m0, S0)`` the law at time ``t`` is
  ``N(b + e^{-At}(m0 - b), e^{-At} S0 e^{-At} + A^{-1}(I - e^{-2At}))`` (Mokrov 2022 §4.3,
  Fan et al. 2021 §4.2).
* The exact JKO iterates of the same problem, which stay Gaussian: the minimiser of each step is an
  affine map ``x -> m' + M (x - m)`` with ``M`` symmetric positive definite.  Comparing a trained flow
  with them separates the optimisation error from the time-discretisation error of JKO.
* Gaussian mixtures with unit covariances (Mokrov 2022 §4.2), with exact sampling and normalised
  log-density.
* The exact (Kalman) filter of the 1-D OU process observed with Gaussian noise, and that of its
  JKO discretisation (the references of the filtering tests); in ``d`` dimensions
  :func:`ou_kalman_filter_nd`, with the closed-form Gaussian JKO step :func:`ou_jko_step`.
* KL and symmetric KL divergences between Gaussians.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.linalg import expm
from torch import Tensor


def ou_marginal(
    a: np.ndarray, b: np.ndarray, mean0: np.ndarray, cov0: np.ndarray, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance at time ``t`` of the OU process with potential ``1/2 (x-b)^T A (x-b)``.

    Parameters
    ----------
    a : ndarray
        ``(d, d)`` symmetric positive-definite drift matrix ``A``.
    b : ndarray
        ``(d,)`` stationary mean.
    mean0, cov0 : ndarray
        Mean and covariance of the Gaussian initial law.
    t : float
        Time.

    Returns
    -------
    mean, cov : ndarray
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    decay = expm(-a * t)
    mean = b + decay @ (np.asarray(mean0, float) - b)
    stationary = np.linalg.inv(a)
    cov = decay @ np.asarray(cov0, float) @ decay.T + stationary - decay @ stationary @ decay.T
    return mean, 0.5 * (cov + cov.T)


def ou_jko_gaussian(
    a: np.ndarray, b: np.ndarray, mean0: np.ndarray, cov0: np.ndarray, step_size: float, n_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance after ``n_steps`` exact JKO steps of size ``h`` for the OU free energy.

    Each step minimises, over symmetric positive-definite ``M`` (and the new mean in closed form),
    ``tr((M-I) S (M-I)) / (2h) + tr(A M S M) / 2 - log det M``, the JKO objective restricted to
    the affine maps that are optimal for Gaussian ``rho_k`` and quadratic ``Phi``.

    Returns
    -------
    mean, cov : ndarray
        Parameters of the Gaussian ``rho_K`` of the exact JKO scheme.
    """
    a_t = torch.as_tensor(np.asarray(a, float), dtype=torch.float64)
    b_t = torch.as_tensor(np.asarray(b, float), dtype=torch.float64)
    mean = torch.as_tensor(np.asarray(mean0, float), dtype=torch.float64)
    cov = torch.as_tensor(np.asarray(cov0, float), dtype=torch.float64)
    d = a_t.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    h = float(step_size)
    for _ in range(n_steps):
        mean = torch.linalg.solve(eye / h + a_t, mean / h + a_t @ b_t)
        # M = exp(sym(B)) keeps M symmetric positive definite; log det M = tr(sym(B))
        log_m = torch.zeros(d, d, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [log_m],
            max_iter=500,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure(cov: Tensor = cov, log_m: Tensor = log_m, opt=opt) -> Tensor:
            opt.zero_grad()
            sym = 0.5 * (log_m + log_m.T)
            m = torch.linalg.matrix_exp(sym)
            diff = m - eye
            value = (
                torch.trace(diff @ cov @ diff) / (2 * h)
                + 0.5 * torch.trace(a_t @ m @ cov @ m)
                - torch.trace(sym)
            )
            value.backward()
            return value

        opt.step(closure)
        m = torch.linalg.matrix_exp(0.5 * (log_m + log_m.T)).detach()
        cov = m @ cov @ m
        cov = 0.5 * (cov + cov.T)
    return mean.numpy(), cov.numpy()


def gaussian_kl(mean0: np.ndarray, cov0: np.ndarray, mean1: np.ndarray, cov1: np.ndarray) -> float:
    """``KL(N(mean0, cov0) || N(mean1, cov1))`` in closed form."""
    d = len(mean0)
    inv1 = np.linalg.inv(cov1)
    diff = np.asarray(mean1) - np.asarray(mean0)
    _, logdet0 = np.linalg.slogdet(cov0)
    _, logdet1 = np.linalg.slogdet(cov1)
    return 0.5 * float(np.trace(inv1 @ cov0) + diff @ inv1 @ diff - d + logdet1 - logdet0)


def gaussian_symkl(mean0: np.ndarray, cov0: np.ndarray, mean1: np.ndarray, cov1: np.ndarray) -> float:
    """Symmetric KL divergence ``KL(p||q) + KL(q||p)`` between two Gaussians."""
    return gaussian_kl(mean0, cov0, mean1, cov1) + gaussian_kl(mean1, cov1, mean0, cov0)


class GaussianMixture:
    """Equal-weight mixture of unit-covariance Gaussians: ``(1/M) sum_m N(mu_m, I)``.

    Parameters
    ----------
    means : Tensor
        ``(M, d)`` component means.
    """

    def __init__(self, means: Tensor) -> None:
        if means.ndim != 2:
            raise ValueError(f"means must have shape (M, d), got {tuple(means.shape)}")
        self.means = means
        self.n_components, self.dim = means.shape

    @classmethod
    def random(
        cls, n_components: int, dim: int, width: float, seed: int, dtype: torch.dtype = torch.float32
    ) -> GaussianMixture:
        """Means drawn uniformly from ``[-width/2, width/2]^d`` (the set-up of Mokrov 2022 §4.2)."""
        gen = torch.Generator().manual_seed(seed)
        means = (torch.rand(n_components, dim, generator=gen, dtype=torch.float64) - 0.5) * width
        return cls(means.to(dtype))

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log-density at ``(n, d)`` points."""
        means = self.means.to(dtype=x.dtype, device=x.device)
        sq = (x.unsqueeze(1) - means).square().sum(-1)
        return (
            torch.logsumexp(-0.5 * sq, dim=1)
            - math.log(self.n_components)
            - 0.5 * self.dim * math.log(2 * math.pi)
        )

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Exact draws, shape ``(n, d)``."""
        component = torch.randint(0, self.n_components, (n,), generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        return self.means[component] + noise

    def component_of(self, x: Tensor) -> Tensor:
        """Index of the most likely component of each point."""
        means = self.means.to(dtype=x.dtype, device=x.device)
        return (x.unsqueeze(1) - means).square().sum(-1).argmin(dim=1)


def ou_kalman_filter(
    a: float,
    beta: float,
    mean0: float,
    var0: float,
    times: np.ndarray,
    values: np.ndarray,
    noise_std: float,
    t_final: float,
) -> dict[str, np.ndarray | float]:
    """Exact Kalman filter of the 1-D OU process observed with Gaussian noise.

    The state follows ``dX = -a X dt + sqrt(2 / beta) dW`` (potential ``Phi(x) = a x^2 / 2``) from
    ``X_0 ~ N(mean0, var0)``; over a time ``s`` the transition is ``N(e^{-a s} m,
    e^{-2 a s} v + (1 - e^{-2 a s}) / (a beta))``.  Observations ``Y_k = X_{t_k} + N(0, noise_std^2)``.

    Parameters
    ----------
    a, beta : float
        Drift rate and inverse temperature, both positive.
    mean0, var0 : float
        Mean and variance (``>= 0``) of ``X_0``.
    times : array_like
        ``(K,)`` strictly increasing observation times, all ``>= 0``.
    values : array_like
        ``(K,)`` (or ``(K, 1)``) observations.
    noise_std : float
        Standard deviation of the observation noise, positive.
    t_final : float
        Time of the final prediction, ``>= times[-1]``.

    Returns
    -------
    dict
        ``means``, ``variances``: ``(K,)`` posteriors after each update; ``pred_means``,
        ``pred_variances``: ``(K,)`` predictions before each update; ``final_mean``,
        ``final_variance``: the prediction at ``t_final``; ``log_evidence``: ``sum_k log
        N(Y_k; m_pred, v_pred + noise_std^2)``; ``log_evidence_increments``: ``(K,)`` its terms.
    """
    a, beta, noise_std = float(a), float(beta), float(noise_std)
    mean, var = float(mean0), float(var0)
    for name, value in (("a", a), ("beta", beta), ("noise_std", noise_std)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be finite and positive, got {value}")
    if not (math.isfinite(mean) and math.isfinite(var) and var >= 0):
        raise ValueError(f"need a finite mean0 and a finite var0 >= 0, got {mean}, {var}")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if times.shape != values.shape:
        raise ValueError(f"times and values must have the same length, got {times.size} and {values.size}")
    if np.any(~np.isfinite(times)) or np.any(times < 0) or np.any(np.diff(times) <= 0):
        raise ValueError(f"times must be finite, >= 0 and strictly increasing, got {times.tolist()}")
    t_final = float(t_final)
    if times.size and not t_final >= times[-1]:
        raise ValueError(f"t_final must be >= the last observation time {times[-1]}, got {t_final}")

    def predict(mean: float, var: float, span: float) -> tuple[float, float]:
        decay = math.exp(-a * span)
        return decay * mean, decay**2 * var - math.expm1(-2 * a * span) / (a * beta)

    return _kalman_recursion(predict, mean, var, times, values, noise_std, t_final)


def _kalman_recursion(
    predict: Callable[[float, float, float], tuple[float, float]],
    mean: float,
    var: float,
    times: np.ndarray,
    values: np.ndarray,
    noise_std: float,
    t_final: float,
) -> dict[str, np.ndarray | float]:
    """The 1-D Kalman recursion with observations ``Y_k = X_{t_k} + N(0, noise_std^2)`` for a given
    Gaussian prediction ``predict(mean, var, span) -> (mean, var)``; the keys of
    :func:`ou_kalman_filter`."""
    r = float(noise_std) ** 2
    out: dict[str, list[float]] = {
        k: [] for k in ("means", "variances", "pred_means", "pred_variances", "log_evidence_increments")
    }
    t = 0.0
    for t_k, y in zip(times.tolist(), values.tolist(), strict=True):
        mean, var = predict(mean, var, t_k - t)
        out["pred_means"].append(mean)
        out["pred_variances"].append(var)
        s = var + r
        out["log_evidence_increments"].append(-0.5 * (math.log(2 * math.pi * s) + (y - mean) ** 2 / s))
        gain = var / s
        mean, var = mean + gain * (y - mean), var * r / s
        out["means"].append(mean)
        out["variances"].append(var)
        t = t_k
    final_mean, final_var = predict(mean, var, t_final - t) if t_final > t else (mean, var)
    result: dict[str, np.ndarray | float] = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    result.update(
        final_mean=final_mean,
        final_variance=final_var,
        log_evidence=float(np.sum(out["log_evidence_increments"])),
    )
    return result


def ou_jko_kalman_filter(
    a: float,
    beta: float,
    mean0: float,
    var0: float,
    times: np.ndarray,
    values: np.ndarray,
    noise_std: float,
    t_final: float,
    step_size: float,
) -> dict[str, np.ndarray | float]:
    """The exact filter of the *JKO-discretised* 1-D OU process: :func:`ou_kalman_filter` with each
    prediction replaced by exact Gaussian JKO steps.

    A JKO filter (``wgfinfer.filtering.JKOFilter``) splits every interval between observations into
    ``round(length / step_size)`` equal JKO steps (at least one); for a Gaussian law and the quadratic
    potential ``a x^2 / 2`` every step is exactly Gaussian, so this recursion is what a filter with
    perfectly trained maps computes, separating the optimisation error from the time-discretisation
    error.  The JKO step for temperature ``1 / beta`` with step ``h`` is the ``beta = 1`` step for the
    potential ``beta a x^2 / 2`` with step ``h / beta`` (:func:`ou_jko_gaussian`).

    Returns the same keys as :func:`ou_kalman_filter`.
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    a_scaled = np.array([[float(beta) * float(a)]])

    def predict(mean: float, var: float, span: float) -> tuple[float, float]:
        n_steps = max(1, round(span / step_size))
        m, v = ou_jko_gaussian(
            a_scaled, np.zeros(1), np.array([mean]), np.array([[var]]), span / n_steps / beta, n_steps
        )
        return float(m[0]), float(v[0, 0])

    return _kalman_recursion(predict, float(mean0), float(var0), times, values, noise_std, t_final)


def _common_eigenbasis(a: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """An orthonormal basis diagonalising the commuting symmetric matrices ``a`` and ``cov``."""
    eigenvalues, q = np.linalg.eigh(a)
    # within each cluster of (nearly) equal eigenvalues of A, diagonalise the covariance
    tol = 1e-9 * max(float(np.abs(eigenvalues).max()), 1e-300)
    start = 0
    for stop in range(1, eigenvalues.size + 1):
        if stop == eigenvalues.size or eigenvalues[stop] - eigenvalues[stop - 1] > tol:
            if stop - start > 1:
                block = q[:, start:stop]
                _, inner = np.linalg.eigh(block.T @ cov @ block)
                q[:, start:stop] = block @ inner
            start = stop
    for name, m in (("A", a), ("the covariance", cov)):
        rotated = q.T @ m @ q
        off = rotated - np.diag(np.diag(rotated))
        if np.linalg.norm(off) > 1e-8 * max(np.linalg.norm(m), 1e-300):
            raise ValueError(
                f"A and the covariance do not commute ({name} is not diagonal in a common eigenbasis): the "
                "closed-form Gaussian JKO step needs commuting matrices (e.g. an isotropic initial "
                "covariance and isotropic observation noise)"
            )
    return q


def ou_jko_step(
    a: np.ndarray, b: np.ndarray, beta: float, mean: np.ndarray, cov: np.ndarray, step_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """One exact JKO step of the OU free energy in closed form, for ``A`` commuting with ``cov``.

    For ``Phi(x) = 1/2 (x-b)^T A (x-b)`` at temperature ``1 / beta`` the step from ``N(m, S)`` is the
    affine map ``x -> m' + M (x - m)``: its optimality condition ``(T(x) - x) / h = -grad Phi(T(x)) -
    beta^{-1} grad log rho'(T(x))`` gives ``m' = (I + h A)^{-1} (m + h A b)`` and, when ``A`` and
    ``S`` commute, ``(I + h A) M^2 - M - (h / beta) S^{-1} = 0``, solved in their common eigenbasis
    by ``mu_i = (1 + sqrt(1 + 4 (1 + h a_i) h / (beta s_i))) / (2 (1 + h a_i))`` (the positive root);
    the new covariance is ``M S M``.  As ``h -> 0`` this is ``dS/dt = 2 / beta - 2 A S``, the OU law's.

    Parameters
    ----------
    a : ndarray
        ``(d, d)`` symmetric positive-definite drift matrix.
    b : ndarray
        ``(d,)`` stationary mean.
    beta : float
        Inverse temperature.
    mean, cov : ndarray
        ``(d,)`` and ``(d, d)``: the Gaussian law before the step (``cov`` positive definite).
    step_size : float
        JKO step ``h``.

    Returns
    -------
    mean, cov : ndarray

    Raises
    ------
    ValueError
        If the shapes disagree, ``beta`` or ``h`` is not positive, or ``A`` and ``cov`` do not commute.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64).reshape(-1)
    mean, cov = np.asarray(mean, dtype=np.float64).reshape(-1), np.asarray(cov, dtype=np.float64)
    d = mean.size
    if a.shape != (d, d) or cov.shape != (d, d) or b.shape != (d,):
        raise ValueError(
            f"need A and cov of shape ({d}, {d}) and b of shape ({d},) for a mean of shape ({d},), got "
            f"{a.shape}, {cov.shape}, {b.shape}"
        )
    h, beta = float(step_size), float(beta)
    if not (math.isfinite(h) and h > 0 and math.isfinite(beta) and beta > 0):
        raise ValueError(f"step_size and beta must be finite and positive, got {h} and {beta}")
    q = _common_eigenbasis(a, cov)
    a_i, s_i = np.diag(q.T @ a @ q), np.diag(q.T @ cov @ q)
    if np.any(s_i <= 0) or np.any(a_i <= 0):
        raise ValueError("A and cov must be positive definite")
    c = 1.0 + h * a_i
    mu = (1.0 + np.sqrt(1.0 + 4.0 * c * h / (beta * s_i))) / (2.0 * c)
    new_mean = np.linalg.solve(np.eye(d) + h * a, mean + h * a @ b)
    new_cov = q @ np.diag(mu**2 * s_i) @ q.T
    return new_mean, 0.5 * (new_cov + new_cov.T)


def ou_kalman_filter_nd(
    a: np.ndarray,
    b: np.ndarray,
    beta: float,
    mean0: np.ndarray,
    cov0: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    noise_std: float,
    t_final: float,
    step_size: float | None = None,
) -> dict[str, np.ndarray | float]:
    """Kalman filter (Kalman 1960) of the ``d``-dimensional OU process observed as ``Y_k = X_{t_k} +
    N(0, noise_std^2 I)``: exact, or of the JKO-discretised process.

    The state follows ``dX = -A (X - b) dt + sqrt(2 / beta) dW`` from ``N(mean0, cov0)``.  With
    ``step_size=None`` a prediction over ``s`` is the exact transition, mean ``b + e^{-As} (m - b)``
    and covariance ``e^{-As} S e^{-As} + (beta A)^{-1} (I - e^{-2As})``.  With a ``step_size`` it is
    what a JKO filter with perfect maps computes: ``round(s / step_size)`` equal exact JKO steps
    (:func:`ou_jko_step`; at least one), which needs ``cov0`` to commute with ``A`` (the updates keep
    that).

    Parameters
    ----------
    a, b : ndarray
        ``(d, d)`` symmetric positive-definite drift matrix and ``(d,)`` stationary mean.
    beta : float
        Inverse temperature.
    mean0, cov0 : ndarray
        Law of ``X_0``.
    times : array_like
        ``(K,)`` strictly increasing observation times, all ``> 0``.
    values : array_like
        ``(K, d)`` observations.
    noise_std : float
        Observation noise standard deviation.
    t_final : float
        Time of the final prediction, ``>= times[-1]``.
    step_size : float, optional
        JKO step ``h`` (``None``: the exact continuous-time filter).

    Returns
    -------
    dict
        ``means`` ``(K, d)``, ``covariances`` ``(K, d, d)`` after each update; ``pred_means``,
        ``pred_covariances`` before; ``final_mean``, ``final_covariance`` at ``t_final``;
        ``log_evidence`` and its ``(K,)`` ``log_evidence_increments``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    mean = np.asarray(mean0, dtype=np.float64).reshape(-1)
    cov = np.asarray(cov0, dtype=np.float64)
    d = mean.size
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(times.size, -1)
    if a.shape != (d, d) or cov.shape != (d, d) or b.shape != (d,) or values.shape != (times.size, d):
        raise ValueError(
            f"for dimension {d}: A and cov0 must be ({d}, {d}), b ({d},) and values (K, {d}); got "
            f"{a.shape}, {cov.shape}, {b.shape}, {values.shape}"
        )
    if not np.allclose(a, a.T) or np.any(np.linalg.eigvalsh(a) <= 0):
        raise ValueError("A must be symmetric positive definite")
    if np.any(~np.isfinite(times)) or np.any(times <= 0) or np.any(np.diff(times) <= 0):
        raise ValueError(f"times must be finite, > 0 and strictly increasing, got {times.tolist()}")
    beta, r = float(beta), float(noise_std) ** 2
    if not (beta > 0 and r > 0 and math.isfinite(beta) and math.isfinite(r)):
        raise ValueError(f"beta and noise_std must be finite and positive, got {beta} and {noise_std}")
    t_final = float(t_final)
    if times.size and not t_final >= times[-1]:
        raise ValueError(f"t_final must be >= the last observation time {times[-1]}, got {t_final}")
    stationary = np.linalg.inv(beta * a)

    def predict(mean: np.ndarray, cov: np.ndarray, span: float) -> tuple[np.ndarray, np.ndarray]:
        if step_size is None:
            decay = expm(-a * span)
            new = decay @ cov @ decay.T + stationary - decay @ stationary @ decay.T
            return b + decay @ (mean - b), 0.5 * (new + new.T)
        n_steps = max(1, round(span / float(step_size)))
        for _ in range(n_steps):
            mean, cov = ou_jko_step(a, b, beta, mean, cov, span / n_steps)
        return mean, cov

    out: dict[str, list] = {
        k: [] for k in ("means", "covariances", "pred_means", "pred_covariances", "log_evidence_increments")
    }
    t = 0.0
    for t_k, y in zip(times.tolist(), values, strict=True):
        mean, cov = predict(mean, cov, t_k - t)
        out["pred_means"].append(mean)
        out["pred_covariances"].append(cov)
        s = cov + r * np.eye(d)
        resid = y - mean
        _, logdet = np.linalg.slogdet(2 * math.pi * s)
        out["log_evidence_increments"].append(-0.5 * (logdet + resid @ np.linalg.solve(s, resid)))
        gain = np.linalg.solve(s, cov).T  # cov s^{-1}
        mean, cov = mean + gain @ resid, cov - gain @ cov
        cov = 0.5 * (cov + cov.T)
        out["means"].append(mean)
        out["covariances"].append(cov)
        t = t_k
    final_mean, final_cov = predict(mean, cov, t_final - t) if t_final > t else (mean, cov)
    result: dict[str, np.ndarray | float] = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    result.update(
        final_mean=final_mean,
        final_covariance=final_cov,
        log_evidence=float(np.sum(out["log_evidence_increments"])),
    )
    return result

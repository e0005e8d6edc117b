"""Closed-form references for testing and benchmarking the flows.

* Ornstein-Uhlenbeck marginals: ``Phi(x) = 1/2 (x-b)^T A (x-b)``, ``beta = 1``,
  ``dX = -A (X - b) dt + sqrt(2) dW``; from ``N(m0, S0)`` the law at time ``t`` is
  ``N(b + e^{-At}(m0 - b), e^{-At} S0 e^{-At} + A^{-1}(I - e^{-2At}))`` (seed 002 §4.3,
  seed 000 §4.2).
* The exact JKO iterates of the same problem, which stay Gaussian: the minimiser of each step is an
  affine map ``x -> m' + M (x - m)`` with ``M`` symmetric positive definite.  Comparing a trained flow
  with them separates the optimisation error from the time-discretisation error of JKO.
* Gaussian mixtures with unit covariances (seed 002 §4.2), with exact sampling and normalised
  log-density.
"""

from __future__ import annotations

import math

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
        """Means drawn uniformly from ``[-width/2, width/2]^d`` (the set-up of seed 002 §4.2)."""
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

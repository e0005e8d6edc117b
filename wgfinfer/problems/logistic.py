"""Bayesian logistic regression, the posterior-sampling benchmark of Fan et al. (2022, sec. 5.3) and
Mokrov (2022, sec. 4.4).

Model, with ``x`` holding an intercept column::

    alpha ~ Gamma(shape=1, rate=0.01)           (mean 100)
    w | alpha ~ N(0, alpha^{-1} I_d)
    y_i | w ~ Bernoulli(sigmoid(x_i . w))

sampled on ``theta = [w, log alpha]`` (``d + 1`` dimensions).  The Gamma is stated by its *rate*:
the papers' code used a scale parameterisation (and one of them left out the ``log alpha`` Jacobian), so
the model is written once here, as a Pyro model, and tested against the hand-written
:func:`log_posterior`.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from wgfinfer.schemes import ICNN, PWGF, Variational

PRIOR_SHAPE = 1.0
PRIOR_RATE = 0.01

SETTINGS: dict[str, object] = {
    "scheme": ICNN(iters_per_step=200, hidden=(32, 32), affine_lr_scale=10.0),
    "init": "gaussian",
    "step_size": 5.0,
    "n_steps": 6,
}
"""``WGFSampler`` settings of the ICNN scheme for this model (used by the example and the benchmark):
the fitted-Gaussian start, six steps of 5 with narrow networks and a fast affine part.  Why, and
what they give on breast cancer: ``docs/benchmarks.md`` ("Settings of the logistic-regression
model").
"""


VARIATIONAL_SETTINGS: dict[str, object] = {
    "scheme": Variational(map="resnet", iters_per_step=200, hidden=(32, 32)),
    "init": "gaussian",
    "step_size": 0.1,
    "n_steps": 8,
}
"""``WGFSampler`` settings of the variational JKO scheme (Fan et al. 2022) for this model, used by the
benchmark: the paper's step ``a = 0.1`` (Fan et al. 2022, App. F.4) from the fitted Gaussian, with
residual maps, so the flow gives draws but no ``log q`` (no k-hat).  Measurements:
``docs/benchmarks.md`` ("Settings of the logistic-regression model").
"""


PWGF_SETTINGS: dict[str, object] = {
    "scheme": PWGF(map="coupling", n_layers=6, hidden=(32,), substeps=2, metric_samples=2048),
    "init": "gaussian",
    "step_size": 0.6,
    "n_steps": 15,
    "dtype": torch.float64,
}
"""``WGFSampler`` settings of the PWGF scheme for this model: six affine coupling layers (conditioners
with 32 tanh units) on the fitted Gaussian, moved for 9 time units in 30 Euler steps of 0.3, in
float64 (float32 stopped at a higher KL).  The metric ``G_hat`` of each Euler step uses 2048 of the
4096 draws (``grad F`` all of them): 36% less CPU per Euler step at the same free energy within its
standard error (``docs/benchmarks.md``, "PWGF metric solves").

Coupling layers because the posterior's spread in many ``w`` directions depends on ``log alpha``
(the hierarchical prior), which a planar layer (one direction each) captures poorly and a coupling
layer conditioned on ``log alpha`` captures at once.  The measurements that chose them (k-hat, ESS,
KL and time against four layers and against 40 planar layers): ``docs/benchmarks.md`` ("Settings of
the logistic-regression model").
"""


def model(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Pyro model of Bayesian logistic regression (see the module docstring).

    The data plate indexes ``x`` and ``y`` with its indices, so the model works with
    ``WGFSampler(subsample_size=B)`` as well as with full data.

    Parameters
    ----------
    x : Tensor
        ``(n, d)`` design matrix (intercept column included).
    y : Tensor, optional
        ``(n,)`` labels in {0, 1}; ``None`` to simulate.

    Returns
    -------
    Tensor
        The labels (observed or simulated) of the data plate.
    """
    alpha = pyro.sample("alpha", dist.Gamma(torch.tensor(PRIOR_SHAPE, dtype=x.dtype), PRIOR_RATE))
    scale = alpha.rsqrt().unsqueeze(-1).expand(alpha.shape + (x.shape[1],))
    w = pyro.sample("w", dist.Normal(torch.zeros_like(scale), scale).to_event(1))
    with pyro.plate("data", x.shape[0], dim=-1) as idx:
        # w has batch shape (..., 1) under outer plates (the 1 lines up with this plate) or none: a
        # matrix product, not the broadcast (x * w).sum(-1), which builds a (..., n, d) temporary: the
        # init="gaussian" fit on twonorm's 5920 rows took 168 s with it, 26 s without
        logits = x[idx] @ w if w.dim() == 1 else (w @ x[idx].T).squeeze(-2)
        return pyro.sample("y", dist.Bernoulli(logits=logits), obs=None if y is None else y[idx])


def log_posterior(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Hand-written unnormalized log posterior of ``theta = [w, log alpha]``, batched.

    ``log p(y | w) + log N(w; 0, alpha^{-1} I) + log Gamma(alpha; 1, rate 0.01) + log alpha``, the last
    term being the Jacobian of ``alpha = exp(log alpha)``.

    Parameters
    ----------
    theta : Tensor
        ``(n, d + 1)`` points.
    x, y : Tensor
        ``(N, d)`` design and ``(N,)`` labels.

    Returns
    -------
    Tensor
        ``(n,)`` log-densities.
    """
    w, log_alpha = theta[:, :-1], theta[:, -1]
    alpha = log_alpha.exp()
    d = w.shape[1]
    logits = w @ x.T
    log_lik = (y * logits - torch.nn.functional.softplus(logits)).sum(-1)
    log_prior_w = 0.5 * d * (log_alpha - math.log(2 * math.pi)) - 0.5 * alpha * w.square().sum(-1)
    log_prior_alpha = PRIOR_SHAPE * math.log(PRIOR_RATE) - math.lgamma(PRIOR_SHAPE)
    log_prior_alpha = log_prior_alpha + (PRIOR_SHAPE - 1.0) * log_alpha - PRIOR_RATE * alpha
    return log_lik + log_prior_w + log_prior_alpha + log_alpha


def predictive_metrics(w: Tensor, x: Tensor, y: Tensor) -> dict[str, float]:
    """Test-set accuracy of the posterior-predictive mean and mean log predictive density.

    Parameters
    ----------
    w : Tensor
        ``(S, d)`` posterior draws of the weights.
    x, y : Tensor
        ``(N, d)`` test design and ``(N,)`` labels.

    Returns
    -------
    dict
        ``accuracy``: fraction of ``y`` equal to ``1[p(y=1 | x, data) > 1/2]`` with
        ``p(y=1 | x, data) = mean_s sigmoid(x . w_s)``; ``log_lik``: mean over test points of
        ``log mean_s p(y | x, w_s)``.
    """
    logits = w.double() @ x.double().T  # (S, N)
    y = y.double()
    log_p = y * torch.nn.functional.logsigmoid(logits) + (1 - y) * torch.nn.functional.logsigmoid(-logits)
    log_pred = torch.logsumexp(log_p, 0) - math.log(w.shape[0])
    p_one = torch.sigmoid(logits).mean(0)
    accuracy = float(((p_one > 0.5).double() == y).double().mean())
    return {"accuracy": accuracy, "log_lik": float(log_pred.mean())}

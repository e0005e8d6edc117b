"""Eight schools (Rubin 1981), centred and non-centred, as in posteriordb's ``eight_schools_centered``
and ``eight_schools_noncentered`` Stan programs.

Model::

    mu ~ normal(0, 5)
    tau ~ cauchy(0, 5), tau > 0            (a half-Cauchy)
    theta[j] ~ normal(mu, tau)             centred: theta sampled
    theta = mu + tau * theta_trans,        non-centred: theta_trans[j] ~ normal(0, 1) sampled
    y[j] ~ normal(theta[j], sigma[j])

The centred posterior has a funnel between ``theta`` and ``log tau`` that NUTS finds hard; the
non-centred one is the same posterior of ``(mu, tau, theta)`` in easy coordinates.  No reference
draws here.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from wgfinfer.problems.posteriordb import Param

Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
"""Estimated treatment effects of the eight schools."""
SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
"""Their standard errors."""

PARAMS: dict[str, tuple[Param, ...]] = {
    "centered": (
        Param("mu", (), constraints.real),
        Param("tau", (), constraints.positive),
        Param("theta", (8,), constraints.real),
    ),
    "noncentered": (
        Param("mu", (), constraints.real),
        Param("tau", (), constraints.positive),
        Param("theta_trans", (8,), constraints.real),
    ),
}
"""Latent parameters of each parameterisation, in sampling order."""


def model_args(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The data as model arguments.

    Parameters
    ----------
    dtype : torch.dtype
        Dtype of the tensors.

    Returns
    -------
    tuple of Tensor
        ``(sigma, y)``, each ``(8,)``.
    """
    return torch.tensor(SIGMA, dtype=dtype), torch.tensor(Y, dtype=dtype)


def centered(sigma: Tensor, y: Tensor | None = None) -> Tensor:
    """Centred eight schools: ``theta ~ normal(mu, tau)`` sampled directly.

    Parameters
    ----------
    sigma : Tensor
        ``(J,)`` standard errors.
    y : Tensor, optional
        ``(J,)`` estimated effects.

    Returns
    -------
    Tensor
        The effects of the school plate.
    """
    mu = pyro.sample("mu", dist.Normal(sigma.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
    with pyro.plate("school", sigma.shape[0]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def noncentered(sigma: Tensor, y: Tensor | None = None) -> Tensor:
    """Non-centred eight schools: ``theta = mu + tau * theta_trans``, ``theta_trans ~ normal(0, 1)``;
    ``theta`` is recorded as a deterministic site.

    Parameters
    ----------
    sigma : Tensor
        ``(J,)`` standard errors.
    y : Tensor, optional
        ``(J,)`` estimated effects.

    Returns
    -------
    Tensor
        The effects of the school plate.
    """
    mu = pyro.sample("mu", dist.Normal(sigma.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
    with pyro.plate("school", sigma.shape[0]):
        theta_trans = pyro.sample("theta_trans", dist.Normal(sigma.new_tensor(0.0), 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)

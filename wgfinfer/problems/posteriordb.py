"""Thirteen posteriors of posteriordb (stan-dev/posteriordb) as Pyro models, with their data and
reference moments.

Each Stan program of ``posteriordb_data/models/`` is translated by hand into a Pyro model with the
same posterior: the same priors (Stan's implicit flat prior becomes :class:`FlatPrior`, a prior on a
``<lower=0>`` parameter the half distribution), the same constraints (so the same supports, and
Pyro's bijections to the unconstrained space with their Jacobians) and the same likelihood (the HMMs
marginalise their discrete states with the forward algorithm, the ARMA model runs its error
recursion).  The models are written for vectorisation (data in ``pyro.plate``, batch-friendly
products), so that ``WGFSampler(model=...)`` evaluates them for all particles at once.

The registry :data:`POSTERIORS` maps each posterior name (``"kidiq-kidscore_interaction"``) to a
:class:`Posterior`: the model, the function turning posteriordb's data dict into model arguments
(float64 tensors; Stan's ``transformed data`` happens there) and the latent parameters with their
supports.  The unconstrained scale of a parameter is ``torch.distributions.biject_to(support)``'s
(what Pyro's NUTS and wgfinfer use): log for positive parameters, stick-breaking for simplexes,
Pyro's ordered transform then log for positive-ordered vectors.

Loaders take ``root``, a directory laid out like posteriordb's subset in this project::

    root/posteriors/NAME.json        definition (model_name, data_name, dimensions)
    root/models/MODEL.stan           the Stan program
    root/data/DATA.json.zip          the data
    root/reference_draws/NAME.json.zip   10 chains x 1000 reference draws (constrained, Stan names)

``root=None`` means the copy shipped in the package (``posteriordb_data/``: definitions, Stan
programs, data, the database's licence and snapshot commit, and ``reference_moments.json``, the
reference moments computed from the draws by ``benchmarks/posteriordb_reference.py``); the reference
draws themselves are not shipped.  ArviZ is imported only when moments are computed from draws.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor
from torch.distributions import biject_to
from torch.distributions.constraints import Constraint
from torch.distributions.transforms import Transform

PACKAGED = "posteriordb_data"
MOMENTS_FILE = "reference_moments.json"
_STATS = ("mean", "sd", "se_mean", "se_sd", "ess_bulk")


# ---------------------------------------------------------------------------------------- priors
class FlatPrior(dist.ImproperUniform):
    """Stan's implicit prior of a parameter without a ``~`` statement: flat on ``support``.

    The log density is zero everywhere on the support, as for Pyro's
    :class:`~pyro.distributions.ImproperUniform` (whose ``log_prob`` this is); the density on the
    unconstrained space is then the Jacobian of ``biject_to(support)`` alone, as in Stan.  Unlike
    ``ImproperUniform``, it can be sampled, because Pyro runs the model unconditioned before any MCMC
    or ``WGFSampler`` run (to find the plates and the initial point): a draw is a point uniform on
    ``(-2, 2)`` per unconstrained coordinate, the box of Pyro's ``init_to_uniform``.  Such a draw is
    not from any prior; do not use it for prior predictive checks.

    Parameters
    ----------
    support : Constraint
        The parameter's support (e.g. ``constraints.positive`` for ``real<lower=0>``).
    event_shape : tuple of int
        Shape of one value (``(k,)`` for ``vector[k]``).
    batch_shape : tuple of int
        Batch shape (set by plates and ``expand``).
    dtype : torch.dtype
        Dtype of the draws and of the zero log density.
    """

    def __init__(
        self,
        support: Constraint,
        event_shape: tuple[int, ...] = (),
        batch_shape: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.dtype = dtype
        super().__init__(support, torch.Size(batch_shape), torch.Size(event_shape))

    def expand(self, batch_shape: tuple[int, ...], _instance: Any = None) -> FlatPrior:
        return FlatPrior(self.support, tuple(self.event_shape), tuple(batch_shape), self.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        return super().log_prob(value).to(value.dtype)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        transform = biject_to(self.support)
        shape = torch.Size(sample_shape) + self.batch_shape + transform.inverse_shape(self.event_shape)
        return transform(4.0 * torch.rand(shape, dtype=self.dtype) - 2.0)


# ----------------------------------------------------------------------------------- helpers
def _linear(X: Tensor, beta: Tensor) -> Tensor:
    """``X @ beta`` for a ``(k,)`` vector, or for a batch ``(..., 1, k)`` of them under outer plates
    (the 1 lines up with the data plate): ``(..., N)``, without an ``(..., N, k)`` temporary."""
    return X @ beta if beta.dim() == 1 else (beta @ X.T).squeeze(-2)


def _normal_regression(X: Tensor, beta: Tensor, sigma: Tensor, y: Tensor | None) -> Tensor:
    """The likelihood ``y ~ normal(X beta, sigma)`` of the regression programs, in a data plate that
    indexes ``X`` and ``y`` (so mini-batches work); returns the plate's responses."""
    with pyro.plate("data", X.shape[0]) as idx:
        obs = None if y is None else y[idx]
        return pyro.sample("y", dist.Normal(_linear(X[idx], beta), sigma), obs=obs)


def log_matmul_exp(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product in the log semiring: ``log(exp(a) @ exp(b))``, batched over leading dims.

    Parameters
    ----------
    a, b : Tensor
        ``(..., i, j)`` and ``(..., j, k)`` log-matrices.

    Returns
    -------
    Tensor
        ``(..., i, k)``.
    """
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)


def hmm_log_likelihood(log_trans: Tensor, log_emit: Tensor) -> Tensor:
    """Log-likelihood of an HMM by the forward algorithm, with a uniform (unweighted) first state.

    This is Stan's forward recursion of ``hmm_example.stan`` and ``hmm_drive_0.stan``:
    ``gamma[1, k] = log_emit[1, k]``, ``gamma[t, k] = log_sum_exp_j(gamma[t-1, j] + log_trans[j, k])
    + log_emit[t, k]``, result ``log_sum_exp(gamma[N])``.  The ``N - 1`` steps are the log-semiring
    product ``gamma[1] M_2 ... M_N`` with ``M_t[j, k] = log_trans[j, k] + log_emit[t, k]``, taken
    pairwise (``log2 N`` batched products rather than ``N`` sequential steps).

    Parameters
    ----------
    log_trans : Tensor
        ``(..., K, K)`` log transition probabilities, ``[j, k]`` from state ``j`` to ``k``.
    log_emit : Tensor
        ``(..., N, K)`` log emission densities of each observation under each state.

    Returns
    -------
    Tensor
        ``(...)``.
    """
    first, rest = log_emit[..., 0, :], log_emit[..., 1:, :]
    if rest.shape[-2] == 0:
        return torch.logsumexp(first, dim=-1)
    mats = log_trans.unsqueeze(-3) + rest.unsqueeze(-2)  # (..., N - 1, K, K)
    while mats.shape[-3] > 1:
        odd = mats[..., -1:, :, :] if mats.shape[-3] % 2 else None
        paired = log_matmul_exp(mats[..., 0:-1:2, :, :], mats[..., 1::2, :, :])
        mats = paired if odd is None else torch.cat([paired, odd], dim=-3)
    return torch.logsumexp(first.unsqueeze(-1) + mats[..., 0, :, :], dim=(-2, -1))


def linear_recursion(a: Tensor, c: Tensor) -> Tensor:
    """Solve ``x[0] = a[0]``, ``x[t] = a[t] + c * x[t-1]`` along the last dim, by doubling.

    After the pass with shift ``d`` (1, 2, 4, ...), ``x[t] = sum_{s < 2d} c^s a[t-s]``: ``log2 T``
    vectorised passes rather than ``T`` sequential steps.

    Parameters
    ----------
    a : Tensor
        ``(..., T)`` inputs.
    c : Tensor
        Coefficient, broadcastable to ``(..., 1)``.

    Returns
    -------
    Tensor
        ``(..., T)``.
    """
    x, power, shift = a, c, 1
    while shift < a.shape[-1]:
        x = torch.cat([x[..., :shift], x[..., shift:] + power * x[..., :-shift]], dim=-1)
        power, shift = power * power, 2 * shift
    return x


# ------------------------------------------------------------------------------------ models
def linear_regression_flat(X: Tensor, y: Tensor | None = None) -> Tensor:
    """``y ~ normal(X beta, sigma)`` with flat priors on ``beta`` and on ``sigma > 0``.

    The Stan programs ``kidscore_mom_work``, ``logmesquite``, ``nes``, ``earn_height`` and
    ``logearn_height_male`` are this model with their own design matrix (intercept column first,
    so ``beta[1]`` is Stan's intercept), built from the data by their ``model_args``.

    Parameters
    ----------
    X : Tensor
        ``(N, k)`` design matrix.
    y : Tensor, optional
        ``(N,)`` responses.

    Returns
    -------
    Tensor
        The responses of the data plate.
    """
    beta = pyro.sample("beta", FlatPrior(constraints.real, (X.shape[1],), dtype=X.dtype))
    sigma = pyro.sample("sigma", FlatPrior(constraints.positive, dtype=X.dtype))
    return _normal_regression(X, beta, sigma, y)


def kidscore_interaction(X: Tensor, y: Tensor | None = None) -> Tensor:
    """``kidscore_interaction.stan``: flat ``beta``, ``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0``
    (a half-Cauchy), ``kid_score ~ normal(X beta, sigma)``; ``X = [1, mom_hs, mom_iq, mom_hs * mom_iq]``.

    Parameters
    ----------
    X : Tensor
        ``(N, 4)`` design matrix.
    y : Tensor, optional
        ``(N,)`` kid scores.

    Returns
    -------
    Tensor
        The kid scores of the data plate.
    """
    beta = pyro.sample("beta", FlatPrior(constraints.real, (X.shape[1],), dtype=X.dtype))
    sigma = pyro.sample("sigma", dist.HalfCauchy(X.new_tensor(2.5)))
    return _normal_regression(X, beta, sigma, y)


def kilpisjarvi(
    x: Tensor,
    y: Tensor,
    pmualpha: Tensor,
    psalpha: Tensor,
    pmubeta: Tensor,
    psbeta: Tensor,
) -> Tensor:
    """``kilpisjarvi.stan``: ``alpha ~ normal(pmualpha, psalpha)``, ``beta ~ normal(pmubeta, psbeta)``,
    flat ``sigma > 0``, ``y ~ normal(alpha + beta * x, sigma)`` (``x`` in un-centred years).

    Parameters
    ----------
    x, y : Tensor
        ``(N,)`` years and responses.
    pmualpha, psalpha, pmubeta, psbeta : Tensor
        Prior means and standard deviations of ``alpha`` and ``beta`` (scalars).

    Returns
    -------
    Tensor
        The responses of the data plate.
    """
    alpha = pyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = pyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = pyro.sample("sigma", FlatPrior(constraints.positive, dtype=x.dtype))
    with pyro.plate("data", x.shape[0]) as idx:
        return pyro.sample("y", dist.Normal(alpha + beta * x[idx], sigma), obs=y[idx])


def blr(X: Tensor, y: Tensor | None = None) -> Tensor:
    """``blr.stan``: ``beta ~ normal(0, 10)``, ``sigma ~ normal(0, 10)`` on ``sigma > 0`` (a
    half-normal), ``y ~ normal(X beta, sigma)``.

    Parameters
    ----------
    X : Tensor
        ``(N, D)`` design matrix.
    y : Tensor, optional
        ``(N,)`` responses.

    Returns
    -------
    Tensor
        The responses of the data plate.
    """
    beta = pyro.sample("beta", dist.Normal(X.new_zeros(X.shape[1]), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(X.new_tensor(10.0)))
    return _normal_regression(X, beta, sigma, y)


def diamonds(Xc: Tensor, y: Tensor | None = None) -> Tensor:
    """``diamonds.stan`` (brms): ``b ~ normal(0, 1)``, ``Intercept ~ student_t(3, 8, 10)``,
    ``sigma ~ student_t(3, 0, 10)`` truncated to ``sigma > 0`` (a half-t: the folded t, since the t
    is symmetric about 0), ``Y ~ normal(Intercept + Xc b, sigma)`` with ``Xc`` the centred predictors
    (the design matrix without its intercept column, column means removed).

    Parameters
    ----------
    Xc : Tensor
        ``(N, K - 1)`` centred predictors.
    y : Tensor, optional
        ``(N,)`` responses ``Y``.

    Returns
    -------
    Tensor
        The responses of the data plate.
    """
    b = pyro.sample("b", dist.Normal(Xc.new_zeros(Xc.shape[1]), 1.0).to_event(1))
    intercept = pyro.sample("Intercept", dist.StudentT(Xc.new_tensor(3.0), 8.0, 10.0))
    sigma = pyro.sample("sigma", dist.FoldedDistribution(dist.StudentT(Xc.new_tensor(3.0), 0.0, 10.0)))
    with pyro.plate("data", Xc.shape[0]) as idx:
        obs = None if y is None else y[idx]
        return pyro.sample("y", dist.Normal(intercept + _linear(Xc[idx], b), sigma), obs=obs)


def arma11(y: Tensor) -> Tensor:
    """``arma11.stan``: ``mu ~ normal(0, 10)``, ``phi, theta ~ normal(0, 2)`` (unconstrained, as in
    the Stan program), ``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0``, and the ARMA(1, 1) one-step
    predictions ``nu[1] = mu + phi mu`` (``err[0] = 0``), ``nu[t] = mu + phi y[t-1] + theta err[t-1]``,
    ``err = y - nu``, ``err ~ normal(0, sigma)``.

    ``err ~ normal(0, sigma)`` is written ``y ~ normal(nu, sigma)``: the same density, as ``nu[t]``
    depends on ``y`` only through earlier times.  The error recursion ``err[t] = a[t] - theta
    err[t-1]`` with ``a[t] = y[t] - mu - phi y[t-1]`` is solved by :func:`linear_recursion`.

    Parameters
    ----------
    y : Tensor
        ``(T,)`` series.

    Returns
    -------
    Tensor
        The observed series.
    """
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 10.0)).unsqueeze(-1)
    phi = pyro.sample("phi", dist.Normal(y.new_tensor(0.0), 2.0)).unsqueeze(-1)
    theta = pyro.sample("theta", dist.Normal(y.new_tensor(0.0), 2.0)).unsqueeze(-1)
    sigma = pyro.sample("sigma", dist.HalfCauchy(y.new_tensor(2.5))).unsqueeze(-1)
    previous = torch.cat([mu, y[:-1].expand(mu.shape[:-1] + (y.shape[0] - 1,))], dim=-1)
    err = linear_recursion(y - mu - phi * previous, -theta)
    return pyro.sample("y", dist.Normal(y - err, sigma).to_event(1), obs=y)


def gp_regr(x: Tensor, y: Tensor) -> Tensor:
    """``gp_regr.stan``: ``rho ~ gamma(25, 4)`` (shape, rate), ``alpha ~ normal(0, 2)`` and
    ``sigma ~ normal(0, 1)`` on positive values (half-normals), ``y ~ multi_normal(0, K)`` with
    ``K[i, j] = alpha^2 exp(-(x[i] - x[j])^2 / (2 rho^2)) + sigma delta_ij``.

    ``sigma`` (not ``sigma^2``) is added to the diagonal, as in the Stan program.

    Parameters
    ----------
    x, y : Tensor
        ``(N,)`` inputs and outputs.

    Returns
    -------
    Tensor
        The observed outputs.
    """
    rho = pyro.sample("rho", dist.Gamma(x.new_tensor(25.0), 4.0))[..., None, None]
    alpha = pyro.sample("alpha", dist.HalfNormal(x.new_tensor(2.0)))[..., None, None]
    sigma = pyro.sample("sigma", dist.HalfNormal(x.new_tensor(1.0)))[..., None, None]
    sq_dist = (x.unsqueeze(-1) - x.unsqueeze(-2)) ** 2
    cov = alpha**2 * torch.exp(-0.5 * sq_dist / rho**2) + sigma * torch.eye(x.shape[0], dtype=x.dtype)
    return pyro.sample("y", dist.MultivariateNormal(x.new_zeros(x.shape[0]), cov), obs=y)


def hmm_example(y: Tensor) -> None:
    """``hmm_example.stan``: a two-state HMM with ``N(mu[k], 1)`` emissions, the states marginalised
    by the forward algorithm (:func:`hmm_log_likelihood`).

    Rows ``theta1``, ``theta2`` of the transition matrix are simplexes with Stan's implicit uniform
    prior (``Dirichlet(1, 1)``, equal to the flat prior up to a constant); ``mu`` is
    ``positive_ordered`` with ``mu[1] ~ normal(3, 1)``, ``mu[2] ~ normal(10, 1)`` added to the target
    (a flat prior on the ordered support plus a factor).

    Parameters
    ----------
    y : Tensor
        ``(N,)`` observations.
    """
    ones = y.new_ones(2)
    theta1 = pyro.sample("theta1", dist.Dirichlet(ones))
    theta2 = pyro.sample("theta2", dist.Dirichlet(ones))
    mu = pyro.sample("mu", FlatPrior(constraints.positive_ordered_vector, (2,), dtype=y.dtype))
    pyro.factor("mu_prior", dist.Normal(y.new_tensor([3.0, 10.0]), 1.0).log_prob(mu).sum(-1))
    log_trans = torch.stack([theta1, theta2], dim=-2).log()
    log_emit = dist.Normal(mu.unsqueeze(-2), 1.0).log_prob(y.unsqueeze(-1))  # (..., N, K)
    pyro.factor("log_lik", hmm_log_likelihood(log_trans, log_emit))


def hmm_drive_0(u: Tensor, v: Tensor, alpha: Tensor) -> None:
    """``hmm_drive_0.stan``: a two-state HMM of basketball drives with exponential emissions of
    ``u`` (rate ``phi[k]``) and ``v`` (rate ``lambda[k]``), the states marginalised by the forward
    algorithm (:func:`hmm_log_likelihood`).

    ``theta1 ~ dirichlet(alpha[1])``, ``theta2 ~ dirichlet(alpha[2])`` (rows of the transition
    matrix); ``phi`` and ``lambda`` are ``positive_ordered`` with ``normal(0, 1)`` and
    ``normal(3, 1)`` on their first and second elements added to the target.

    Parameters
    ----------
    u, v : Tensor
        ``(N,)`` observations (1 / speed, distance to the hoop).
    alpha : Tensor
        ``(2, 2)`` Dirichlet parameters, one row per transition-matrix row.
    """
    theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
    theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
    ordered = FlatPrior(constraints.positive_ordered_vector, (2,), dtype=u.dtype)
    phi = pyro.sample("phi", ordered)
    lam = pyro.sample("lambda", ordered)
    prior = dist.Normal(u.new_tensor([0.0, 3.0]), 1.0)
    pyro.factor("phi_prior", prior.log_prob(phi).sum(-1))
    pyro.factor("lambda_prior", prior.log_prob(lam).sum(-1))
    log_trans = torch.stack([theta1, theta2], dim=-2).log()
    log_emit = dist.Exponential(phi.unsqueeze(-2)).log_prob(u.unsqueeze(-1)) + dist.Exponential(
        lam.unsqueeze(-2)
    ).log_prob(v.unsqueeze(-1))
    pyro.factor("log_lik", hmm_log_likelihood(log_trans, log_emit))


# ---------------------------------------------------------------------- data -> model args
def _vector(data: Mapping[str, Any], key: str) -> Tensor:
    return torch.as_tensor(np.asarray(data[key], dtype=np.float64))


def _scalar(data: Mapping[str, Any], key: str) -> Tensor:
    return torch.tensor(float(data[key]), dtype=torch.float64)


def _columns(*cols: Tensor) -> Tensor:
    """Design matrix with an intercept column first."""
    return torch.stack([torch.ones_like(cols[0]), *cols], dim=-1)


def _indicator(data: Mapping[str, Any], key: str, level: int) -> Tensor:
    return (torch.as_tensor(np.asarray(data[key])) == level).to(torch.float64)


def _kidiq_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    mom_hs, mom_iq = _vector(data, "mom_hs"), _vector(data, "mom_iq")
    return _columns(mom_hs, mom_iq, mom_hs * mom_iq), _vector(data, "kid_score")


def _mom_work_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    work = [_indicator(data, "mom_work", level) for level in (2, 3, 4)]
    return _columns(*work), _vector(data, "kid_score")


def _mesquite_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    keys = ("diam1", "diam2", "canopy_height", "total_height", "density")
    logs = [_vector(data, k).log() for k in keys]
    return _columns(*logs, _vector(data, "group")), _vector(data, "weight").log()


def _nes_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    age = [_indicator(data, "age_discrete", level) for level in (2, 3, 4)]
    rest = [_vector(data, k) for k in ("educ1", "gender", "income")]
    X = _columns(_vector(data, "real_ideo"), _vector(data, "race_adj"), *age, *rest)
    return X, _vector(data, "partyid7")


def _earn_height_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    return _columns(_vector(data, "height")), _vector(data, "earn")


def _logearn_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    X = _columns(_vector(data, "height"), _vector(data, "male"))
    return X, _vector(data, "earn").log()


def _sblri_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    return torch.as_tensor(np.asarray(data["X"], dtype=np.float64)), _vector(data, "y")


def _diamonds_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    X = torch.as_tensor(np.asarray(data["X"], dtype=np.float64))[:, 1:]  # Stan drops column 1
    return X - X.mean(0), _vector(data, "Y")


def _kilpisjarvi_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    priors = [_scalar(data, k) for k in ("pmualpha", "psalpha", "pmubeta", "psbeta")]
    return _vector(data, "x"), _vector(data, "y"), *priors


def _two_states(data: Mapping[str, Any]) -> None:
    if int(data["K"]) != 2:
        raise ValueError(f"the Stan program has two transition rows (theta1, theta2); data has K={data['K']}")


def _hmm_example_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    _two_states(data)
    return (_vector(data, "y"),)


def _hmm_drive_args(data: Mapping[str, Any]) -> tuple[Tensor, ...]:
    _two_states(data)
    return _vector(data, "u"), _vector(data, "v"), _vector(data, "alpha")


# --------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Param:
    """A latent parameter: its Stan (and Pyro site) name, constrained shape and support.

    Attributes
    ----------
    name : str
        Site name (the Stan parameter's name).
    shape : tuple of int
        Constrained shape (``()`` for a scalar).
    support : Constraint
        Support; ``biject_to(support)`` maps the unconstrained scale onto it.
    """

    name: str
    shape: tuple[int, ...]
    support: Constraint

    @property
    def transform(self) -> Transform:
        """Bijection from the unconstrained scale to the support (``biject_to(support)``)."""
        return biject_to(self.support)

    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """Shape on the unconstrained scale (``(K - 1,)`` for a ``K``-simplex)."""
        return tuple(self.transform.inverse_shape(torch.Size(self.shape)))


@dataclass(frozen=True)
class Posterior:
    """One posteriordb posterior translated to Pyro.

    Attributes
    ----------
    name : str
        posteriordb name, ``"DATA-MODEL"``.
    model_name, data_name : str
        Stan program and data set names.
    model : callable
        The Pyro model, called as ``model(*args)``.
    model_args : callable
        posteriordb data dict -> ``args`` (float64 tensors).
    params : tuple of Param
        Latent parameters, in the model's sampling order.
    """

    name: str
    model_name: str
    data_name: str
    model: Callable[..., Any]
    model_args: Callable[[Mapping[str, Any]], tuple[Tensor, ...]]
    params: tuple[Param, ...]


def _regression(k: int) -> tuple[Param, ...]:
    return Param("beta", (k,), constraints.real), Param("sigma", (), constraints.positive)


_REAL, _POSITIVE = constraints.real, constraints.positive
_SIMPLEX, _POS_ORDERED = constraints.simplex, constraints.positive_ordered_vector

POSTERIORS: dict[str, Posterior] = {
    p.name: p
    for p in [
        Posterior(
            "diamonds-diamonds",
            "diamonds",
            "diamonds",
            diamonds,
            _diamonds_args,
            (Param("b", (24,), _REAL), Param("Intercept", (), _REAL), Param("sigma", (), _POSITIVE)),
        ),
        Posterior(
            "kidiq-kidscore_interaction",
            "kidscore_interaction",
            "kidiq",
            kidscore_interaction,
            _kidiq_args,
            _regression(4),
        ),
        Posterior(
            "kidiq_with_mom_work-kidscore_mom_work",
            "kidscore_mom_work",
            "kidiq_with_mom_work",
            linear_regression_flat,
            _mom_work_args,
            _regression(4),
        ),
        Posterior(
            "mesquite-logmesquite",
            "logmesquite",
            "mesquite",
            linear_regression_flat,
            _mesquite_args,
            _regression(7),
        ),
        Posterior("nes1996-nes", "nes", "nes1996", linear_regression_flat, _nes_args, _regression(9)),
        Posterior(
            "earnings-earn_height",
            "earn_height",
            "earnings",
            linear_regression_flat,
            _earn_height_args,
            _regression(2),
        ),
        Posterior(
            "earnings-logearn_height_male",
            "logearn_height_male",
            "earnings",
            linear_regression_flat,
            _logearn_args,
            _regression(3),
        ),
        Posterior("sblri-blr", "blr", "sblri", blr, _sblri_args, _regression(5)),
        Posterior(
            "arma-arma11",
            "arma11",
            "arma",
            arma11,
            lambda data: (_vector(data, "y"),),
            tuple(Param(n, (), _REAL) for n in ("mu", "phi", "theta")) + (Param("sigma", (), _POSITIVE),),
        ),
        Posterior(
            "kilpisjarvi_mod-kilpisjarvi",
            "kilpisjarvi",
            "kilpisjarvi_mod",
            kilpisjarvi,
            _kilpisjarvi_args,
            (Param("alpha", (), _REAL), Param("beta", (), _REAL), Param("sigma", (), _POSITIVE)),
        ),
        Posterior(
            "gp_pois_regr-gp_regr",
            "gp_regr",
            "gp_pois_regr",
            gp_regr,
            lambda data: (_vector(data, "x"), _vector(data, "y")),
            tuple(Param(n, (), _POSITIVE) for n in ("rho", "alpha", "sigma")),
        ),
        Posterior(
            "hmm_example-hmm_example",
            "hmm_example",
            "hmm_example",
            hmm_example,
            _hmm_example_args,
            (
                Param("theta1", (2,), _SIMPLEX),
                Param("theta2", (2,), _SIMPLEX),
                Param("mu", (2,), _POS_ORDERED),
            ),
        ),
        Posterior(
            "bball_drive_event_0-hmm_drive_0",
            "hmm_drive_0",
            "bball_drive_event_0",
            hmm_drive_0,
            _hmm_drive_args,
            (
                Param("theta1", (2,), _SIMPLEX),
                Param("theta2", (2,), _SIMPLEX),
                Param("phi", (2,), _POS_ORDERED),
                Param("lambda", (2,), _POS_ORDERED),
            ),
        ),
    ]
}
"""The translated posteriors by posteriordb name."""


def get(name: str) -> Posterior:
    """The registry entry of a posterior, with the known names in the error if there is none.

    Parameters
    ----------
    name : str
        posteriordb posterior name.

    Returns
    -------
    Posterior
    """
    try:
        return POSTERIORS[name]
    except KeyError:
        raise KeyError(f"no Pyro translation of posterior {name!r}; known: {sorted(POSTERIORS)}") from None


# ---------------------------------------------------------------------------------- loaders
def packaged_root() -> Path:
    """The posteriordb subset shipped in the package (definitions, Stan programs, data, moments).

    Returns
    -------
    Path
    """
    return Path(str(resources.files("wgfinfer.problems") / PACKAGED))


def _root(root: str | Path | None) -> Path:
    return packaged_root() if root is None else Path(root)


def _read_zipped_json(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        (member,) = archive.namelist()
        return json.loads(archive.read(member))


def load_definition(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """A posterior's definition, ``root/posteriors/NAME.json`` (``model_name``, ``data_name``,
    ``dimensions``, ...).

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    root : str or Path, optional
        posteriordb directory; ``None`` for the packaged copy.

    Returns
    -------
    dict
    """
    return json.loads((_root(root) / "posteriors" / f"{name}.json").read_text())


def load_data(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The data of a posterior, as in posteriordb's JSON (lists and numbers).

    Parameters
    ----------
    name : str
        posteriordb posterior name (its definition names the data set).
    root : str or Path, optional
        posteriordb directory; ``None`` for the packaged copy.

    Returns
    -------
    dict
        The Stan data block's variables.
    """
    data_name = load_definition(name, root)["data_name"]
    return _read_zipped_json(_root(root) / "data" / f"{data_name}.json.zip")


def model_args(name: str, root: str | Path | None = None) -> tuple[Tensor, ...]:
    """The arguments of a registered posterior's model, from its data.

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    root : str or Path, optional
        posteriordb directory; ``None`` for the packaged copy.

    Returns
    -------
    tuple of Tensor
        ``args`` for ``POSTERIORS[name].model(*args)`` (float64).
    """
    return get(name).model_args(load_data(name, root))


_STAN_NAME = re.compile(r"^(?P<site>[^\[\]]+)(?:\[(?P<index>[0-9, ]+)\])?$")


def _parse(stan_name: str) -> tuple[str, tuple[int, ...]]:
    match = _STAN_NAME.match(stan_name)
    if match is None:
        raise ValueError(f"cannot read the parameter name {stan_name!r}")
    index = match["index"]
    return match["site"], () if index is None else tuple(int(i) - 1 for i in index.split(","))


def load_reference_draws(name: str, root: str | Path, by_chain: bool = False) -> dict[str, np.ndarray]:
    """posteriordb's reference draws of a posterior, by site, on the constrained scale.

    Stan's scalar names ``"beta[2]"`` / ``"Sigma[1,2]"`` (1-based) become array indices
    ``[..., 1]`` / ``[..., 0, 1]`` of the site ``beta`` / ``Sigma``; each site's shape is that of
    its registry entry, or for an unregistered posterior the largest index seen.

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    root : str or Path
        posteriordb directory (the draws are not shipped in the package).
    by_chain : bool
        Return ``(n_chains, n_draws, *shape)`` arrays instead of the chains concatenated.

    Returns
    -------
    dict of str to ndarray
        ``{site: (n_draws, *shape)}`` (float64), all chains in order, or by chain.
    """
    chains = _read_zipped_json(Path(root) / "reference_draws" / f"{name}.json.zip")
    columns: dict[str, dict[tuple[int, ...], np.ndarray]] = {}
    for key in chains[0]:
        site, index = _parse(key)
        columns.setdefault(site, {})[index] = np.asarray([chain[key] for chain in chains], dtype=np.float64)
    shapes = {p.name: p.shape for p in POSTERIORS[name].params} if name in POSTERIORS else {}
    draws: dict[str, np.ndarray] = {}
    for site, entries in columns.items():
        indices = list(entries)
        if site in shapes:
            shape = shapes[site]
        else:  # the largest index in each dimension
            shape = tuple(max(index[d] for index in indices) + 1 for d in range(len(indices[0])))
        if len(entries) != math.prod(shape):
            raise ValueError(f"{name}: site {site!r} has {len(entries)} columns for shape {shape}")
        n_chains, n_draws = next(iter(entries.values())).shape
        values = np.empty((n_chains, n_draws, *shape))
        for index, column in entries.items():
            values[(slice(None), slice(None), *index)] = column
        draws[site] = values if by_chain else values.reshape((n_chains * n_draws, *shape))
    if shapes and set(draws) != set(shapes):
        raise ValueError(
            f"{name}: reference sites {sorted(draws)} differ from the registry's {sorted(shapes)}"
        )
    return draws


def unconstrain(name: str, draws: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Map constrained draws of a registered posterior to the unconstrained scale.

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    draws : dict of str to array
        ``{site: (..., *shape)}`` on the constrained scale (numpy or torch).

    Returns
    -------
    dict of str to ndarray
        ``{site: (..., *unconstrained_shape)}`` (float64) by ``biject_to(support).inv``.
    """
    out = {}
    for param in get(name).params:
        value = torch.as_tensor(np.asarray(draws[param.name], dtype=np.float64))
        out[param.name] = param.transform.inv(value).numpy()
    return out


def flatten(name: str, per_site: Mapping[str, Any]) -> np.ndarray:
    """Concatenate per-site unconstrained arrays ``(..., *unconstrained_shape)`` into ``(..., d)``,
    in the registry's site order.

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    per_site : dict of str to array
        Values by site on the unconstrained scale.

    Returns
    -------
    ndarray
    """
    blocks = []
    for param in get(name).params:
        value = np.asarray(per_site[param.name], dtype=np.float64)
        ndim = len(param.unconstrained_shape)
        blocks.append(value.reshape(value.shape[: value.ndim - ndim] + (-1,)))
    return np.concatenate(blocks, axis=-1)


def coordinate_names(name: str) -> list[str]:
    """Names of the unconstrained coordinates in :func:`flatten`'s order: the site name, with a
    1-based index into the unconstrained shape for non-scalar sites (``theta1[1]`` of a 2-simplex is
    its one stick-breaking coordinate, not Stan's ``theta1[1]``).

    Parameters
    ----------
    name : str
        posteriordb posterior name.

    Returns
    -------
    list of str
    """
    names = []
    for param in get(name).params:
        shape = param.unconstrained_shape
        if not shape:
            names.append(param.name)
            continue
        for index in np.ndindex(*shape):
            names.append(f"{param.name}[{','.join(str(i + 1) for i in index)}]")
    return names


def chain_moments(chains: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, sd and their Monte-Carlo standard errors of draws ``(n_chains, n_draws, *shape)``.

    ``se_mean`` and ``se_sd`` are ArviZ's ``mcse(method="mean")`` and ``mcse(method="sd")``, both
    from effective sample sizes (``ess_mean`` of the draws and of their squared deviations); the
    bulk ESS is reported too.

    Parameters
    ----------
    chains : ndarray
        Draws by chain.

    Returns
    -------
    dict of str to ndarray
        ``mean``, ``sd``, ``se_mean``, ``se_sd``, ``ess_bulk``, each of shape ``shape``.
    """
    import arviz as az

    chains = np.asarray(chains, dtype=np.float64)
    shape = chains.shape[2:]
    flat = chains.reshape(chains.shape[:2] + (-1,))
    out = {key: np.empty(flat.shape[-1]) for key in _STATS}
    for i in range(flat.shape[-1]):
        x = flat[:, :, i]
        out["mean"][i] = x.mean()
        out["sd"][i] = x.std(ddof=1)
        out["se_mean"][i] = az.mcse(x, method="mean")
        out["se_sd"][i] = az.mcse(x, method="sd")
        out["ess_bulk"][i] = az.ess(x, method="bulk")
    return {key: value.reshape(shape) for key, value in out.items()}


def compute_reference_moments(name: str, root: str | Path) -> dict[str, Any]:
    """Reference moments of a registered posterior from posteriordb's draws (needs ArviZ).

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    root : str or Path
        posteriordb directory with ``reference_draws/``.

    Returns
    -------
    dict
        ``{"n_chains", "n_draws", "sites": {site: {"unconstrained": {stat: array},
        "constrained": {stat: array}}}}`` with the statistics of :func:`chain_moments`.
    """
    draws = load_reference_draws(name, root, by_chain=True)
    free = unconstrain(name, draws)
    n_chains, n_draws = next(iter(draws.values())).shape[:2]
    sites = {
        p.name: {"unconstrained": chain_moments(free[p.name]), "constrained": chain_moments(draws[p.name])}
        for p in get(name).params
    }
    return {"n_chains": int(n_chains), "n_draws": int(n_draws), "sites": sites}


def reference_moments(
    name: str, root: str | Path | None = None, scale: str = "unconstrained"
) -> dict[str, dict[str, np.ndarray]]:
    """Reference moments of a registered posterior, by site.

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    root : str or Path, optional
        posteriordb directory to compute them from its draws; ``None`` reads the packaged
        ``reference_moments.json`` (made by ``benchmarks/posteriordb_reference.py``).
    scale : {"unconstrained", "constrained"}
        The scale of the moments.

    Returns
    -------
    dict of str to dict of str to ndarray
        ``{site: {"mean", "sd", "se_mean", "se_sd", "ess_bulk": array of the site's shape on that
        scale}}``.
    """
    if scale not in ("unconstrained", "constrained"):
        raise ValueError(f"scale must be 'unconstrained' or 'constrained', got {scale!r}")
    get(name)
    if root is None:
        stored = json.loads((packaged_root() / MOMENTS_FILE).read_text())["posteriors"][name]["sites"]
        return {
            site: {key: np.asarray(value, dtype=np.float64) for key, value in scales[scale].items()}
            for site, scales in stored.items()
        }
    return {site: scales[scale] for site, scales in compute_reference_moments(name, root)["sites"].items()}


def reference_point(name: str, root: str | Path | None = None) -> dict[str, Tensor]:
    """The reference mean on the unconstrained scale, mapped to the constrained one: a central
    posterior point (an initial value, a point to evaluate the log joint at).

    Parameters
    ----------
    name : str
        posteriordb posterior name.
    root : str or Path, optional
        As for :func:`reference_moments`.

    Returns
    -------
    dict of str to Tensor
        ``{site: constrained value}`` (float64).
    """
    moments = reference_moments(name, root)
    return {
        p.name: p.transform(torch.as_tensor(moments[p.name]["mean"], dtype=torch.float64))
        for p in get(name).params
    }


def moments_to_json(moments: Mapping[str, Any]) -> Any:
    """Nested moments with arrays turned into (nested) lists, for ``json.dump``.

    Parameters
    ----------
    moments : mapping
        Output of :func:`compute_reference_moments` (or any nesting of dicts and arrays).

    Returns
    -------
    object
    """
    if isinstance(moments, Mapping):
        return {key: moments_to_json(value) for key, value in moments.items()}
    if isinstance(moments, np.ndarray):
        return moments.tolist()
    return moments

"""Outputs computed from a trained flow and its target: site samples and ArviZ data.

Both targets are handled here, so the sampler facade stays small: a plain log-density has one
posterior variable ``x``; a Pyro model has one variable per latent site (constrained), pointwise
log-likelihoods and observed data.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wgfinfer import bars
from wgfinfer.convert import build_inference_data
from wgfinfer.flow import Flow
from wgfinfer.importance import independence_metropolis, psis_resample
from wgfinfer.targets import LogDensityTarget

LOG_LIKELIHOOD_WARN_BYTES = 2**30
"""Estimated size (bytes) of the ``log_likelihood`` group above which :func:`inference_data` warns
before computing it: 1 GiB."""

LOG_LIKELIHOOD_CHUNK_VALUES = 2**21
"""Pointwise log-likelihood values computed per model run (``draws x observations``), so that the
working memory is one chunk (16 MiB of float64 values, plus the model's own temporaries for it) on
top of the finished group, whatever the number of draws."""


def weighted_draws(
    flow: Flow,
    target: LogDensityTarget,
    beta: float,
    num_samples: int,
    generator: torch.Generator,
    progress_bar: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh unconstrained draws ``z`` of the flow, their exact ``log q`` and ``lp = beta * log p(z)``.

    ``lp - log q`` are the log importance weights every correction and diagnostic is built on;
    ``beta=1`` weighs against the untempered target (as an exact MCMC kernel must).

    Parameters
    ----------
    flow : Flow
        A flow with exact densities.
    target : LogDensityTarget
    beta : float
        Inverse temperature of ``lp``.
    num_samples : int
        Draws.
    generator : torch.Generator
        Source of the draws.
    progress_bar : bool, default False
        Show tqdm bars over the draws ("flow: draws") and the target's evaluation ("pyro: log
        joint"), each only when it takes more than one chunk
        (:data:`wgfinfer.bars.MIN_CHUNKS_FOR_BAR`).

    Returns
    -------
    z, log_q, lp : Tensor
        ``(n, d)`` draws, ``(n,)`` their log-densities under the flow and ``(n,)`` tempered target
        log-densities.
    """
    z, log_q = flow.sample(num_samples, generator, return_log_prob=True, progress_bar=progress_bar)
    with torch.no_grad():
        lp = beta * target.log_density(z, progress_bar=progress_bar)
    return z, log_q, lp


def corrected_draws(
    flow: Flow,
    target: LogDensityTarget,
    beta: float,
    num_samples: int,
    generator: torch.Generator,
    method: str,
    progress_bar: bool = False,
) -> tuple[Tensor, dict[str, Any]]:
    """Unconstrained draws corrected towards the target with the exact weights ``lp - log q``.

    ``method="psis"`` resamples with Pareto-smoothed weights; ``"imh"`` runs an independence
    Metropolis-Hastings chain with the flow's draws as proposals.  Returns the draws and a record of
    the correction (with the acceptance rate for ``"imh"``).  ``progress_bar`` is passed to
    :func:`weighted_draws`.
    """
    z, log_q, lp = weighted_draws(flow, target, beta, num_samples, generator, progress_bar=progress_bar)
    log_weights = lp - log_q
    if method == "psis":
        idx, record = psis_resample(log_weights, num_samples, generator), {"method": "psis"}
    else:
        idx, rate = independence_metropolis(log_weights, generator)
        record = {"method": "imh", "acceptance_rate": rate}
    return z[idx.to(z.device)], record


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _n_observations(target: LogDensityTarget) -> int:
    return sum(math.prod(shape) for shape in target.log_likelihood_shapes.values())  # type: ignore[attr-defined]


def _chunk_draws(n_observations: int) -> int:
    return max(1, LOG_LIKELIHOOD_CHUNK_VALUES // max(1, n_observations))


def log_likelihood_size(target: LogDensityTarget, num_draws: int) -> tuple[int, int]:
    """Bytes of the float64 ``log_likelihood`` group for ``num_draws`` draws, and of one chunk.

    Parameters
    ----------
    target : LogDensityTarget
        A Pyro target (``target.is_model``).
    num_draws : int
        Draws of all chains together.

    Returns
    -------
    group_bytes : int
        ``num_draws x observations x 8``: what the group holds once built.
    chunk_bytes : int
        The values of one chunk of draws (see :data:`LOG_LIKELIHOOD_CHUNK_VALUES`), the working
        memory on top of the group besides the model's own temporaries.
    """
    n_obs = _n_observations(target)
    itemsize = np.dtype(np.float64).itemsize
    return num_draws * n_obs * itemsize, min(num_draws, _chunk_draws(n_obs)) * n_obs * itemsize


def warn_if_log_likelihood_is_large(target: LogDensityTarget, num_draws: int) -> None:
    """Warn (``UserWarning``) if the ``log_likelihood`` group of ``num_draws`` draws and its working
    chunk are estimated above :data:`LOG_LIKELIHOOD_WARN_BYTES`, saying the size and how to avoid it.

    Parameters
    ----------
    target : LogDensityTarget
        A Pyro target (``target.is_model``).
    num_draws : int
        Draws of all chains together.
    """
    group, chunk = log_likelihood_size(target, num_draws)
    if group + chunk <= LOG_LIKELIHOOD_WARN_BYTES:
        return
    n_obs = _n_observations(target)
    warnings.warn(
        f"the log_likelihood group will take about {(group + chunk) / 2**30:.2f} GiB of memory "
        f"({num_draws} draws x {n_obs} observations x 8 bytes, computed in chunks of "
        f"{min(num_draws, _chunk_draws(n_obs))} draws); pass log_likelihood=False to skip it, or "
        "fewer num_samples / num_chains (wgfinfer.outputs.LOG_LIKELIHOOD_WARN_BYTES sets the "
        "threshold)",
        UserWarning,
        stacklevel=4,
    )


def log_likelihood_group(
    target: LogDensityTarget, z: Tensor, chains: tuple[int, int], progress_bar: bool = False
) -> dict[str, np.ndarray]:
    """Pointwise log-likelihoods of a Pyro target at draws ``z``: ``{site: (chain, draw, *obs_shape)}``.

    The values are computed for :data:`LOG_LIKELIHOOD_CHUNK_VALUES` values' worth of draws at a time
    and written into the float64 arrays of the group, so that the peak memory is the group and one
    chunk; the result equals one model run over all the draws.

    Parameters
    ----------
    target : LogDensityTarget
        A Pyro target (``target.is_model``).
    z : Tensor
        ``(chain * draw, d)`` unconstrained draws, chain by chain.
    chains : tuple of int
        ``(chain, draw)``.
    progress_bar : bool, default False
        Show a tqdm bar ("pyro: log_likelihood") over the draws when they take more than one chunk.

    Returns
    -------
    dict of str to numpy.ndarray
        One float64 array per observed site, ``(chain, draw, *obs_shape)``.
    """
    shapes = target.log_likelihood_shapes  # type: ignore[attr-defined]
    n = z.shape[0]
    group = {name: np.empty((n, *shape), dtype=np.float64) for name, shape in shapes.items()}
    step = _chunk_draws(_n_observations(target))
    with bars.chunk_bar(progress_bar, n, step, "pyro: log_likelihood") as progress:
        for start in range(0, n, step):
            chunk = target.pointwise_log_likelihood(z[start : start + step])
            for name, values in chunk.items():
                group[name][start : start + step] = values.detach().cpu().numpy()  # exact cast to float64
            progress.update(min(step, n - start))
    return {name: values.reshape(chains + tuple(shapes[name])) for name, values in group.items()}


def inference_data(
    flow: Flow | None,
    target: LogDensityTarget,
    beta: float,
    num_samples: int,
    num_chains: int,
    generator: torch.Generator,
    log_likelihood: bool = True,
    attrs: dict[str, Any] | None = None,
    posterior_predictive: bool = False,
    predictions: tuple[tuple, dict[str, Any]] | None = None,
    draws: tuple[Tensor, Tensor] | None = None,
    progress_bar: bool = False,
) -> Any:
    """Assemble ``posterior``, ``sample_stats`` and, for Pyro models, ``log_likelihood`` (unless
    switched off: it holds draws x observations values, computed in chunks of draws, with a warning
    above :data:`LOG_LIKELIHOOD_WARN_BYTES`) and ``observed_data`` from ``num_chains * num_samples``
    fresh draws of the flow.

    For Pyro models the posterior also holds the ``pyro.deterministic`` sites at each draw;
    ``posterior_predictive`` adds that group (the observed sites drawn given each draw) and
    ``predictions = (args, kwargs)`` the ``predictions`` group (observed and deterministic sites of
    the model called with these arguments), both with the model's random numbers from
    ``generator``.  ``draws = (z, lp)`` replaces the flow's draws by given unconstrained points (chain
    after chain; an MCMC run's states) and their ``lp``; ``flow`` is then unused.  ``progress_bar``
    shows tqdm bars over the chunked phases (draws, log joint, log-likelihoods, site values), each
    only when it takes more than one chunk.
    """
    chains = (num_chains, num_samples)
    if target.is_model and log_likelihood:
        warn_if_log_likelihood_is_large(target, num_samples * num_chains)
    if draws is not None:
        z, lp = draws
        density_stats: dict[str, np.ndarray] = {}
    elif flow.has_density:
        z, log_q, lp = weighted_draws(
            flow, target, beta, num_samples * num_chains, generator, progress_bar=progress_bar
        )
        density_stats = {"log_q": _np(log_q).reshape(chains), "log_weight": _np(lp - log_q).reshape(chains)}
    else:  # draws only: attrs["flow_density"] says why log_q and log_weight are missing
        z = flow.sample(num_samples * num_chains, generator, progress_bar=progress_bar)
        with torch.no_grad():
            lp = beta * target.log_density(z, progress_bar=progress_bar)
        density_stats = {}
    posterior = {name: _np(v).reshape(chains + tuple(v.shape[1:])) for name, v in target.samples(z).items()}
    sample_stats = {"lp": _np(lp).reshape(chains), **density_stats, "diverging": np.zeros(chains, dtype=bool)}
    pointwise = observed = dims = predictive = predicted = pred_dims = None
    if target.is_model:
        if log_likelihood:
            pointwise = log_likelihood_group(target, z, chains, progress_bar=progress_bar)
        observed = {name: v.detach().cpu().numpy() for name, v in target.observed_sites.items()}
        dims = {name: target.site_dims(name) for name in list(posterior) + list(observed)}
        deterministic = target.site_values(
            z, target.deterministic_sites, generator=generator, progress_bar=progress_bar
        )
        for name, v in deterministic.items():
            posterior[name] = _np(v).reshape(chains + tuple(v.shape[1:]))
        dims.update({name: target.site_dims(name) for name in deterministic})
        if posterior_predictive:
            drawn = target.site_values(
                z, list(observed), predictive=True, generator=generator, progress_bar=progress_bar
            )
            predictive = {name: _by_chain(v, chains) for name, v in drawn.items()}
        if predictions is not None:
            args, kwargs = predictions
            names = list(observed) + target.deterministic_sites
            drawn = target.site_values(
                z, names, args, kwargs, predictive=True, generator=generator, progress_bar=progress_bar
            )
            predicted = {name: _by_chain(v, chains) for name, v in drawn.items()}
            pred_dims = {name: target.site_dims(name) for name in predicted}
    return build_inference_data(
        posterior=posterior,
        sample_stats=sample_stats,
        log_likelihood=pointwise,
        posterior_predictive=predictive,
        predictions=predicted,
        observed_data=observed,
        dims=dims,
        pred_dims=pred_dims,
        attrs=attrs or {},
    )


def _by_chain(v: Tensor, chains: tuple[int, int]) -> np.ndarray:
    """Draws ``(chains * draws, ...)`` as a ``(chain, draw, ...)`` array in the model's dtype."""
    return v.detach().cpu().numpy().reshape(chains + tuple(v.shape[1:]))

"""Outputs computed from a trained flow and its target: site samples and ArviZ data.

Both targets are handled here, so the sampler facade stays small: a plain log-density has one
posterior variable ``x``; a Pyro model has one variable per latent site (constrained), pointwise
log-likelihoods and observed data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from wgfinfer.convert import build_inference_data
from wgfinfer.flow import Flow
from wgfinfer.importance import independence_metropolis, psis_resample
from wgfinfer.targets import LogDensityTarget


def weighted_draws(
    flow: Flow, target: LogDensityTarget, beta: float, num_samples: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh unconstrained draws ``z`` of the flow, their exact ``log q`` and ``lp = beta * log p(z)``.

    ``lp - log q`` are the log importance weights every correction and diagnostic is built on;
    ``beta=1`` weighs against the untempered target (as an exact MCMC kernel must).
    """
    z, log_q = flow.sample(num_samples, generator, return_log_prob=True)
    with torch.no_grad():
        lp = beta * target.log_density(z)
    return z, log_q, lp


def corrected_draws(
    flow: Flow,
    target: LogDensityTarget,
    beta: float,
    num_samples: int,
    generator: torch.Generator,
    method: str,
) -> tuple[Tensor, dict[str, Any]]:
    """Unconstrained draws corrected towards the target with the exact weights ``lp - log q``.

    ``method="psis"`` resamples with Pareto-smoothed weights; ``"imh"`` runs an independence
    Metropolis-Hastings chain with the flow's draws as proposals.  Returns the draws and a record of
    the correction (with the acceptance rate for ``"imh"``).
    """
    z, log_q, lp = weighted_draws(flow, target, beta, num_samples, generator)
    log_weights = lp - log_q
    if method == "psis":
        idx, record = psis_resample(log_weights, num_samples, generator), {"method": "psis"}
    else:
        idx, rate = independence_metropolis(log_weights, generator)
        record = {"method": "imh", "acceptance_rate": rate}
    return z[idx.to(z.device)], record


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


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
) -> Any:
    """Assemble ``posterior``, ``sample_stats`` and, for Pyro models, ``log_likelihood`` (unless
    switched off: it holds draws x observations values) and ``observed_data`` from
    ``num_chains * num_samples`` fresh draws of the flow.

    For Pyro models the posterior also holds the ``pyro.deterministic`` sites at each draw;
    ``posterior_predictive`` adds that group (the observed sites drawn given each draw) and
    ``predictions = (args, kwargs)`` the ``predictions`` group (observed and deterministic sites of
    the model called with these arguments), both with the model's random numbers from
    ``generator``.  ``draws = (z, lp)`` replaces the flow's draws by given unconstrained points (chain
    after chain; an MCMC run's states) and their ``lp``; ``flow`` is then unused.
    """
    chains = (num_chains, num_samples)
    if draws is not None:
        z, lp = draws
        density_stats: dict[str, np.ndarray] = {}
    elif flow.has_density:
        z, log_q, lp = weighted_draws(flow, target, beta, num_samples * num_chains, generator)
        density_stats = {"log_q": _np(log_q).reshape(chains), "log_weight": _np(lp - log_q).reshape(chains)}
    else:  # draws only: attrs["flow_density"] says why log_q and log_weight are missing
        z = flow.sample(num_samples * num_chains, generator)
        with torch.no_grad():
            lp = beta * target.log_density(z)
        density_stats = {}
    posterior = {name: _np(v).reshape(chains + tuple(v.shape[1:])) for name, v in target.samples(z).items()}
    sample_stats = {"lp": _np(lp).reshape(chains), **density_stats, "diverging": np.zeros(chains, dtype=bool)}
    pointwise = observed = dims = predictive = predicted = pred_dims = None
    if target.is_model:
        if log_likelihood:
            pointwise = {
                name: _np(v).reshape(chains + tuple(v.shape[1:]))
                for name, v in target.pointwise_log_likelihood(z).items()
            }
        observed = {name: v.detach().cpu().numpy() for name, v in target.observed_sites.items()}
        dims = {name: target.site_dims(name) for name in list(posterior) + list(observed)}
        deterministic = target.site_values(z, target.deterministic_sites, generator=generator)
        for name, v in deterministic.items():
            posterior[name] = _np(v).reshape(chains + tuple(v.shape[1:]))
        dims.update({name: target.site_dims(name) for name in deterministic})
        if posterior_predictive:
            drawn = target.site_values(z, list(observed), predictive=True, generator=generator)
            predictive = {name: _by_chain(v, chains) for name, v in drawn.items()}
        if predictions is not None:
            args, kwargs = predictions
            names = list(observed) + target.deterministic_sites
            drawn = target.site_values(z, names, args, kwargs, predictive=True, generator=generator)
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

"""The one place that talks to ArviZ.

Everything is handed over as plain ``(chain, draw, ...)`` NumPy arrays through ``az.from_dict``,
whose signature differs between ArviZ 0.x (keyword groups, returns ``InferenceData``) and
ArviZ >= 1.0 (a nested dict of groups, returns an ``xarray.DataTree``).  PSIS of importance weights
(:func:`pareto_smoothed_log_weights`, used by :mod:`wgfinfer.importance`) is here too: it is
``az.psislw`` in ArviZ 0.x and lives in ``arviz_stats`` from ArviZ 1.0 on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import logsumexp


def arviz_major_version() -> int:
    """Major version of the installed ArviZ."""
    import arviz as az

    return int(az.__version__.split(".")[0])


def pareto_smoothed_log_weights(lw: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed importance sampling of iid draws (``r_eff = 1``) by ArviZ.

    Parameters
    ----------
    lw : numpy.ndarray
        1-D float64 log importance weights, finite or ``-inf`` (zero weight), not all equal (the
        caller handles that case: there is no tail to fit).

    Returns
    -------
    smoothed : numpy.ndarray
        The smoothed log weights, normalised (``logsumexp == 0``).
    khat : float
        Pareto k-hat; inf when there are too few draws for a tail fit.
    """
    if arviz_major_version() >= 1:
        # ArviZ >= 1.0: PSIS lives in arviz-stats as ``array_stats.psislw(ary, r_eff=1, axis=-1)``. It is
        # written for PSIS-LOO, so it takes the log-likelihood and NEGATES it: pass ``-lw``. It also
        # raises for fewer than 5 tail draws, where ArviZ 0.x returns k = inf, and -inf inputs are
        # replaced by a huge negative number to stay on its finite path. Run by tests/test_importance.py
        # on arviz-stats 1.3 (Python 3.12; docs/arviz.md), not in CI.
        from arviz_stats.base import array_stats

        if lw.shape[0] < 25:  # its tail is floor(n / 5) draws for n <= 225
            return lw - logsumexp(lw), math.inf
        zero = np.isneginf(lw)
        smoothed, khat = array_stats.psislw(-np.where(zero, -1e300, lw), r_eff=1.0, axis=-1)
        return np.where(zero, -np.inf, np.asarray(smoothed, dtype=np.float64)), float(khat)
    # ArviZ 0.x: ``az.psislw(log_weights, reff=1.0, normalize=True)`` takes raw log weights (it
    # subtracts their maximum itself, so no normalisation is needed on input), returns them smoothed
    # and normalised, and k = inf when the tail has 4 draws or fewer.
    import arviz as az

    with np.errstate(over="ignore"):  # its GPD fit overflows exp() harmlessly (to zero weights)
        smoothed, khat = az.psislw(lw, reff=1.0, normalize=True)
    return np.asarray(smoothed, dtype=np.float64), float(khat)


def build_inference_data(
    posterior: dict[str, np.ndarray],
    sample_stats: dict[str, np.ndarray] | None = None,
    log_likelihood: dict[str, np.ndarray] | None = None,
    observed_data: dict[str, np.ndarray] | None = None,
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
    posterior_predictive: dict[str, np.ndarray] | None = None,
    predictions: dict[str, np.ndarray] | None = None,
    pred_dims: dict[str, list[str]] | None = None,
) -> Any:
    """Assemble ArviZ data from ``(chain, draw, ...)`` arrays.

    Parameters
    ----------
    posterior, sample_stats, log_likelihood, posterior_predictive, predictions : dict of str to ndarray
        Groups with leading ``(chain, draw)`` axes.
    observed_data : dict of str to ndarray
        The data, without sample axes.
    dims, coords : dict, optional
        Dimension names per variable and coordinate values per dimension.
    pred_dims : dict, optional
        Dimension names of the ``predictions`` variables (which may have other sizes than the
        posterior's, as they belong to new data).
    attrs : dict, optional
        Attributes stored on every group (ArviZ 0.x) or on the root and groups (ArviZ >= 1.0).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
    """
    import arviz as az

    groups = {
        "posterior": posterior,
        "sample_stats": sample_stats,
        "log_likelihood": log_likelihood,
        "posterior_predictive": posterior_predictive,
        "predictions": predictions,
        "observed_data": observed_data,
    }
    groups = {name: data for name, data in groups.items() if data}
    attrs = dict(attrs or {})
    if arviz_major_version() >= 1:
        group_attrs = {name: attrs for name in groups}
        group_attrs["/"] = attrs
        return az.from_dict(groups, dims=dims, pred_dims=pred_dims, coords=coords, attrs=group_attrs)
    idata = az.from_dict(**groups, dims=dims, pred_dims=pred_dims, coords=coords, attrs=attrs)
    for name in groups:  # 0.x puts ``attrs`` on the container only; mirror 1.x's per-group attrs
        getattr(idata, name).attrs.update(attrs)
    return idata

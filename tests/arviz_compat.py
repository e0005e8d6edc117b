"""The few ArviZ calls whose names differ between ArviZ 0.x and ArviZ >= 1.0, for the tests.

The library itself goes through :mod:`wgfinfer.convert`; these helpers only let the same test read
the results of ``az.loo``, draw a posterior predictive check and convert a Pyro MCMC run on both
(docs/arviz.md lists the differences).
"""

from __future__ import annotations

from typing import Any

import arviz as az

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
"""True on ArviZ >= 1.0 (arviz-base / arviz-stats / arviz-plots, data as ``xarray.DataTree``)."""


def elpd(result: Any) -> float:
    """The ELPD estimate of ``az.loo(...)``: ``.elpd_loo`` on ArviZ 0.x, ``.elpd`` on ArviZ >= 1.0."""
    return float(result.elpd if ARVIZ_1 else result.elpd_loo)


def plot_ppc(idata: Any, num_samples: int) -> Any:
    """A posterior predictive check: ``az.plot_ppc`` (0.x) or ``az.plot_ppc_dist`` (>= 1.0)."""
    if ARVIZ_1:
        return az.plot_ppc_dist(idata, num_samples=num_samples)
    return az.plot_ppc(idata, num_pp_samples=num_samples)


def from_pyro(mcmc: Any, **kwargs: Any) -> Any:
    """``az.from_pyro`` on ArviZ 0.x; ArviZ >= 1.0 has none, so wgfinfer's ``from_mcmc`` there."""
    if ARVIZ_1:
        from wgfinfer.pyro_kernel import from_mcmc

        return from_mcmc(mcmc, **kwargs)
    return az.from_pyro(mcmc, **kwargs)


def loo_elpd(idata: Any, var_name: str = "y") -> float:
    """``az.loo``'s ELPD estimate of the log-likelihood ``var_name`` (observations on its last axis).

    ArviZ >= 1.0's PSIS raises "All tail values are the same" for an observation whose log-likelihood
    is the same at every draw (exactly 0 where a logistic regression is certain of a label); 0.x's
    does not. Such an observation's leave-one-out term is that value itself, so on 1.x it is added
    as it is and the others go through ``az.loo``.
    """
    if not ARVIZ_1:
        return elpd(az.loo(idata, var_name=var_name))
    import numpy as np

    from wgfinfer.convert import build_inference_data

    ll = np.asarray(idata.log_likelihood[var_name].values)  # (chain, draw, ..., n)
    flat = ll.reshape(ll.shape[0], ll.shape[1], -1)
    same = (flat == flat[:1, :1]).all(axis=(0, 1))
    part = build_inference_data(
        posterior={"lp": np.asarray(idata.sample_stats["lp"].values)},
        log_likelihood={var_name: flat[..., ~same]},
    )
    return elpd(az.loo(part, var_name=var_name)) + float(flat[0, 0, same].sum())

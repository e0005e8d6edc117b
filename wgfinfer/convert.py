"""The one place that talks to ArviZ.

Everything is handed over as plain ``(chain, draw, ...)`` NumPy arrays through ``az.from_dict``,
whose signature differs between ArviZ 0.x (keyword groups, returns ``InferenceData``) and
ArviZ >= 1.0 (a nested dict of groups, returns an ``xarray.DataTree``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def arviz_major_version() -> int:
    """Major version of the installed ArviZ."""
    import arviz as az

    return int(az.__version__.split(".")[0])


def build_inference_data(
    posterior: dict[str, np.ndarray],
    sample_stats: dict[str, np.ndarray] | None = None,
    log_likelihood: dict[str, np.ndarray] | None = None,
    observed_data: dict[str, np.ndarray] | None = None,
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
) -> Any:
    """Assemble ArviZ data from ``(chain, draw, ...)`` arrays.

    Parameters
    ----------
    posterior, sample_stats, log_likelihood, observed_data : dict of str to ndarray
        Groups; all but ``observed_data`` have leading ``(chain, draw)`` axes.
    dims, coords : dict, optional
        Dimension names per variable and coordinate values per dimension.
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
        "observed_data": observed_data,
    }
    groups = {name: data for name, data in groups.items() if data}
    attrs = dict(attrs or {})
    if arviz_major_version() >= 1:
        group_attrs = {name: attrs for name in groups}
        group_attrs["/"] = attrs
        return az.from_dict(groups, dims=dims, coords=coords, attrs=group_attrs)
    idata = az.from_dict(**groups, dims=dims, coords=coords, attrs=attrs)
    for name in groups:  # 0.x puts ``attrs`` on the container only; mirror 1.x's per-group attrs
        getattr(idata, name).attrs.update(attrs)
    return idata

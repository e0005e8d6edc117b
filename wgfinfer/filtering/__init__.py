"""Nonlinear filtering of a Langevin diffusion from noisy observations (Mokrov 2022 §3.4, Algorithm 3).

``JKOFilter`` runs JKO flows between observation times and Metropolis-Hastings at them; the
``BootstrapParticleFilter``, the 1-D ``GridFilter1D`` (Chang-Cooper) and, for separable models in D
dimensions, the ``FactorisedGridFilter`` (a product of 1-D grid filters) are the references it is
judged against.
"""

from wgfinfer.filtering.grid import (
    FactorisedGridFilter,
    FactorisedGridResult,
    GridFilter1D,
    GridFilterResult,
    symkl_on_grid,
)
from wgfinfer.filtering.jko_filter import JKOFilter
from wgfinfer.filtering.models import (
    GaussianObservations,
    LangevinDiffusion,
    Observations,
    separable_diffusion,
)
from wgfinfer.filtering.particle import BootstrapParticleFilter, ParticleFilterResult
from wgfinfer.filtering.result import FilterResult

__all__ = [
    "BootstrapParticleFilter",
    "FactorisedGridFilter",
    "FactorisedGridResult",
    "FilterResult",
    "GaussianObservations",
    "GridFilter1D",
    "GridFilterResult",
    "JKOFilter",
    "LangevinDiffusion",
    "Observations",
    "ParticleFilterResult",
    "separable_diffusion",
    "symkl_on_grid",
]

"""wgfinfer: Bayesian posterior sampling with Wasserstein gradient flows (JKO schemes) in PyTorch."""

from wgfinfer import functionals
from wgfinfer._version import __version__
from wgfinfer.errors import (
    DensityNotAvailableError,
    NonFiniteLogDensityError,
    NonPositiveHessianError,
    SaveFileError,
    TrainingDivergedError,
    WGFError,
)
from wgfinfer.flow import Flow
from wgfinfer.sampler import WGFSampler
from wgfinfer.simulation import simulate

__all__ = [
    "DensityNotAvailableError",
    "Flow",
    "NonFiniteLogDensityError",
    "NonPositiveHessianError",
    "SaveFileError",
    "TrainingDivergedError",
    "WGFError",
    "WGFSampler",
    "__version__",
    "functionals",
    "simulate",
]

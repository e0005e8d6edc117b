"""wgfinfer: Bayesian posterior sampling with Wasserstein gradient flows (JKO schemes) in PyTorch."""

from wgfinfer.errors import (
    DensityNotAvailableError,
    NonPositiveHessianError,
    SaveFileError,
    TrainingDivergedError,
    WGFError,
)
from wgfinfer.sampler import WGFSampler

__version__ = "0.1.0"

__all__ = [
    "DensityNotAvailableError",
    "NonPositiveHessianError",
    "SaveFileError",
    "TrainingDivergedError",
    "WGFError",
    "WGFSampler",
    "__version__",
]

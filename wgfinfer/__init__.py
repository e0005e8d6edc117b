"""wgfinfer: Bayesian posterior sampling with Wasserstein gradient flows (JKO schemes) in PyTorch."""

from wgfinfer import functionals
from wgfinfer._version import __version__
from wgfinfer.errors import (
    CheckpointInUseError,
    DensityNotAvailableError,
    FlatTargetWarning,
    NonFiniteLogDensityError,
    NonPositiveHessianError,
    SaveFileError,
    TrainingDivergedError,
    WGFError,
    WGFWarning,
)
from wgfinfer.flow import Flow
from wgfinfer.init import Init
from wgfinfer.sampler import WGFSampler
from wgfinfer.schemes import ICNN, PWGF, ForwardBackward, Variational
from wgfinfer.simulation import simulate
from wgfinfer.stopping import BudgetWarning

__all__ = [
    "BudgetWarning",
    "CheckpointInUseError",
    "DensityNotAvailableError",
    "FlatTargetWarning",
    "Flow",
    "ForwardBackward",
    "ICNN",
    "Init",
    "NonFiniteLogDensityError",
    "NonPositiveHessianError",
    "PWGF",
    "SaveFileError",
    "TrainingDivergedError",
    "Variational",
    "WGFError",
    "WGFWarning",
    "WGFSampler",
    "__version__",
    "functionals",
    "simulate",
]

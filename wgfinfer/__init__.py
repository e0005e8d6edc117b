"""wgfinfer: Bayesian posterior sampling with Wasserstein gradient flows (JKO schemes) in PyTorch."""

from wgfinfer import checks, functionals
from wgfinfer._version import __version__
from wgfinfer.errors import (
    BiasedDrawsWarning,
    CheckpointInUseError,
    DensityNotAvailableError,
    DriftWarning,
    FlatGradientWarning,
    FlatTargetWarning,
    GradientWarning,
    HeavyTailWarning,
    ImportanceWarning,
    MissedModeWarning,
    NonFiniteLogDensityError,
    NonPositiveHessianError,
    PosteriorCheckWarning,
    SaveFileError,
    SteinWarning,
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
    "DriftWarning",
    "FlatGradientWarning",
    "FlatTargetWarning",
    "Flow",
    "ForwardBackward",
    "GradientWarning",
    "HeavyTailWarning",
    "ICNN",
    "BiasedDrawsWarning",
    "ImportanceWarning",
    "Init",
    "MissedModeWarning",
    "NonFiniteLogDensityError",
    "NonPositiveHessianError",
    "PWGF",
    "PosteriorCheckWarning",
    "SaveFileError",
    "SteinWarning",
    "TrainingDivergedError",
    "Variational",
    "WGFError",
    "WGFWarning",
    "WGFSampler",
    "__version__",
    "checks",
    "functionals",
    "simulate",
]

"""Neural networks used by the JKO schemes (kept apart from the schemes themselves)."""

from wgfinfer.nn.icnn import DenseICNN, PotentialDerivatives, log_det_spd
from wgfinfer.nn.mlp import DualNetwork, ResidualMap

__all__ = ["DenseICNN", "DualNetwork", "PotentialDerivatives", "ResidualMap", "log_det_spd"]

"""Neural networks used by the JKO schemes (kept apart from the schemes themselves)."""

from wgfinfer.nn.coupling import AffineCouplingFlow
from wgfinfer.nn.icnn import DenseICNN, PotentialDerivatives, log_det_spd
from wgfinfer.nn.mlp import DualNetwork, ResidualMap
from wgfinfer.nn.pushforward import AffineMap, PlanarFlow, ResidualPushforward

__all__ = [
    "AffineCouplingFlow",
    "AffineMap",
    "DenseICNN",
    "DualNetwork",
    "PlanarFlow",
    "PotentialDerivatives",
    "ResidualMap",
    "ResidualPushforward",
    "log_det_spd",
]

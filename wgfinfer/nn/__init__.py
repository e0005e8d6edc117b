"""Neural networks used by the JKO schemes (kept apart from the schemes themselves)."""

from wgfinfer.nn.icnn import DenseICNN, PotentialDerivatives, log_det_spd

__all__ = ["DenseICNN", "PotentialDerivatives", "log_det_spd"]

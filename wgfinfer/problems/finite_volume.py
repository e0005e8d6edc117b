"""An upwind finite-volume solver of the aggregation-diffusion equation of Fan et al. 2021 §4.4, written once.

``d_t rho = div(rho grad(W * rho)) + nu Delta rho^m`` with ``W(x) = -exp(-|x|^2)/pi`` in 2-D, from
``rho_0`` uniform on ``[-3, 3]^2``, on cell averages of the box ``[-BOX, BOX]^2``: the grid reference
of ``examples/aggregation.py`` (which it pits against the forward-backward scheme).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

BOX = 4.0
"""Half-width of the square grid ``[-BOX, BOX]^2``."""


class FiniteVolumeReference:
    """Upwind finite-volume solution of ``d_t rho = div(rho grad(W * rho + nu m/(m-1) rho^{m-1}))``.

    ``nu Delta rho^m = div(rho grad(nu m/(m-1) rho^{m-1}))``; cell averages on ``[-BOX, BOX]^2`` with
    zero flux on the boundary, the face velocity ``-grad xi`` by central differences, the upwinded
    density on each face, and forward-Euler time steps bounded by the velocity CFL and the
    porous-medium diffusion bound.  Mass is conserved to round-off.

    Parameters
    ----------
    cells : int
        Cells per side (``cells x cells`` grid of width ``dx = 2 BOX / cells``).
    m, nu : float
        Exponent and coefficient of the diffusion ``nu Delta rho^m`` (Fan et al. 2021: 3 and 0.1).

    Attributes
    ----------
    rho : numpy.ndarray
        The ``(cells, cells)`` cell densities at time :attr:`t` (``rho.sum() * dx**2 == 1``).
    x, y : numpy.ndarray
        The cell centres (``indexing="ij"``).
    """

    def __init__(self, cells: int, m: float = 3.0, nu: float = 0.1) -> None:
        self.n, self.m, self.nu = cells, m, nu
        self.dx = 2 * BOX / cells
        centres = -BOX + self.dx * (np.arange(cells) + 0.5)
        self.x, self.y = np.meshgrid(centres, centres, indexing="ij")
        self.rho = np.where((np.abs(self.x) < 3) & (np.abs(self.y) < 3), 1.0 / 36.0, 0.0)
        self.rho /= self.rho.sum() * self.dx**2
        offsets = self.dx * np.arange(-(cells - 1), cells)
        kx, ky = np.meshgrid(offsets, offsets, indexing="ij")
        self.kernel = -np.exp(-(kx**2 + ky**2)) / np.pi * self.dx**2
        self.t = 0.0

    def advance(self, until: float) -> None:
        """Step forward in time until ``t == until`` (the last step is shortened to land on it)."""
        rho, dx, m, nu = self.rho, self.dx, self.m, self.nu
        while self.t < until - 1e-12:
            xi = fftconvolve(rho, self.kernel, mode="same") + nu * m / (m - 1) * rho ** (m - 1)
            ux = -(xi[1:, :] - xi[:-1, :]) / dx
            uy = -(xi[:, 1:] - xi[:, :-1]) / dx
            fx = np.maximum(ux, 0) * rho[:-1, :] + np.minimum(ux, 0) * rho[1:, :]
            fy = np.maximum(uy, 0) * rho[:, :-1] + np.minimum(uy, 0) * rho[:, 1:]
            speed = max(float(np.abs(ux).max()), float(np.abs(uy).max()), 1e-12)
            diffusivity = nu * m * float(rho.max()) ** (m - 1) + 1e-12
            dt = min(0.2 * dx / speed, 0.2 * dx**2 / diffusivity, until - self.t)
            div = np.zeros_like(rho)
            div[:-1, :] += fx
            div[1:, :] -= fx
            div[:, :-1] += fy
            div[:, 1:] -= fy
            rho = rho - dt / dx * div
            self.t += dt
        self.rho = rho

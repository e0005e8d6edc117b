"""Push-forward maps of the parameterized Wasserstein gradient flow (PWGF, Jin et al. 2024).

The PWGF represents the solution of a Wasserstein gradient flow as ``rho_theta = T_theta # lambda``
for a fixed reference law ``lambda``; the flow moves the parameters ``theta`` only.  Every map here
is an ``nn.Module`` with the density protocol of the library's flows:

* ``transport(x) -> y`` (also ``forward``, so that :func:`torch.func.functional_call` pushes draws);
* ``map_and_log_det(x) -> (y, log|det dT/dx (x)|)``, differentiable in the parameters and in ``x``;
* ``inverse_and_log_det(y, tol, max_iter) -> (x, log|det dT/dx (x)|, converged)`` for the maps that
  are invertible (:class:`PlanarFlow`, :class:`AffineMap`).

Every map starts as the identity, so that ``rho_theta(0) = lambda`` is the initial law (Jin et al. 2024 §4).
Weights are drawn from an explicit ``torch.Generator``; the global RNG is never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wgfinfer.nn.mlp import init_linear, linear

RESIDUAL_ACTIVATIONS = ("tanh", "celu")

# m(a) = -1 + softplus(a + _SHIFT) has m(0) = 0: softplus(log(e - 1)) = log(e) = 1
_SHIFT = math.log(math.e - 1.0)


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return dim


def check_points(x: Tensor, dim: int) -> None:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected points of shape (n, {dim}), got {tuple(x.shape)}")


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-5


class PlanarFlow(nn.Module):
    """Composition of planar layers ``T = f_M o ... o f_1`` (Jin et al. 2024 eq. 5.2).

    Each layer is ``f_j(x) = x + tanh(w_j . x + b_j) u_hat_j``.  Its Jacobian is
    ``I + tanh'(w_j . x + b_j) u_hat_j w_j^T``, with determinant ``1 + tanh'(w_j . x + b_j) s_j``,
    ``s_j = w_j . u_hat_j`` (matrix determinant lemma).  Since ``tanh'`` takes every value in
    ``(0, 1]``, the layer is a bijection of ``R^d`` iff ``s_j >= -1``.

    **Invertibility reparameterisation.**  The free parameter is ``u_j``; the layer uses

    .. math::

        \\hat u = u + \\bigl(m(w\\cdot u) - w\\cdot u\\bigr)\\frac{w}{\\lVert w\\rVert^2},
        \\qquad m(a) = -1 + \\operatorname{softplus}(a + \\log(e - 1)).

    Then ``w . u_hat = m(w . u) > -1`` (softplus is positive), so every layer is a diffeomorphism
    with ``det > 0``, whatever the parameters.  The component of ``u_hat`` orthogonal to ``w`` is
    that of ``u``; along ``w`` the map ``a -> m(a)`` is a smooth increasing bijection of ``R`` onto
    ``(-1, inf)``.  Hence, for fixed ``w != 0``, ``u -> u_hat`` is a diffeomorphism onto the
    invertible layers: the reparameterisation spans the same tangent space of maps as the raw
    parameters of eq. 5.2 and so does not change the PWGF velocity ``-K_theta[...]`` of
    Jin et al. 2024 eq. 3.25 (the projection onto that tangent space), only the coordinates of ``theta``.
    The shift ``log(e - 1)`` (Rezende & Mohamed use ``m(a) = -1 + softplus(a)``) makes ``m(0) = 0``,
    so that ``u = 0`` gives ``u_hat = 0``: the flow starts as the identity.

    **Inverse.**  Layer by layer, last to first, with ``alpha = w . x``: ``w . y = alpha + s
    tanh(alpha + b)``, a strictly increasing function of ``alpha`` (derivative ``1 + s tanh' >=
    min(1, 1 + s) > 0``) whose root lies in ``[w . y - |s|, w . y + |s|]``.  It is found by Newton's
    method safeguarded by bisection on that bracket, vectorised over points; then ``x = y - u_hat
    tanh(alpha + b)``.

    Parameters
    ----------
    dim : int
        Dimension ``d``.
    n_layers : int, default 40
        Number ``M`` of planar layers (Jin et al. 2024 §5.1 uses 40).
    generator : torch.Generator, optional
        Source of the initial ``w_j ~ N(0, I/d)`` (so ``|w_j| ~ 1``); a generator seeded with 0
        when omitted.  ``u_j = 0`` and ``b_j = 0``.
    dtype, device
        Where the parameters live.
    """

    def __init__(
        self,
        dim: int,
        n_layers: int = 40,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.dim = _check_dim(dim)
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.n_layers = n_layers
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        w = torch.randn((n_layers, dim), generator=gen, dtype=torch.float64) / math.sqrt(dim)
        self.w = nn.Parameter(w.to(dtype=dtype, device=device))
        self.u = nn.Parameter(torch.zeros((n_layers, dim), dtype=dtype, device=device))
        self.b = nn.Parameter(torch.zeros(n_layers, dtype=dtype, device=device))

    def effective_u(self) -> tuple[Tensor, Tensor]:
        """``(u_hat, s)``: the reparameterised ``(M, d)`` vectors and ``s_j = w_j . u_hat_j > -1``."""
        wu = (self.w * self.u).sum(-1)
        s = F.softplus(wu + _SHIFT) - 1.0
        w_sq = self.w.square().sum(-1).clamp_min(torch.finfo(self.w.dtype).tiny)
        u_hat = self.u + ((s - wu) / w_sq)[:, None] * self.w
        return u_hat, s

    def map_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``T(x)`` and ``log|det dT/dx (x)|`` for ``(n, d)`` points (shapes ``(n, d)``, ``(n,)``)."""
        check_points(x, self.dim)
        u_hat, s = self.effective_u()
        log_det = x.new_zeros(x.shape[0])
        for j in range(self.n_layers):
            t = torch.tanh(x @ self.w[j] + self.b[j])
            x = x + t[:, None] * u_hat[j]
            log_det = log_det + torch.log1p(s[j] * (1.0 - t * t))
        return x, log_det

    def forward(self, x: Tensor) -> Tensor:
        """``T(x)`` for ``(n, d)`` points."""
        check_points(x, self.dim)
        u_hat, _ = self.effective_u()
        for j in range(self.n_layers):
            x = x + torch.tanh(x @ self.w[j] + self.b[j])[:, None] * u_hat[j]
        return x

    def transport(self, x: Tensor) -> Tensor:
        """The push-forward map (same as calling the module)."""
        return self(x)

    @torch.no_grad()
    def inverse_and_log_det(
        self, y: Tensor, tol: float | None = None, max_iter: int = 100
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Invert the map: ``x = T^{-1}(y)``.

        Parameters
        ----------
        y : Tensor
            ``(n, d)`` points.
        tol : float, optional
            Stopping tolerance of each layer's scalar equation, on its residual relative to
            ``max(1, |w . y|)``; default ``1e-10`` in float64 and ``1e-5`` otherwise.
        max_iter : int, default 100
            Newton/bisection iterations per layer.

        Returns
        -------
        x : Tensor
            ``(n, d)`` pre-images.
        log_abs_det : Tensor
            ``(n,)`` ``log|det dT/dx|`` of the forward map at ``x``.
        converged : Tensor
            ``(n,)`` booleans, ``False`` where a layer's equation did not reach ``tol``.
        """
        check_points(y, self.dim)
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        tol = _default_tol(y.dtype) if tol is None else float(tol)
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        u_hat, s = self.effective_u()
        x = y.clone()
        log_det = y.new_zeros(y.shape[0])
        converged = torch.isfinite(y).all(-1)
        for j in reversed(range(self.n_layers)):
            target = x @ self.w[j]
            alpha, ok = _solve_planar(target, s[j], self.b[j], tol, max_iter)
            t = torch.tanh(alpha + self.b[j])
            x = x - t[:, None] * u_hat[j]
            log_det = log_det + torch.log1p(s[j] * (1.0 - t * t))
            converged &= ok
        return x, log_det, converged


def _solve_planar(target: Tensor, s: Tensor, b: Tensor, tol: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Root ``alpha`` of ``g(alpha) = alpha + s tanh(alpha + b) - target`` (``s > -1``), per point."""
    spread = s.abs()
    lo, hi = target - spread, target + spread
    alpha = target.clone()
    scale = target.abs().clamp_min(1.0)
    done = ~torch.isfinite(target)  # nothing to solve there; reported as not converged below
    ok = torch.zeros_like(done)
    for _ in range(max_iter):
        t = torch.tanh(alpha + b)
        g = alpha + s * t - target
        small = g.abs() <= tol * scale
        ok = ok | (small & ~done)
        done = done | small
        if bool(done.all()):
            break
        # g is increasing: the root is below alpha where g > 0
        hi = torch.where(g > 0, alpha, hi)
        lo = torch.where(g > 0, lo, alpha)
        newton = alpha - g / (1.0 + s * (1.0 - t * t))
        inside = (newton > lo) & (newton < hi)
        step = torch.where(inside, newton, 0.5 * (lo + hi))
        alpha = torch.where(done, alpha, step)
    else:
        t = torch.tanh(alpha + b)
        ok = ok | ((alpha + s * t - target).abs() <= tol * scale)
    return alpha, ok & torch.isfinite(alpha)


class AffineMap(nn.Module):
    """``T(z) = A z + c`` with a full matrix ``A`` (identity at start) and ``c = 0`` at start.

    Gaussian laws stay Gaussian under it, and the Ornstein-Uhlenbeck flow from a Gaussian start has
    an affine velocity field, so this family carries that flow exactly (up to time stepping).

    Parameters
    ----------
    dim : int
        Dimension ``d``.
    generator : torch.Generator, optional
        Unused (the initialisation is deterministic); accepted so that every push-forward map is
        built alike.
    dtype, device
        Where the parameters live.
    """

    def __init__(
        self,
        dim: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.dim = _check_dim(dim)
        self.matrix = nn.Parameter(torch.eye(dim, dtype=dtype, device=device))
        self.shift = nn.Parameter(torch.zeros(dim, dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        """``A x + c`` for ``(n, d)`` points."""
        check_points(x, self.dim)
        return x @ self.matrix.T + self.shift

    def transport(self, x: Tensor) -> Tensor:
        """The push-forward map (same as calling the module)."""
        return self(x)

    def log_abs_det(self) -> Tensor:
        """``log|det A|`` (a scalar; ``-inf`` for a singular ``A``)."""
        return torch.linalg.slogdet(self.matrix)[1]

    def map_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``T(x)`` and ``log|det A|`` repeated for each point."""
        y = self(x)
        return y, self.log_abs_det().expand(x.shape[0])

    @torch.no_grad()
    def inverse_and_log_det(
        self, y: Tensor, tol: float | None = None, max_iter: int = 100
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``x = A^{-1}(y - c)`` by a linear solve; ``tol`` and ``max_iter`` are unused.

        ``converged`` is ``False`` only where the solve returned non-finite values (singular ``A``
        or non-finite ``y``).
        """
        check_points(y, self.dim)
        x = torch.linalg.solve(self.matrix, (y - self.shift).T).T
        return x, self.log_abs_det().expand(y.shape[0]).clone(), torch.isfinite(x).all(-1)


class ResidualPushforward(nn.Module):
    """``T(z) = z + R(z)`` with ``R`` a multilayer perceptron (Jin et al. 2024 eq. 5.4).

    The paper's choices are the defaults: three hidden layers of 100 ``tanh`` units (smooth, since
    the log-density of the pushed law involves ``dT/dz``) and no bias on the output layer.  The
    output layer starts at zero, so ``T`` starts as the identity.  The map need not be invertible:
    there is no ``inverse_and_log_det``; ``map_and_log_det`` gives the exact log-density of pushed
    draws from the full Jacobian (``d`` reverse passes per point, fine for small ``d``).

    Parameters
    ----------
    dim : int
        Dimension ``d``.
    hidden : sequence of int, default (100, 100, 100)
        Hidden widths of ``R``.
    activation : {"tanh", "celu"}, default "tanh"
    output_bias : bool, default False
        Give the output layer a bias (Jin et al. 2024 §4 has none).
    generator : torch.Generator, optional
        Source of the initial weights (a generator seeded with 0 when omitted).
    dtype, device
        Where the parameters live.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (100, 100, 100),
        activation: str = "tanh",
        output_bias: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.dim = _check_dim(dim)
        if activation not in RESIDUAL_ACTIVATIONS:
            raise ValueError(f"activation must be one of {RESIDUAL_ACTIVATIONS}, got {activation!r}")
        widths = [dim, *hidden]
        if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints, got {tuple(hidden)}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(init_linear(linear(w_in, w_out, dtype, device), gen))
            layers.append(nn.Tanh() if activation == "tanh" else nn.CELU())
        last = torch.nn.utils.skip_init(
            nn.Linear, widths[-1], dim, bias=bool(output_bias), dtype=dtype, device=device
        )
        with torch.no_grad():
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()
        layers.append(last)
        self.residual = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``T(x)`` for ``(n, d)`` points."""
        check_points(x, self.dim)
        return x + self.residual(x)

    def transport(self, x: Tensor) -> Tensor:
        """The push-forward map (same as calling the module)."""
        return self(x)

    def jacobian(self, x: Tensor) -> Tensor:
        """``(n, d, d)`` Jacobians ``dT/dx``, differentiable in the parameters."""
        check_points(x, self.dim)

        def single(v: Tensor) -> Tensor:
            return v + self.residual(v)

        return torch.func.vmap(torch.func.jacrev(single))(x)

    def map_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``T(x)`` and ``log|det dT/dx (x)|`` (``-inf`` where the Jacobian is singular)."""
        y = self(x)
        return y, torch.linalg.slogdet(self.jacobian(x))[1]

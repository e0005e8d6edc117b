"""Dense input-convex neural network with closed-form gradient and Hessian.

The potential is

.. math::

    \\psi(x) = f(x) + \\tfrac{s}{2}\\lVert x\\rVert^2 + \\tfrac12 \\lVert L x\\rVert^2 + c^\\top x,

where :math:`f` is a DenseICNN-style network (Korotin et al. 2021, App. B.2, as used by the
JKO-ICNN scheme of Mokrov 2022 §4.1):

.. math::

    u_1 = A_1 x + b_1 + q_1(x), \\qquad
    u_{l+1} = W_l\\,\\sigma(u_l) + A_{l+1} x + b_{l+1} + q_{l+1}(x), \\qquad
    f(x) = w^\\top \\sigma(u_L),

with :math:`\\sigma` = softplus, :math:`q_{l,j}(x) = \\lVert P_{l,j} x\\rVert^2` low-rank convex
quadratics, and :math:`W_l = \\mathrm{softplus}(V_l)`, :math:`w = \\mathrm{softplus}(v)`
non-negative through a reparameterisation (the optimiser works on :math:`V_l, v`, so there is no
clamping it does not know about).  Every :math:`u_l` is convex in :math:`x`, hence so is
:math:`\\psi`, and :math:`\\nabla^2\\psi \\succeq s I`: :math:`\\nabla\\psi` is a bijection.

Gradient and Hessian are computed in closed form by forward-mode Jacobians of the
pre-activations; the Hessian is an explicit sum of PSD terms,

.. math::

    \\nabla^2 f = \\sum_l J_l^\\top \\operatorname{diag}(g_l \\odot \\sigma''(u_l)) J_l
                + \\sum_l \\sum_j \\delta_{l,j}\\, 2 P_{l,j}^\\top P_{l,j},

where :math:`J_l = \\partial u_l/\\partial x`, :math:`g_l = \\partial f/\\partial\\sigma(u_l)\\ge 0`
and :math:`\\delta_l = g_l \\odot \\sigma'(u_l)`.  No double backward pass is needed to train
on :math:`\\log\\det\\nabla^2\\psi`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wgfinfer.errors import NonPositiveHessianError

CPU_BLOCK_SIZE = 256
"""Points evaluated at once by :meth:`DenseICNN.derivatives` with Hessians on a CPU.  Every layer
keeps ``(n, d, h)`` Jacobians; in blocks of a few hundred points they stay in cache, and measured on
one core (8-D and 32-D, widths (64, 64), float64) the Hessians then cost 2-3x less per point than
in blocks of 8192 (``benchmarks/icnn_blocks.py``).  Values and gradients alone (no Jacobians) take
the whole batch at once, as other devices do: in blocks they cost 1.3-2.2x more (1-, 8- and 32-D,
1024 and 4096 points, float32, one core)."""


SMALL_DIM = 2
"""Up to this dimension :meth:`DenseICNN.derivatives` forms the Hessians ``J^T diag(c) J`` by
broadcast products, beyond it by one batched matrix product: for ``(1, h) x (h, 1)`` products the
batched matmul's per-matrix cost dominates (1-D, batch 512, width 64, one core: with the 1 x 1
log-determinant of :func:`log_det_spd` and fused Adam, a training iteration fell from about 6.6 to
4.5 ms of CPU; docs/filtering.md, "Cost")."""


class PotentialDerivatives(NamedTuple):
    """Value, gradient and (optionally) Hessian of a potential at a batch of points."""

    value: Tensor
    """``(n,)`` potential values."""
    gradient: Tensor
    """``(n, d)`` gradients (the transport map applied to the points)."""
    hessian: Tensor | None
    """``(n, d, d)`` Hessians, or ``None`` when not requested."""


def inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class DenseICNN(nn.Module):
    """Input-convex potential :math:`\\psi` whose gradient is an invertible transport map.

    Parameters
    ----------
    dim : int
        Input dimension ``d``.
    hidden : sequence of int, default ``(64, 64)``
        Widths of the hidden layers.
    rank : int, default 1
        Rank of the convex quadratic input term of every hidden unit.
    strong_convexity : float, default 1e-3
        ``s`` in the ``(s/2)||x||^2`` term; the Hessian of ``psi`` is at least ``s I``.
    output_scale : float, default 1e-2
        Initial size of the network part relative to the quadratic part; with a small value
        :math:`\\nabla\\psi` starts close to the identity.
    generator : torch.Generator, optional
        Source of randomness for the initial weights (the global RNG is never used).
    dtype, device
        Where the parameters live.

    Notes
    -----
    At initialisation :math:`L = \\sqrt{1-s}\\,I` and :math:`c = 0`, so
    :math:`\\nabla\\psi(x) = x + \\nabla f(x)` with :math:`\\lVert\\nabla f\\rVert` of the order of
    ``output_scale``: the map starts near the identity without a pre-fit.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        rank: int = 1,
        strong_convexity: float = 1e-3,
        output_scale: float = 1e-2,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        if len(hidden) == 0 or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {hidden}")
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if not 0.0 < strong_convexity < 1.0:
            raise ValueError(f"strong_convexity must lie in (0, 1), got {strong_convexity}")
        if output_scale <= 0:
            raise ValueError(f"output_scale must be positive, got {output_scale}")
        self.dim = int(dim)
        self.hidden = hidden
        self.rank = int(rank)
        self.strong_convexity = float(strong_convexity)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)

        def randn(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)

        def full(value: float, *shape: int) -> Tensor:
            return torch.full(shape, value, dtype=dtype, device=device)

        self.input_weights = nn.ParameterList([nn.Parameter(randn(h, dim) / math.sqrt(dim)) for h in hidden])
        self.biases = nn.ParameterList([nn.Parameter(0.5 * randn(h)) for h in hidden])
        self.quadratic_factors = nn.ParameterList(
            [nn.Parameter(0.1 * randn(h, rank, dim) / math.sqrt(dim)) for h in hidden]
        )
        # hidden-to-hidden weights are softplus(raw) >= 0; they start near 1/width_in
        self.raw_hidden_weights = nn.ParameterList(
            [
                nn.Parameter(full(inverse_softplus(1.0 / h_in), h_out, h_in) + 0.1 * randn(h_out, h_in))
                for h_in, h_out in zip(hidden[:-1], hidden[1:], strict=True)
            ]
        )
        self.raw_output_weights = nn.Parameter(full(inverse_softplus(output_scale / hidden[-1]), hidden[-1]))
        self.quadratic = nn.Parameter(
            math.sqrt(1.0 - strong_convexity) * torch.eye(dim, dtype=dtype, device=device)
        )
        self.linear = nn.Parameter(torch.zeros(dim, dtype=dtype, device=device))

    # ------------------------------------------------------------------ evaluation
    def forward(self, x: Tensor) -> Tensor:
        """Potential values ``psi(x)``, shape ``(n,)``."""
        return self.derivatives(x, order=0).value

    def gradient(self, x: Tensor) -> Tensor:
        """The transport map ``grad psi(x)``, shape ``(n, d)``."""
        return self.derivatives(x, order=1).gradient

    def transport(self, x: Tensor) -> Tensor:
        """The transport map ``grad psi(x)`` (the name every JKO map shares)."""
        return self.gradient(x)

    def hessian(self, x: Tensor) -> Tensor:
        """Hessians ``grad^2 psi(x)``, shape ``(n, d, d)``; symmetric positive definite."""
        hess = self.derivatives(x, order=2).hessian
        assert hess is not None
        return hess

    def derivatives(self, x: Tensor, order: int = 2) -> PotentialDerivatives:
        """Value, gradient and, if ``order == 2``, Hessian of ``psi`` in one pass.

        Parameters
        ----------
        x : Tensor
            ``(n, d)`` points.
        order : {0, 1, 2}
            Highest derivative wanted; order 0 still returns the gradient (it is cheap).

        Returns
        -------
        PotentialDerivatives
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (n, {self.dim}), got {tuple(x.shape)}")
        if order < 2 or x.device.type != "cpu" or x.shape[0] <= 2 * CPU_BLOCK_SIZE:
            return self._derivatives(x, order)
        parts = [self._derivatives(block, order) for block in x.split(CPU_BLOCK_SIZE)]
        hessian = torch.cat([part.hessian for part in parts])  # type: ignore[misc]
        return PotentialDerivatives(
            torch.cat([part.value for part in parts]), torch.cat([part.gradient for part in parts]), hessian
        )

    def _derivatives(self, x: Tensor, order: int) -> PotentialDerivatives:
        """:meth:`derivatives` for one block of points."""
        slopes: list[Tensor] = []  # sigma'(u_l)
        jacobians: list[Tensor] = []  # (d u_l / d x)^T, (n, d, h_l)
        hidden_weights = [F.softplus(v) for v in self.raw_hidden_weights]
        activation = slope = jacobian = None
        all_projections: list[Tensor] = []
        for layer, (a, b, p) in enumerate(
            zip(self.input_weights, self.biases, self.quadratic_factors, strict=True)
        ):
            # plain matmuls instead of torch.einsum: einsum's contraction-path search (opt_einsum)
            # cost more than the arithmetic for the small batches of training and MH sweeps
            h_l, r = p.shape[0], p.shape[1]
            projections = (x @ p.reshape(h_l * r, self.dim).T).reshape(x.shape[0], h_l, r)
            u = x @ a.T + b + projections.square().sum(-1)
            if layer > 0:
                u = u + activation @ hidden_weights[layer - 1].T
            if order >= 2:
                # forward-mode Jacobians, kept transposed as (n, d, h_l): the hidden-to-hidden
                # product is then one (n d, h_prev) @ (h_prev, h_l) matrix product instead of n
                # small batched ones, and the quadratic term a broadcast product
                jac = a.T.expand(x.shape[0], -1, -1)
                if r > 0:
                    quadratic = projections * p[:, 0] if r == 1 else (projections.unsqueeze(-1) * p).sum(-2)
                    jac = jac + 2.0 * quadratic.transpose(1, 2)
                if layer > 0:
                    w = hidden_weights[layer - 1]
                    jac = jac + (slope.unsqueeze(1) * jacobian) @ w.T
                jacobian = jac
                jacobians.append(jac)
            activation, slope = F.softplus(u), torch.sigmoid(u)
            slopes.append(slope)
            all_projections.append(projections)

        out_w = F.softplus(self.raw_output_weights)
        lx = x @ self.quadratic.T
        s = self.strong_convexity
        value = (
            activation @ out_w + 0.5 * s * x.square().sum(-1) + 0.5 * lx.square().sum(-1) + x @ self.linear
        )
        affine_gradient = s * x + lx @ self.quadratic + self.linear
        if order < 2:
            # reverse accumulation: O(n h d) per layer instead of the O(n h^2 d) Jacobians
            gradient = affine_gradient
            delta = out_w * slope  # d f / d u_L
            for layer in range(len(self.hidden) - 1, -1, -1):
                a, p = self.input_weights[layer], self.quadratic_factors[layer]
                gradient = gradient + delta @ a
                weighted = (delta.unsqueeze(-1) * all_projections[layer]).flatten(1)
                gradient = gradient + 2.0 * weighted @ p.reshape(weighted.shape[1], self.dim)
                if layer > 0:
                    delta = (delta @ hidden_weights[layer - 1]) * slopes[layer - 1]
            return PotentialDerivatives(value, gradient, None)
        delta = out_w * slope  # d f / d u_L, (n, h_L)
        gradient = (jacobian @ delta.unsqueeze(-1)).squeeze(-1) + affine_gradient

        # g_l = d f / d sigma(u_l) and delta_l = g_l * sigma'(u_l), from the last layer back
        outer_grads: list[Tensor] = [out_w.expand_as(slope)]
        for layer in range(len(self.hidden) - 1, 0, -1):
            delta = outer_grads[0] * slopes[layer]
            outer_grads.insert(0, delta @ hidden_weights[layer - 1])
        grads = torch.cat(outer_grads, dim=1)  # (n, sum h)
        slope_all = torch.cat(slopes, dim=1)
        jac_all = torch.cat(jacobians, dim=2)  # (n, d, sum h)
        curvature = grads * slope_all * (1.0 - slope_all)  # g * sigma''(u) >= 0
        # the (n, d, d) Hessian is accumulated in place: with large batches these additions are
        # memory-bound and fresh tensors for each term cost more than the products themselves
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        constant = s * eye + self.quadratic.T @ self.quadratic
        weighted_jac = curvature.unsqueeze(1) * jac_all
        if self.dim <= SMALL_DIM:
            # d x d products of n tiny matrices: broadcast products beat a batched matmul there
            hessian = constant + (jac_all.unsqueeze(2) * weighted_jac.unsqueeze(1)).sum(-1)
        else:
            constants = constant.expand(x.shape[0], -1, -1)
            hessian = torch.baddbmm(constants, jac_all, weighted_jac.transpose(1, 2))
        if self.rank > 0:
            # sum_{l,j} 2 delta_{l,j} P_{l,j}^T P_{l,j} as one (n, K) @ (K, d*d) product
            factors = torch.cat([p.reshape(-1, self.dim) for p in self.quadratic_factors])
            outer = (factors.unsqueeze(-1) * factors.unsqueeze(-2)).reshape(factors.shape[0], -1)
            deltas = (grads * slope_all).repeat_interleave(self.rank, dim=1)
            hessian = hessian.reshape(x.shape[0], -1).addmm_(deltas, outer, alpha=2.0)
            hessian = hessian.reshape(-1, self.dim, self.dim)
        return PotentialDerivatives(value, gradient, hessian)

    def frozen_transport(self) -> FrozenTransport:
        """The transport map with the current weights fixed, for pushing many small batches.

        Returns
        -------
        FrozenTransport
            A snapshot: later changes to the parameters do not reach it (take a new one).
        """
        return FrozenTransport(self)

    # ------------------------------------------------------------------ transport map
    def map_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Apply ``grad psi`` and return ``log det grad^2 psi`` at the same points.

        Raises
        ------
        NonPositiveHessianError
            If a Hessian is not numerically positive definite (Cholesky fails).
        """
        d = self.derivatives(x, order=2)
        return d.gradient, log_det_spd(d.hessian)

    @torch.no_grad()
    def inverse(
        self,
        y: Tensor,
        tol: float | None = None,
        max_iter: int = 100,
        x0: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Invert the map: solve ``grad psi(x) = y`` by batched damped Newton.

        Equivalent to ``argmax_x <x, y> - psi(x)`` (Mokrov 2022, eq. 15); strong convexity makes the
        solution unique.  Each Newton step is accepted when the concave objective increases
        (Armijo) or the residual shrinks, backtracking by halving otherwise.

        Parameters
        ----------
        y : Tensor
            ``(n, d)`` points in the image of the map.
        tol : float, optional
            Convergence when ``||grad psi(x) - y|| <= tol * (1 + ||y||)``.  Defaults to 1e-10 in
            float64 and 1e-4 in float32.
        max_iter : int
            Newton iterations at most.
        x0 : Tensor, optional
            Starting points (default ``y``).

        Returns
        -------
        x : Tensor
            ``(n, d)`` pre-images.
        converged : Tensor
            ``(n,)`` booleans; entries of ``x`` where it is ``False`` are not to be trusted.
        """
        if tol is None:
            tol = 1e-10 if y.dtype == torch.float64 else 1e-4
        x = (y if x0 is None else x0).clone()
        threshold = tol * (1.0 + y.norm(dim=-1))
        d = self.derivatives(x, order=2)
        objective = d.value - (x * y).sum(-1)
        residual = d.gradient - y
        res_norm = residual.norm(dim=-1)
        converged = res_norm <= threshold
        for _ in range(max_iter):
            active = ~converged
            if not active.any():
                break
            idx = active.nonzero().squeeze(-1)
            chol, info = torch.linalg.cholesky_ex(d.hessian[idx])
            if (info != 0).any():  # should not happen: Hessian >= s I
                break
            direction = -torch.cholesky_solve(residual[idx].unsqueeze(-1), chol).squeeze(-1)
            decrement = -(direction * residual[idx]).sum(-1)  # >= 0
            step = torch.ones(idx.shape[0], dtype=y.dtype, device=y.device)
            pending = torch.ones_like(step, dtype=torch.bool)
            new_x = x[idx].clone()
            for _ in range(40):
                trial = x[idx] + step.unsqueeze(-1) * direction
                dt = self.derivatives(trial, order=0)
                trial_obj = dt.value - (trial * y[idx]).sum(-1)
                trial_res = (dt.gradient - y[idx]).norm(dim=-1)
                accept = pending & (
                    (trial_obj <= objective[idx] - 1e-4 * step * decrement) | (trial_res < res_norm[idx])
                )
                new_x[accept] = trial[accept]
                pending &= ~accept
                if not pending.any():
                    break
                step = torch.where(pending, 0.5 * step, step)
            x[idx] = new_x
            d = self.derivatives(x, order=2)
            objective = d.value - (x * y).sum(-1)
            residual = d.gradient - y
            res_norm = residual.norm(dim=-1)
            converged = res_norm <= threshold
        return x, converged

    @torch.no_grad()
    def inverse_and_log_det(
        self, y: Tensor, tol: float | None = None, max_iter: int = 100
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Pre-images of ``y``, ``log det grad^2 psi`` there, and where both can be trusted.

        The density protocol of :class:`wgfinfer.flow.Flow`: ``converged`` is ``False`` where the
        Newton inversion did not converge or the Hessian's Cholesky factorisation failed.
        """
        x, converged = self.inverse(y, tol=tol, max_iter=max_iter)
        log_det, factorised = safe_log_det(self, x)
        return x, log_det, converged & factorised


class FrozenTransport:
    """``grad psi`` of a :class:`DenseICNN` whose weights no longer change, in fewer operations.

    :meth:`DenseICNN.transport` recomputes ``softplus`` of the raw weights and the potential's value
    on every call and takes the linear and quadratic input terms of a layer in two products.  Here
    those weights are computed once, each layer's input terms are one product with the stacked
    ``[A_l; P_l]`` (and its gradient terms one product back), and no value is formed: for the
    Metropolis-Hastings sweeps of a filter (256 points a call, dispatch-bound) this takes about
    40% of the time of :meth:`DenseICNN.transport` (1-D, widths (32, 32), float32, one core;
    docs/filtering.md, "Cost").  Equal to :meth:`DenseICNN.transport` up to rounding.

    Parameters
    ----------
    psi : DenseICNN
        The potential; its weights are copied (detached) when this object is made.
    """

    def __init__(self, psi: DenseICNN) -> None:
        self.dim = psi.dim
        with torch.no_grad():
            self._layers: list[tuple[Tensor, Tensor, Tensor, Tensor | None, int, int]] = []
            for layer, (a, b, p) in enumerate(
                zip(psi.input_weights, psi.biases, psi.quadratic_factors, strict=True)
            ):
                h_l, r = p.shape[0], p.shape[1]
                stacked = torch.cat([a, p.reshape(h_l * r, psi.dim)])  # (h_l (1 + r), d)
                bias = torch.cat([b, b.new_zeros(h_l * r)])
                hidden = F.softplus(psi.raw_hidden_weights[layer - 1]) if layer > 0 else None
                self._layers.append((stacked, stacked.T.contiguous(), bias, hidden, h_l, r))
            self._output_weights = F.softplus(psi.raw_output_weights)
            eye = torch.eye(psi.dim, dtype=psi.quadratic.dtype, device=psi.quadratic.device)
            self._affine = psi.strong_convexity * eye + psi.quadratic.T @ psi.quadratic  # symmetric
            self._linear = psi.linear.detach().clone()

    def __call__(self, x: Tensor) -> Tensor:
        """``grad psi(x)`` for ``(n, d)`` points (differentiable in ``x``, not in the weights)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (n, {self.dim}), got {tuple(x.shape)}")
        n, last = x.shape[0], len(self._layers) - 1
        projections: list[Tensor] = []
        slopes: list[Tensor] = []
        activation = x
        for layer, (_, stacked_t, bias, hidden, h_l, r) in enumerate(self._layers):
            terms = torch.addmm(bias, x, stacked_t)  # [A x + b, P x]
            projection = terms[:, h_l:]
            if r == 1:
                u = terms[:, :h_l] + projection * projection
            else:
                u = terms[:, :h_l] + projection.reshape(n, h_l, r).square().sum(-1)
            if hidden is not None:
                u = torch.addmm(u, activation, hidden.T)
            if layer < last:
                activation = F.softplus(u)
            slopes.append(torch.sigmoid(u))
            projections.append(projection)
        gradient = torch.addmm(self._linear, x, self._affine)
        delta = self._output_weights * slopes[-1]  # d f / d u_L
        for layer in range(last, -1, -1):
            stacked, _, _, hidden, h_l, r = self._layers[layer]
            if r == 1:
                quadratic = delta * projections[layer]
            else:
                quadratic = (delta.unsqueeze(-1) * projections[layer].reshape(n, h_l, r)).flatten(1)
            gradient = torch.addmm(gradient, torch.cat([delta, quadratic + quadratic], dim=1), stacked)
            if hidden is not None:
                delta = (delta @ hidden) * slopes[layer - 1]
        return gradient


def safe_log_det(psi: DenseICNN, x: Tensor) -> tuple[Tensor, Tensor]:
    """Log-det of the Hessian of ``psi`` at ``x`` and a mask of where its Cholesky factorisation
    succeeded (no exception: failed entries are reported, not raised)."""
    chol, info = torch.linalg.cholesky_ex(psi.hessian(x))
    return 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1), info == 0


def log_det_spd(matrices: Tensor) -> Tensor:
    """``log det`` of a batch of symmetric positive-definite matrices via Cholesky.

    Parameters
    ----------
    matrices : Tensor
        ``(n, d, d)`` SPD matrices.

    Returns
    -------
    Tensor
        ``(n,)`` log-determinants.

    Raises
    ------
    NonPositiveHessianError
        If any matrix is not numerically positive definite; never returns NaN silently.
    """
    if matrices.shape[-1] == 1:  # a 1 x 1 matrix is its own determinant: no factorisation
        entries = matrices[:, 0, 0]
        _raise_where_not_positive_definite(~(entries > 0))
        return entries.log()
    return _LogDetSPD.apply(matrices)


def _raise_where_not_positive_definite(bad: Tensor) -> None:
    """Raise :class:`NonPositiveHessianError` if any entry of the ``(n,)`` mask ``bad`` is set."""
    if bad.any():
        raise NonPositiveHessianError(
            f"{int(bad.sum())} of {bad.shape[0]} Hessians are not numerically positive definite"
        )


class _LogDetSPD(torch.autograd.Function):
    """``log det`` by Cholesky with the gradient ``A^{-1}`` from ``cholesky_inverse``.

    Autograd's own backward through ``cholesky`` does batched triangular solves, which on CPU took
    15 times longer than ``cholesky_inverse`` for 256 matrices of size 32 (170 ms against 11 ms),
    and most of a training iteration.
    """

    @staticmethod
    def forward(ctx: Any, matrices: Tensor) -> Tensor:
        chol, info = torch.linalg.cholesky_ex(matrices)
        _raise_where_not_positive_definite(info != 0)
        ctx.save_for_backward(chol)
        return 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (chol,) = ctx.saved_tensors
        return grad_output[:, None, None] * torch.cholesky_inverse(chol)

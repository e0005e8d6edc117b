"""Laplace preconditioning: run the flow in the coordinates that whiten the target at its mode.

Posteriors of regression-type models are often much narrower than any fixed ``rho_0`` and strongly
anisotropic.  A JKO flow from ``N(0, I)`` then spends most of its steps (and its optimiser's
budget) contracting and rotating mass.  With ``init="laplace"`` the sampler instead

1. finds the mode ``m`` of the log-density (L-BFGS with a strong-Wolfe line search),
2. takes the Hessian ``H`` of ``-log p`` there and a Cholesky factor ``L`` of ``H^{-1}``,
3. runs the JKO flow for the whitened target ``z -> log p(m + L z)`` from ``N(0, s^2 I)``,
4. maps every draw back with ``x = m + L z``; ``log q(x) = log q_z(z) - log|det L|`` stays exact.

The starting measure is then the Laplace approximation (scaled by ``s = init_scale``) and the flow
only corrects the target's non-Gaussianity.  This is a change of the metric in which the
Wasserstein flow runs (the W2 cost is measured in whitened coordinates), not of its limit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from wgfinfer import bars


@dataclass(frozen=True)
class AffineWhitening:
    """The affine map ``x = loc + scale_tril @ z`` from whitened to original coordinates.

    Attributes
    ----------
    loc : Tensor
        ``(d,)`` shift (the mode of the target).
    scale_tril : Tensor
        ``(d, d)`` lower-triangular factor with positive diagonal.
    """

    loc: Tensor
    scale_tril: Tensor

    @property
    def log_abs_det(self) -> Tensor:
        """``log|det scale_tril|``, the log-Jacobian of ``z -> x``."""
        return torch.diagonal(self.scale_tril).log().sum()

    def forward(self, z: Tensor) -> Tensor:
        """Whitened ``(n, d)`` points to original coordinates."""
        return self.loc + z @ self.scale_tril.T

    def inverse(self, x: Tensor) -> Tensor:
        """Original ``(n, d)`` points to whitened coordinates."""
        centred = (x - self.loc).T
        return torch.linalg.solve_triangular(self.scale_tril, centred, upper=False).T

    def to(self, dtype: torch.dtype, device: torch.device) -> AffineWhitening:
        """A copy with the given dtype and device."""
        return AffineWhitening(
            self.loc.to(dtype=dtype, device=device), self.scale_tril.to(dtype=dtype, device=device)
        )


MODE_SEARCH_ROUNDS = 3
"""L-BFGS runs of :func:`find_mode`, each from where the last stopped with a fresh curvature memory,
while the gradient test fails and a run still gains.  From a start far out in a steep region (the
ARMA(1, 1) posterior from Pyro's ``init_to_uniform``: ``-log p`` about 6e32) the first run spends its
evaluations in line searches across 30 orders of magnitude and stops at ``-log p = 5901``; the
second reaches the mode (``-log p = -67.7``)."""


def find_mode(
    log_density: Callable[[Tensor], Tensor],
    x0: Tensor,
    max_iter: int = 500,
    tol: float = 1e-9,
    progress_bar: bool = False,
) -> Tensor:
    """Maximise ``log_density`` from ``x0`` with L-BFGS (strong-Wolfe line search).

    Parameters
    ----------
    log_density : callable
        Batched log-density ``(n, d) -> (n,)``.
    x0 : Tensor
        ``(d,)`` starting point.
    max_iter : int
        L-BFGS iterations at most.
    tol : float
        Gradient tolerance (max-norm) for convergence.
    progress_bar : bool, default False
        Show a tqdm bar ("start: mode search") over the L-BFGS iterations, with ``-log p``; it ends
        at the iterations done when the search converges earlier.

    Returns
    -------
    Tensor
        ``(d,)`` the mode found.

    Raises
    ------
    ValueError
        If the optimisation leaves the finite values of the log-density (e.g. an improper
        posterior whose density grows without bound).
    """
    x = x0.detach().clone().requires_grad_(True)
    progress = bars.bar(progress_bar, max_iter * MODE_SEARCH_ROUNDS, "start: mode search", unit="iter")
    done_before = 0

    def new_optimizer() -> torch.optim.LBFGS:
        return torch.optim.LBFGS(
            [x],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=tol,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

    optimizer = new_optimizer()
    best: dict[str, Any] = {"value": math.inf, "x": x.detach().clone()}
    outside = {"value": math.inf}  # the loss a trial point outside the density's finite values gets

    def closure() -> Tensor:
        optimizer.zero_grad()
        try:
            loss = -log_density(x.unsqueeze(0)).squeeze(0)
            inside = bool(torch.isfinite(loss)) or bool(torch.isneginf(loss))  # +inf log p: diverged
            if inside:
                loss.backward()
                inside = bool(torch.isfinite(x.grad).all()) or not bool(torch.isfinite(loss))
        except (ValueError, RuntimeError):  # e.g. a Pyro distribution refusing a NaN parameter
            inside = False
        if not inside:
            # NaN, log p = -inf or an error at a trial point of the line search (an overflow far out,
            # e.g. a rate exp(800)): a loss far above every value seen, with no slope, makes the
            # strong-Wolfe search step back instead of failing on NaN
            x.grad = torch.zeros_like(x)
            loss = torch.as_tensor(outside["value"], dtype=x.dtype, device=x.device)
        elif float(loss.detach()) < best["value"]:
            best.update(value=float(loss.detach()), x=x.detach().clone())
        if progress_bar:  # L-BFGS counts its iterations in its state; a closure call is an evaluation
            done = done_before + int(optimizer.state[x].get("n_iter", 0))
            progress.update(done - progress.n)
            progress.set_postfix(neg_log_p=f"{float(loss.detach()):.6g}", refresh=False)
        return loss

    with progress:
        with torch.no_grad():
            before = float(-log_density(x.unsqueeze(0)).squeeze(0))
        outside["value"] = abs(before) * 1e6 + 1e12 if math.isfinite(before) else math.inf
        for _ in range(MODE_SEARCH_ROUNDS):
            try:
                optimizer.step(closure)
            except (ValueError, RuntimeError, IndexError) as exc:  # IndexError: L-BFGS's line search on NaN
                raise ValueError(
                    f"init='laplace': the search for the mode failed: {type(exc).__name__}: {exc}"
                ) from exc
            done_before += int(optimizer.state[x].get("n_iter", 0))
            if best["value"] < math.inf and not bool(torch.isfinite(x).all()):
                with torch.no_grad():  # L-BFGS ended on a rejected point: back to the best one seen
                    x.copy_(best["x"])
            with torch.enable_grad():  # the caller may hold no_grad; L-BFGS's step enables it itself
                loss = -log_density(x.unsqueeze(0)).squeeze(0)
                (grad,) = torch.autograd.grad(loss, x)
            value = float(loss.detach())
            converged = bool(grad.abs().max() <= tol) or not value < before - 1e-9 * (1 + abs(before))
            if converged or not math.isfinite(value):
                break
            before = value  # where the next round starts
            optimizer = new_optimizer()  # a fresh curvature memory where the last round stopped
        if progress_bar and progress.n < progress.total:  # converged early: the bar ends where it stopped
            progress.total = progress.n
            progress.refresh()
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            "init='laplace': the search for the mode of the log-density diverged (is the posterior "
            "proper?); pass an explicit init distribution instead"
        )
    return x


def hessian_of_negative_log_density(
    log_density: Callable[[Tensor], Tensor], x: Tensor, progress_bar: bool = False
) -> Tensor:
    """``-grad^2 log_density(x)`` at one ``(d,)`` point, by automatic differentiation, symmetrised.

    The gradient is differentiated once per coordinate (one backward pass per row, as
    ``torch.autograd.functional.hessian`` does).

    Parameters
    ----------
    log_density : callable
        Batched log-density ``(n, d) -> (n,)``.
    x : Tensor
        ``(d,)`` point.
    progress_bar : bool, default False
        Show a tqdm bar ("start: Hessian") over the rows.

    Returns
    -------
    Tensor
        ``(d, d)`` symmetric matrix.
    """
    d = x.shape[0]
    point = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = -log_density(point.unsqueeze(0)).squeeze(0)
        gradient = None
        if loss.requires_grad:  # a constant log-density has a zero Hessian
            (gradient,) = torch.autograd.grad(loss, point, create_graph=True, allow_unused=True)
    rows = []
    with bars.bar(progress_bar, d, "start: Hessian", unit="row") as progress:
        for i in range(d):
            row = None
            if gradient is not None and gradient.requires_grad:
                (row,) = torch.autograd.grad(gradient[i], point, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(point) if row is None else row.detach())
            progress.update(1)
    hessian = torch.stack(rows) if rows else point.new_zeros(0, 0)
    return 0.5 * (hessian + hessian.T)


NEWTON_DECREMENT_TOLERANCE = 0.01
"""A mode search has converged when a Newton step from its end would raise the log-density by less
than this (nats): ``g^T H^{-1} g / 2``, which, unlike a gradient norm, does not depend on the scale of
the parameters."""


EIGENVALUE_FLOOR_EPS = 1000.0
"""Eigenvalues of the Hessian below this many machine epsilons (of the evaluation's dtype) of the
largest count as zero."""


class LaplaceStartError(ValueError):
    """The Laplace approximation does not exist where it was sought: the mode search diverged or did
    not converge (an unbounded density, as in a funnel), or the Hessian there is not finite or not
    positive definite.  The sampler then falls back to another start (:func:`wgfinfer.init.whitening`)."""


def laplace_whitening(
    log_density: Callable[[Tensor], Tensor],
    x0: Tensor,
    eigenvalue_floor: float | None = None,
    strict: bool = False,
    progress_bar: bool = False,
) -> AffineWhitening:
    """The whitening map of the Laplace approximation ``N(mode, H^{-1})`` of a log-density.

    Parameters
    ----------
    log_density : callable
        Batched log-density ``(n, d) -> (n,)``.
    x0 : Tensor
        ``(d,)`` start of the mode search.
    eigenvalue_floor : float, optional
        Relative floor on the Hessian's eigenvalues (a fraction of the largest): below it the
        Hessian counts as not positive definite (a warning, and the eigenvalues are floored; with
        ``strict`` an error).  Default :data:`EIGENVALUE_FLOOR_EPS` times the machine epsilon of
        ``x0``'s dtype, the relative accuracy the Hessian of a log-density evaluated in that dtype
        has: well-conditioned posteriors in badly scaled coordinates (earnings in dollars, a
        condition number of 1e11) are positive definite, a flat direction is not.
    strict : bool, default False
        Raise :class:`LaplaceStartError` instead of flooring a Hessian that is not positive
        definite, and also when the search ended where a Newton step would still gain more than
        :data:`NEWTON_DECREMENT_TOLERANCE` nats (no mode was found).
    progress_bar : bool, default False
        Show tqdm bars over the mode search ("start: mode search", :func:`find_mode`) and the rows
        of the Hessian ("start: Hessian").

    Returns
    -------
    AffineWhitening
        ``loc`` = mode, ``scale_tril`` = Cholesky factor of ``H^{-1}``.  Computed in float64.

    Raises
    ------
    LaplaceStartError
        If the mode search diverges, the Hessian is not finite, or (``strict``) the search did not
        converge or the Hessian is not positive definite.
    """
    dtype, device = x0.dtype, x0.device

    def f64(v: Tensor) -> Tensor:
        return log_density(v.to(dtype)).to(torch.float64)

    try:
        mode = find_mode(f64, x0.detach().to(torch.float64), progress_bar=progress_bar)
    except ValueError as exc:
        raise LaplaceStartError(str(exc)) from exc
    hessian = hessian_of_negative_log_density(f64, mode, progress_bar=progress_bar)
    if not bool(torch.isfinite(hessian).all()):
        raise LaplaceStartError("init='laplace': the Hessian of the log-density at its mode is not finite")
    eigenvalues, vectors = torch.linalg.eigh(hessian)
    if eigenvalue_floor is None:
        eigenvalue_floor = EIGENVALUE_FLOOR_EPS * torch.finfo(dtype).eps
    floor = eigenvalue_floor * max(float(eigenvalues.abs().max()), 1.0)
    if strict and float(eigenvalues.min()) < floor:
        raise LaplaceStartError(
            "init='laplace': the Hessian of -log p where the mode search ended is not positive "
            f"definite (smallest eigenvalue {float(eigenvalues.min()):.3g}, largest "
            f"{float(eigenvalues.max()):.3g}): no isolated mode there"
        )
    if strict:
        x = mode.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(f64(x.unsqueeze(0)).sum(), x)
        decrement = 0.5 * float(gradient @ ((vectors / eigenvalues) @ (vectors.T @ gradient)))
        if not decrement < NEWTON_DECREMENT_TOLERANCE:
            raise LaplaceStartError(
                "init='laplace': the mode search did not converge (a Newton step from where it ended "
                f"would still gain {decrement:.3g} nats; the log-density may grow without bound, as "
                "in a funnel)"
            )
    if float(eigenvalues.min()) < floor:
        warnings.warn(
            "init='laplace': the Hessian of -log p at the mode is not positive definite (smallest "
            f"eigenvalue {float(eigenvalues.min()):.3g}); its eigenvalues are floored at {floor:.3g}. "
            "The Laplace approximation is poor here; consider an explicit init distribution.",
            RuntimeWarning,
            stacklevel=3,
        )
        eigenvalues = eigenvalues.clamp_min(floor)
    covariance = (vectors / eigenvalues) @ vectors.T
    scale_tril = torch.linalg.cholesky(0.5 * (covariance + covariance.T))
    return AffineWhitening(mode, scale_tril).to(dtype, device)


def fit_gaussian(
    log_density: Callable[[Tensor], Tensor],
    start: AffineWhitening,
    generator: torch.Generator,
    n_iter: int = 1000,
    batch_size: int = 256,
    lr: float = 0.02,
    progress_bar: bool = False,
) -> AffineWhitening:
    """Refine a Gaussian start by minimising ``KL(N(m, S) || p)`` over full-rank Gaussians.

    The Gaussian is parameterised in ``start``'s whitened coordinates, ``z = a + B e`` with
    ``e ~ N(0, I)`` and ``B`` lower-triangular with a softplus diagonal, starting from ``a = 0``,
    ``B = I``; the loss is the reparameterised ``-E[log p(x(z))] - log|det B|`` (the KL up to
    ``log Z`` and a constant), minimised with Adam.  This is the JKO flow restricted to affine maps
    with an infinite step, and is far cheaper per iteration than an ICNN step (no Hessians).  For
    hierarchical posteriors, whose mass can sit far from the joint mode, it moves the start to where
    the mass is before the flow corrects the shape.

    Parameters
    ----------
    log_density : callable
        Batched log-density ``(n, d) -> (n,)`` in original coordinates.
    start : AffineWhitening
        Starting Gaussian ``N(loc, scale_tril scale_tril^T)`` (e.g. the Laplace approximation).
    generator : torch.Generator
        CPU generator for the Monte-Carlo draws.
    n_iter, batch_size, lr : int, int, float
        Adam iterations, draws per iteration, learning rate (cosine-decayed to ``lr / 10``).
    progress_bar : bool, default False
        Show a tqdm bar ("start: Gaussian fit") over the Adam iterations, with the loss.

    Returns
    -------
    AffineWhitening
        The fitted Gaussian as a whitening map.

    Raises
    ------
    ValueError
        If the loss becomes non-finite.
    """
    d = start.loc.shape[0]
    dtype, device = start.loc.dtype, start.loc.device
    shift = torch.zeros(d, dtype=dtype, device=device, requires_grad=True)
    raw = torch.zeros(d, d, dtype=dtype, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([shift, raw], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * it / n_iter))
    )
    offset = math.log(math.e - 1.0)  # softplus(offset) = 1

    def factor() -> Tensor:
        return torch.tril(raw, -1) + torch.diag(F.softplus(torch.diagonal(raw) + offset))

    every = max(1, n_iter // 50)
    with bars.bar(progress_bar, n_iter, "start: Gaussian fit", unit="iter") as progress:
        for it in range(n_iter):
            e = torch.randn(batch_size, d, generator=generator, dtype=dtype).to(device)
            b = factor()
            x = start.forward(shift + e @ b.T)
            loss = -log_density(x).mean() - torch.diagonal(b).log().sum()
            if not bool(torch.isfinite(loss)):
                raise ValueError(f"init='gaussian': the Gaussian fit diverged at iteration {it}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress_bar and it % every == 0:
                progress.set_postfix(loss=f"{float(loss.detach()):.4g}", refresh=False)
            progress.update(1)
    with torch.no_grad():
        b = factor()
        return AffineWhitening(start.loc + start.scale_tril @ shift, start.scale_tril @ b)

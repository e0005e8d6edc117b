"""Sample-based diagnostics of a trained flow against a target."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def kl_divergence(log_q: Tensor, log_p: Tensor) -> tuple[float, float]:
    """Monte-Carlo estimate of ``KL(q||p) = E_q[log q - log p]`` and its standard error.

    Parameters
    ----------
    log_q, log_p : Tensor
        ``(n,)`` normalised log-densities of ``q`` and ``p`` at draws of ``q`` (the flow gives
        ``log q`` exactly at its own draws).

    Returns
    -------
    estimate, standard_error : float

    Raises
    ------
    ValueError
        If a log-density difference is not finite.
    """
    diff = (log_q - log_p).double()
    if not bool(torch.isfinite(diff).all()):
        raise ValueError(f"non-finite log-density differences at {int((~torch.isfinite(diff)).sum())} draws")
    return float(diff.mean()), math.sqrt(float(diff.var()) / diff.numel())


def symmetric_kl(
    log_q_at_q: Tensor, log_p_at_q: Tensor, log_p_at_p: Tensor, log_q_at_p: Tensor
) -> tuple[float, float]:
    """Monte-Carlo estimate of ``KL(q||p) + KL(p||q)`` and its standard error.

    ``KL(q||p) = E_q[log q - log p]`` is averaged over draws of ``q`` and ``KL(p||q)`` over draws of
    ``p`` (Mokrov 2022, eq. 22 and §4.1); both densities must be normalised.  The flow gives ``log q``
    exactly at its own draws (tracked) and at the target's draws (by inversion).

    Parameters
    ----------
    log_q_at_q, log_p_at_q : Tensor
        ``(n,)`` log-densities of ``q`` and ``p`` at draws of ``q``.
    log_p_at_p, log_q_at_p : Tensor
        ``(m,)`` log-densities of ``p`` and ``q`` at draws of ``p``.

    Returns
    -------
    estimate, standard_error : float
    """
    forward, forward_se = kl_divergence(log_q_at_q, log_p_at_q)
    backward, backward_se = kl_divergence(log_p_at_p, log_q_at_p)
    return forward + backward, math.hypot(forward_se, backward_se)


def score_from_log_density(log_density: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Score ``x -> grad_x log_density(x)`` of a batched log-density, by autograd (for :func:`ksd`).

    ``log_density`` maps ``(n, d)`` points to ``(n,)`` log-densities (unnormalised is fine); the
    returned callable differentiates their sum at a detached copy of ``x``, with gradients enabled.
    """

    def score(x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_density(x).sum(), x)
        return grad

    return score


def ksd(
    samples: Tensor,
    score_fn: Callable[[Tensor], Tensor] | Tensor,
    bandwidth: float | None = None,
    block_size: int = 2048,
    return_se: bool = False,
) -> float | tuple[float, float]:
    """Kernelized Stein discrepancy of ``samples`` from a target ``Q`` (Liu, Lee & Jordan 2016).

    With the RBF kernel ``k(x, y) = exp(-|x - y|^2 / (2 l^2))``, ``s = grad log Q`` and
    ``r = x_i - x_j``, the Stein kernel is (Fan et al. 2022, App. F.1)
    ``u_ij = k [s_i.s_j + (s_i - s_j).r / l^2 + d / l^2 - |r|^2 / l^4]`` and the estimate is the
    U-statistic ``sum_{i != j} u_ij / (n (n - 1))`` of the squared KSD ``S(P, Q) = E u(X, X')``.
    Being unbiased it can be slightly negative for exact draws of ``Q``.  It is computed in float64
    on the samples' device in ``block_size x block_size`` tiles: memory ``O(block_size^2 + n d)``.

    Parameters
    ----------
    samples : Tensor
        ``(n, d)`` finite draws, ``n >= 2``.
    score_fn : callable or Tensor
        ``grad log Q``: a callable mapping ``(n, d)`` points to ``(n, d)`` scores, or those scores
        precomputed at ``samples``.  Wrap a log-density with :func:`score_from_log_density`.
    bandwidth : float, optional
        Kernel length-scale ``l > 0``.  Default (median heuristic): the median (the lower middle
        value for an even count, as :func:`torch.median`) of the ``m (m - 1) / 2`` Euclidean
        distances between distinct points among the first ``m = min(n, 2000)`` samples; no RNG.
    block_size : int
        Rows and columns per tile, ``>= 1``; the result does not depend on it beyond rounding.
    return_se : bool
        Also return the standard error ``sqrt(4 (n - 2) zeta1 + 2 zeta2) / sqrt(n (n - 1))``, with
        ``zeta1`` the sample variance over ``i`` of ``mean_{j != i} u_ij`` and ``zeta2`` the variance
        of ``u_ij`` over ``i != j``.  For exact draws (a degenerate U-statistic) it is conservative.

    Returns
    -------
    float or (float, float)
        The estimate, and its standard error when ``return_se``.

    Raises
    ------
    TypeError
        If ``samples`` or the scores are not tensors, or ``block_size`` is not an int.
    ValueError
        On a wrong shape, ``n < 2``, non-finite samples or scores, ``bandwidth <= 0``,
        ``block_size < 1``, or a zero median distance.

    Examples
    --------
    >>> import torch
    >>> from wgfinfer.diagnostics import ksd
    >>> x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    >>> exact, se = ksd(x, lambda y: -y, return_se=True)  # draws of the target N(0, I)
    >>> shifted = ksd(x + 1.0, lambda y: -y)  # draws of N((1, 1), I)
    >>> abs(exact) < 4 * se < shifted
    True
    """
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if samples.ndim != 2:
        raise ValueError(f"samples must have shape (n, d), got {tuple(samples.shape)}")
    n, d = samples.shape
    if n < 2:
        raise ValueError(f"ksd needs at least 2 samples, got n = {n}")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples contain non-finite values")
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be positive and finite, got {bandwidth}")
    scores = score_fn if isinstance(score_fn, Tensor) else score_fn(samples)
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.shape != samples.shape:
        raise ValueError(f"scores shape {tuple(scores.shape)} does not match samples shape {(n, d)}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain non-finite values")
    x = samples.detach().double()
    x = x - x.mean(0)  # u depends on x only through x_i - x_j; centring limits cancellation below
    s = scores.detach().to(device=x.device, dtype=torch.float64)
    if bandwidth is None:
        bandwidth = float(torch.pdist(x[:2000]).median())
        if bandwidth <= 0:
            raise ValueError("median pairwise distance is zero (duplicate samples); pass a bandwidth")
    inv_l2 = 1.0 / bandwidth**2
    xx, sx = x.square().sum(1), (s * x).sum(1)
    row_sums = torch.zeros(n, dtype=torch.float64, device=x.device)
    total = total_sq = torch.zeros((), dtype=torch.float64, device=x.device)
    for a in range(0, n, block_size):
        ia = slice(a, min(a + block_size, n))
        xa, sa = x[ia], s[ia]
        for b in range(a, n, block_size):  # u is symmetric: upper block triangle only
            ib = slice(b, min(b + block_size, n))
            xb, sb = x[ib], s[ib]
            sq_dist = (xx[ia, None] + xx[None, ib] - 2 * xa @ xb.T).clamp_min(0)
            s_dot_r = sx[ia, None] + sx[None, ib] - sa @ xb.T - xa @ sb.T  # (s_i - s_j).(x_i - x_j)
            u = torch.exp(-0.5 * inv_l2 * sq_dist) * (
                sa @ sb.T + inv_l2 * (s_dot_r + d) - inv_l2**2 * sq_dist
            )
            if a == b:
                u.fill_diagonal_(0.0)
            else:
                row_sums[ib] += u.sum(0)
            row_sums[ia] += u.sum(1)
            total = total + (1.0 if a == b else 2.0) * u.sum()
            total_sq = total_sq + (1.0 if a == b else 2.0) * u.square().sum()
    pairs = n * (n - 1)
    estimate = float(total) / pairs
    if not return_se:
        return estimate
    zeta1 = float((row_sums / (n - 1)).var())
    zeta2 = max(float(total_sq) / pairs - estimate**2, 0.0)
    return estimate, math.sqrt(max(4 * (n - 2) * zeta1 + 2 * zeta2, 0.0) / pairs)

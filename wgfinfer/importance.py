"""Importance-sampling checks and corrections for a trained flow.

A trained flow ``q`` gives draws ``x ~ q`` together with their exact log-density ``log q(x)``, and the
target gives an unnormalised log-density ``lp(x)``.  The log importance weights
``log_weights = lp - log_q`` are all that is needed to

* judge how well ``q`` covers the target (PSIS Pareto k-hat, importance-sampling ESS),
* estimate the log normalising constant ``log Z`` of the target, since ``E_q[exp(lp - log q)] = Z``,
* correct the draws towards the target, by PSIS resampling or by an independence Metropolis-Hastings
  chain that uses the flow's draws as proposals.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from wgfinfer.convert import pareto_smoothed_log_weights
from wgfinfer.errors import ImportanceWarning

khat_warning_threshold = 0.7
"""Pareto k-hat above which importance weights are deemed unreliable (as in Stan's Pathfinder)."""


def _as_log_weights(log_weights: Any) -> np.ndarray:
    """Check ``log_weights`` and return them as a float64 NumPy vector."""
    if isinstance(log_weights, torch.Tensor):
        log_weights = log_weights.detach().to("cpu", torch.float64).numpy()
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 1:
        raise ValueError(f"log_weights must be 1-D (one entry per draw), got shape {lw.shape}")
    n = lw.shape[0]
    if n < 2:
        raise ValueError(f"log_weights needs at least 2 draws, got {n}")
    n_nan = int(np.isnan(lw).sum())
    if n_nan:
        raise ValueError(f"log_weights contain {n_nan} NaN value(s) out of {n}; check lp and log_q")
    n_posinf = int(np.isposinf(lw).sum())
    if n_posinf:
        raise ValueError(f"log_weights contain {n_posinf} +inf value(s) out of {n}; check lp and log_q")
    n_neginf = int(np.isneginf(lw).sum())
    if n_neginf == n:
        raise ValueError(f"all {n} log_weights are -inf (every draw has zero weight under the target)")
    return lw


def _psis(lw: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights (``logsumexp == 0``) and Pareto k-hat, via ArviZ.

    The draws are iid from ``q``, so the relative efficiency is ``r_eff = 1``. Too few draws for a tail
    fit give k = inf. All-equal weights (``q`` proportional to the target) give k = -inf: there is no
    tail to fit, and ArviZ would otherwise report inf (0.x) or raise (>= 1.0).  The ArviZ call itself
    is :func:`wgfinfer.convert.pareto_smoothed_log_weights`.
    """
    if lw.min() == lw.max():
        return np.full_like(lw, -math.log(lw.shape[0])), -math.inf
    return pareto_smoothed_log_weights(lw)


def importance_diagnostics(log_weights: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Diagnostics of importance weights ``w = exp(lp - log_q)`` of iid draws from the flow ``q``.

    Parameters
    ----------
    log_weights : torch.Tensor or numpy.ndarray
        1-D log importance weights ``lp(x_i) - log q(x_i)``. ``-inf`` (zero weight) is allowed, NaN and
        ``+inf`` are not.

    Returns
    -------
    dict
        ``"khat"``: PSIS Pareto k-hat (ArviZ); above 0.7 the weights are unreliable; inf when there are
        too few draws for a tail fit (n <= 20 with ArviZ 0.x), -inf when all weights are equal.
        ``"ess_is"``: importance-sampling effective sample size ``(sum w)^2 / sum w^2``.
        ``"ess_is_fraction"``: ``ess_is / n``.
        ``"log_evidence"``: ``log Z_hat = logsumexp(log_weights) - log n``.
        ``"log_evidence_se"``: delta-method standard error ``sd(w) / (sqrt(n) mean(w))``.
        ``"n"``: number of draws.

    Raises
    ------
    ValueError
        For non-1-D input, fewer than 2 draws, NaN or ``+inf`` entries, or all entries ``-inf``.
    """
    lw = _as_log_weights(log_weights)
    n = lw.shape[0]
    _, khat = _psis(lw)
    w, estimate, se = _evidence(lw)
    sum_w = float(w.sum())
    ess = sum_w * sum_w / float(np.dot(w, w))
    return {
        "khat": khat,
        "ess_is": ess,
        "ess_is_fraction": ess / n,
        "log_evidence": estimate,
        "log_evidence_se": se,
        "n": n,
    }


def log_evidence(log_weights: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """``log Z_hat = logsumexp(log_weights) - log n`` and its delta-method standard error
    ``sd(w) / (sqrt(n) mean(w))``, for the same inputs as :func:`importance_diagnostics`."""
    _, estimate, se = _evidence(_as_log_weights(log_weights))
    return estimate, se


def importance_kl(neg_log_weights: torch.Tensor) -> tuple[float, float]:
    """Importance-sampling estimate of ``KL(q || p)`` from draws of ``q``, with its standard error.

    With ``v = log q - log p~`` at ``m`` draws of ``q`` (``p~`` unnormalised, ``Z`` its integral),
    ``E_q[v] = KL - log Z`` and ``E_q[exp(-v)] = Z``, so ``mean(v) + log mean(exp(-v))`` estimates the
    KL itself; an additive constant in ``v`` cancels.  The standard error comes from the influence
    function ``(v - mean v) + exp(-v) / mean(exp(-v)) - 1``, whose linear terms cancel: near
    ``q = p`` the estimate is about ``var(v) / 2`` and much more precise than ``mean(v)`` alone.  Like
    every estimate from draws of ``q`` it cannot see mass that ``q`` misses (it is then too low).

    Parameters
    ----------
    neg_log_weights : Tensor
        ``(m,)`` values of ``log q - log p~``.

    Returns
    -------
    kl, standard_error : float
    """
    v = neg_log_weights.double()
    m = v.shape[0]
    log_mean_w = torch.logsumexp(-v, 0) - math.log(m)
    kl = float(v.mean() + log_mean_w)
    influence = (v - v.mean()) + torch.exp(-v - log_mean_w) - 1.0
    se = float(influence.std() / math.sqrt(m)) if m > 1 else math.nan
    return kl, se


def _evidence(lw: np.ndarray) -> tuple[np.ndarray, float, float]:
    # Weights scaled by the largest, w in [0, 1] with max 1: no overflow, underflow only of weights
    # negligible next to the largest, and ESS and sd/mean are scale-free (exact n for equal weights).
    n = lw.shape[0]
    w = np.exp(lw - lw.max())
    se = float(np.std(w, ddof=1) / (math.sqrt(n) * np.mean(w)))
    return w, float(logsumexp(lw) - math.log(n)), se


def warn_if_unreliable(diagnostics: dict) -> None:
    """Emit an :class:`~wgfinfer.errors.ImportanceWarning` (a ``UserWarning``) when the Pareto k-hat in
    ``diagnostics`` exceeds ``khat_warning_threshold``.

    Parameters
    ----------
    diagnostics : dict
        Output of :func:`importance_diagnostics`.
    """
    khat = diagnostics["khat"]
    if khat > khat_warning_threshold:
        warnings.warn(
            f"Pareto k-hat = {khat:.2f} > {khat_warning_threshold}: the importance weights lp - log q have "
            "a heavy right tail, i.e. the flow under-covers the target (it puts too little mass where the "
            "target has mass), so importance-weighted estimates, the log-evidence and PSIS resampling are "
            "unreliable. Train longer or use a larger flow, widen the initial distribution, and use "
            'correct="imh" results with care (the chain will stick on rare high-weight draws). Stan\'s '
            "Pathfinder uses the same 0.7 threshold.",
            ImportanceWarning,
            stacklevel=2,
        )


def psis_resample(
    log_weights: torch.Tensor | np.ndarray, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Indices of draws resampled with replacement with PSIS-smoothed normalised weights.

    Parameters
    ----------
    log_weights : torch.Tensor or numpy.ndarray
        1-D log importance weights ``lp - log_q`` of iid draws from the flow.
    num_samples : int
        Number of indices to draw (positive).
    generator : torch.Generator
        Source of randomness; its device is used for the draw.

    Returns
    -------
    torch.Tensor
        int64 indices of shape ``(num_samples,)``, on the device of ``log_weights`` if it is a tensor,
        else on the CPU.
    """
    lw = _as_log_weights(log_weights)
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    smoothed, _ = _psis(lw)
    # Inverse-CDF multinomial sampling (no 2**24 category limit, unlike torch.multinomial).
    cdf = torch.as_tensor(np.cumsum(np.exp(smoothed - smoothed.max())), device=generator.device)
    u = torch.rand(int(num_samples), generator=generator, dtype=torch.float64, device=generator.device)
    idx = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=lw.shape[0] - 1)
    return idx.to(log_weights.device if isinstance(log_weights, torch.Tensor) else "cpu")


def independence_metropolis(
    log_weights: torch.Tensor | np.ndarray, generator: torch.Generator, num_samples: int | None = None
) -> tuple[torch.Tensor, float]:
    """Independence Metropolis-Hastings chain with the flow's iid draws as proposals.

    The chain starts at draw 0; at step ``i`` it proposes draw ``i`` and accepts it with probability
    ``min(1, w_i / w_current)``, ``w = exp(lp - log q)``. Because ``log q`` is exact, this chain leaves
    the target ``exp(lp) / Z`` invariant whatever the quality of the flow; a poor flow shows up as a low
    acceptance rate and long runs of repeated states.

    Parameters
    ----------
    log_weights : torch.Tensor or numpy.ndarray
        1-D log importance weights ``lp - log_q`` of iid draws from the flow, in proposal order.
    generator : torch.Generator
        Source of the uniform draws for the accept/reject decisions.
    num_samples : int, optional
        Chain length, ``2 <= num_samples <= n``; by default all ``n`` draws are used.

    Returns
    -------
    indices : torch.Tensor
        int64 indices of the chain states into the draws, shape ``(num_samples,)``, on the device of
        ``log_weights`` if it is a tensor, else on the CPU.
    acceptance_rate : float
        Fraction of the ``num_samples - 1`` proposals accepted.
    """
    lw = _as_log_weights(log_weights)
    m = lw.shape[0] if num_samples is None else num_samples
    if int(m) != m or not 2 <= m <= lw.shape[0]:
        raise ValueError(f"num_samples must be an integer in [2, {lw.shape[0]}], got {num_samples}")
    m = int(m)
    log_u = torch.rand(m, generator=generator, dtype=torch.float64, device=generator.device).log()
    # accept proposal i iff log u_i < lw_i - lw_current, i.e. lw_current < lw_i - log u_i =: threshold_i,
    # vectorised; only the O(n) scalar scan over the current state stays sequential. A NaN threshold
    # (lw_i = -inf and u_i = 0) rejects, as does a zero-weight proposal from a zero-weight state.
    with np.errstate(invalid="ignore"):
        threshold = (lw[:m] - log_u.cpu().numpy()).tolist()
    lw_list = lw[:m].tolist()
    states = [0] * m
    current, current_lw = 0, lw_list[0]
    for i in range(1, m):
        if current_lw < threshold[i]:
            current, current_lw = i, lw_list[i]
        states[i] = current
    idx = torch.tensor(states, dtype=torch.int64)
    accepted = int(np.count_nonzero(np.diff(idx.numpy())))
    device = log_weights.device if isinstance(log_weights, torch.Tensor) else "cpu"
    return idx.to(device), accepted / (m - 1)

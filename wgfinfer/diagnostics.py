"""Sample-based diagnostics of a trained flow against a target."""

from __future__ import annotations

import math

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
    ``p`` (seed 002, eq. 22 and §4.1); both densities must be normalised.  The flow gives ``log q``
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

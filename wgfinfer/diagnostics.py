"""Sample-based diagnostics of a trained flow against a target."""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
    forward = (log_q_at_q - log_p_at_q).double()
    backward = (log_p_at_p - log_q_at_p).double()
    for name, t in (("draws of q", forward), ("draws of p", backward)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"non-finite log-density differences at {int((~torch.isfinite(t)).sum())} {name}"
            )
    estimate = float(forward.mean() + backward.mean())
    se = math.sqrt(float(forward.var()) / forward.numel() + float(backward.var()) / backward.numel())
    return estimate, se

"""Metropolis-Hastings at observation times with flow proposals (Mokrov 2022 §3.4, eqs. 18-21).

The filtering density at ``t_k`` is, at a point ``x_k`` with pre-images ``x_j`` under the JKO maps,

    p(x_k | Y_1:k)  prop. to  p_0(x_0) prod_tau p(Y_tau | x_(tau)) / prod_j det grad B_j(x_(j-1))   (eq. 18)

where ``x_(tau)`` is the trajectory's point at observation time ``t_tau``.  A proposal made by pushing a
base point ``y_0`` through the maps has density ``p_0(y_0) / prod_j det``, so in the acceptance ratio
every determinant cancels (eq. 20) and only observation likelihoods along the two trajectories remain:

* ``proposal="independent"`` (Mokrov's choice, ``xi_x = p_0``, eq. 21):
  ``log alpha = sum_tau [log p(Y_tau | y_(tau)) - log p(Y_tau | x_(tau))]``;
* ``proposal="latent_rw"`` (beyond Mokrov 2022: a symmetric random walk ``y_0 = x_0 + s eps`` on the base
  point, eq. 20 with a symmetric ``xi``): the same plus ``log p_0(y_0) - log p_0(x_0)``.  The step
  ``s`` adapts during warm-up only, towards an acceptance rate of 0.3.

Chains are run in parallel as one batch; randomness comes from an explicit generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer.filtering.models import Observations
from wgfinfer.flow import sample_distribution
from wgfinfer.importance import log_evidence as importance_log_evidence

PROPOSALS = ("independent", "latent_rw")


@dataclass(frozen=True)
class MCMCSettings:
    """Metropolis-Hastings options of a filter (chains, warm-up, thinning, proposal)."""

    n_chains: int
    warmup: int
    thin: int
    proposal: str
    step_scale: float


@dataclass
class FlowTrajectories:
    """The maps of a filter run and where the observation times fall among them.

    Attributes
    ----------
    base : Distribution
        ``p_0``, the law of ``X_0``.
    maps : list of nn.Module
        JKO maps from time 0 on (each has ``transport``).
    observations : Observations
    obs_after_map : list of int
        ``obs_after_map[tau]``: number of maps applied when observation ``tau`` is made.
    dtype : torch.dtype, optional
        Dtype of the maps; base draws are cast to it (``None``: the base's own).
    """

    base: Distribution
    maps: list[nn.Module]
    observations: Observations
    obs_after_map: list[int]
    dtype: torch.dtype | None = None

    @torch.no_grad()
    def push(self, z: Tensor, n_maps: int, n_obs: int) -> tuple[Tensor, Tensor]:
        """Push base points through ``n_maps`` maps; return the end points and
        ``sum_{tau < n_obs} log p(Y_tau | x_(tau))`` along each trajectory."""
        x = z
        log_weight = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for tau in range(n_obs):
            if self.obs_after_map[tau] == 0:
                log_weight = log_weight + self.observations.log_likelihood(tau, x)
        for j in range(n_maps):
            x = self.maps[j].transport(x)
            for tau in range(n_obs):
                if self.obs_after_map[tau] == j + 1:
                    log_weight = log_weight + self.observations.log_likelihood(tau, x)
        return x, log_weight

    def draw_base(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        z = sample_distribution(self.base, n, generator, device)
        return z if self.dtype is None else z.to(self.dtype)


@dataclass
class ChainOutput:
    """Kept states of the chains: ``x`` (end points), ``z`` (base points), their log-weights."""

    x: Tensor
    z: Tensor
    log_weight: Tensor
    acceptance_rate: float
    step_scale: float | None


def _sweep(
    paths: FlowTrajectories,
    state: tuple[Tensor, Tensor, Tensor],
    n_maps: int,
    n_obs: int,
    proposal: str,
    scale: float,
    generator: torch.Generator,
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
    x, z, log_w = state
    n = z.shape[0]
    if proposal == "independent":
        z_new = paths.draw_base(n, generator, z.device)
        x_new, log_w_new = paths.push(z_new, n_maps, n_obs)
        log_alpha = log_w_new - log_w
    else:
        eps = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
        z_new = z + scale * eps
        x_new, log_w_new = paths.push(z_new, n_maps, n_obs)
        log_alpha = log_w_new - log_w + paths.base.log_prob(z_new) - paths.base.log_prob(z)
    u = torch.rand(n, generator=generator, dtype=z.dtype).to(z.device)
    accept = torch.log(u) < log_alpha
    keep = accept.unsqueeze(-1)
    new_state = (
        torch.where(keep, x_new, x),
        torch.where(keep, z_new, z),
        torch.where(accept, log_w_new, log_w),
    )
    return new_state, accept


def metropolis_hastings(
    paths: FlowTrajectories,
    n_maps: int,
    n_obs: int,
    n_chains: int,
    n_keep: int,
    warmup: int,
    thin: int,
    proposal: str,
    generator: torch.Generator,
    device: torch.device,
    step_scale: float = 0.5,
) -> ChainOutput:
    """Run ``n_chains`` chains targeting eq. 18 at the time reached after ``n_maps`` maps, with the
    likelihoods of the first ``n_obs`` observations; keep every ``thin``-th state after ``warmup``
    sweeps until ``n_keep`` states are collected."""
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    z = paths.draw_base(n_chains, generator, device)
    x, log_w = paths.push(z, n_maps, n_obs)
    state = (x, z, log_w)
    scale = float(step_scale)
    for _ in range(warmup):
        state, accept = _sweep(paths, state, n_maps, n_obs, proposal, scale, generator)
        if proposal == "latent_rw":  # Robbins-Monro-like scale adaptation, warm-up only
            scale = min(max(scale * math.exp(float(accept.double().mean()) - 0.3), 1e-4), 10.0)
    kept: list[tuple[Tensor, Tensor, Tensor]] = []
    accepted = proposed = 0
    n_sweeps = thin * math.ceil(n_keep / n_chains)
    for sweep in range(n_sweeps):
        state, accept = _sweep(paths, state, n_maps, n_obs, proposal, scale, generator)
        accepted += int(accept.sum())
        proposed += accept.numel()
        if (sweep + 1) % thin == 0:
            kept.append(state)
    x_all, z_all, w_all = (torch.cat(parts)[:n_keep] for parts in zip(*kept, strict=True))
    return ChainOutput(
        x_all, z_all, w_all, accepted / max(proposed, 1), scale if proposal == "latent_rw" else None
    )


@torch.no_grad()
def log_evidence(
    paths: FlowTrajectories, n_maps: int, n_obs: int, n_draws: int, generator: torch.Generator, device
) -> tuple[float, float]:
    """``log p(Y_1:n_obs)`` by importance sampling with the flow's proposals, and its standard error.

    Base draws pushed through the maps have density ``p_0 / prod det`` and the unnormalised filtering
    density (eq. 18) integrates to ``p(Y_1:k)`` when the maps follow the Fokker-Planck flow, so the
    weights are the observation likelihoods along the trajectories:
    ``log Z-hat = logmeanexp(sum_tau log p(Y_tau | y_(tau)))``; the standard error is the delta
    method's ``sd(w) / (sqrt(n) mean(w))``.
    """
    z = paths.draw_base(n_draws, generator, device)
    _, log_w = paths.push(z, n_maps, n_obs)
    return importance_log_evidence(log_w)

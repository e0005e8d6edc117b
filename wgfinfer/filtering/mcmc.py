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

**Cached proposals** (:class:`ProposalPool`).  An independence proposal is a base draw pushed through
every map so far, so pushing fresh draws costs ``n_maps`` map evaluations each and a filter's total
cost grows with the square of the number of observations.  A pool holds base draws already pushed
through the maps of earlier intervals, with the log-likelihoods of the observations along their
trajectories; at each observation time it is pushed through the newest maps only (adding the newest
likelihoods), and the chains take their proposals from it in a fresh random order, each pool entry at
most once per run.  The acceptance ratio is computed from the same quantities as with fresh pushes
(a cached trajectory's log-likelihood equals the one a push from its base point gives, which the
tests check), so the cost per observation is the pool size times the maps of one interval, whatever
the number of observations.  The pool's draws are the same at every observation time; the maps of
later intervals were trained on chain states that came from the pool, so conditional on the maps the
pool is not exactly a fresh sample of ``p_0`` (each draw's weight in the training is about one in
the pool size).  The random-walk proposal moves to new base points, which have no cached trajectory,
and keeps its cost of ``n_maps`` per proposal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer.filtering.models import Observations
from wgfinfer.flow import sample_distribution
from wgfinfer.importance import log_evidence as importance_log_evidence
from wgfinfer.nn.icnn import DenseICNN, FrozenTransport

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
    map_evaluations: int = field(default=0, compare=False)
    """Points pushed through one map so far, summed over maps (the cost counter of the tests)."""
    _frozen: dict[int, tuple[nn.Module, list[Tensor], list[int], FrozenTransport]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def _transport(self, j: int, x: Tensor) -> Tensor:
        """Map ``j`` applied to ``x``; a :class:`DenseICNN` through a :class:`FrozenTransport`
        snapshot, taken again whenever the map or any of its parameters has changed."""
        psi = self.maps[j]
        if not isinstance(psi, DenseICNN):
            return psi.transport(x)
        cached = self._frozen.get(j)
        # Module.parameters() is slow beside a 256-point push: the cache keeps the tensors
        if cached is None or cached[0] is not psi or cached[2] != [p._version for p in cached[1]]:
            parameters = list(psi.parameters())
            cached = (psi, parameters, [p._version for p in parameters], psi.frozen_transport())
            self._frozen[j] = cached
        return cached[3](x)

    @torch.no_grad()
    def push(self, z: Tensor, n_maps: int, n_obs: int) -> tuple[Tensor, Tensor]:
        """Push base points through ``n_maps`` maps; return the end points and
        ``sum_{tau < n_obs} log p(Y_tau | x_(tau))`` along each trajectory."""
        log_weight = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        return self.extend(z, log_weight, 0, 0, n_maps, n_obs)

    @torch.no_grad()
    def extend(
        self, x: Tensor, log_weight: Tensor, from_maps: int, from_obs: int, n_maps: int, n_obs: int
    ) -> tuple[Tensor, Tensor]:
        """Continue trajectories already pushed through ``from_maps`` maps, whose ``log_weight``
        holds the likelihoods of the first ``from_obs`` observations, to ``n_maps`` maps and
        ``n_obs`` observations.

        ``extend(push(z, m, k)..., m, k, n, K)`` equals ``push(z, n, K)``: the same maps are applied
        to the same points and the same likelihoods are added in the same order.

        Raises
        ------
        ValueError
            If the counts go backwards, or an observation still to add was made before map
            ``from_maps`` (its trajectory point is no longer at hand).
        """
        if not (
            0 <= from_maps <= n_maps <= len(self.maps) and 0 <= from_obs <= n_obs <= len(self.obs_after_map)
        ):
            raise ValueError(
                f"cannot extend trajectories from {from_maps} maps and {from_obs} observations to "
                f"{n_maps} maps and {n_obs} observations ({len(self.maps)} maps, "
                f"{len(self.obs_after_map)} observations placed)"
            )
        pending = list(range(from_obs, n_obs))
        for tau in pending:
            if self.obs_after_map[tau] < from_maps:
                raise ValueError(
                    f"observation {tau} was made after {self.obs_after_map[tau]} maps, before the "
                    f"{from_maps} maps these trajectories have been pushed through"
                )
        for tau in pending:
            if self.obs_after_map[tau] == from_maps:
                log_weight = log_weight + self.observations.log_likelihood(tau, x)
        for j in range(from_maps, n_maps):
            x = self._transport(j, x)
            self.map_evaluations += int(x.shape[0])
            for tau in pending:
                if self.obs_after_map[tau] == j + 1:
                    log_weight = log_weight + self.observations.log_likelihood(tau, x)
        return x, log_weight

    def draw_base(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        z = sample_distribution(self.base, n, generator, device)
        return z if self.dtype is None else z.to(self.dtype)


POOL_BLOCK = 1 << 12
"""A pool is pushed through a new map in blocks of this many points (bounds the autograd memory)."""


class ProposalPool:
    """Base draws of ``p_0`` pushed through the maps so far, with their trajectories'
    log-likelihoods: the independence proposals of every Metropolis-Hastings run of a filter.

    Parameters
    ----------
    z : Tensor
        ``(n, d)`` base draws.
    x : Tensor, optional
        Their end points after ``n_maps`` maps (default: ``z``, no map applied).
    log_weight : Tensor, optional
        ``(n,)`` sums of the log-likelihoods of the first ``n_obs`` observations along each
        trajectory (default: zeros).
    n_maps, n_obs : int
        How far the trajectories have been pushed and weighted.
    """

    def __init__(
        self,
        z: Tensor,
        x: Tensor | None = None,
        log_weight: Tensor | None = None,
        n_maps: int = 0,
        n_obs: int = 0,
    ) -> None:
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[0] == 0:
            raise ValueError(f"z must be a non-empty (n, d) tensor, got {getattr(z, 'shape', type(z))}")
        self.z = z
        self.x = z if x is None else x
        self.log_weight = (
            torch.zeros(z.shape[0], dtype=z.dtype, device=z.device) if log_weight is None else log_weight
        )
        if self.x.shape != z.shape or self.log_weight.shape != (z.shape[0],):
            raise ValueError(
                f"x must have the shape of z {tuple(z.shape)} and log_weight ({z.shape[0]},), got "
                f"{tuple(self.x.shape)} and {tuple(self.log_weight.shape)}"
            )
        self.n_maps, self.n_obs = int(n_maps), int(n_obs)

    @classmethod
    def draw(
        cls, paths: FlowTrajectories, n: int, generator: torch.Generator, device: torch.device
    ) -> ProposalPool:
        """``n`` fresh base draws, pushed through no map yet."""
        return cls(paths.draw_base(n, generator, device))

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def advance(self, paths: FlowTrajectories, n_maps: int, n_obs: int) -> None:
        """Push the pool through maps ``n_maps`` and beyond up to ``n_maps`` and add the
        likelihoods of observations up to ``n_obs`` (see :meth:`FlowTrajectories.extend`)."""
        if (n_maps, n_obs) == (self.n_maps, self.n_obs):
            return
        xs, ws = [], []
        for start in range(0, len(self), POOL_BLOCK):
            block = slice(start, start + POOL_BLOCK)
            x, w = paths.extend(self.x[block], self.log_weight[block], self.n_maps, self.n_obs, n_maps, n_obs)
            xs.append(x)
            ws.append(w)
        self.x, self.log_weight = torch.cat(xs), torch.cat(ws)
        self.n_maps, self.n_obs = n_maps, n_obs


def proposals_needed(n_chains: int, n_keep: int, warmup: int, thin: int) -> int:
    """Proposals of one run of :func:`metropolis_hastings` with independence proposals, counting
    the chains' starting points: the pool size that uses every entry at most once per run."""
    return n_chains * (1 + warmup + thin * math.ceil(n_keep / n_chains))


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
    cached: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
    x, z, log_w = state
    n = z.shape[0]
    if cached is not None:  # independence proposals from the pool
        z_new, x_new, log_w_new = cached
        log_alpha = log_w_new - log_w
    elif proposal == "independent":
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
    pool: ProposalPool | None = None,
    start: tuple[Tensor, Tensor, Tensor] | None = None,
) -> ChainOutput:
    """Run ``n_chains`` chains targeting eq. 18 at the time reached after ``n_maps`` maps, with the
    likelihoods of the first ``n_obs`` observations; keep every ``thin``-th state after ``warmup``
    sweeps until ``n_keep`` states are collected.

    ``start`` gives the chains' starting states ``(x, z, log_weight)``, ``n_chains`` rows already
    pushed through the ``n_maps`` maps and weighted by the first ``n_obs`` likelihoods (for instance
    the previous observation's draws carried on by :meth:`FlowTrajectories.extend`); by default the
    chains start from base draws (or pool entries).

    With a ``pool`` (independence proposals only) the pool is first advanced to ``n_maps`` maps and
    ``n_obs`` observations, then the chains start from, and propose, its entries in a random order
    (each at most once); it needs :func:`proposals_needed` entries.  Without one every proposal is a
    fresh base draw pushed through all ``n_maps`` maps.
    """
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    n_sweeps = thin * math.ceil(n_keep / n_chains)
    chunks = None
    if pool is not None:
        if proposal != "independent":
            raise ValueError(f"a proposal pool serves independence proposals only, not {proposal!r}")
        needed = proposals_needed(n_chains, n_keep, warmup, thin)
        if len(pool) < needed:
            raise ValueError(
                f"the proposal pool holds {len(pool)} draws, fewer than the {needed} proposals of this run "
                f"({n_chains} chains x (1 + {warmup} warm-up + {n_sweeps} kept sweeps))"
            )
        pool.advance(paths, n_maps, n_obs)
        order = torch.randperm(len(pool), generator=generator)[:needed].to(pool.z.device)
        chunks = iter(order.split(n_chains))

    def take() -> tuple[Tensor, Tensor, Tensor]:
        idx = next(chunks)  # type: ignore[arg-type]
        return pool.z[idx], pool.x[idx], pool.log_weight[idx]  # type: ignore[union-attr]

    if start is not None:
        x, z, log_w = start
        if x.shape[0] != n_chains or z.shape != x.shape or log_w.shape != (n_chains,):
            raise ValueError(
                f"start must hold {n_chains} states (x, z, log_weight), got shapes "
                f"{tuple(x.shape)}, {tuple(z.shape)}, {tuple(log_w.shape)}"
            )
        if chunks is not None:
            take()  # the pool entry a chain would have started from stays unused
    elif chunks is not None:
        z, x, log_w = take()
    else:
        z = paths.draw_base(n_chains, generator, device)
        x, log_w = paths.push(z, n_maps, n_obs)
    state = (x, z, log_w)
    scale = float(step_scale)
    for _ in range(warmup):
        cached = take() if chunks is not None else None
        state, accept = _sweep(paths, state, n_maps, n_obs, proposal, scale, generator, cached)
        if proposal == "latent_rw":  # Robbins-Monro-like scale adaptation, warm-up only
            scale = min(max(scale * math.exp(float(accept.double().mean()) - 0.3), 1e-4), 10.0)
    kept: list[tuple[Tensor, Tensor, Tensor]] = []
    accepted = proposed = 0
    for sweep in range(n_sweeps):
        cached = take() if chunks is not None else None
        state, accept = _sweep(paths, state, n_maps, n_obs, proposal, scale, generator, cached)
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

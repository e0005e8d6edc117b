"""``JKOFilter``: JKO flows between observation times, Metropolis-Hastings at them (seed 002 Alg. 3).

On every interval between observation times the filter trains ICNN JKO maps of the diffusion's
Fokker-Planck flow on particles of the current filtering law; at the next observation time it draws
the new filtering law with Metropolis-Hastings whose proposals are base draws pushed through all maps
so far (:mod:`wgfinfer.filtering.mcmc`).  The maps are convex gradients, so the filtering density is
available anywhere by inverting them (eq. 18).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from wgfinfer._validation import check_positive_float, check_positive_int
from wgfinfer.filtering.mcmc import PROPOSALS, FlowTrajectories, log_evidence, metropolis_hastings
from wgfinfer.filtering.models import LangevinDiffusion, Observations, check_t_final
from wgfinfer.filtering.result import FilterResult, MCMCSettings
from wgfinfer.flow import Flow
from wgfinfer.schemes.icnn import ICNNSchemeConfig, as_hidden, icnn_jko_step, new_potential


class JKOFilter:
    """Nonlinear filter for a :class:`LangevinDiffusion` observed at discrete times.

    Parameters
    ----------
    diffusion : LangevinDiffusion
    step_size : float, default 0.1
        JKO step ``h`` (seed value); each interval between observations is split into
        ``round(length / h)`` equal steps (at least one).
    n_chains : int, default 256
        Parallel Metropolis-Hastings chains at each observation time.  The warm-up costs
        ``warmup * n_chains`` proposals, each pushed through every map so far, and dominates the run
        time; the seed runs 1024 chains (its batch size), which makes the warm-up 4 times dearer.
    n_particles : int, optional
        Particles of each filtering law the maps are trained on (default
        ``iters_per_step * batch_size // 4``, at least ``n_chains``).
    warmup : int, default 1000
        Warm-up sweeps of every chain before states are kept (seed: 1000).
    thin : int, default 2
        Keep every ``thin``-th state (seed: every 2nd).
    proposal : {"independent", "latent_rw"}, default "independent"
        Independence proposals through the flow (seed eq. 21) or a random walk on the base point
        (eq. 20 with a symmetric kernel), which keeps acceptance healthy when observations are
        informative.
    step_scale : float, default 0.5
        Initial random-walk step of ``"latent_rw"`` (adapted during warm-up towards 30% acceptance).
    iters_per_step, batch_size, lr, lr_decay, hidden, rank, strong_convexity
        ICNN JKO scheme options (see :class:`wgfinfer.WGFSampler`).
    seed : int, default 0
        Seed of the filter's own generator; no global seed is set.
    dtype, device
        Where the maps and particles live (float64 by default: filtering densities are compared on
        fine grids).
    """

    def __init__(
        self,
        diffusion: LangevinDiffusion,
        step_size: float = 0.1,
        n_chains: int = 256,
        n_particles: int | None = None,
        warmup: int = 1000,
        thin: int = 2,
        proposal: str = "independent",
        step_scale: float = 0.5,
        iters_per_step: int = 200,
        batch_size: int = 512,
        lr: float = 5e-3,
        lr_decay: float = 0.1,
        hidden: Sequence[int] = (64, 64),
        rank: int = 1,
        strong_convexity: float = 1e-3,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(diffusion, LangevinDiffusion):
            raise TypeError(f"diffusion must be a LangevinDiffusion, got {type(diffusion).__name__}")
        if proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.diffusion = diffusion
        self.step_size = check_positive_float("step_size", step_size)
        self.mcmc = MCMCSettings(
            n_chains=check_positive_int("n_chains", n_chains),
            warmup=check_positive_int("warmup", warmup, allow_zero=True),
            thin=check_positive_int("thin", thin),
            proposal=proposal,
            step_scale=check_positive_float("step_scale", step_scale),
        )
        self.config = ICNNSchemeConfig(
            hidden=as_hidden(hidden),
            rank=check_positive_int("rank", rank, allow_zero=True),
            strong_convexity=check_positive_float("strong_convexity", strong_convexity, upper=1.0),
            iters_per_step=check_positive_int("iters_per_step", iters_per_step),
            batch_size=check_positive_int("batch_size", batch_size),
            lr=check_positive_float("lr", lr),
            lr_decay=check_positive_float("lr_decay", lr_decay, upper=1.0, inclusive_upper=True),
        )
        if n_particles is None:
            n_particles = max(self.config.iters_per_step * self.config.batch_size // 4, n_chains)
        self.n_particles = check_positive_int("n_particles", n_particles)
        self.seed = seed
        self.dtype, self.device = dtype, torch.device(device)

    def _check(self, observations: Observations, t_final: float) -> float:
        t_final = check_t_final(observations, t_final)
        probe = torch.zeros(2, self.diffusion.dim, dtype=self.dtype, device=self.device)
        observations.log_likelihood(0, probe)  # shapes and dimension, before any training
        return t_final

    def run(self, observations: Observations, t_final: float) -> FilterResult:
        """Filter ``observations`` from time 0 to ``t_final``.

        Returns
        -------
        FilterResult
            Draws and densities at the observation times and at ``t_final``, MH acceptance rates,
            per-step training history, log marginal likelihood of the observations.

        Raises
        ------
        TypeError, ValueError
            For observations of the wrong type or shape, or observed after ``t_final``.
        TrainingDivergedError
            If a JKO step diverges.
        """
        t_final = self._check(observations, t_final)
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed)
        obs_times = [float(t) for t in observations.times]
        bounds = [0.0, *obs_times] + ([t_final] if t_final > obs_times[-1] else [])
        paths = FlowTrajectories(self.diffusion.initial, [], observations, [], dtype=self.dtype)
        draws: dict[float, torch.Tensor] = {}
        acceptance: dict[float, float] = {}
        history: list[dict] = []
        maps_at: list[int] = []
        particles = paths.draw_base(self.n_particles, generator, self.device).to(self.dtype)
        psi = None
        for segment, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if segment > 0:  # the filtering law at t0 = obs_times[segment - 1]
                out = metropolis_hastings(
                    paths, len(paths.maps), segment, self.mcmc.n_chains, self.n_particles,
                    self.mcmc.warmup, self.mcmc.thin, self.mcmc.proposal, generator, self.device,
                    self.mcmc.step_scale,
                )  # fmt: skip
                particles, draws[t0], acceptance[t0] = out.x, out.x, out.acceptance_rate
            n_steps = max(1, round((t1 - t0) / self.step_size))
            h = (t1 - t0) / n_steps
            for step in range(n_steps):
                if psi is None:
                    psi = new_potential(self.diffusion.dim, self.config, generator, self.dtype, self.device)
                psi, info = icnn_jko_step(
                    psi, particles, self.diffusion.log_density, h, self.config, generator,
                    beta=self.diffusion.beta, step_index=len(paths.maps),
                )  # fmt: skip
                particles = Flow(paths.base, [psi], device=self.device).push(particles)[0]
                paths.maps.append(psi)
                history.append(
                    {
                        "segment": segment,
                        "step": len(paths.maps),
                        "time": t0 + (step + 1) * h,
                        "loss": info.loss,
                        "w2": info.w2,
                        "potential": info.potential,
                        "log_det": info.log_det,
                        "wall_time": info.wall_time,
                    }
                )
            maps_at.append(len(paths.maps))
            if t1 in obs_times:
                paths.obs_after_map.append(len(paths.maps))
        if t_final > obs_times[-1]:
            draws[t_final] = particles
        else:  # t_final is the last observation time: its draws came from no MH run yet
            out = metropolis_hastings(
                paths, len(paths.maps), len(obs_times), self.mcmc.n_chains, self.n_particles,
                self.mcmc.warmup, self.mcmc.thin, self.mcmc.proposal, generator, self.device,
                self.mcmc.step_scale,
            )  # fmt: skip
            draws[t_final], acceptance[t_final] = out.x, out.acceptance_rate
        evidence = log_evidence(paths, len(paths.maps), len(obs_times), 1 << 14, generator, self.device)
        for p in (q for m in paths.maps for q in m.parameters()):
            p.requires_grad_(False)
        return FilterResult(
            paths=paths,
            times=bounds[1:],
            maps_at=maps_at,
            t_final=t_final,
            draws=draws,
            acceptance_rate=acceptance,
            history=history,
            log_evidence=evidence[0],
            log_evidence_se=evidence[1],
            mcmc=self.mcmc,
            seed=self.seed,
            wall_time=time.perf_counter() - start,
        )

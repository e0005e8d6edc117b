"""``JKOFilter``: JKO flows between observation times, Metropolis-Hastings at them (Mokrov 2022,
Algorithm 3).

On every interval between observation times the filter trains ICNN JKO maps of the diffusion's
Fokker-Planck flow on particles of the current filtering law; at the next observation time it draws
the new filtering law with Metropolis-Hastings whose proposals are base draws pushed through all maps
so far, cached from one observation to the next (:mod:`wgfinfer.filtering.mcmc`).  The maps are
convex gradients, so the filtering density is available anywhere by inverting them.  The JKO steps
run through the same loop as the sampler's (:mod:`wgfinfer.run`), with its retries.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from wgfinfer._validation import check_dtype, check_positive_float, check_positive_int, check_seed
from wgfinfer.filtering.mcmc import (
    PROPOSALS,
    FlowTrajectories,
    MCMCSettings,
    ProposalPool,
    log_evidence,
    metropolis_hastings,
    proposals_needed,
)
from wgfinfer.filtering.models import LangevinDiffusion, Observations, check_t_final
from wgfinfer.filtering.result import FilterResult
from wgfinfer.functionals import KLDivergence
from wgfinfer.run import RunState, run_steps
from wgfinfer.schemes import ICNN, as_scheme
from wgfinfer.schemes.icnn import ICNNState

DEFAULT_SCHEME = ICNN(
    hidden=(32, 32),
    iters_per_step=300,
    batch_size=512,
    lr=0.02,
    n_particles=300 * 512 // 4,
    stop_on_plateau=False,
)
"""The filter's ICNN options, chosen by measurement (``benchmarks/filtering.py``, docs/filtering.md,
"How the defaults were chosen"): width 32, 300 iterations of batches of 512 per JKO step at a
learning rate of 0.02 (four times the scheme's own; Mokrov 2022: width 256, 700 iterations of
1024), every iteration run (the plateau stop ended the steps early and missed the wells of the
1-D benchmark), and a pool of 38400 particles per filtering law, a quarter of a step's batches,
which is also the number of Metropolis-Hastings draws at each observation.  With JKO steps of
0.25 this matched the accuracy of the previous default (width 64, learning rate 0.005, steps of
0.1) at about a third of its CPU time."""


class JKOFilter:
    """Nonlinear filter for a :class:`LangevinDiffusion` observed at discrete times.

    Parameters
    ----------
    diffusion : LangevinDiffusion
    scheme : ICNN or "icnn", optional
        The ICNN scheme's options (default :data:`DEFAULT_SCHEME`); its ``pool_size`` is the number
        of particles of each filtering law the maps are trained on and the number of draws of every
        Metropolis-Hastings run (at least ``n_chains``).
    step_size : float, default 0.25
        JKO step ``h`` (Mokrov 2022: 0.1); each interval between observations is split into
        ``round(length / h)`` equal steps (at least one).  The time-discretisation error of steps of
        0.25 is small beside the rest at the default budget (docs/filtering.md: for the exact JKO
        steps of an OU filter, SymKL 0.004 to the continuous-time filter); what larger steps need is
        training that converges, hence the default scheme's learning rate.
    n_chains : int, default 256
        Parallel Metropolis-Hastings chains at each observation time.  The warm-up costs
        ``warmup * n_chains`` proposals; Mokrov (2022) runs 1024 chains (its batch size), which
        makes the warm-up 4 times dearer.
    warmup : int, default 200
        Warm-up sweeps of every chain before states are kept (Mokrov 2022: 1000).  200 is the
        value measured with the other defaults (other values were not compared); after it the
        random walk's acceptance is at its target, 0.30.
    thin : int, default 2
        Keep every ``thin``-th state (Mokrov 2022: every 2nd).
    proposal : {"independent", "latent_rw"}, default "latent_rw"
        A random walk on the base point (a symmetric kernel), which keeps acceptance healthy when
        observations are informative, or independence proposals through the flow (Mokrov 2022),
        cached and a fifth cheaper but with an acceptance that falls with every observation
        (docs/filtering.md, the 1-D benchmark with the default maps and chains: five-path median
        SymKL 0.0136 against 0.0071 for the random walk and 0.0107 for the 10^4-particle
        bootstrap filter).
    step_scale : float, default 0.5
        Initial random-walk step of ``"latent_rw"`` (adapted during warm-up towards 30% acceptance).
    cache_proposals : bool, default True
        Independence proposals from a :class:`~wgfinfer.filtering.mcmc.ProposalPool` of base draws
        pushed through the maps of each interval once, carried from one observation time to the next
        with their trajectories' log-likelihoods: every observation costs the pool
        (:func:`~wgfinfer.filtering.mcmc.proposals_needed` draws) times the maps of one interval, so
        the cost is linear in the number of observations.  ``False`` pushes every proposal through
        every map so far (the cost of observation ``k`` grows with ``k``).  ``"latent_rw"`` always
        pushes its proposals through every map.
    max_retries : int, default 3
        Retries of a diverged JKO step with smaller learning rates.
    warmup_continued : int or None, default 50
        Chains at the second and later observations start from a random subset of the previous
        observation's draws (their trajectories carried on through the maps of the interval in
        between, their random-walk step the one adapted there) and warm up this many sweeps.
        ``None``: every run starts from base draws and warms up ``warmup`` sweeps.  Never more than
        ``warmup`` (a continued chain starts nearer its target than a fresh one).  50 was measured
        on the 1-D benchmark's five paths (docs/filtering.md): the same accuracy as fresh chains
        with 200 sweeps at about two thirds of the Metropolis-Hastings cost.
    seed : int, default 0
        Seed of the filter's own generator; no global seed is set.
    dtype, device
        Where the maps and particles live (float32 by default, about twice as fast as float64, in
        which the default's accuracy was measured; ``log_prob`` evaluates in the maps' dtype).
    """

    def __init__(
        self,
        diffusion: LangevinDiffusion,
        scheme: ICNN | str | None = None,
        *,
        step_size: float = 0.25,
        n_chains: int = 256,
        warmup: int = 200,
        thin: int = 2,
        proposal: str = "latent_rw",
        step_scale: float = 0.5,
        cache_proposals: bool = True,
        max_retries: int = 3,
        warmup_continued: int | None = 50,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(diffusion, LangevinDiffusion):
            raise TypeError(f"diffusion must be a LangevinDiffusion, got {type(diffusion).__name__}")
        if proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
        check_seed(seed)
        check_dtype(dtype)
        self.diffusion = diffusion
        self.scheme: ICNN = DEFAULT_SCHEME if scheme is None else as_scheme(scheme, ("icnn",))  # type: ignore[assignment]
        self.step_size = check_positive_float("step_size", step_size)
        self.mcmc = MCMCSettings(
            n_chains=check_positive_int("n_chains", n_chains),
            warmup=check_positive_int("warmup", warmup, allow_zero=True),
            thin=check_positive_int("thin", thin),
            proposal=proposal,
            step_scale=check_positive_float("step_scale", step_scale),
        )
        if self.scheme.pool_size < n_chains:
            raise ValueError(
                f"the scheme's pool of {self.scheme.pool_size} particles is smaller than "
                f"n_chains={n_chains}: "
                "every chain must contribute draws (raise n_particles or lower n_chains)"
            )
        self.n_particles = self.scheme.pool_size
        if not isinstance(cache_proposals, bool):
            raise TypeError(f"cache_proposals must be True or False, got {cache_proposals!r}")
        self.cache_proposals = cache_proposals
        self.max_retries = check_positive_int("max_retries", max_retries, allow_zero=True)
        self.warmup_continued = (
            None
            if warmup_continued is None
            else check_positive_int("warmup_continued", warmup_continued, allow_zero=True)
        )
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
            For observations of the wrong type or shape, with a time or value that is not finite
            (checked before any training, naming the index), or observed after ``t_final``.
        TrainingDivergedError
            If a JKO step still diverges after ``max_retries`` retries with smaller learning rates
            (each retry is recorded in the step's ``history`` entry under ``retries``); the message
            names the step and its interval between observations.
        """
        t_final = self._check(observations, t_final)
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed)
        obs_times = [float(t) for t in observations.times]
        bounds = [0.0, *obs_times] + ([t_final] if t_final > obs_times[-1] else [])
        paths = FlowTrajectories(self.diffusion.initial, [], observations, [], dtype=self.dtype)
        draws: dict[float, torch.Tensor] = {}
        acceptance: dict[float, float] = {}
        maps_at: list[int] = []
        particles = paths.draw_base(self.n_particles, generator, self.device).to(self.dtype)
        pool = None
        if self.cache_proposals and self.mcmc.proposal == "independent":
            m = self.mcmc
            size = proposals_needed(m.n_chains, self.n_particles, m.warmup, m.thin)
            pool = ProposalPool.draw(paths, size, generator, self.device)
        map_evaluations: dict[float, int] = {}
        previous: tuple[Any, int, int] | None = None  # the last MH output, its maps and observations

        def mh(n_obs: int) -> Any:
            nonlocal previous
            before = paths.map_evaluations
            n_maps, m = len(paths.maps), self.mcmc
            start, warmup, scale = None, m.warmup, m.step_scale
            if previous is not None and self.warmup_continued is not None:
                last, last_maps, last_obs = previous
                pick = torch.randperm(last.x.shape[0], generator=generator)[: m.n_chains].to(last.x.device)
                x, log_w = paths.extend(
                    last.x[pick], last.log_weight[pick], last_maps, last_obs, n_maps, n_obs
                )
                start, warmup = (x, last.z[pick], log_w), min(self.warmup_continued, warmup)
                scale = last.step_scale if last.step_scale is not None else scale
            out = metropolis_hastings(
                paths, n_maps, n_obs, m.n_chains, self.n_particles, warmup, m.thin, m.proposal,
                generator, self.device, scale, pool=pool, start=start,
            )  # fmt: skip
            previous = (out, n_maps, n_obs)
            map_evaluations[obs_times[n_obs - 1]] = paths.map_evaluations - before
            return out

        run = RunState(ICNNState(step=0, particles=particles, log_q=None))
        functional = KLDivergence(self.diffusion.log_density, beta=self.diffusion.beta)
        for segment, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if segment > 0:  # the filtering law at t0 = obs_times[segment - 1]
                out = mh(segment)
                draws[t0], acceptance[t0] = out.x, out.acceptance_rate
                run = dataclasses.replace(  # Bayes changed the law: no free energy to compare with
                    run,
                    scheme_state=dataclasses.replace(run.scheme_state, particles=out.x),
                    last_energy=None,
                )
            n_steps = max(1, round((t1 - t0) / self.step_size))

            def record(entry: dict[str, Any], info: Any, segment: int = segment) -> dict[str, Any]:
                return {"segment": segment, **entry}

            keeps = (
                f"It is a step of the interval from t = {t0:g} to t = {t1:g}; the filter keeps no "
                "result: run it again with a smaller learning rate (JKOFilter(diffusion, "
                "scheme=wgfinfer.ICNN(lr=...))) or a smaller step_size."
            )
            run = run_steps(
                self.scheme, run, functional, (t1 - t0) / n_steps, n_steps, generator,
                max_retries=self.max_retries, start_time=t0, record=record, keeps=keeps,
            )  # fmt: skip
            paths.maps[:] = list(run.scheme_state.maps)
            maps_at.append(len(paths.maps))
            if t1 in obs_times:
                paths.obs_after_map.append(len(paths.maps))
        particles = run.scheme_state.particles
        history = [dict(e) for e in run.history]
        if t_final > obs_times[-1]:
            draws[t_final] = particles
        else:  # t_final is the last observation time: its draws came from no MH run yet
            out = mh(len(obs_times))
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
            map_evaluations=map_evaluations,
        )

"""The bootstrap particle filter (Gordon, Salmond & Smith 1993), the [BBF] baseline of Mokrov 2022 §4.5.

Particles are drawn from the law of ``X_0``, moved with Euler-Maruyama steps of at most ``dt``
between observation times, weighted by the likelihood at each observation and resampled
systematically (one uniform per resampling).  Every random number comes from the filter's own
``torch.Generator``, so a run is reproducible and leaves the global RNG untouched.  The
log-evidence estimate ``sum_k log mean_i w_k^i`` is the log of an unbiased estimate of
``p(Y_1, ..., Y_K)``.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from scipy.stats import gaussian_kde
from torch import Tensor

from wgfinfer._validation import check_positive_float, check_positive_int
from wgfinfer.filtering.models import LangevinDiffusion, Observations, check_t_final, time_index
from wgfinfer.flow import sample_distribution

ESS_WARNING_FRACTION = 0.01
"""A run warns when the effective sample size after weighting falls below this fraction of the
particles (or below :data:`ESS_WARNING_MIN`).  ``ESS / n`` tends to ``1 / (1 + chi^2)`` of the
update (filtering law against prediction), whatever ``n``, so below 1% the observation itself is
the problem: in 1-D with Gaussian prediction and noise, it lies 3.7 standard deviations of ``Y``
out (equal variances), or its noise variance is below 5e-5 of the prediction's.  The weighted law
then rests on a hundredth of the particles, and more particles are the remedy.  The seed's
sine-well problem stays above 18% of the particles for seeds 0-4 (10^4 particles) and above 2.4%
for seeds 0-39 (2000 particles).  In ``d`` dimensions the fractions of the coordinates multiply,
and the warning says that the bootstrap filter degenerates there."""
ESS_WARNING_MIN = 2.0
"""The floor of the warning threshold, for small runs: an ESS below 2 means that one particle
carries more than half of the weight."""


def systematic_resample(log_weights: Tensor, generator: torch.Generator) -> Tensor:
    """Indices of a systematic resampling of ``n`` particles with the given log-weights.

    Parameters
    ----------
    log_weights : Tensor
        ``(n,)`` unnormalised log-weights, at least one finite.
    generator : torch.Generator
        Source of the single uniform ``U``; particle ``i`` is copied once for each point
        ``(U + j) / n``, ``j = 0..n-1``, falling in its slice of the cumulative weights.

    Returns
    -------
    Tensor
        ``(n,)`` int64 indices, sorted.
    """
    if log_weights.ndim != 1 or log_weights.numel() == 0:
        raise ValueError(f"log_weights must be a non-empty 1-D tensor, got shape {tuple(log_weights.shape)}")
    n = log_weights.numel()
    weights = torch.softmax(log_weights.double().cpu(), dim=0)
    cdf = torch.cumsum(weights, dim=0)
    cdf[-1] = 1.0  # guard against round-off
    u = torch.rand(1, generator=generator, dtype=torch.float64)
    positions = (u + torch.arange(n, dtype=torch.float64)) / n
    idx = torch.searchsorted(cdf, positions, right=True)
    return idx.clamp_(max=n - 1).to(log_weights.device)


class ParticleFilterResult:
    """Output of :meth:`BootstrapParticleFilter.run`.

    Attributes
    ----------
    times : list of float
        The observation times, then ``t_final``.
    log_evidence : float
        Estimate of ``log p(Y_1, ..., Y_K)``: the sum of :attr:`log_evidence_increments`.
    log_evidence_increments : list of float
        ``log mean_i exp(logw_k^i)`` at each observation.
    effective_sample_sizes : list of float
        ``(sum w)^2 / sum w^2`` of the weights at each observation, before resampling (a run warns
        when one falls below ``max(ESS_WARNING_FRACTION * n, ESS_WARNING_MIN)``).
    wall_time : float
        Seconds spent in :meth:`BootstrapParticleFilter.run`.
    """

    def __init__(
        self,
        times: list[float],
        samples: list[Tensor],
        increments: list[float],
        ess: list[float],
        wall_time: float,
    ) -> None:
        self.times = times
        self._samples = samples
        self.log_evidence_increments = increments
        self.log_evidence = float(sum(increments))
        self.effective_sample_sizes = ess
        self.wall_time = wall_time

    def sample(self, time: float | None = None) -> Tensor:
        """Equally weighted particles ``(n, d)`` at a stored time.

        Parameters
        ----------
        time : float, optional
            One of :attr:`times` (at an observation time: after resampling); ``None`` (default) is
            ``t_final``.
        """
        return self._samples[time_index(self.times, time)]

    def density_on_grid(self, grid: np.ndarray, time: float | None = None) -> np.ndarray:
        """Gaussian kernel density estimate (``scipy.stats.gaussian_kde``, Scott's rule) on a 1-D grid.

        Parameters
        ----------
        grid : ndarray
            1-D evaluation points.
        time : float, optional
            As in :meth:`sample`.

        Returns
        -------
        ndarray
            The estimate at ``grid``, same shape.
        """
        x = self.sample(time)
        if x.shape[1] != 1:
            raise ValueError(f"density_on_grid needs a 1-D state, got dimension {x.shape[1]}")
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1:
            raise ValueError(f"grid must be 1-D, got shape {grid.shape}")
        kde = gaussian_kde(x[:, 0].detach().cpu().double().numpy())
        return kde(grid)


class BootstrapParticleFilter:
    """Bootstrap particle filter with Euler-Maruyama propagation and systematic resampling.

    Parameters
    ----------
    diffusion : LangevinDiffusion
        The signal process.
    n_particles : int
        Number of particles.
    dt : float
        Largest Euler-Maruyama step.
    seed : int
        Seed of the filter's generator; each call of :meth:`run` restarts from it.
    dtype : torch.dtype
        Floating dtype of the particles.
    device : str or torch.device
        Where the particles live (random numbers are drawn on the CPU generator).
    """

    def __init__(
        self,
        diffusion: LangevinDiffusion,
        n_particles: int = 10_000,
        dt: float = 1e-3,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(diffusion, LangevinDiffusion):
            raise TypeError(f"diffusion must be a LangevinDiffusion, got {type(diffusion).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.diffusion = diffusion
        self.n_particles = check_positive_int("n_particles", n_particles)
        self.dt = check_positive_float("dt", dt)
        self.seed = check_positive_int("seed", seed, allow_zero=True)
        self.dtype = dtype
        self.device = torch.device(device)

    def run(self, observations: Observations, t_final: float) -> ParticleFilterResult:
        """Filter the observations and predict up to ``t_final``.

        Parameters
        ----------
        observations : Observations
            Observation times and likelihood.
        t_final : float
            Final time, at least the last observation time.

        Returns
        -------
        ParticleFilterResult

        Raises
        ------
        ValueError
            If an observation time or value is not finite, if the potential or its gradient is NaN or
            infinite at a particle (naming the time and how many particles), or if every weight is
            zero at an observation.

        Warns
        -----
        UserWarning
            Once per run, if the effective sample size after weighting falls below
            ``max(ESS_WARNING_FRACTION * n_particles, ESS_WARNING_MIN)`` (1% of the particles, at
            least 2) at some observations: the first is named with its ESS.
        """
        t_final = check_t_final(observations, t_final)
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed)
        n = self.n_particles
        x = sample_distribution(self.diffusion.initial, n, generator, self.device)
        x = x.to(dtype=self.dtype, device=self.device)
        times, samples, increments, ess = [], [], [], []
        collapsed: list[int] = []
        threshold = max(ESS_WARNING_FRACTION * n, ESS_WARNING_MIN)
        t = 0.0
        for k, t_k in enumerate(observations.times.tolist()):
            if t_k > t:
                x = self.diffusion.simulate(x, t_k - t, self.dt, generator, start_time=t)
            log_w = observations.log_likelihood(k, x).double()
            total = torch.logsumexp(log_w, dim=0)
            if not bool(torch.isfinite(total)):
                raise ValueError(
                    f"all particle weights are zero or infinite at observation {k} (time {t_k}): "
                    "the filter has lost track (use more particles)"
                )
            increments.append(float(total) - math.log(n))
            ess.append(float(torch.exp(2 * total - torch.logsumexp(2 * log_w, dim=0))))
            if ess[-1] < threshold:
                collapsed.append(k)
            x = x[systematic_resample(log_w, generator)]
            times.append(t_k)
            samples.append(x)
            t = t_k
        if t_final > t:
            x = self.diffusion.simulate(x, t_final - t, self.dt, generator, start_time=t)
        times.append(t_final)
        samples.append(x)
        if collapsed:
            _warn_collapse(collapsed, times, ess, n, threshold)
        return ParticleFilterResult(times, samples, increments, ess, time.perf_counter() - start)


def _warn_collapse(
    collapsed: list[int], times: list[float], ess: list[float], n: int, threshold: float
) -> None:
    k = collapsed[0]
    others = ", ".join(str(i) for i in collapsed[1:6]) + (", ..." if len(collapsed) > 6 else "")
    warnings.warn(
        f"the particle filter's weights collapsed at observation {k} (time {times[k]}): effective sample "
        f"size {ess[k]:.1f} of {n} particles, below {threshold:g}"
        + (f" (also at observation{'s' if len(collapsed) > 2 else ''} {others})" if others else "")
        + ": the filtering law there rests on very few particles. Use more particles (the ESS grows in "
        "proportion), and check the observation and the noise model (an outlier or a much too small "
        "noise does this); result.effective_sample_sizes has every observation's ESS",
        UserWarning,
        stacklevel=3,
    )

"""``FilterResult``: what a JKO filter run leaves behind, and the questions it answers."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wgfinfer._validation import check_positive_int
from wgfinfer._version import __version__
from wgfinfer.filtering.mcmc import FlowTrajectories, metropolis_hastings
from wgfinfer.filtering.models import time_index
from wgfinfer.flow import safe_log_det


@dataclass
class FilterResult:
    """Filtering laws at the observation times and at ``t_final``.

    Attributes
    ----------
    times : list of float
        The observation times, then ``t_final`` if it is later.
    draws : dict of float to Tensor
        The particles of each filtering law produced during the run (MH states at observation
        times, pushed particles at ``t_final``).
    acceptance_rate : dict of float to float
        MH acceptance rate at each time where MH ran.
    history : list of dict
        Per JKO step: ``segment``, ``step``, ``time``, ``loss``, ``w2``, ``potential``, ``log_det``,
        ``wall_time``.
    log_evidence, log_evidence_se : float
        ``log p(Y_1:K)`` by importance sampling with the flow's proposals (see
        :func:`wgfinfer.filtering.mcmc.log_evidence`) and its standard error.
    wall_time : float
        Seconds the run took.
    map_evaluations : dict of float to int
        Points pushed through one map (summed over maps) by the Metropolis-Hastings run at each
        observation time, pool updates included; the cost counter (not stored in save files: empty
        after :meth:`load`).
    """

    paths: FlowTrajectories = field(repr=False)
    times: list[float]
    maps_at: list[int] = field(repr=False)
    t_final: float
    draws: dict[float, Tensor] = field(repr=False)
    acceptance_rate: dict[float, float]
    history: list[dict] = field(repr=False)
    log_evidence: float
    log_evidence_se: float
    mcmc: Any = field(repr=False)
    seed: int = field(repr=False)
    wall_time: float = 0.0
    map_evaluations: dict[float, int] = field(default_factory=dict, repr=False)

    def _index(self, time: float | None) -> int:
        return time_index(self.times, time)

    def _n_obs(self, index: int) -> int:
        t = self.times[index]
        return int((self.paths.observations.times <= t + 1e-12).sum())

    def sample(self, n: int, time: float | None = None, seed: int | None = None) -> Tensor:
        """``n`` fresh draws of the filtering law at ``time`` (``None``: ``t_final``).

        New Metropolis-Hastings chains with the run's settings, proposals through the trained maps;
        ``seed`` makes them reproducible (default: derived from the run's seed).
        """
        n = check_positive_int("n", n)
        i = self._index(time)
        generator = torch.Generator().manual_seed(self.seed + 1 if seed is None else int(seed))
        device = next(self.paths.maps[0].parameters()).device
        m = self.mcmc
        out = metropolis_hastings(
            self.paths, self.maps_at[i], self._n_obs(i), min(m.n_chains, n), n, m.warmup, m.thin,
            m.proposal, generator, device, m.step_scale,
        )  # fmt: skip
        return out.x

    @torch.no_grad()
    def log_prob(
        self, x: Tensor, time: float | None = None, normalized: bool = False, tol: float | None = None
    ) -> Tensor:
        """Log filtering density at ``(n, d)`` points ``x`` (Mokrov 2022 eq. 18), by inverting the maps.

        Unnormalised by default; ``normalized=True`` subtracts this run's estimate of
        ``log p(Y_1:k)`` for the observations up to ``time`` (Monte-Carlo error
        ``log_evidence_se`` at ``t_final``).  NaN, with a warning, where an inversion failed.
        """
        i = self._index(time)
        paths, n_obs = self.paths, self._n_obs(i)
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != paths.base.event_shape[0]:
            raise ValueError(f"x must be a tensor of shape (n, {paths.base.event_shape[0]})")
        reference = next(paths.maps[0].parameters()) if paths.maps else x
        point = x.to(dtype=reference.dtype, device=reference.device)  # the maps' dtype and device
        total = torch.zeros(point.shape[0], dtype=point.dtype, device=point.device)
        ok = torch.ones(point.shape[0], dtype=torch.bool, device=point.device)
        for count in range(self.maps_at[i], 0, -1):
            total = total + self._likelihoods_after(count, n_obs, point)
            psi = paths.maps[count - 1]
            point, converged = psi.inverse(point, tol=tol)
            log_det, factorised = safe_log_det(psi, point)
            total = total - log_det
            ok &= converged & factorised
        total = total + self._likelihoods_after(0, n_obs, point) + paths.base.log_prob(point)
        if normalized:
            total = total - self.log_evidence_at(i)
        if not bool(ok.all()):
            warnings.warn(
                f"inverting the maps did not converge for {int((~ok).sum())} points; their log_prob is NaN",
                RuntimeWarning,
                stacklevel=2,
            )
            total = torch.where(ok, total, torch.full_like(total, float("nan")))
        return total

    def _likelihoods_after(self, count: int, n_obs: int, point: Tensor) -> Tensor:
        out = torch.zeros(point.shape[0], dtype=point.dtype, device=point.device)
        for tau in range(n_obs):
            if self.paths.obs_after_map[tau] == count:
                out = out + self.paths.observations.log_likelihood(tau, point)
        return out

    def log_evidence_at(self, index: int, n_draws: int = 1 << 14) -> float:
        """``log p(Y_1:k)`` for the observations up to ``times[index]`` (fresh importance draws)."""
        from wgfinfer.filtering.mcmc import log_evidence

        if index == len(self.times) - 1:
            return self.log_evidence
        generator = torch.Generator().manual_seed(self.seed + 2)
        return log_evidence(self.paths, self.maps_at[index], self._n_obs(index), n_draws, generator, "cpu")[0]

    def to_inference_data(self, num_samples: int = 1000):
        """Draws at every time as ArviZ data: ``posterior["x"]`` with dims ``(chain, draw, time, x_dim_0)``.

        The draws at different times are marginal draws of each filtering law, stacked; they are not
        joint (smoothing) trajectories.  Attrs carry the acceptance rates and the log-evidence.
        """
        from wgfinfer.convert import build_inference_data

        num_samples = check_positive_int("num_samples", num_samples)
        stacked = torch.stack(
            [self.sample(num_samples, time=t, seed=self.seed + 3) for t in self.times], dim=1
        )
        return build_inference_data(
            posterior={"x": stacked.detach().cpu().double().numpy()[None]},
            dims={"x": ["time", "x_dim_0"]},
            coords={"time": np.asarray(self.times)},
            attrs={
                "inference_library": "wgfinfer",
                "inference_library_version": __version__,
                "method": "jko_filter",
                "proposal": self.mcmc.proposal,
                "acceptance_rate_times": list(self.acceptance_rate),
                "acceptance_rate": list(self.acceptance_rate.values()),
                "log_evidence": self.log_evidence,
                "log_evidence_se": self.log_evidence_se,
                "training_time": self.wall_time,
            },
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the result to a save file, atomically (format ``"wgfinfer-filter-result"``).

        The maps, observation times and values, draws, history, MCMC settings and seed are stored as
        plain tensors and values; the diffusion and observation model are code and are passed again
        to :meth:`load`.
        """
        from wgfinfer.filtering.files import save_filter_result

        save_filter_result(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, diffusion: Any, observations: Any) -> FilterResult:
        """Read a result written by :meth:`save` (``torch.load(..., weights_only=True)``).

        Parameters
        ----------
        path : str or os.PathLike
        diffusion : LangevinDiffusion
            The filtered diffusion, passed again; its dimension (and initial law, when that is a
            normal law) must match the file.
        observations : Observations
            The same observations (times and values are checked against the file).

        Returns
        -------
        FilterResult
            On CPU, ``sample(n, time, seed)`` gives bit-identical draws to the saved result.

        Raises
        ------
        FileNotFoundError, SaveFileError
            For a missing file, or one that is not a readable filter-result file of this format
            version.
        ValueError
            If the diffusion or observations do not match the file.
        """
        from wgfinfer.filtering.files import load_filter_result

        return cls(**load_filter_result(path, diffusion, observations))

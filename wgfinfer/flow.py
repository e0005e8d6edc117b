"""The trained flow: the initial measure and the sequence of JKO maps.

``rho_K = T_K o ... o T_1 # rho_0`` (JKO schemes; ``T_k = grad psi_k`` for ICNN maps), or, for the
PWGF scheme, one snapshot map per step: ``rho_k = T_{theta_k} # rho_0`` (``snapshots=True``).
Pushing draws forward tracks their exact log-density by the change of variables (Mokrov 2022, eq. 13);
the density at an arbitrary point is obtained by inverting every map (Mokrov 2022, eq. 15)
and is reported as NaN, with a warning, where an inversion did not converge.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer import bars
from wgfinfer._rng import forked_global_rng, seed_from
from wgfinfer.errors import DensityNotAvailableError
from wgfinfer.laplace import AffineWhitening
from wgfinfer.nn.icnn import safe_log_det


def sample_distribution(
    dist: Distribution, n: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Draw ``n`` samples from a torch distribution, reproducibly and without touching global RNG.

    ``torch.distributions`` only use the global generator, so the draw happens inside
    :func:`wgfinfer._rng.forked_global_rng` seeded from ``generator``; the caller's global RNG state
    is restored afterwards.
    """
    with forked_global_rng(seed_from(generator), device):
        return dist.sample((n,))


@torch.no_grad()
def push_points(
    maps: list[nn.Module] | tuple[nn.Module, ...],
    x0: Tensor,
    log_q0: Tensor | None = None,
    chunk_size: int = 8192,
    whitening: AffineWhitening | None = None,
    progress_bar: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Push ``x0`` through ``maps`` (then ``whitening``) in chunks of ``chunk_size`` points.

    Without ``log_q0`` only the points move (``transport``); with it their log-density is carried
    along, ``log q - sum log|det DT|`` (every map needs ``map_and_log_det``).

    Parameters
    ----------
    maps : list or tuple of nn.Module
        The maps, applied first to last.
    x0 : Tensor
        ``(n, d)`` points.
    log_q0 : Tensor, optional
        ``(n,)`` log-densities at ``x0``, to carry along.
    chunk_size : int, default 8192
        Points pushed at once.
    whitening : AffineWhitening, optional
        Applied after the maps.
    progress_bar : bool, default False
        Show a tqdm bar ("flow: draws") over the points when they take more than one chunk
        (:data:`wgfinfer.bars.MIN_CHUNKS_FOR_BAR`).

    Returns
    -------
    x : Tensor
        ``(n, d)`` pushed points.
    log_q : Tensor or None
        ``(n,)`` their log-densities, or ``None`` without ``log_q0``.
    """
    if x0.shape[0] == 0:
        return x0.clone(), (log_q0.clone() if log_q0 is not None else None)
    xs, lqs = [], []
    lq_all = log_q0 if log_q0 is not None else torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    with bars.chunk_bar(progress_bar, x0.shape[0], chunk_size, "flow: draws") as progress:
        for start in range(0, x0.shape[0], chunk_size):
            x, lq = x0[start : start + chunk_size], lq_all[start : start + chunk_size]
            for psi in maps:
                if log_q0 is None:
                    x = psi.transport(x)
                else:
                    x, log_det = psi.map_and_log_det(x)
                    lq = lq - log_det
            if whitening is not None:
                x = whitening.forward(x)
                lq = lq - whitening.log_abs_det
            xs.append(x)
            lqs.append(lq)
            progress.update(x.shape[0])
    return torch.cat(xs), (torch.cat(lqs) if log_q0 is not None else None)


class Flow:
    """Initial measure ``rho_0`` and the transport maps of the steps.

    Parameters
    ----------
    base : torch.distributions.Distribution
        The initial measure (the reference measure of PWGF), event shape ``(d,)``.
    maps : list of nn.Module, optional
        Trained maps, first step first.  Every map has ``transport(x)``; maps with
        ``map_and_log_det(x)`` and ``inverse_and_log_det(y, tol, max_iter)`` (``DenseICNN``, the
        PWGF planar and affine maps) give exact log-densities; others (``ResidualMap``, the forward
        step of the forward-backward scheme) give draws only.
    chunk_size : int
        Points processed at once when pushing or inverting (bounds memory).
    device : str or torch.device
        Where ``base`` draws its samples.
    whitening : AffineWhitening, optional
        A fixed affine map applied after the JKO maps (``init="laplace"``): the flow then runs in
        whitened coordinates and its draws are ``x = loc + scale_tril @ z_K``.
    snapshots : bool
        ``False``: step ``k``'s law is the composition of the first ``k`` maps applied to ``rho_0``.
        ``True`` (PWGF): ``maps[k - 1]`` alone carries ``rho_0`` to step ``k``'s law.
    """

    def __init__(
        self,
        base: Distribution,
        maps: list[nn.Module] | None = None,
        chunk_size: int = 8192,
        device: torch.device | str = "cpu",
        whitening: AffineWhitening | None = None,
        snapshots: bool = False,
    ) -> None:
        self.base = base
        self.whitening = whitening
        self.device = torch.device(device)
        self.maps: list[nn.Module] = list(maps or [])
        self.chunk_size = int(chunk_size)
        self.snapshots = bool(snapshots)

    def __len__(self) -> int:
        return len(self.maps)

    @staticmethod
    def map_has_density(module: nn.Module) -> bool:
        """Whether ``module`` follows the density protocol (log-det forward, inverse with log-det)."""
        return hasattr(module, "map_and_log_det") and hasattr(module, "inverse_and_log_det")

    @property
    def has_density(self) -> bool:
        """Whether every map is invertible with a tractable log-det, so exact log-densities exist."""
        return all(self.map_has_density(m) for m in self.maps)

    def require_density(self) -> None:
        """Raise :class:`DensityNotAvailableError` unless the flow has exact log-densities."""
        if not self.has_density:
            kinds = sorted({type(m).__name__ for m in self.maps if not self.map_has_density(m)})
            raise DensityNotAvailableError(
                f"this flow's maps ({', '.join(kinds)}) have no tractable density: a residual map is "
                "not invertible in closed form and its Jacobian log-determinant is not tracked. Use "
                "map='icnn' (variational scheme) or method='icnn' when you need log_prob, log q, "
                "importance weights or corrections; draws and KSD work for every map."
            )

    def append(self, psi: nn.Module) -> None:
        """Add the map of a completed step (its parameters are frozen)."""
        for p in psi.parameters():
            p.requires_grad_(False)
        self.maps.append(psi)

    def maps_until(self, step: int | None = None) -> list[nn.Module]:
        """The maps that carry ``rho_0`` to the law of ``step`` (``None``: the last step), in order."""
        k = self.check_step(step)
        if self.snapshots:
            return [self.maps[k - 1]] if k > 0 else []
        return self.maps[:k]

    def check_step(self, step: int | None) -> int:
        """``step`` as an index in ``0..len(self)`` (``None`` is the last step)."""
        if step is None:
            return len(self.maps)
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an int or None, got {type(step).__name__}")
        if not 0 <= step <= len(self.maps):
            raise ValueError(f"step must be in 0..{len(self.maps)} (0 = the initial measure), got {step}")
        return step

    def _chunks(self, *tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
        n = tensors[0].shape[0]
        for start in range(0, n, self.chunk_size):
            yield tuple(t[start : start + self.chunk_size] for t in tensors)

    @torch.no_grad()
    def push(
        self,
        x0: Tensor,
        log_q0: Tensor | None = None,
        step: int | None = None,
        progress_bar: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Push points of ``rho_0`` to ``step``; optionally carry their log-density along.

        Parameters
        ----------
        x0 : Tensor
            ``(n, d)`` points of ``rho_0``.
        log_q0 : Tensor, optional
            ``(n,)`` log-densities of ``rho_0`` at ``x0``; when given, the returned log-densities are
            ``log rho_k(x_k) = log rho_0(x_0) - sum log|det DT|`` along the way.
        step : int, optional
            Step to push to (default: the last).
        progress_bar : bool, default False
            Show a tqdm bar over the points when they take more than one chunk of ``chunk_size``.

        Returns
        -------
        x : Tensor
            ``(n, d)`` pushed points.
        log_q : Tensor or None
            ``(n,)`` log-densities of the pushed points, or ``None`` if ``log_q0`` was not given.
        """
        maps = self.maps_until(step)
        if log_q0 is not None and not all(self.map_has_density(m) for m in maps):
            self.require_density()
        return push_points(maps, x0, log_q0, self.chunk_size, self.whitening, progress_bar=progress_bar)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        return_log_prob: bool = False,
        step: int | None = None,
        progress_bar: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` points of the law of ``step`` (default: the last), and their exact log-densities.

        Parameters
        ----------
        n : int
            Number of draws.
        generator : torch.Generator, optional
            Source of randomness; by default a generator seeded from torch's global RNG (so
            ``torch.manual_seed`` makes the draws reproducible).
        return_log_prob : bool
            Also return ``log rho_step`` at the draws (needs density maps).
        step : int, optional
            ``0`` is ``rho_0``; ``None`` the last step.
        progress_bar : bool, default False
            Show a tqdm bar ("flow: draws") over the draws when there are more than ``chunk_size``
            of them.
        """
        self.check_step(step)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        x0 = sample_distribution(self.base, n, generator, self.device)
        if not return_log_prob:
            return self.push(x0, step=step, progress_bar=progress_bar)[0]
        x, log_q = self.push(x0, self.base.log_prob(x0), step=step, progress_bar=progress_bar)
        assert log_q is not None
        return x, log_q

    @torch.no_grad()
    def inverse(
        self,
        y: Tensor,
        tol: float | None = None,
        max_iter: int = 100,
        step: int | None = None,
        progress_bar: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Pull points of the law of ``step`` back to ``rho_0`` through the inverse maps.

        Parameters
        ----------
        y : Tensor
            ``(n, d)`` points.
        tol : float, optional
            Newton tolerance of each inversion (the maps' default when ``None``).
        max_iter : int, default 100
            Newton iterations at most per map.
        step : int, optional
            The step whose law ``y`` is of (default: the last).
        progress_bar : bool, default False
            Show a tqdm bar ("flow: inverse") over the points when there are more than ``chunk_size``
            of them.

        Returns
        -------
        x0 : Tensor
            ``(n, d)`` pre-images.
        sum_log_det : Tensor
            ``(n,)`` sum of the maps' ``log|det DT|`` along the recovered trajectory (plus
            ``log|det scale_tril|`` of the whitening, if any).
        converged : Tensor
            ``(n,)`` booleans, ``False`` where any of the inversions did not converge.
        """
        maps = self.maps_until(step)
        if not all(self.map_has_density(m) for m in maps):
            self.require_density()
        outs: list[tuple[Tensor, Tensor, Tensor]] = []
        with bars.chunk_bar(progress_bar, y.shape[0], self.chunk_size, "flow: inverse") as progress:
            for (chunk,) in self._chunks(y):
                x = chunk
                total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
                if self.whitening is not None:
                    x = self.whitening.inverse(x)
                    total = total + self.whitening.log_abs_det
                ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
                for psi in reversed(maps):
                    x, log_det, conv = psi.inverse_and_log_det(x, tol=tol, max_iter=max_iter)
                    ok &= conv
                    total = total + log_det
                outs.append((x, total, ok))
                progress.update(chunk.shape[0])
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))  # type: ignore[return-value]

    def log_prob(
        self,
        y: Tensor,
        tol: float | None = None,
        max_iter: int = 100,
        step: int | None = None,
        progress_bar: bool = False,
    ) -> Tensor:
        """Exact log-density of the law of ``step`` (default: the last) at arbitrary points (NaN where
        inversion failed).

        Parameters
        ----------
        y, tol, max_iter, step
            As in :meth:`inverse`.
        progress_bar : bool, default False
            Show a tqdm bar over the inversion when there are more than ``chunk_size`` points.

        Returns
        -------
        Tensor
            ``(n,)`` log-densities.
        """
        x0, total, ok = self.inverse(y, tol=tol, max_iter=max_iter, step=step, progress_bar=progress_bar)
        log_q = self.base.log_prob(x0) - total
        if not bool(ok.all()):
            n_bad = int((~ok).sum())
            warnings.warn(
                f"inverting the flow did not converge for {n_bad} of {y.shape[0]} points; "
                "their log_prob is NaN",
                RuntimeWarning,
                stacklevel=2,
            )
            log_q = torch.where(ok, log_q, torch.full_like(log_q, float("nan")))
        return log_q


__all__ = ["Flow", "safe_log_det", "sample_distribution"]

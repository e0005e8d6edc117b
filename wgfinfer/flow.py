"""The trained flow: the initial measure and the sequence of JKO maps.

``rho_K = grad psi_K o ... o grad psi_1 # rho_0``.  Pushing draws forward tracks their exact
log-density by the change of variables (seed 002, eq. 13); the density at an arbitrary point is
obtained by inverting every map (seed 002, eq. 15) and is reported as NaN, with a warning, where an
inversion did not converge.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer.errors import DensityNotAvailableError
from wgfinfer.laplace import AffineWhitening
from wgfinfer.nn.icnn import DenseICNN


def sample_distribution(
    dist: Distribution, n: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Draw ``n`` samples from a torch distribution, reproducibly and without touching global RNG.

    ``torch.distributions`` only use the global generator, so the draw happens inside
    :func:`torch.random.fork_rng` seeded from ``generator``; the caller's global RNG state is
    restored afterwards.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        return dist.sample((n,))


class Flow:
    """Initial measure ``rho_0`` and the list of transport maps of the JKO steps.

    Parameters
    ----------
    base : torch.distributions.Distribution
        The initial measure, event shape ``(d,)``.
    maps : list of nn.Module, optional
        Trained maps, first step first: ``DenseICNN`` potentials (whose gradients are the maps, with
        exact log-densities) or any module with a ``transport(x)`` method (e.g.
        :class:`wgfinfer.nn.ResidualMap`; draws only, no densities).
    chunk_size : int
        Points processed at once when pushing or inverting (bounds memory).
    device : str or torch.device
        Where ``base`` draws its samples.
    whitening : AffineWhitening, optional
        A fixed affine map applied after the JKO maps (``init="laplace"``): the flow then runs in
        whitened coordinates and its draws are ``x = loc + scale_tril @ z_K``.
    """

    def __init__(
        self,
        base: Distribution,
        maps: list[DenseICNN] | None = None,
        chunk_size: int = 8192,
        device: torch.device | str = "cpu",
        whitening: AffineWhitening | None = None,
    ) -> None:
        self.base = base
        self.whitening = whitening
        self.device = torch.device(device)
        self.maps: list[nn.Module] = list(maps or [])
        self.chunk_size = int(chunk_size)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def has_density(self) -> bool:
        """Whether every map is a convex-gradient map, so that exact log-densities exist."""
        return all(isinstance(m, DenseICNN) for m in self.maps)

    def require_density(self) -> None:
        """Raise :class:`DensityNotAvailableError` unless the flow has exact log-densities."""
        if not self.has_density:
            kinds = sorted({type(m).__name__ for m in self.maps if not isinstance(m, DenseICNN)})
            raise DensityNotAvailableError(
                f"this flow's maps ({', '.join(kinds)}) have no tractable density: a residual map is "
                "not invertible in closed form and its Jacobian log-determinant is not tracked. Use "
                "map='icnn' (variational scheme) or method='icnn' when you need log_prob, log q, "
                "importance weights or corrections; draws and KSD work for every map."
            )

    def append(self, psi: nn.Module) -> None:
        """Add the map of a completed JKO step (its parameters are frozen)."""
        for p in psi.parameters():
            p.requires_grad_(False)
        self.maps.append(psi)

    def _chunks(self, *tensors: Tensor) -> Iterator[tuple[Tensor, ...]]:
        n = tensors[0].shape[0]
        for start in range(0, n, self.chunk_size):
            yield tuple(t[start : start + self.chunk_size] for t in tensors)

    @torch.no_grad()
    def push(self, x0: Tensor, log_q0: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Push points through every map; optionally carry their log-density along.

        Parameters
        ----------
        x0 : Tensor
            ``(n, d)`` points of ``rho_0``.
        log_q0 : Tensor, optional
            ``(n,)`` log-densities of ``rho_0`` at ``x0``; when given, the returned log-densities are
            ``log rho_K(x_K) = log rho_0(x_0) - sum_k log det grad^2 psi_k(x_{k-1})``.

        Returns
        -------
        x : Tensor
            ``(n, d)`` pushed points.
        log_q : Tensor or None
            ``(n,)`` log-densities of the pushed points, or ``None`` if ``log_q0`` was not given.
        """
        if log_q0 is not None:
            self.require_density()
        if x0.shape[0] == 0:
            return x0.clone(), (log_q0.clone() if log_q0 is not None else None)
        xs, lqs = [], []
        dummy = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        for x, lq in self._chunks(x0, log_q0 if log_q0 is not None else dummy):
            for psi in self.maps:
                if log_q0 is None:
                    x = psi.transport(x)
                else:
                    x, log_det = psi.map_and_log_det(x)
                    lq = lq - log_det
            if self.whitening is not None:
                x = self.whitening.forward(x)
                lq = lq - self.whitening.log_abs_det
            xs.append(x)
            lqs.append(lq)
        return torch.cat(xs), (torch.cat(lqs) if log_q0 is not None else None)

    def sample(
        self, n: int, generator: torch.Generator, return_log_prob: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` points of ``rho_K`` (and their exact log-densities)."""
        x0 = sample_distribution(self.base, n, generator, self.device)
        if not return_log_prob:
            return self.push(x0)[0]
        x, log_q = self.push(x0, self.base.log_prob(x0))
        assert log_q is not None
        return x, log_q

    @torch.no_grad()
    def inverse(
        self, y: Tensor, tol: float | None = None, max_iter: int = 100
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Pull points back to ``rho_0`` through the inverse maps.

        Returns
        -------
        x0 : Tensor
            ``(n, d)`` pre-images under the whole flow.
        sum_log_det : Tensor
            ``(n,)`` ``sum_k log det grad^2 psi_k(x_{k-1})`` along the recovered trajectory (plus
            ``log|det scale_tril|`` of the whitening, if any).
        converged : Tensor
            ``(n,)`` booleans, ``False`` where any of the inversions did not converge.
        """
        self.require_density()
        outs: list[tuple[Tensor, Tensor, Tensor]] = []
        for (chunk,) in self._chunks(y):
            x = chunk
            total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            if self.whitening is not None:
                x = self.whitening.inverse(x)
                total = total + self.whitening.log_abs_det
            ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            for psi in reversed(self.maps):
                x, conv = psi.inverse(x, tol=tol, max_iter=max_iter)
                log_det, factorised = safe_log_det(psi, x)
                ok &= conv & factorised
                total = total + log_det
            outs.append((x, total, ok))
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))  # type: ignore[return-value]

    def log_prob(self, y: Tensor, tol: float | None = None, max_iter: int = 100) -> Tensor:
        """Exact log-density of ``rho_K`` at arbitrary points (NaN where inversion failed)."""
        x0, total, ok = self.inverse(y, tol=tol, max_iter=max_iter)
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


def safe_log_det(psi: DenseICNN, x: Tensor) -> tuple[Tensor, Tensor]:
    """Log-det of the Hessian and a mask of where its Cholesky factorisation succeeded."""
    chol, info = torch.linalg.cholesky_ex(psi.hessian(x))
    return 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1), info == 0

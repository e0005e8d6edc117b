r"""Barenblatt profiles: exact solutions of the porous medium equation ``d_t u = Delta(u^m)`` in ``R^d``.

The self-similar source-type solution (Barenblatt 1952; Fan et al. 2021 §4.3, Jin et al. 2024 §5.2 eq. 5.7) is

.. math::

    u(t, x) = \tau^{-\alpha} \bigl(C - k \|x - x_0\|^2 \tau^{-2\beta}\bigr)_+^{1/(m-1)},
    \qquad \tau = t + t_0,

with ``alpha = d / (d (m - 1) + 2)``, ``beta = alpha / d`` and ``k = (m - 1) alpha / (2 m d)``
(Fan et al. 2021 calls ``k`` "beta" and writes ``2 alpha / n`` for ``2 beta``).  It is supported on the ball
of radius ``R(t) = sqrt(C / k) tau^beta`` around ``x0``, and ``u^m`` is ``C^1`` across the free
boundary, so ``u`` is a weak solution on all of ``R^d`` and a classical one inside the support.

Mass (time independent).  With ``y = (x - x0) tau^{-beta}`` (``dx = tau^{d beta} dy = tau^alpha dy``),
polar coordinates and ``s = k |y|^2 / C``,

.. math::

    M = \int u \, dx = |S^{d-1}| \int_0^{\sqrt{C/k}} r^{d-1} (C - k r^2)^{1/(m-1)} dr
      = \frac{\pi^{d/2}}{\Gamma(d/2)} \Bigl(\frac{C}{k}\Bigr)^{d/2} C^{1/(m-1)}
        B\Bigl(\frac d2, \frac{m}{m-1}\Bigr)
      = \Bigl(\frac{\pi}{k}\Bigr)^{d/2} \frac{B(d/2, m/(m-1))}{\Gamma(d/2)} C^{\gamma},

``gamma = d/2 + 1/(m-1) = d / (2 (m - 1) alpha)``, using ``|S^{d-1}| = 2 pi^{d/2} / Gamma(d/2)``.
Unit mass therefore needs ``C^gamma = (k/pi)^{d/2} Gamma(d/2) / B(d/2, m/(m-1))``.  Jin et al. (2024) prints
this constant with an extra factor ``1/d`` in the bracket; that agrees for ``d = 1`` only (for
``d > 1`` its ``C`` gives mass ``1/d``, checked by quadrature in ``tests/test_barenblatt.py``).

Fan et al. (2021)'s constants ``m = 2, d = 1, t0 = 0.002, C = (3/16)^{1/3}`` give ``k = 1/12`` and
``M = (8/sqrt 3) C^{3/2} = (8/sqrt 3)(sqrt 3 / 4) = 2`` exactly, not 1.  Because
``d_t u = Delta(u^m)`` is not invariant under ``u -> u / M``, the probability density
``rho = u / M`` solves ``d_t rho = M^{m-1} Delta(rho^m)``: the Wasserstein gradient flow of
``M^{m-1}/(m-1) int rho^m``, i.e. of ``GeneralizedEntropy(m, coefficient=M^{m-1})``.  This
coefficient is :attr:`BarenblattProfile.probability_coefficient` (``2`` for Fan et al. 2021's constants).

Exact law of ``rho(t)``.  ``x - x0 = r theta`` with ``theta`` uniform on the unit sphere independent
of ``r``, and ``r`` has density proportional to ``r^{d-1} (C - k r^2 tau^{-2 beta})^{1/(m-1)}``; the
substitution ``s = k r^2 tau^{-2 beta} / C = (r / R(t))^2`` turns it into
``s^{d/2 - 1} (1 - s)^{1/(m-1)}``, so ``s ~ Beta(d/2, m/(m-1))``.  Consequently
``E ||x - x0||^2 = R(t)^2 (d/2) / (d/2 + m/(m-1))``, growing like ``tau^{2 beta}``.

Examples
--------
>>> import torch
>>> from wgfinfer.problems.barenblatt import BarenblattProfile
>>> seed000 = BarenblattProfile(dim=1, m=2, t0=0.002, C=(3 / 16) ** (1 / 3))
>>> round(seed000.mass, 12), round(seed000.probability_coefficient, 12)
(2.0, 2.0)
>>> p = BarenblattProfile(dim=2, m=2.4, t0=0.1)
>>> p.mass
1.0
>>> x = p.sample(5, t=0.5, generator=torch.Generator().manual_seed(0))
>>> x.shape, bool((x.norm(dim=-1) <= p.support_radius(0.5)).all())
(torch.Size([5, 2]), True)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from scipy import special
from torch import Tensor
from torch.distributions import Distribution

from wgfinfer._validation import check_positive_float, check_positive_int

__all__ = ["BarenblattProfile"]


def _check_time(t: object) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"t must be a scalar, got a tensor of shape {tuple(t.shape)}")
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"t must be a real number, got {type(t).__name__}")
    t = float(t)
    if not math.isfinite(t) or t < 0.0:
        raise ValueError(f"t must be a finite number >= 0, got {t}")
    return t


@dataclasses.dataclass(frozen=True)
class BarenblattProfile:
    """The Barenblatt solution of ``d_t u = Delta(u^m)`` in ``R^d`` started at time ``-t0``.

    ``u(t, x) = (t + t0)^{-alpha} (C - k ||x - x0||^2 (t + t0)^{-2 beta})_+^{1/(m-1)}``; see the module
    docstring for the constants and the derivations of :attr:`mass` and of the sampler.

    Parameters
    ----------
    dim : int
        Dimension ``d >= 1``.
    m : float
        Exponent, ``m > 1``.
    t0 : float
        Time shift ``t0 > 0``: ``t = 0`` is the profile at time ``t0`` after the Dirac initial datum.
    C : float or None
        Height constant ``C > 0``.  ``None`` (default) chooses the unique ``C`` with unit mass; after
        construction the attribute holds that value (so ``dataclasses.replace`` on another field keeps
        that number and then no longer has unit mass: build a new profile instead).  With a given ``C``
        the mass is
        ``(pi/k)^{d/2} B(d/2, m/(m-1)) / Gamma(d/2) * C^{d/2 + 1/(m-1)}``, in general not 1.
    center : sequence of float or None
        ``x0``, of length ``dim``; ``None`` is the origin.  Stored as a tuple of floats.

    Attributes
    ----------
    unit_mass : bool
        ``True`` when ``C`` was chosen for unit mass (then :attr:`mass` is exactly ``1.0``).
    """

    dim: int
    m: float
    t0: float
    C: float | None = None
    center: Sequence[float] | None = None
    unit_mass: bool = dataclasses.field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        dim = check_positive_int("dim", self.dim)
        if isinstance(self.m, bool) or not isinstance(self.m, numbers.Real):
            raise TypeError(f"m must be a real number, got {type(self.m).__name__}")
        m = float(self.m)
        if not (math.isfinite(m) and m > 1.0):
            raise ValueError(f"m must be a finite number > 1, got {m}")
        t0 = check_positive_float("t0", self.t0)
        object.__setattr__(self, "dim", dim)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "t0", t0)
        if self.center is None:
            center = (0.0,) * dim
        else:
            if isinstance(self.center, (str, bytes)):
                raise TypeError("center must be a sequence of floats")
            try:
                center = tuple(float(c) for c in np.asarray(self.center, dtype=float).reshape(-1))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"center must be a sequence of floats, got {self.center!r}") from exc
            if np.ndim(self.center) != 1 or len(center) != dim:
                raise ValueError(f"center must have shape ({dim},), got shape {np.shape(self.center)}")
            if not all(math.isfinite(c) for c in center):
                raise ValueError(f"center must be finite, got {center}")
        object.__setattr__(self, "center", center)
        if self.C is None:
            object.__setattr__(self, "unit_mass", True)
            log_c = -self._log_mass_factor() / self.gamma
            object.__setattr__(self, "C", math.exp(log_c))
        else:
            object.__setattr__(self, "C", check_positive_float("C", self.C))

    # ------------------------------------------------------------------ constants
    @property
    def alpha(self) -> float:
        """``alpha = d / (d (m - 1) + 2)``: the height decays like ``(t + t0)^{-alpha}``."""
        return self.dim / (self.dim * (self.m - 1.0) + 2.0)

    @property
    def beta(self) -> float:
        """``beta = alpha / d``: lengths grow like ``(t + t0)^beta``."""
        return self.alpha / self.dim

    @property
    def k(self) -> float:
        """``k = (m - 1) alpha / (2 m d)``."""
        return (self.m - 1.0) * self.alpha / (2.0 * self.m * self.dim)

    @property
    def gamma(self) -> float:
        """``gamma = d/2 + 1/(m-1)``: the mass is proportional to ``C^gamma``."""
        return 0.5 * self.dim + 1.0 / (self.m - 1.0)

    @property
    def radial_beta_parameters(self) -> tuple[float, float]:
        """``(d/2, m/(m-1))``: ``(||x - x0|| / R(t))^2`` is Beta distributed with these parameters."""
        return 0.5 * self.dim, self.m / (self.m - 1.0)

    def _log_mass_factor(self) -> float:
        """``log`` of ``M / C^gamma = (pi/k)^{d/2} B(d/2, m/(m-1)) / Gamma(d/2)``."""
        a, b = self.radial_beta_parameters
        return 0.5 * self.dim * math.log(math.pi / self.k) + float(special.betaln(a, b)) - math.lgamma(a)

    @property
    def mass(self) -> float:
        """Total mass ``M = int u(t, x) dx`` (independent of ``t``), in closed form.

        ``M = (pi/k)^{d/2} B(d/2, m/(m-1)) / Gamma(d/2) * C^{d/2 + 1/(m-1)}``; exactly ``1.0`` when
        ``C`` was left to ``None``.
        """
        if self.unit_mass:
            return 1.0
        return math.exp(self._log_mass_factor() + self.gamma * math.log(self.C))

    @property
    def probability_coefficient(self) -> float:
        """``M^{m-1}``: ``rho = u / M`` solves ``d_t rho = M^{m-1} Delta(rho^m)``.

        That is the Wasserstein gradient flow of ``M^{m-1} / (m - 1) int rho^m``, i.e. of
        ``wgfinfer.functionals.GeneralizedEntropy(m, coefficient=probability_coefficient)``.
        """
        if self.unit_mass:
            return 1.0
        return self.mass ** (self.m - 1.0)

    def support_radius(self, t: float) -> float:
        """Radius ``R(t) = sqrt(C / k) (t + t0)^beta`` of the support ball around ``x0``."""
        tau = _check_time(t) + self.t0
        return math.sqrt(self.C / self.k) * tau**self.beta

    # ------------------------------------------------------------------ densities
    def _squared_distance(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        x0 = torch.tensor(self.center, dtype=x.dtype, device=x.device)
        return (x - x0).square().sum(-1)

    def _bracket(self, x: Tensor, t: float) -> tuple[Tensor, float]:
        """``C - k ||x - x0||^2 tau^{-2 beta}`` (may be negative) and ``tau``."""
        tau = _check_time(t) + self.t0
        r2 = self._squared_distance(x)
        return self.C - self.k * tau ** (-2.0 * self.beta) * r2, tau

    def density(self, x: Tensor, t: float) -> Tensor:
        """The solution ``u(t, x)`` itself (mass :attr:`mass`, not normalised when ``M != 1``).

        Parameters
        ----------
        x : Tensor
            Points, shape ``(..., d)``, any floating dtype and device.
        t : float
            Time ``t >= 0`` (the profile's age is ``t + t0``).

        Returns
        -------
        Tensor
            Shape ``(...)``, dtype and device of ``x``; zero outside the support ball.
        """
        bracket, tau = self._bracket(x, t)
        return tau ** (-self.alpha) * bracket.clamp_min(0.0) ** (1.0 / (self.m - 1.0))

    def log_density(self, x: Tensor, t: float) -> Tensor:
        """``log u(t, x)`` (``-inf`` outside the support); see :meth:`density`."""
        bracket, tau = self._bracket(x, t)
        inside = bracket > 0
        safe = torch.where(inside, bracket, torch.ones_like(bracket))
        value = -self.alpha * math.log(tau) + torch.log(safe) / (self.m - 1.0)
        return torch.where(inside, value, torch.full_like(value, -math.inf))

    def log_prob(self, x: Tensor, t: float) -> Tensor:
        """``log rho(t, x)`` of the probability density ``rho = u / M`` (``-inf`` outside the support).

        Parameters
        ----------
        x : Tensor
            Points, shape ``(..., d)``.
        t : float
            Time ``t >= 0``.

        Returns
        -------
        Tensor
            Shape ``(...)``, dtype and device of ``x``.
        """
        return self.log_density(x, t) - math.log(self.mass)

    # ------------------------------------------------------------------ the law of rho(t)
    def radius_cdf(self, r: np.ndarray | float, t: float) -> np.ndarray:
        """CDF of ``||x - x0||`` under ``rho(t)``: ``I_{(r/R(t))^2}(d/2, m/(m-1))`` (regularised beta)."""
        radius = self.support_radius(t)
        s = np.clip((np.asarray(r, dtype=float) / radius) ** 2, 0.0, 1.0)
        s = np.where(np.asarray(r, dtype=float) < 0, 0.0, s)
        a, b = self.radial_beta_parameters
        return special.betainc(a, b, s)

    def cdf_1d(self, x: np.ndarray | float, t: float) -> np.ndarray:
        """CDF of ``rho(t)`` for ``d = 1``.

        ``F(x) = 1/2 + sign(x - x0) I_s(1/2, m/(m-1)) / 2`` with ``s = (x - x0)^2 / R(t)^2``.
        """
        self._require_1d("cdf_1d")
        z = np.asarray(x, dtype=float) - self.center[0]
        return 0.5 + 0.5 * np.sign(z) * self.radius_cdf(np.abs(z), t)

    def quantile_1d(self, p: np.ndarray | float, t: float) -> np.ndarray:
        """Inverse CDF of ``rho(t)`` for ``d = 1``, by symmetry and the inverse regularised beta.

        ``Q(p) = x0 + sign(p - 1/2) R(t) sqrt(I^{-1}_{|2p - 1|}(1/2, m/(m-1)))``.

        Parameters
        ----------
        p : array_like
            Probabilities in ``[0, 1]``.
        t : float
            Time ``t >= 0``.

        Returns
        -------
        numpy.ndarray
            Quantiles, same shape as ``p``.
        """
        self._require_1d("quantile_1d")
        p = np.asarray(p, dtype=float)
        if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
            raise ValueError("p must lie in [0, 1]")
        a, b = self.radial_beta_parameters
        s = special.betaincinv(a, b, np.abs(2.0 * p - 1.0))
        return self.center[0] + np.sign(p - 0.5) * self.support_radius(t) * np.sqrt(s)

    def _require_1d(self, name: str) -> None:
        if self.dim != 1:
            raise ValueError(f"{name} needs dim == 1, got dim={self.dim}")

    def sample(
        self,
        n: int,
        t: float,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Exact independent draws from ``rho(t) = u(t, .) / M``.

        ``x = x0 + R(t) sqrt(s) theta`` with ``s ~ Beta(d/2, m/(m-1))`` (inverse-CDF transform of a
        uniform with :func:`scipy.special.betaincinv`) and ``theta`` uniform on the unit sphere (a
        normalised standard normal vector; a random sign for ``d = 1``).  All randomness comes from
        ``generator``, drawn in float64 on the generator's device.

        Parameters
        ----------
        n : int
            Number of draws (``>= 0``).
        t : float
            Time ``t >= 0``.
        generator : torch.Generator
            Source of randomness.
        dtype : torch.dtype, optional
            Floating dtype of the result (default: ``torch.get_default_dtype()``).
        device : torch.device or str, optional
            Device of the result (default: the generator's device).

        Returns
        -------
        Tensor
            Shape ``(n, d)``.
        """
        n = check_positive_int("n", n, allow_zero=True)
        t = _check_time(t)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        gen_device = generator.device
        device = gen_device if device is None else torch.device(device)
        uniforms = torch.rand(n, generator=generator, dtype=torch.float64, device=gen_device)
        a, b = self.radial_beta_parameters
        s = special.betaincinv(a, b, uniforms.cpu().numpy())
        radius = torch.from_numpy(self.support_radius(t) * np.sqrt(s))
        if self.dim == 1:
            bits = torch.randint(0, 2, (n, 1), generator=generator, device=gen_device)
            direction = (2.0 * bits - 1.0).to(torch.float64)
        else:
            g = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=gen_device)
            direction = g / g.norm(dim=-1, keepdim=True)
        x0 = torch.tensor(self.center, dtype=torch.float64)
        out = x0 + radius.unsqueeze(-1) * direction.cpu()
        return out.to(device=device, dtype=dtype)

    def second_moment(self, t: float) -> float:
        """``E_rho ||x - x0||^2 = R(t)^2 (d/2) / (d/2 + m/(m-1))``, proportional to ``(t + t0)^{2 beta}``."""
        a, b = self.radial_beta_parameters
        return self.support_radius(t) ** 2 * a / (a + b)

    def variance_per_coordinate(self, t: float) -> float:
        """``Var_rho(x_i) = second_moment(t) / d`` (the law is rotation invariant about ``x0``)."""
        return self.second_moment(t) / self.dim

    def mean(self) -> tuple[float, ...]:
        """``E_rho x = x0`` for every ``t``."""
        return tuple(self.center)

    def distribution(self, t: float, dtype: torch.dtype = torch.float64) -> BarenblattLaw:
        """``rho(t)`` as a torch ``Distribution`` (e.g. the ``init`` of :func:`wgfinfer.simulate`)."""
        return BarenblattLaw(self, _check_time(t), dtype)


class BarenblattLaw(Distribution):
    """The probability law ``rho(t) = u(t, .) / M`` of a :class:`BarenblattProfile` as a torch
    ``Distribution``: exact draws (from torch's global RNG, like every torch distribution) and
    ``log_prob`` (``-inf`` outside the support)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, profile: BarenblattProfile, t: float, dtype: torch.dtype = torch.float64) -> None:
        self.profile, self.t, self.dtype = profile, float(t), dtype
        super().__init__(event_shape=torch.Size([profile.dim]), validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:  # noqa: D102
        shape = torch.Size(sample_shape)
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        x = self.profile.sample(int(shape.numel()), self.t, generator, dtype=self.dtype)
        return x.reshape(*shape, self.profile.dim)

    def log_prob(self, value: Tensor) -> Tensor:  # noqa: D102
        return self.profile.log_prob(value, self.t)

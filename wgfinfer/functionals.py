"""Free energies on probability measures of ``R^d``, composable by addition and scaling.

A free energy ``F(rho)`` is a sum of terms of three kinds; the JKO and PWGF schemes handle each kind
through the small interface documented on its base class:

* **particle terms**, written as expectations over ``rho`` (or ``rho x rho``) and estimated from
  particles alone: :class:`PotentialEnergy` ``int Phi drho`` and :class:`InteractionEnergy`
  ``1/2 iint W(x - y) drho(x) drho(y)``;
* **internal energies** ``int U(rho(x)) dx``, which need the density: :class:`Entropy`
  ``beta^{-1} int rho log rho`` and :class:`GeneralizedEntropy` ``int rho^m / (m - 1)``.  The
  ICNN and PWGF schemes evaluate them with exact densities of the pushed particles (change of
  variables); the variational scheme through an f-divergence dual formula (Fan et al. 2021 Table 1,
  App. A.2) with its own dual network per term;
* :class:`KLDivergence` ``int rho log(rho / pi)`` for an unnormalised target ``pi``: the sum of the
  potential ``-log pi`` and the entropy (the sampler's free energy).

The ``1/2`` of the interaction energy makes its Wasserstein gradient flow
``d_t rho = div(rho grad(W * rho))`` (Jin et al. 2024 eq. 3.10–3.12) and its forward step
``x - a grad(W * rho)(x)`` (Fan et al. 2021 eq. 12).  Fan et al. (2021) write the energy without the
``1/2`` but use the same PDE; with their convention the JKO step would flow twice as fast as the forward step.

Every term declares the schemes that can handle it (``schemes``); the schemes are ``"icnn"``,
``"variational"``, ``"forward_backward"`` and ``"pwgf"``.

Examples
--------
>>> import torch
>>> from wgfinfer.functionals import GeneralizedEntropy, InteractionEnergy
>>> aggregation = InteractionEnergy(lambda z: -torch.exp(-z.square().sum(-1)) / torch.pi)
>>> F = aggregation + 0.1 * GeneralizedEntropy(3)
>>> [type(t).__name__ for t in F.terms()]
['InteractionEnergy', 'GeneralizedEntropy']
>>> F.terms()[1].coefficient
0.1
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

SCHEMES = ("icnn", "variational", "forward_backward", "pwgf")
_ALL = frozenset(SCHEMES)

Potential = Callable[[Tensor], Tensor]
"""``(n, d) -> (n,)``."""


def _check_coefficient(coefficient: float, what: str) -> float:
    if isinstance(coefficient, bool) or not isinstance(coefficient, (int, float)):
        raise TypeError(f"{what} must be a real number, got {type(coefficient).__name__}")
    if not (math.isfinite(coefficient) and coefficient > 0):
        raise ValueError(f"{what} must be a finite positive number, got {coefficient}")
    return float(coefficient)


def _check_callable(fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be a callable (n, d) -> (n,), got {type(fn).__name__}")


class Functional:
    """A free energy ``F(rho)``: one term, or a sum of terms (:class:`FreeEnergy`).

    ``F + G`` is the sum, ``c * F`` multiplies every term's coefficient by ``c > 0``.
    """

    schemes: ClassVar[frozenset[str]] = _ALL

    def terms(self) -> tuple[Term, ...]:
        """The atomic terms whose sum this functional is."""
        raise NotImplementedError

    def supported_schemes(self) -> frozenset[str]:
        """The schemes that can handle every term."""
        out = _ALL
        for t in self.terms():
            out = out & t.schemes
        return out

    def check_scheme(self, scheme: str) -> None:
        """Raise ``ValueError`` naming the first term that ``scheme`` cannot handle."""
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        for t in self.terms():
            if scheme not in t.schemes:
                raise ValueError(
                    f"{type(t).__name__} cannot be handled by scheme {scheme!r}; "
                    f"it supports {sorted(t.schemes)}"
                )

    def particle_energy(self, y: Tensor) -> Tensor:
        """Sum of the particle terms estimated on the points ``y`` (a differentiable scalar)."""
        total = y.new_zeros(())
        for t in self.terms():
            if isinstance(t, ParticleTerm):
                total = total + t.estimate(y)
        return total

    def internal_energies(self) -> tuple[InternalEnergy, ...]:
        """The terms that need the density."""
        return tuple(t for t in self.terms() if isinstance(t, InternalEnergy))

    def interactions(self) -> tuple[InteractionEnergy, ...]:
        """The interaction-energy terms."""
        return tuple(t for t in self.terms() if isinstance(t, InteractionEnergy))

    def estimate(self, y: Tensor, log_density: Tensor | None = None) -> Tensor:
        """Monte-Carlo estimate of ``F(nu)`` from points ``y ~ nu`` and ``log nu(y)``.

        Parameters
        ----------
        y : Tensor
            ``(n, d)`` draws of the measure.
        log_density : Tensor, optional
            ``(n,)`` its exact log-density at ``y``; required when the functional has internal
            energies.

        Returns
        -------
        Tensor
            A differentiable scalar (the interaction terms use the U-statistic over ``i != j``).
        """
        total = self.particle_energy(y)
        internal = self.internal_energies()
        if internal and log_density is None:
            names = ", ".join(type(t).__name__ for t in internal)
            raise ValueError(f"estimating {names} needs the log-density of the points")
        for t in internal:
            assert log_density is not None
            total = total + t.integrand(log_density).mean()
        return total

    def __add__(self, other: Functional) -> FreeEnergy:
        if not isinstance(other, Functional):
            return NotImplemented
        return FreeEnergy(self.terms() + other.terms())

    def __radd__(self, other: Any) -> Functional:
        # sum([...]) starts from 0
        if isinstance(other, (int, float)) and other == 0:
            return self
        return NotImplemented

    def __mul__(self, factor: float) -> Functional:
        factor = _check_coefficient(factor, "a functional's factor")
        scaled = tuple(dataclasses.replace(t, coefficient=t.coefficient * factor) for t in self.terms())
        return scaled[0] if len(scaled) == 1 and not isinstance(self, FreeEnergy) else FreeEnergy(scaled)

    __rmul__ = __mul__


@dataclass(frozen=True)
class Term(Functional):
    """An atomic term with a positive ``coefficient``."""

    def terms(self) -> tuple[Term, ...]:
        return (self,)


@dataclass(frozen=True)
class ParticleTerm(Term):
    """A term estimated from particles alone."""

    def estimate(self, y: Tensor, log_density: Tensor | None = None) -> Tensor:  # type: ignore[override]
        raise NotImplementedError

    def velocity(self, x: Tensor, particles: Tensor) -> Tensor:
        """``grad (dF/drho)(x)`` for the measure of ``particles``: the drift of the forward step."""
        raise NotImplementedError


@dataclass(frozen=True)
class PotentialEnergy(ParticleTerm):
    """``coefficient * int Phi drho`` (the drift term of the Fokker-Planck equation).

    Parameters
    ----------
    potential : callable
        ``Phi``, ``(n, d) -> (n,)``, differentiable in torch.
    coefficient : float
    """

    potential: Potential
    coefficient: float = 1.0

    def __post_init__(self) -> None:
        _check_callable(self.potential, "potential")
        _check_coefficient(self.coefficient, "coefficient")

    def estimate(self, y: Tensor, log_density: Tensor | None = None) -> Tensor:  # noqa: D102
        return self.coefficient * self.potential(y).mean()

    def velocity(self, x: Tensor, particles: Tensor) -> Tensor:  # noqa: D102
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.potential(x).sum(), x)
        return self.coefficient * grad


@dataclass(frozen=True)
class InteractionEnergy(ParticleTerm):
    """``coefficient * 1/2 iint W(x - y) drho(x) drho(y)``.

    Parameters
    ----------
    kernel : callable
        ``W``, applied to differences: ``(..., d) -> (...)``, even (``W(-z) = W(z)``) and
        differentiable in torch away from ``z = 0`` (the diagonal ``x = y`` is never evaluated).
    coefficient : float
    chunk_size : int
        Rows of the pairwise differences evaluated at once (bounds memory at ``chunk_size * n * d``).
    gradient : callable, optional
        ``grad W`` in closed form, ``(..., d) -> (..., d)``, for the forward step's convolution
        (default: autograd through ``kernel``, several times slower on large particle sets).
    """

    kernel: Callable[[Tensor], Tensor]
    coefficient: float = 1.0
    chunk_size: int = 1024
    gradient: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        _check_callable(self.kernel, "kernel")
        if self.gradient is not None:
            _check_callable(self.gradient, "gradient")
        _check_coefficient(self.coefficient, "coefficient")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {self.chunk_size!r}")

    def estimate(self, y: Tensor, log_density: Tensor | None = None) -> Tensor:  # noqa: D102
        n = y.shape[0]
        if n < 2:
            raise ValueError("the interaction energy needs at least 2 particles")
        total = y.new_zeros(())
        for start in range(0, n, self.chunk_size):
            rows = y[start : start + self.chunk_size]
            diff = rows[:, None, :] - y[None, :, :]
            values = self.kernel(diff)
            # drop the diagonal (i == j): W(0) may be singular and is not part of the U-statistic
            idx = torch.arange(rows.shape[0], device=y.device)
            mask = torch.ones_like(values, dtype=torch.bool)
            mask[idx, idx + start] = False
            total = total + torch.where(mask, values, torch.zeros_like(values)).sum()
        return 0.5 * self.coefficient * total / (n * (n - 1))

    def velocity(self, x: Tensor, particles: Tensor) -> Tensor:
        """``coefficient * mean_j grad W(x - y_j)`` (Monte-Carlo convolution; ``x = y_j`` skipped)."""
        out = []
        for start in range(0, x.shape[0], self.chunk_size):
            rows = x[start : start + self.chunk_size].detach()
            diff = rows[:, None, :] - particles.detach()[None, :, :]
            if self.gradient is not None:
                grad = self.gradient(diff)
            else:
                with torch.enable_grad():
                    diff = diff.requires_grad_(True)
                    (grad,) = torch.autograd.grad(self.kernel(diff).sum(), diff)
                diff = diff.detach()
            same = diff.abs().sum(-1) == 0
            grad = torch.where(same[..., None], torch.zeros_like(grad), grad)
            count = (~same).sum(1).clamp_min(1).to(grad.dtype)
            out.append(grad.sum(1) / count[:, None])
        return self.coefficient * torch.cat(out)


@dataclass(frozen=True)
class InternalEnergy(Term):
    """``int U(rho(x)) dx = E_rho[U(rho)/rho]``: needs the density (or a dual formula).

    Subclasses give the integrand ``U(rho)/rho`` as a function of ``log rho`` and the parts of the
    variational formula ``sup_h E_rho[A(h)] - E_Gamma[B(h)] + c``.
    """

    reference: ClassVar[str] = "gaussian"
    """``Gamma`` of the variational formula: ``"gaussian"`` (moment-matched) or ``"box"`` (uniform)."""

    def integrand(self, log_rho: Tensor) -> Tensor:
        """``U(rho)/rho`` at points with log-density ``log_rho``."""
        raise NotImplementedError

    def dual_a(self, log_h: Tensor, log_gamma: Tensor, volume: float) -> Tensor:
        """``A`` at the pushed points, from ``log h`` there and ``log Gamma`` there."""
        raise NotImplementedError

    def dual_b(self, log_h: Tensor, volume: float) -> Tensor:
        """``B`` at draws of ``Gamma`` from ``log h`` there."""
        raise NotImplementedError

    def dual_constant(self) -> float:
        """``c``: the variational formula's additive constant."""
        return 0.0


@dataclass(frozen=True)
class Entropy(InternalEnergy):
    """``beta^{-1} int rho log rho`` (negative entropy; the diffusion term, ``Delta rho / beta``).

    Variational formula (Fan et al. 2021 Prop. 1 with ``Q = mu``): ``beta^{-1}(1 + sup_h E_rho[log h +
    log mu] - E_mu[h])``, ``mu`` the moment-matched Gaussian.

    Parameters
    ----------
    beta : float
        Inverse temperature; the term's coefficient is ``1 / beta``.
    """

    beta: float = 1.0
    coefficient: float = dataclasses.field(default=float("nan"))

    def __post_init__(self) -> None:
        _check_coefficient(self.beta, "beta")
        if math.isnan(self.coefficient):
            object.__setattr__(self, "coefficient", 1.0 / self.beta)
        _check_coefficient(self.coefficient, "coefficient")

    def integrand(self, log_rho: Tensor) -> Tensor:  # noqa: D102
        return self.coefficient * log_rho

    def dual_a(self, log_h: Tensor, log_gamma: Tensor, volume: float) -> Tensor:  # noqa: D102
        return self.coefficient * (log_h + log_gamma)

    def dual_b(self, log_h: Tensor, volume: float) -> Tensor:  # noqa: D102
        return self.coefficient * log_h.exp()

    def dual_constant(self) -> float:  # noqa: D102
        return self.coefficient


@dataclass(frozen=True)
class GeneralizedEntropy(InternalEnergy):
    """``coefficient * int rho^m / (m - 1)``, ``m > 1``: the porous medium term ``Delta rho^m``.

    Variational formula (Fan et al. 2021 §3.2.2 and App. A.2, with the change of variables to ``h-hat``):
    ``Omega^{1-m} sup_h (E_rho[m/(m-1) h^{m-1}] - E_Q[h^m])`` with ``Q`` uniform on a box of
    volume ``Omega`` containing the support; the optimal ``h`` is ``Omega * rho``.

    Parameters
    ----------
    m : float
        Exponent, ``m > 1``.
    coefficient : float
    """

    m: float = 2.0
    coefficient: float = 1.0
    reference: ClassVar[str] = "box"

    def __post_init__(self) -> None:
        if isinstance(self.m, bool) or not isinstance(self.m, (int, float)):
            raise TypeError(f"m must be a real number, got {type(self.m).__name__}")
        if not (math.isfinite(self.m) and self.m > 1):
            raise ValueError(f"m must be a finite number > 1, got {self.m}")
        _check_coefficient(self.coefficient, "coefficient")

    def integrand(self, log_rho: Tensor) -> Tensor:  # noqa: D102
        return self.coefficient / (self.m - 1.0) * torch.exp((self.m - 1.0) * log_rho)

    def dual_a(self, log_h: Tensor, log_gamma: Tensor, volume: float) -> Tensor:  # noqa: D102
        m = self.m
        return self.coefficient * volume ** (1.0 - m) * m / (m - 1.0) * torch.exp((m - 1.0) * log_h)

    def dual_b(self, log_h: Tensor, volume: float) -> Tensor:  # noqa: D102
        return self.coefficient * volume ** (1.0 - self.m) * torch.exp(self.m * log_h)


class FreeEnergy(Functional):
    """A sum of terms (what ``F + G`` returns).

    Parameters
    ----------
    terms : sequence of Term
    """

    def __init__(self, terms: tuple[Term, ...] | list[Term]) -> None:
        terms = tuple(terms)
        if not terms:
            raise ValueError("a free energy needs at least one term")
        for t in terms:
            if not isinstance(t, Term):
                raise TypeError(f"terms must be wgfinfer.functionals terms, got {type(t).__name__}")
        self._terms = terms

    def terms(self) -> tuple[Term, ...]:  # noqa: D102
        return self._terms

    def __repr__(self) -> str:
        return " + ".join(repr(t) for t in self._terms)


class KLDivergence(FreeEnergy):
    """``beta^{-1} KL(rho || pi_beta) - beta^{-1} log Z``, ``pi_beta prop. to exp(beta * log_density)``.

    The sampler's free energy: ``E_rho[-log_density] + beta^{-1} int rho log rho``, i.e.
    ``PotentialEnergy(-log_density) + Entropy(beta)``; its flow is the Fokker-Planck equation whose
    stationary law is ``pi_beta``.

    Parameters
    ----------
    log_density : callable
        Unnormalised log-density ``(n, d) -> (n,)``.
    beta : float
        Inverse temperature.
    """

    def __init__(self, log_density: Potential, beta: float = 1.0) -> None:
        _check_callable(log_density, "log_density")
        self.log_density = log_density
        self.beta = _check_coefficient(beta, "beta")
        super().__init__((PotentialEnergy(_Negated(log_density)), Entropy(beta=self.beta)))

    def __repr__(self) -> str:
        return f"KLDivergence({self.log_density!r}, beta={self.beta})"


@dataclass(frozen=True)
class _Negated:
    """``x -> -f(x)`` (a picklable, comparable wrapper)."""

    fn: Potential

    def __call__(self, x: Tensor) -> Tensor:
        return -self.fn(x)


def as_functional(target: Functional | Potential, beta: float = 1.0) -> Functional:
    """``target`` itself if it is a functional, else ``KLDivergence(target, beta)`` (a log-density)."""
    if isinstance(target, Functional):
        return target
    return KLDivergence(target, beta=beta)

"""The variational JKO scheme (seed 000 Algorithm 1 and Proposition 1; seed 001 Corollary 3.3).

One JKO step for ``F(rho) = beta^{-1} KL(rho || Q)``, ``Q prop. to exp(beta * log_density)``, solves
a min-max problem over a transport map ``T`` and a positive dual function ``h``:

.. math::

    \\min_T \\max_h \\; E_{\\rho_k}\\Big[\\frac{\\lVert X - T(X)\\rVert^2}{2a}
      + \\beta^{-1}\\big(\\log h(TX) + \\log\\mu_k(TX) - \\log Q(TX)\\big)\\Big]
      - \\beta^{-1} E_{Z\\sim\\mu_k}[h(Z)],

where ``mu_k`` is the Gaussian with the mean and covariance of ``rho_k``, refreshed every step.
The inner maximum is ``beta^{-1} (KL(T # rho_k || Q) - 1)`` (up to ``log Z``), attained at
``h = (T # rho_k) / mu_k``: the KL divergence is estimated from samples only, so training never
computes a log-determinant and its cost per iteration does not grow with the dimension beyond the
networks' input and output layers.

Each outer iteration draws a batch of particles and of ``mu_k``, takes ``dual_steps`` Adam steps
on ``h`` (seed default 3) and ``map_steps`` Adam steps on ``T`` (seed default 1).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from wgfinfer.errors import TrainingDivergedError
from wgfinfer.nn.icnn import DenseICNN
from wgfinfer.nn.mlp import DualNetwork, ResidualMap
from wgfinfer.schemes.common import check_gradients, check_points, cosine_schedule, transport_distance

MAPS = ("resnet", "icnn", "linear")
REFERENCE_PARTICLES = 16384


@dataclass(frozen=True)
class VariationalSchemeConfig:
    """Options fixed when the scheme is built.

    Attributes
    ----------
    map : {"resnet", "icnn", "linear"}
        ``T(x) = x + MLP(x)``; the gradient of an input-convex network (invertible, so the flow
        has densities); or an affine residual map (exact for Gaussian-to-Gaussian steps).
    hidden : tuple of int
        Hidden widths of ``T`` (of the ICNN for ``map="icnn"``).
    dual_hidden : tuple of int
        Hidden widths of ``h``.
    dual_head : {"softplus", "expm1", "exp"}
        Positive output head of ``h`` (see :class:`wgfinfer.nn.DualNetwork`).
    iters_per_step : int
        Outer iterations per JKO step.
    dual_steps, map_steps : int
        Adam steps on ``h`` and on ``T`` per outer iteration.
    batch_size : int
        Particles (and draws of ``mu_k``) per outer iteration.
    lr, dual_lr : float
        Adam learning rates of ``T`` and ``h`` at the start of every step.
    lr_decay : float
        Cosine decay of both learning rates within a step, down to ``lr * lr_decay``.
    rank, strong_convexity : int, float
        ICNN options for ``map="icnn"``.
    """

    map: str = "resnet"
    hidden: tuple[int, ...] = (64, 64)
    dual_hidden: tuple[int, ...] = (64, 64, 64)
    dual_head: str = "softplus"
    iters_per_step: int = 200
    dual_steps: int = 3
    map_steps: int = 1
    batch_size: int = 256
    lr: float = 5e-3
    dual_lr: float = 5e-3
    lr_decay: float = 0.1
    rank: int = 1
    strong_convexity: float = 1e-3


@dataclass(frozen=True)
class ReferenceGaussian:
    """``mu_k``: the Gaussian with the mean and covariance of the particles of ``rho_k``."""

    loc: Tensor
    scale_tril: Tensor
    precision_factor: Tensor = field(repr=False)
    """``scale_tril^{-1}``, computed once per step: whitening a batch is then one matrix product."""
    log_normalizer: float = field(repr=False)

    @classmethod
    def matching(cls, particles: Tensor, jitter: float = 1e-6) -> ReferenceGaussian:
        """Moment-matched Gaussian (covariance computed in float64, with a relative jitter)."""
        x = particles.detach().double()
        loc = x.mean(0)
        centred = x - loc
        cov = centred.T @ centred / max(x.shape[0] - 1, 1)
        eye = torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
        scale = float(torch.diagonal(cov).mean()) if x.shape[0] > 1 else 1.0
        chol, info = torch.linalg.cholesky_ex(cov + jitter * max(scale, 1e-12) * eye)
        if int(info) != 0 or not bool(torch.isfinite(chol).all()):
            raise TrainingDivergedError("the particles' covariance is not positive definite")
        inverse = torch.linalg.solve_triangular(chol, eye, upper=False)
        log_normalizer = float(torch.diagonal(chol).log().sum()) + 0.5 * x.shape[1] * math.log(2 * math.pi)
        dtype = particles.dtype
        return cls(loc.to(dtype), chol.to(dtype), inverse.to(dtype), log_normalizer)

    @property
    def dim(self) -> int:
        return int(self.loc.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` draws; the noise comes from the (CPU) ``generator``."""
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.loc.dtype)
        return self.loc + eps.to(self.loc.device) @ self.scale_tril.T

    def log_prob(self, y: Tensor) -> Tensor:
        """Normalised log-density at ``(n, d)`` points."""
        white = (y - self.loc) @ self.precision_factor.T
        return -0.5 * white.square().sum(-1) - self.log_normalizer


@dataclass
class VariationalStepInfo:
    """What one variational JKO step did (means over the last 10% of its outer iterations)."""

    loss: float
    """The map's objective (W2 term + potential + ``beta^{-1}`` times the log-ratio terms)."""
    w2: float
    """``E||T(X) - X||^2``: squared W2 distance moved in this step."""
    potential: float
    """``E[-log_density(T(X))]``."""
    dual_objective: float
    """``E[log h(TX)] - E_mu[h(Z)]``: the dual's objective, ``-E[log mu_k(TX)] - H(T#rho_k) - 1``
    at the optimum."""
    iterations: int
    wall_time: float
    reference: ReferenceGaussian = field(repr=False)
    losses: list[float] = field(default_factory=list, repr=False)


def new_map(
    dim: int,
    config: VariationalSchemeConfig,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> nn.Module:
    """A fresh transport map of the configured kind, the identity (or close to it) at the start."""
    if config.map == "icnn":
        return DenseICNN(
            dim,
            hidden=config.hidden,
            rank=config.rank,
            strong_convexity=config.strong_convexity,
            generator=generator,
            dtype=dtype,
            device=device,
        )
    activation = None if config.map == "linear" else "prelu"
    return ResidualMap(
        dim, hidden=config.hidden, activation=activation, generator=generator, dtype=dtype, device=device
    )


def new_dual(
    dim: int,
    config: VariationalSchemeConfig,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> DualNetwork:
    """A fresh dual network ``h`` (``h = 1`` at the start)."""
    return DualNetwork(
        dim, hidden=config.dual_hidden, head=config.dual_head, generator=generator, dtype=dtype, device=device
    )


def variational_jko_step(
    warm_map: nn.Module,
    dual: DualNetwork,
    particles: Tensor,
    log_density: Callable[[Tensor], Tensor],
    step_size: float,
    config: VariationalSchemeConfig,
    generator: torch.Generator,
    beta: float = 1.0,
    step_index: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, DualNetwork, VariationalStepInfo]:
    """Fit the map (and the dual function) of one variational JKO step.

    Parameters
    ----------
    warm_map : nn.Module
        Map the optimisation starts from (the previous step's); copied, not changed.
    dual : DualNetwork
        Dual function carried over from the previous step; copied, not changed.
    particles : Tensor
        ``(m, d)`` particles of ``rho_k``; ``mu_k`` is fitted to them.
    log_density : callable
        Target log-density ``(n, d) -> (n,)``.
    step_size : float
        JKO step ``a``.
    config : VariationalSchemeConfig
    generator : torch.Generator
        CPU generator for batch indices and draws of ``mu_k``.
    beta : float
        Inverse temperature.
    step_index : int
        Used in error messages.
    callback : callable, optional
        Called as ``callback(iteration, loss)`` after every outer iteration.

    Returns
    -------
    transport_map, dual : nn.Module, DualNetwork
        The trained networks of this step.
    info : VariationalStepInfo

    Raises
    ------
    TrainingDivergedError
        If a loss, a map output or a gradient becomes non-finite.
    """
    transport, h = copy.deepcopy(warm_map), copy.deepcopy(dual)
    for p in [*transport.parameters(), *h.parameters()]:
        p.requires_grad_(True)
    # mu_k only has to be a Gaussian close to rho_k (the formula holds for any mu): its moments from
    # at most REFERENCE_PARTICLES pool particles keep the O(m d^2) fit small next to the iterations
    reference = ReferenceGaussian.matching(particles[:REFERENCE_PARTICLES])
    # foreach: one fused update per optimiser instead of a Python loop over parameters
    map_opt = torch.optim.Adam(transport.parameters(), lr=config.lr, foreach=True)
    dual_opt = torch.optim.Adam(h.parameters(), lr=config.dual_lr, foreach=True)
    schedules = [cosine_schedule(o, config.lr_decay, config.iters_per_step) for o in (map_opt, dual_opt)]
    n_particles = particles.shape[0]
    batch = min(config.batch_size, n_particles)
    start = time.perf_counter()
    losses: list[float] = []
    tail: list[tuple[float, float, float]] = []
    tail_from = config.iters_per_step - max(1, config.iters_per_step // 10)
    for it in range(config.iters_per_step):
        idx = torch.randint(0, n_particles, (batch,), generator=generator).to(particles.device)
        x = particles[idx]
        z = reference.sample(batch, generator)
        with torch.no_grad():
            y_fixed = transport.transport(x)
        check_points(y_fixed, step_index, it)
        for _ in range(config.dual_steps):
            dual_objective = h.objective(y_fixed, z)
            if not torch.isfinite(dual_objective):
                raise TrainingDivergedError(
                    f"JKO step {step_index}, iteration {it}: non-finite dual objective"
                )
            dual_opt.zero_grad(set_to_none=True)
            (-dual_objective).backward()
            check_gradients(h, step_index, it, "dual network")
            dual_opt.step()
        for _ in range(config.map_steps):
            y = transport.transport(x)
            w2 = transport_distance(x, y, step_index, it)
            potential = -log_density(y).mean()
            log_ratio = (h.log_h(y) + reference.log_prob(y)).mean()
            loss = w2 / (2.0 * step_size) + potential + log_ratio / beta
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"JKO step {step_index}, iteration {it}: non-finite loss")
            map_opt.zero_grad(set_to_none=True)
            loss.backward()
            check_gradients(transport, step_index, it, "transport map")
            map_opt.step()
        for s in schedules:
            s.step()
        loss_value = float(loss.detach())
        losses.append(loss_value)
        if it >= tail_from:
            tail.append((float(w2.detach()), float(potential.detach()), float(dual_objective.detach())))
        if callback is not None:
            callback(it, loss_value)
    for p in [*transport.parameters(), *h.parameters()]:
        p.requires_grad_(False)
        p.grad = None
    mean = [sum(v) / len(tail) for v in zip(*tail, strict=True)]
    info = VariationalStepInfo(
        loss=sum(losses[tail_from:]) / len(tail),
        w2=mean[0],
        potential=mean[1],
        dual_objective=mean[2],
        iterations=config.iters_per_step,
        wall_time=time.perf_counter() - start,
        reference=reference,
        losses=losses,
    )
    return transport, h, info


@torch.no_grad()
def variational_kl(
    dual: DualNetwork,
    reference: ReferenceGaussian,
    pushed: Tensor,
    lp: Tensor,
    generator: torch.Generator,
    beta: float = 1.0,
) -> tuple[float, float]:
    """The variational estimate of ``KL(T # rho_k || Q) - log Z`` after a step (seed 001 Fig. 3b).

    ``1 + E[log h(Y) + log mu_k(Y) - beta * lp(Y)] - E_{mu_k}[h(Z)]`` over the pushed particles ``Y``
    (with their log target values ``lp``) and as many draws of ``mu_k``.  In expectation it is a
    lower bound of the exact value for any ``h`` and equals it at the optimal ``h``.

    Returns
    -------
    estimate, standard_error : float
        The estimate and its Monte-Carlo standard error (the two averages are independent).
    """
    n = pushed.shape[0]
    z = reference.sample(n, generator)
    terms = (dual.log_h(pushed) + reference.log_prob(pushed) - beta * lp).double()
    h_z = dual(z).double()
    se = math.sqrt(float(terms.var() + h_z.var()) / n) if n > 1 else float("nan")
    return float(1.0 + terms.mean() - h_z.mean()), se

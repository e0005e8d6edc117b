"""The variational JKO scheme (Fan et al. 2021 Algorithm 1 and Proposition 1; Fan et al. 2022 Corollary 3.3).

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
on ``h`` (default 3, as in Fan et al. 2022) and ``map_steps`` Adam steps on ``T`` (default 1).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer._validation import check_positive_float, check_positive_int
from wgfinfer.errors import TrainingDivergedError
from wgfinfer.flow import push_points
from wgfinfer.functionals import Functional, InternalEnergy, KLDivergence, as_functional
from wgfinfer.nn.icnn import DenseICNN
from wgfinfer.nn.mlp import DUAL_HEADS, DualNetwork, ResidualMap
from wgfinfer.schemes.base import (
    Info,
    Scheme,
    adam,
    check_choice,
    check_explosion,
    check_finite,
    check_fraction,
    check_gradients,
    check_points,
    check_widths,
    cosine_schedule,
    draw_pool,
    set_field,
    transport_distance,
)

MAPS = ("resnet", "icnn", "linear")
REFERENCE_PARTICLES = 16384


@dataclass(frozen=True)
class Variational(Scheme):
    """The variational JKO scheme (Fan, Zhang, Taghvaei and Chen 2022): a transport map and dual
    functions trained on the variational formula of the free energy's internal energies.

    Every option has its default here and only here; ``scheme="variational"`` means
    ``Variational()``.

    Parameters
    ----------
    map : {"resnet", "icnn", "linear"}, default "resnet"
        ``T(x) = x + MLP(x)``; the gradient of an input-convex network (invertible, so the flow has
        densities); or an affine residual map (exact for Gaussian-to-Gaussian steps).
    hidden : tuple of int, default (64, 64)
        Hidden widths of ``T`` (of the ICNN for ``map="icnn"``).
    dual_hidden : tuple of int, default (64, 64, 64)
        Hidden widths of each dual network ``h``.
    dual_head : {"softplus", "expm1", "exp"}, default "softplus"
        Positive output head of ``h`` (see :class:`wgfinfer.nn.DualNetwork` and ``docs/methods.md``).
    iters_per_step : int, default 200
        Outer iterations per JKO step.
    dual_steps, map_steps : int, default 3 and 1
        Adam steps on ``h`` and on ``T`` per outer iteration (the defaults of Fan et al. 2022).
    batch_size : int, default 256
        Particles (and reference draws) per outer iteration.
    lr : float, default 5e-3
        Adam learning rate of ``T`` at the start of every step.
    dual_lr : float, optional
        Adam learning rate of ``h`` (default: ``lr``).
    lr_decay : float, default 0.1
        Cosine decay of both learning rates within a step, down to ``lr * lr_decay``.
    rank, strong_convexity : int, float, default 1 and 1e-3
        ICNN options for ``map="icnn"``.
    n_particles : int, optional
        Size of the particle pool (default ``iters_per_step * batch_size``).
    n_monitor : int, default 4096
        Pool particles the variational estimate of the KL divergence is computed on after each
        step (only for a :class:`~wgfinfer.functionals.KLDivergence` monitor).  They are held out:
        the last :attr:`held_out` particles of the pool never enter a training batch of the maps or
        of the dual, so that the estimate is not fitted to them (see :func:`variational_kl`).
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
    dual_lr: float | None = None
    lr_decay: float = 0.1
    rank: int = 1
    strong_convexity: float = 1e-3
    n_particles: int | None = None
    n_monitor: int = 4096

    name: ClassVar[str] = "variational"

    def __post_init__(self) -> None:
        check_choice("map", self.map, MAPS)
        set_field(self, "hidden", check_widths("hidden", self.hidden))
        set_field(self, "dual_hidden", check_widths("dual_hidden", self.dual_hidden))
        check_choice("dual_head", self.dual_head, DUAL_HEADS)
        for name in ("iters_per_step", "dual_steps", "map_steps", "batch_size"):
            set_field(self, name, check_positive_int(name, getattr(self, name)))
        set_field(self, "lr", check_positive_float("lr", self.lr))
        if self.dual_lr is not None:
            set_field(self, "dual_lr", check_positive_float("dual_lr", self.dual_lr))
        set_field(self, "lr_decay", check_fraction("lr_decay", self.lr_decay, inclusive_upper=True))
        set_field(self, "rank", check_positive_int("rank", self.rank, allow_zero=True))
        set_field(self, "strong_convexity", check_fraction("strong_convexity", self.strong_convexity))
        if self.n_particles is not None:
            set_field(self, "n_particles", check_positive_int("n_particles", self.n_particles))
        set_field(self, "n_monitor", check_positive_int("n_monitor", self.n_monitor, allow_zero=True))

    @property
    def pool_size(self) -> int:
        """``n_particles``, or its default ``iters_per_step * batch_size``."""
        return self.iters_per_step * self.batch_size if self.n_particles is None else self.n_particles

    @property
    def held_out(self) -> int:
        """Particles at the end of the pool that the monitor uses and training never sees:
        ``n_monitor``, at most a quarter of the pool."""
        return min(self.n_monitor, self.pool_size // 4)

    @property
    def dual_learning_rate(self) -> float:
        """``dual_lr``, or ``lr`` when it is not set."""
        return self.lr if self.dual_lr is None else self.dual_lr

    def scaled(self, lr_scale: float) -> Variational:  # noqa: D102
        if lr_scale == 1.0:
            return self
        return dataclasses.replace(self, lr=self.lr * lr_scale, dual_lr=self.dual_learning_rate * lr_scale)


@dataclass(frozen=True)
class VariationalState:
    """The variational scheme between steps (never modified: a step returns a new state).

    Attributes
    ----------
    step : int
        Steps done.
    particles : Tensor
        ``(n, d)`` particle pool of ``rho_k``.
    maps : tuple of nn.Module
        The transport maps of the steps done.
    duals : tuple of DualNetwork
        The dual functions, one per internal energy, carried across steps (empty before the first
        step).
    """

    step: int
    particles: Tensor
    maps: tuple[nn.Module, ...] = ()
    duals: tuple[DualNetwork, ...] = ()


def init(
    scheme: Variational,
    base: Distribution,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    functional: Functional | None = None,
) -> VariationalState:
    """Draw the particle pool of ``rho_0 = base`` (no density is needed)."""
    return VariationalState(step=0, particles=draw_pool(base, scheme.pool_size, generator, device))


def step(
    state: VariationalState,
    functional: Functional | Callable[[Tensor], Tensor],
    step_size: float,
    generator: torch.Generator,
    *,
    scheme: Variational,
    lr_scale: float = 1.0,
    monitor: Functional | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[VariationalState, Info]:
    """One variational JKO step: fit the map and the duals, push the pool through the map once.

    With a :class:`~wgfinfer.functionals.KLDivergence` ``monitor``, ``Info.energy`` is the
    variational estimate of ``beta^{-1}(KL - log Z)`` after the step (no log-density needed), on the
    pool's last ``scheme.held_out`` particles, which the map and the dual are not trained on: in
    expectation it is then at most the exact value (:func:`variational_kl`).
    Arguments as in :func:`wgfinfer.schemes.icnn.step`.
    """
    functional = as_functional(functional)
    options = scheme.scaled(lr_scale)
    k, pool = state.step, state.particles
    start = time.perf_counter()
    args = (pool.shape[1], options, generator, pool.dtype, pool.device)
    warm = state.maps[-1] if state.maps else new_map(*args)
    duals = state.duals or tuple(new_dual(*args) for _ in functional.internal_energies())
    # the monitor's particles are held out of every step's training (the same indices at every
    # step, so no earlier map or dual was fitted to them either): independent draws of rho_{k+1}
    monitoring = isinstance(monitor, KLDivergence) and len(duals) == 1 and options.held_out > 0
    n_train = pool.shape[0] - (options.held_out if monitoring else 0)
    transport, new_duals, fit = variational_fit(
        warm,
        list(duals),
        pool[:n_train],
        functional,
        step_size,
        options,
        generator,
        step_index=k,
        callback=callback,
    )
    particles, _ = push_points([transport], pool)
    where = f"JKO step {k}"
    check_finite(particles, where)
    check_explosion(pool, particles, where)
    energy = energy_se = None
    if monitoring:
        assert isinstance(monitor, KLDivergence)
        monitored = particles[n_train:]
        with torch.no_grad():
            lp = monitor.log_density(monitored)
        kl, kl_se = variational_kl(new_duals[0], fit.reference, monitored, lp, generator, monitor.beta)
        energy, energy_se = kl / monitor.beta, kl_se / monitor.beta
    info = Info(
        loss=fit.loss,
        energy=energy,
        energy_se=energy_se,
        iterations=fit.iterations,
        wall_time=time.perf_counter() - start,
        w2=fit.w2,
        potential=fit.potential,
        dual_objective=fit.dual_objective,
    )
    new_state = VariationalState(
        step=k + 1, particles=particles, maps=(*state.maps, transport), duals=tuple(new_duals)
    )
    return new_state, info


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


@dataclass(frozen=True)
class UniformBox:
    """``Q``: the uniform law on an axis-aligned box, the reference of the generalized entropy's
    dual formula (Fan et al. 2021 §3.2.2); refitted every step so that it contains the support."""

    lower: Tensor
    upper: Tensor

    @classmethod
    def containing(cls, particles: Tensor, margin: float = 0.25) -> UniformBox:
        """The particles' bounding box widened by ``margin`` times its width on every side (a map close
        to the identity keeps the pushed particles inside)."""
        x = particles.detach()
        lo, hi = x.min(0).values, x.max(0).values
        width = (hi - lo).clamp_min(1e-12 + 1e-6 * float((hi - lo).abs().max()))
        return cls(lo - margin * width, hi + margin * width)

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])

    @property
    def volume(self) -> float:
        """``Omega``."""
        return float(torch.exp(torch.log(self.upper - self.lower).sum()))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` uniform draws; the noise comes from the (CPU) ``generator``."""
        u = torch.rand(n, self.dim, generator=generator, dtype=self.lower.dtype).to(self.lower.device)
        return self.lower + u * (self.upper - self.lower)

    def log_prob(self, y: Tensor) -> Tensor:
        """``-log Omega`` (the density inside the box; the formula never evaluates it outside)."""
        return torch.full(y.shape[:1], -math.log(self.volume), dtype=y.dtype, device=y.device)


def fit_reference(term: InternalEnergy, particles: Tensor) -> ReferenceGaussian | UniformBox:
    """The reference ``Gamma`` of ``term``'s dual formula for the particles of ``rho_k``."""
    sub = particles[:REFERENCE_PARTICLES]
    if term.reference == "box":
        return UniformBox.containing(particles)
    return ReferenceGaussian.matching(sub)


@dataclass
class VariationalStepInfo:
    """What one variational JKO step did (means over the last 10% of its outer iterations)."""

    loss: float
    """The map's objective (W2 term + particle terms + the internal energies' ``A`` terms)."""
    w2: float
    """``E||T(X) - X||^2``: squared W2 distance moved in this step."""
    potential: float
    """The particle terms' energy at the pushed batch (``E[-log_density(T(X))]`` for the KL)."""
    dual_objective: float
    """Sum over internal energies of ``E[A(h)] - E_Gamma[B(h)]``: for the KL, ``beta^{-1}`` times
    ``E[log h(TX) + log mu_k(TX)] - E_mu[h(Z)]``, i.e. ``beta^{-1}(-H(T#rho_k) - 1)`` at the optimum."""
    iterations: int
    wall_time: float
    reference: ReferenceGaussian | UniformBox = field(repr=False)
    """The first internal energy's reference (``mu_k`` for the KL)."""
    references: list[ReferenceGaussian | UniformBox] = field(default_factory=list, repr=False)
    losses: list[float] = field(default_factory=list, repr=False)


def new_map(
    dim: int,
    config: Variational,
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
    config: Variational,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> DualNetwork:
    """A fresh dual network ``h`` (``h = 1`` at the start)."""
    return DualNetwork(
        dim, hidden=config.dual_hidden, head=config.dual_head, generator=generator, dtype=dtype, device=device
    )


def variational_fit(
    warm_map: nn.Module,
    dual: DualNetwork | Sequence[DualNetwork],
    particles: Tensor,
    target: Functional | Callable[[Tensor], Tensor],
    step_size: float,
    config: Variational,
    generator: torch.Generator,
    beta: float = 1.0,
    step_index: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, DualNetwork | list[DualNetwork], VariationalStepInfo]:
    """Fit the map (and the dual functions) of one variational JKO step.

    Parameters
    ----------
    warm_map : nn.Module
        Map the optimisation starts from (the previous step's); copied, not changed.
    dual : DualNetwork or sequence of DualNetwork
        Dual functions carried over from the previous step, one per internal energy of the free
        energy (in the order of ``functional.internal_energies()``); copied, not changed.
    particles : Tensor
        ``(m, d)`` particles of ``rho_k``; every internal energy's reference is fitted to them.
    target : Functional or callable
        The free energy (:mod:`wgfinfer.functionals`), or a log-density ``(n, d) -> (n,)`` meaning
        ``KLDivergence(log_density, beta)``.
    step_size : float
        JKO step ``a``.
    config : Variational
    generator : torch.Generator
        CPU generator for batch indices and reference draws.
    beta : float
        Inverse temperature when ``target`` is a log-density.
    step_index : int
        Used in error messages.
    callback : callable, optional
        Called as ``callback(iteration, loss)`` after every outer iteration.

    Returns
    -------
    transport_map : nn.Module
    dual : DualNetwork or list of DualNetwork
        The trained dual functions (a single network if a single one was given).
    info : VariationalStepInfo

    Raises
    ------
    TrainingDivergedError
        If a loss, a map output or a gradient becomes non-finite.
    ValueError
        If the number of dual networks does not match the internal energies.
    """
    functional = as_functional(target, beta)
    internal = functional.internal_energies()
    single = isinstance(dual, nn.Module)
    duals_in = [dual] if single else list(dual)  # type: ignore[list-item]
    if len(duals_in) != len(internal):
        raise ValueError(
            f"the free energy has {len(internal)} internal energies but {len(duals_in)} dual "
            "networks were given"
        )
    transport = copy.deepcopy(warm_map)
    duals = [copy.deepcopy(h) for h in duals_in]
    dual_params = [p for h in duals for p in h.parameters()]
    for p in [*transport.parameters(), *dual_params]:
        p.requires_grad_(True)
    # mu_k only has to be a Gaussian close to rho_k (the formula holds for any mu): its moments from
    # at most REFERENCE_PARTICLES pool particles keep the O(m d^2) fit small next to the iterations
    references = [fit_reference(t, particles) for t in internal]
    volumes = [r.volume if isinstance(r, UniformBox) else 1.0 for r in references]
    # fused (or foreach) updates: one kernel per optimiser instead of a Python loop over parameters
    map_opt = adam([{"params": list(transport.parameters()), "lr": config.lr}])
    optimizers = [map_opt]
    dual_opt = None
    if dual_params:
        dual_opt = adam([{"params": list(dual_params), "lr": config.dual_learning_rate}])
        optimizers.append(dual_opt)
    schedules = [cosine_schedule(o, config.lr_decay, config.iters_per_step) for o in optimizers]
    n_particles = particles.shape[0]
    batch = min(config.batch_size, n_particles)
    start = time.perf_counter()
    losses: list[float] = []
    tail: list[tuple[float, float, float]] = []
    tail_from = config.iters_per_step - max(1, config.iters_per_step // 10)
    dual_objective = particles.new_zeros(())
    for it in range(config.iters_per_step):
        idx = torch.randint(0, n_particles, (batch,), generator=generator).to(particles.device)
        x = particles[idx]
        draws = [r.sample(batch, generator) for r in references]
        with torch.no_grad():
            y_fixed = transport.transport(x)
            log_gamma_fixed = [r.log_prob(y_fixed) for r in references]
        check_points(y_fixed, step_index, it)
        for _ in range(config.dual_steps if duals else 0):
            dual_objective = particles.new_zeros(())
            for term, h, z, lg, vol in zip(internal, duals, draws, log_gamma_fixed, volumes, strict=True):
                log_h = h.log_h(torch.cat([y_fixed, z]))
                dual_objective = (
                    dual_objective
                    + term.dual_a(log_h[:batch], lg, vol).mean()
                    - term.dual_b(log_h[batch:], vol).mean()
                )
            if not torch.isfinite(dual_objective):
                raise TrainingDivergedError(
                    f"JKO step {step_index}, iteration {it}: non-finite dual objective"
                )
            assert dual_opt is not None
            dual_opt.zero_grad(set_to_none=True)
            (-dual_objective).backward()
            for h in duals:
                check_gradients(h, step_index, it, "dual network")
            dual_opt.step()
        for _ in range(config.map_steps):
            y = transport.transport(x)
            w2 = transport_distance(x, y, step_index, it)
            potential = functional.particle_energy(y)
            loss = w2 / (2.0 * step_size) + potential
            for term, h, r, vol in zip(internal, duals, references, volumes, strict=True):
                loss = loss + term.dual_a(h.log_h(y), r.log_prob(y), vol).mean()
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
    for p in [*transport.parameters(), *dual_params]:
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
        reference=references[0] if references else None,  # type: ignore[arg-type]
        references=references,
        losses=losses,
    )
    return transport, (duals[0] if single else duals), info


@torch.no_grad()
def variational_kl(
    dual: DualNetwork,
    reference: ReferenceGaussian,
    pushed: Tensor,
    lp: Tensor,
    generator: torch.Generator,
    beta: float = 1.0,
) -> tuple[float, float]:
    """The variational estimate of ``KL(T # rho_k || Q) - log Z`` after a step (Fan et al. 2022 Fig. 3b).

    ``1 + E[log h(Y) + log mu_k(Y) - beta * lp(Y)] - E_{mu_k}[h(Z)]`` over the pushed particles ``Y``
    (with their log target values ``lp``) and as many fresh draws ``Z`` of ``mu_k``.

    For a fixed ``h``, ``log(rho / mu) >= log h + 1 - h rho / mu`` pointwise (``log t <= t - 1``)
    gives ``KL(rho || mu) >= 1 + E_rho[log h] - E_mu[h]``, with equality at ``h = rho / mu``
    (Nguyen, Wainwright and Jordan 2010): on draws independent of ``h`` the formula is an unbiased
    estimate of a lower bound of the exact value, and a poorly fitted ``h`` can only make it read
    low.  On the draws ``h`` was trained on, it is not: the dual maximises the same average, and a
    flexible ``h`` raises ``log h`` at exactly those draws, so the in-sample estimate is biased
    upwards by the dual's overfitting and can exceed the exact value.  Pass ``pushed`` particles
    that did not enter the dual's (or any map's) training batches, as :func:`step` does.

    The estimate cannot tell a flow that is too wide: a lower bound that reads low is consistent
    with any flow.  Use a density-free check of the draws for that (the ``"stein"`` check of
    :mod:`wgfinfer.checks`).

    Parameters
    ----------
    dual : DualNetwork
        The trained ``h``.
    reference : ReferenceGaussian
        ``mu_k``.
    pushed : Tensor
        ``(n, d)`` particles of ``T # rho_k``, held out of training, ``n >= 2``.
    lp : Tensor
        ``(n,)`` log target at ``pushed``.
    generator : torch.Generator
        Source of the draws of ``mu_k``.
    beta : float
        Inverse temperature.

    Returns
    -------
    estimate, standard_error : float
        The estimate and its Monte-Carlo standard error given ``h``: the two averages are over
        independent draws, so their variances add.  Given ``h`` it is exact for held-out particles;
        for the particles ``h`` was trained on it understates the error (it ignores the bias).
    """
    n = pushed.shape[0]
    z = reference.sample(n, generator)
    terms = (dual.log_h(pushed) + reference.log_prob(pushed) - beta * lp).double()
    h_z = dual(z).double()
    se = math.sqrt(float(terms.var() + h_z.var()) / n) if n > 1 else float("nan")
    return float(1.0 + terms.mean() - h_z.mean()), se

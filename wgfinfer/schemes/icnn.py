"""The ICNN JKO scheme (JKO-ICNN, Mokrov 2022 Algorithm 1; Mokrov et al. 2021).

One JKO step for the Fokker-Planck free energy ``F(rho) = E_rho[Phi] - beta^{-1} H(rho)`` with
``Phi = -log_density`` solves, over convex potentials ``psi``,

.. math::

    \\min_\\psi \\; \\frac{1}{2h} E_{\\rho_k}\\lVert \\nabla\\psi(X) - X\\rVert^2
      + E_{\\rho_k}[\\Phi(\\nabla\\psi(X))]
      - \\beta^{-1} E_{\\rho_k}[\\log\\det \\nabla^2\\psi(X)],

whose value is ``F(grad psi # rho_k) + W2^2 / (2h)`` up to the constant ``-beta^{-1} H(rho_k)``
(Mokrov 2022, Theorem 1).  The expectation is taken over mini-batches of a cached particle pool of
``rho_k``: the pool is pushed through each new map once, never re-pushed from ``rho_0``.

Build-time options (network, optimiser, iterations, pool size) live in the frozen options object
:class:`ICNN`; the state between steps is an :class:`ICNNState` (the pool, its tracked
log-densities, the maps so far); :func:`init` and :func:`step` are the scheme's protocol
(:mod:`wgfinfer.schemes.base`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from wgfinfer._validation import check_positive_float, check_positive_int
from wgfinfer.errors import DensityNotAvailableError, NonPositiveHessianError, TrainingDivergedError
from wgfinfer.flow import push_points
from wgfinfer.functionals import Entropy, Functional, as_functional
from wgfinfer.nn.icnn import DenseICNN
from wgfinfer.schemes.base import (
    VALIDATION_BATCHES,
    Info,
    Scheme,
    adam,
    check_explosion,
    check_finite,
    check_fraction,
    check_gradients,
    check_points,
    check_widths,
    cosine_schedule,
    draw_pool,
    monitor_energy,
    plateau_window,
    set_field,
    tail_length,
    transport_distance,
    validation_plateaued,
)


@dataclass(frozen=True)
class ICNN(Scheme):
    """The ICNN JKO scheme (Mokrov et al. 2021): each step is the gradient of an input-convex network.

    Every option has its default here and only here; ``scheme="icnn"`` means ``ICNN()``.

    Parameters
    ----------
    hidden : tuple of int, default (64, 64)
        ICNN hidden widths.
    rank : int, default 1
        Rank of each hidden unit's convex quadratic input term.
    strong_convexity : float, default 1e-3
        ``s``: every Hessian is at least ``s I`` (keeps the maps invertible).
    iters_per_step : int, default 200
        Adam iterations per JKO step.
    batch_size : int, default 256
        Particles per iteration.
    lr : float, default 5e-3
        Adam learning rate at the start of every step.
    lr_decay : float, default 0.1
        Within every step the learning rate follows a cosine from ``lr`` down to ``lr * lr_decay``
        (1 keeps it constant); see ``docs/design.md`` for the measurement behind the default.
    affine_lr_scale : float, default 1.0
        Learning rate of the affine part of the map (``L`` and ``c``) relative to ``lr``.
    warm_start : bool, default True
        Start every step from the previous step's map (``True``) or from a fresh near-identity map.
    n_particles : int, optional
        Size of the particle pool of ``rho_k`` that batches are drawn from, pushed through each new
        map once; default ``iters_per_step * batch_size`` (each particle used about once per step;
        much smaller pools overfit the maps to the pool, see ``docs/design.md``).
    n_monitor : int, default 4096
        Pool particles whose exact log-density is tracked, for the free-energy monitor ``energy``.
    stop_on_plateau : bool, default True
        End a step's optimisation before ``iters_per_step`` iterations once its loss has stopped
        falling (:func:`wgfinfer.schemes.base.validation_plateaued`: the loss on a fixed batch of
        ``4 * batch_size`` pool particles, evaluated every ``iters_per_step // 10`` iterations, fell
        by less than 1e-4 nats over the last window), after one more window at the decayed learning
        rate ``lr * lr_decay``; ``iters_per_step`` is the cap.  The validation batch costs about
        a tenth of the iterations it watches.
    """

    hidden: tuple[int, ...] = (64, 64)
    rank: int = 1
    strong_convexity: float = 1e-3
    iters_per_step: int = 200
    batch_size: int = 256
    lr: float = 5e-3
    lr_decay: float = 0.1
    affine_lr_scale: float = 1.0
    warm_start: bool = True
    n_particles: int | None = None
    n_monitor: int = 4096
    stop_on_plateau: bool = True

    name: ClassVar[str] = "icnn"

    def __post_init__(self) -> None:
        set_field(self, "hidden", check_widths("hidden", self.hidden))
        set_field(self, "rank", check_positive_int("rank", self.rank, allow_zero=True))
        set_field(self, "strong_convexity", check_fraction("strong_convexity", self.strong_convexity))
        set_field(self, "iters_per_step", check_positive_int("iters_per_step", self.iters_per_step))
        set_field(self, "batch_size", check_positive_int("batch_size", self.batch_size))
        set_field(self, "lr", check_positive_float("lr", self.lr))
        set_field(self, "lr_decay", check_fraction("lr_decay", self.lr_decay, inclusive_upper=True))
        set_field(self, "affine_lr_scale", check_positive_float("affine_lr_scale", self.affine_lr_scale))
        if not isinstance(self.warm_start, bool):
            raise TypeError(f"warm_start must be a bool, got {type(self.warm_start).__name__}")
        if self.n_particles is not None:
            set_field(self, "n_particles", check_positive_int("n_particles", self.n_particles))
        set_field(self, "n_monitor", check_positive_int("n_monitor", self.n_monitor, allow_zero=True))
        if not isinstance(self.stop_on_plateau, bool):
            raise TypeError(f"stop_on_plateau must be a bool, got {type(self.stop_on_plateau).__name__}")

    @property
    def pool_size(self) -> int:
        """``n_particles``, or its default ``iters_per_step * batch_size``."""
        return self.iters_per_step * self.batch_size if self.n_particles is None else self.n_particles

    def scaled(self, lr_scale: float) -> ICNN:  # noqa: D102
        return self if lr_scale == 1.0 else dataclasses.replace(self, lr=self.lr * lr_scale)


@dataclass(frozen=True)
class ICNNState:
    """The ICNN scheme between steps (never modified: a step returns a new state).

    Attributes
    ----------
    step : int
        Steps done.
    particles : Tensor
        ``(n, d)`` particle pool of ``rho_k``.
    log_q : Tensor or None
        ``(m,)`` exact ``log rho_k`` of the first ``m`` pool particles (``None``: not tracked).
    maps : tuple of DenseICNN
        The maps of the steps done, first step first.
    """

    step: int
    particles: Tensor
    log_q: Tensor | None
    maps: tuple[DenseICNN, ...] = ()


@dataclass
class _Fit:
    """What fitting one map did (means over the last 10% of its iterations)."""

    loss: float
    w2: float
    potential: float
    log_det: float
    iterations: int
    losses: list[float] = field(default_factory=list, repr=False)


def needs_particle_density(functional: Functional) -> bool:
    """Whether the functional's internal energies need ``log rho_k`` at the particles (not only the
    entropy, whose step does not depend on it)."""
    return any(not isinstance(t, Entropy) for t in functional.internal_energies())


def init(
    scheme: ICNN,
    base: Distribution,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    functional: Functional | None = None,
    track_density: bool = True,
) -> ICNNState:
    """Draw the pool of ``rho_0 = base`` (and the log-densities of its monitored particles).

    Parameters
    ----------
    scheme : ICNN
    base : torch.distributions.Distribution
        The initial law, event shape ``(d,)``.
    generator : torch.Generator
        Source of the draws.
    device : str or torch.device
    functional : Functional, optional
        The free energy to be run; internal energies other than the entropy need the exact
        log-density of every pool particle, which is then tracked for all of them.
    track_density : bool, default True
        Track ``log rho_k`` of the first ``n_monitor`` particles (when ``base`` has a density).

    Raises
    ------
    ValueError
        If ``base`` draws points of another shape, or ``functional`` needs densities that ``base``
        does not have.
    """
    n = scheme.pool_size
    x0 = draw_pool(base, n, generator, device)
    needs_all = functional is not None and needs_particle_density(functional)
    tracked = n if needs_all else (min(scheme.n_monitor, n) if track_density else 0)
    log_q = None
    if tracked:
        try:
            log_q = base.log_prob(x0[:tracked])
        except (DensityNotAvailableError, NotImplementedError) as exc:
            if needs_all:
                raise ValueError(
                    "the ICNN scheme evaluates internal energies with the particles' exact densities: "
                    "give init as a Distribution with log_prob (or use the variational scheme)"
                ) from exc
    return ICNNState(step=0, particles=x0, log_q=log_q)


def step(
    state: ICNNState,
    functional: Functional | Callable[[Tensor], Tensor],
    step_size: float,
    generator: torch.Generator,
    *,
    scheme: ICNN,
    lr_scale: float = 1.0,
    monitor: Functional | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[ICNNState, Info]:
    """One JKO step: fit the map, push the pool through it once, monitor the free energy.

    Parameters
    ----------
    state : ICNNState
    functional : Functional or callable
        The free energy, or a log-density meaning ``KLDivergence(log_density)``.
    step_size : float
        JKO step ``h``.
    generator : torch.Generator
        Source of new weights and batch indices.
    scheme : ICNN
        The options.
    lr_scale : float, default 1
        Learning rates are multiplied by it (a retry after a divergence).
    monitor : Functional, optional
        Free energy estimated after the step on the tracked particles (``Info.energy``); the
        sampler passes the full-data KL when it trains on mini-batches.
    callback : callable, optional
        ``callback(iteration, loss)`` after every iteration.

    Returns
    -------
    ICNNState, Info

    Raises
    ------
    TrainingDivergedError
        If the fit diverges, or the new map sends the pool to non-finite or exploded points.
    """
    functional = as_functional(functional)
    options = scheme.scaled(lr_scale)
    k, pool = state.step, state.particles
    start = time.perf_counter()
    if state.maps and options.warm_start:
        warm = state.maps[-1]
    else:
        warm = new_potential(pool.shape[1], options, generator, pool.dtype, pool.device)
    full = state.log_q is not None and state.log_q.shape[0] == pool.shape[0]
    psi, fit = fit_potential(
        warm,
        pool,
        functional,
        step_size,
        options,
        generator,
        step_index=k,
        callback=callback,
        particle_log_density=state.log_q if full and needs_particle_density(functional) else None,
    )
    m = 0 if state.log_q is None else state.log_q.shape[0]
    where = f"JKO step {k}"
    try:
        monitored, log_q = push_points([psi], pool[:m], state.log_q)
        rest, _ = push_points([psi], pool[m:])
    except NonPositiveHessianError as exc:
        raise TrainingDivergedError(f"{where}: pushing the particle pool failed: {exc}") from exc
    particles = torch.cat([monitored, rest])
    check_finite(particles, where, log_q=log_q)
    check_explosion(pool, particles, where)
    monitored_estimate = monitor_energy(monitor, particles, log_q, options.n_monitor)
    info = Info(
        loss=fit.loss,
        energy=monitored_estimate.energy,
        energy_se=monitored_estimate.energy_se,
        kl=monitored_estimate.kl,
        kl_se=monitored_estimate.kl_se,
        iterations=fit.iterations,
        wall_time=time.perf_counter() - start,
        w2=fit.w2,
        potential=fit.potential,
        log_det=fit.log_det,
    )
    return ICNNState(step=k + 1, particles=particles, log_q=log_q, maps=(*state.maps, psi)), info


def new_potential(
    dim: int, config: ICNN, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> DenseICNN:
    """A fresh ICNN whose gradient is close to the identity (used for the first step)."""
    return DenseICNN(
        dim,
        hidden=config.hidden,
        rank=config.rank,
        strong_convexity=config.strong_convexity,
        generator=generator,
        dtype=dtype,
        device=device,
    )


def fit_potential(
    warm_start: DenseICNN,
    particles: Tensor,
    target: Functional | Callable[[Tensor], Tensor],
    step_size: float,
    config: ICNN,
    generator: torch.Generator,
    beta: float = 1.0,
    step_index: int = 0,
    callback: Callable[[int, float], None] | None = None,
    particle_log_density: Tensor | None = None,
) -> tuple[DenseICNN, _Fit]:
    """Fit the map of one JKO step.

    Parameters
    ----------
    warm_start : DenseICNN
        Potential the optimisation starts from (the previous step's map); it is copied, not changed.
    particles : Tensor
        ``(m, d)`` particles of ``rho_k``.
    target : Functional or callable
        The free energy (:mod:`wgfinfer.functionals`), or a log-density ``(n, d) -> (n,)`` meaning
        ``KLDivergence(log_density, beta)`` (potential ``Phi = -log_density``).  Internal energies
        are evaluated exactly at the pushed points from ``log rho_k(x) - log det grad^2 psi(x)``.
    step_size : float
        JKO step ``h``.
    config : ICNN
        Build-time options.
    generator : torch.Generator
        CPU generator for the mini-batch indices.
    beta : float
        Inverse temperature: the stationary measure is ``prop. to exp(beta * log_density)``.
    step_index : int
        Used in error messages.
    callback : callable, optional
        Called as ``callback(iteration, loss)`` after every iteration.
    particle_log_density : Tensor, optional
        ``(m,)`` exact ``log rho_k`` at the particles; needed by internal energies other than
        :class:`~wgfinfer.functionals.Entropy` (whose step does not depend on it).

    Returns
    -------
    psi : DenseICNN
        The trained potential of this step.
    info : _Fit

    Raises
    ------
    TrainingDivergedError
        If the loss, the map or a parameter gradient becomes non-finite.
    ValueError
        If an internal energy needs ``particle_log_density`` and it was not given.
    """
    functional = as_functional(target, beta)
    internal = functional.internal_energies()
    if particle_log_density is None and any(not isinstance(t, Entropy) for t in internal):
        raise ValueError("this free energy's internal energies need the particles' log-densities")
    psi = copy.deepcopy(warm_start)
    for p in psi.parameters():
        p.requires_grad_(True)
    affine = [psi.quadratic, psi.linear]
    network = [p for p in psi.parameters() if all(p is not a for a in affine)]
    optimizer = adam(
        [{"params": network, "lr": config.lr}, {"params": affine, "lr": config.lr * config.affine_lr_scale}]
    )
    schedule = cosine_schedule(optimizer, config.lr_decay, config.iters_per_step)
    n_particles = particles.shape[0]
    batch = min(config.batch_size, n_particles)
    losses: list[float] = []
    terms: list[tuple[float, float, float]] = []
    window, stop_after = plateau_window(config.iters_per_step), None
    validation: list[float] = []
    if config.stop_on_plateau:
        n_val = min(n_particles, VALIDATION_BATCHES * batch)
        val_idx = torch.randint(0, n_particles, (n_val,), generator=generator).to(particles.device)
        x_val = particles[val_idx]
        log_rho_val = None if particle_log_density is None else particle_log_density[val_idx]

    def jko_loss(x: Tensor, log_rho_x: Tensor | None, it: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        try:
            y, log_det = psi.map_and_log_det(x)
        except NonPositiveHessianError as exc:
            raise TrainingDivergedError(f"JKO step {step_index}, iteration {it}: {exc}") from exc
        check_points(y, step_index, it)
        w2 = transport_distance(x, y, step_index, it)
        potential = functional.particle_energy(y)
        # log-density of the pushed law at y (the Entropy's step does not need log rho_k itself)
        log_rho_y = -log_det if log_rho_x is None else log_rho_x - log_det
        loss = w2 / (2.0 * step_size) + potential
        for term in internal:
            loss = loss + term.integrand(log_rho_y).mean()
        return loss, w2, potential, log_det.mean()

    for it in range(config.iters_per_step):
        idx = torch.randint(0, n_particles, (batch,), generator=generator).to(particles.device)
        log_rho_x = None if particle_log_density is None else particle_log_density[idx]
        loss, w2, potential, entropy_gain = jko_loss(particles[idx], log_rho_x, it)
        loss_value = float(loss.detach())
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"JKO step {step_index}, iteration {it}: non-finite loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        check_gradients(psi, step_index, it, "ICNN potential")
        optimizer.step()
        losses.append(loss_value)
        terms.append((float(w2.detach()), float(potential.detach()), float(entropy_gain.detach())))
        if callback is not None:
            callback(it, loss_value)
        if stop_after is None:
            schedule.step()
            if config.stop_on_plateau and (it + 1) % window == 0:
                with torch.no_grad():
                    validation.append(float(jko_loss(x_val, log_rho_val, it)[0]))
                if validation_plateaued(validation):
                    # one last window at the decayed learning rate the schedule would have ended with
                    stop_after = it + window
                    for group in optimizer.param_groups:
                        group["lr"] = group["initial_lr"] * config.lr_decay
        elif it >= stop_after:
            break
    for p in psi.parameters():
        p.requires_grad_(False)
    done = len(losses)
    tail = terms[done - tail_length(done, config.iters_per_step) :]
    mean = [sum(v) / len(tail) for v in zip(*tail, strict=True)]
    info = _Fit(
        loss=sum(losses[done - len(tail) :]) / len(tail),
        w2=mean[0],
        potential=mean[1],
        log_det=mean[2],
        iterations=done,
        losses=losses,
    )
    return psi, info

"""The ICNN JKO scheme (JKO-ICNN, seed 002 Algorithm 1; seed 003).

One JKO step for the Fokker-Planck free energy ``F(rho) = E_rho[Phi] - beta^{-1} H(rho)`` with
``Phi = -log_density`` solves, over convex potentials ``psi``,

.. math::

    \\min_\\psi \\; \\frac{1}{2h} E_{\\rho_k}\\lVert \\nabla\\psi(X) - X\\rVert^2
      + E_{\\rho_k}[\\Phi(\\nabla\\psi(X))]
      - \\beta^{-1} E_{\\rho_k}[\\log\\det \\nabla^2\\psi(X)],

whose value is ``F(grad psi # rho_k) + W2^2 / (2h)`` up to the constant ``-beta^{-1} H(rho_k)``
(seed 002, Theorem 1).  The expectation is taken over mini-batches of a cached particle pool of
``rho_k``: the pool is pushed through each new map once, never re-pushed from ``rho_0``.

Build-time options (network, optimiser, iterations) live in :class:`ICNNSchemeConfig`; the step
size and the target are per-step inputs of :func:`icnn_jko_step`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from wgfinfer.errors import NonPositiveHessianError, TrainingDivergedError
from wgfinfer.functionals import Entropy, Functional, as_functional
from wgfinfer.nn.icnn import DenseICNN
from wgfinfer.schemes.common import check_gradients, check_points, cosine_schedule, transport_distance


@dataclass(frozen=True)
class ICNNSchemeConfig:
    """Options fixed when the scheme is built.

    Attributes
    ----------
    hidden : tuple of int
        ICNN hidden widths.
    rank : int
        Rank of each hidden unit's convex quadratic input term.
    strong_convexity : float
        ``s``: every Hessian is at least ``s I``.
    iters_per_step : int
        Adam iterations per JKO step.
    batch_size : int
        Particles per iteration.
    lr : float
        Adam learning rate at the start of every step.
    lr_decay : float
        Within every step the learning rate follows a cosine from ``lr`` down to ``lr * lr_decay``
        (1 keeps it constant).
    affine_lr_scale : float
        Learning rate of the affine part of the map (``L`` and ``c``) relative to ``lr``.
    warm_start : bool
        Start every step from the previous step's map (``True``) or from a fresh near-identity map.
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


@dataclass
class StepInfo:
    """What one JKO step did (means over the last 10% of its iterations)."""

    loss: float
    w2: float
    """``E||grad psi(X) - X||^2``: squared W2 distance moved in this step."""
    potential: float
    """The particle terms' energy at the pushed batch (``E[Phi(grad psi(X))]`` for the KL)."""
    log_det: float
    """``E[log det grad^2 psi(X)]``: entropy increase of the step."""
    iterations: int
    wall_time: float
    losses: list[float] = field(default_factory=list, repr=False)


def new_potential(
    dim: int, config: ICNNSchemeConfig, generator: torch.Generator, dtype: torch.dtype, device: torch.device
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


def icnn_jko_step(
    warm_start: DenseICNN,
    particles: Tensor,
    target: Functional | Callable[[Tensor], Tensor],
    step_size: float,
    config: ICNNSchemeConfig,
    generator: torch.Generator,
    beta: float = 1.0,
    step_index: int = 0,
    callback: Callable[[int, float], None] | None = None,
    particle_log_density: Tensor | None = None,
) -> tuple[DenseICNN, StepInfo]:
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
    config : ICNNSchemeConfig
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
    info : StepInfo

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
    optimizer = torch.optim.Adam(
        [{"params": network, "lr": config.lr}, {"params": affine, "lr": config.lr * config.affine_lr_scale}]
    )
    schedule = cosine_schedule(optimizer, config.lr_decay, config.iters_per_step)
    n_particles = particles.shape[0]
    batch = min(config.batch_size, n_particles)
    start = time.perf_counter()
    losses: list[float] = []
    tail: list[tuple[float, float, float]] = []
    tail_from = config.iters_per_step - max(1, config.iters_per_step // 10)
    for it in range(config.iters_per_step):
        idx = torch.randint(0, n_particles, (batch,), generator=generator).to(particles.device)
        x = particles[idx]
        try:
            y, log_det = psi.map_and_log_det(x)
        except NonPositiveHessianError as exc:
            raise TrainingDivergedError(f"JKO step {step_index}, iteration {it}: {exc}") from exc
        check_points(y, step_index, it)
        w2 = transport_distance(x, y, step_index, it)
        potential = functional.particle_energy(y)
        entropy_gain = log_det.mean()
        # log-density of the pushed law at y (the Entropy's step does not need log rho_k itself)
        log_rho_y = -log_det if particle_log_density is None else particle_log_density[idx] - log_det
        loss = w2 / (2.0 * step_size) + potential
        for term in internal:
            loss = loss + term.integrand(log_rho_y).mean()
        loss_value = float(loss.detach())
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"JKO step {step_index}, iteration {it}: non-finite loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        check_gradients(psi, step_index, it, "ICNN potential")
        optimizer.step()
        schedule.step()
        losses.append(loss_value)
        if it >= tail_from:
            tail.append((float(w2.detach()), float(potential.detach()), float(entropy_gain.detach())))
        if callback is not None:
            callback(it, loss_value)
    for p in psi.parameters():
        p.requires_grad_(False)
    mean = [sum(v) / len(tail) for v in zip(*tail, strict=True)]
    info = StepInfo(
        loss=sum(losses[tail_from:]) / len(tail),
        w2=mean[0],
        potential=mean[1],
        log_det=mean[2],
        iterations=config.iters_per_step,
        wall_time=time.perf_counter() - start,
        losses=losses,
    )
    return psi, info


def as_hidden(hidden: Sequence[int] | int) -> tuple[int, ...]:
    """Normalise a ``hidden`` argument to a tuple of widths."""
    if isinstance(hidden, int):
        return (hidden,)
    return tuple(int(h) for h in hidden)

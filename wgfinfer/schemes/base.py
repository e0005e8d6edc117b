"""What every scheme shares: the per-step ``Info``, the options base class and the divergence checks.

A scheme is a frozen options object (:class:`Scheme`) plus, in its module, a ``State`` dataclass and
two functions (the split of blackjax's ``init`` / ``build_kernel``):

- ``init(scheme, base, generator, *, device, functional=None) -> State``: the state before the first
  step (the particle pool drawn from ``base``, no maps yet);
- ``step(state, functional, step_size, generator, *, scheme, lr_scale=1.0, monitor=None)
  -> (State, Info)``: one step of the flow of ``functional``; the old state is never modified, so a
  caller rolls a step back by keeping it.

:mod:`wgfinfer.run` runs these steps for the sampler, :func:`wgfinfer.simulate` and the filter.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer._validation import check_positive_float, check_positive_int
from wgfinfer.errors import TrainingDivergedError
from wgfinfer.flow import sample_distribution
from wgfinfer.importance import importance_kl

# points that move by more than this many times their spread (squared) have exploded
EXPLOSION_FACTOR = 1e4


@dataclass(frozen=True)
class Info:
    """What one step did; every scheme fills the same fields for the same quantities.

    Attributes
    ----------
    loss : float
        The step's objective: for the JKO schemes its mean over the last 10% of the iterations; for
        PWGF the free energy before the step, on the draws of its first Euler step.
    energy : float or None
        The free energy after the step, estimated on the monitored particles with their exact
        log-densities (variational scheme: its variational estimate, which needs no density);
        ``None`` when the step was given no monitor or the particles have no density.
    energy_se : float or None
        Monte-Carlo standard error of ``energy`` where it is a plain mean.
    iterations : int
        Optimiser iterations (JKO schemes) or Euler substeps (PWGF) of the step.
    wall_time : float
        Seconds spent in the step.
    w2, potential : float or None
        JKO schemes: ``E||T(X) - X||^2`` (squared W2 distance moved) and the particle terms' energy at
        the pushed batch, both averaged over the last 10% of the iterations.
    log_det : float or None
        ICNN scheme: ``E[log det grad^2 psi(X)]``, the step's entropy gain.
    dual_objective : float or None
        Variational scheme: the dual functions' objective.
    loss_se, solver_iterations, residual, residual_max, solves_above_tol, grad_norm : float, int or None
        PWGF: standard error of ``loss``, Krylov iterations summed over the Euler substeps, relative
        residual of the last solve and the largest over the substeps, how many of the substeps'
        solves ended above the tolerance, ``|grad_theta F|`` before the step.
    kl, kl_se : float or None
        With a KL monitor and exact log-densities: the importance-sampling estimate of the KL
        divergence itself after the step, and its standard error
        (:func:`wgfinfer.importance.importance_kl`).
    """

    loss: float
    energy: float | None = None
    energy_se: float | None = None
    iterations: int = 0
    wall_time: float = 0.0
    w2: float | None = None
    potential: float | None = None
    log_det: float | None = None
    dual_objective: float | None = None
    loss_se: float | None = None
    solver_iterations: int | None = None
    residual: float | None = None
    residual_max: float | None = None
    solves_above_tol: int | None = None
    grad_norm: float | None = None
    kl: float | None = None
    kl_se: float | None = None

    def record(self) -> dict[str, Any]:
        """The fields that were filled, as a plain dict (a history entry)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Scheme:
    """Base of the scheme options objects (:class:`~wgfinfer.ICNN`, :class:`~wgfinfer.Variational`,
    :class:`~wgfinfer.PWGF`, :class:`~wgfinfer.ForwardBackward`)."""

    name: ClassVar[str] = ""
    state_type: ClassVar[type] = object

    def options(self) -> dict[str, Any]:
        """The options as plain values (nested schemes as dicts with their ``"scheme"`` name)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Scheme):
                value = {"scheme": value.name, **value.options()}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def init(self, base: Any, generator: torch.Generator, **kwargs: Any) -> Any:
        """The state before the first step: the ``init`` function of the scheme's module."""
        return sys.modules[type(self).__module__].init(self, base, generator, **kwargs)

    def step(
        self, state: Any, functional: Any, step_size: float, generator: torch.Generator, **kwargs: Any
    ) -> tuple[Any, Info]:
        """One step: the ``step`` function of the scheme's module, with these options."""
        module = sys.modules[type(self).__module__]
        return module.step(state, functional, step_size, generator, scheme=self, **kwargs)

    def scaled(self, lr_scale: float) -> Scheme:
        """The options a retry uses after a divergence (smaller learning rates or Euler steps)."""
        return self


# ------------------------------------------------------------------------ inner stopping rule
PLATEAU_WINDOWS = 10
"""An optimisation of ``iters_per_step`` iterations is watched in windows of ``iters_per_step // 10``
iterations (at least :data:`MIN_PLATEAU_WINDOW`)."""
MIN_PLATEAU_WINDOW = 10


def plateau_window(iters_per_step: int) -> int:
    """Iterations per window of the plateau rule for a cap of ``iters_per_step``."""
    return max(MIN_PLATEAU_WINDOW, iters_per_step // PLATEAU_WINDOWS)


VALIDATION_BATCHES = 4
"""The plateau rule's fixed validation batch holds this many mini-batches of particles."""
VALIDATION_TOLERANCE = 1e-4
"""A window's fall of the validation loss (nats) below which the step's optimisation has plateaued."""


def validation_plateaued(values: Sequence[float], tolerance: float = VALIDATION_TOLERANCE) -> bool:
    """Whether the loss on a fixed validation batch, evaluated after every window, has stopped
    falling: it fell by no more than ``tolerance`` over the last window (from the second window on).

    The same points at every evaluation make the differences free of mini-batch noise, so a fall of
    a ten-thousandth of a nat is seen where the mini-batch losses (standard error near 0.03 nats per
    window of 20 on a regression posterior) would hide it.  (Comparing the mini-batch losses
    themselves, two standard errors apart, stopped steps so early that a 2-D mixture's KL rose from
    0.004 to 0.016 nats.)

    Parameters
    ----------
    values : sequence of float
        The validation losses so far, one per window.
    tolerance : float
        Smallest fall that counts.

    Returns
    -------
    bool
    """
    return len(values) >= 2 and values[-2] - values[-1] <= tolerance


def tail_length(done: int, iters_per_step: int) -> int:
    """Iterations at the end of a fit that its reported means average: the last 10% of the cap, or
    the last window (the one at the decayed learning rate) after an early stop."""
    full = max(1, iters_per_step // 10)
    return min(done, full if done >= iters_per_step else plateau_window(iters_per_step))


# --------------------------------------------------------------------------------- option checks
def check_widths(name: str, value: Any) -> tuple[int, ...]:
    """A non-empty tuple of positive widths (an int means one layer)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a sequence of positive ints, got {value!r}")
    if isinstance(value, int):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {type(value).__name__} {value!r}")
    if len(value) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {value!r}")
    return tuple(check_positive_int(f"every width of {name}", w) for w in value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def set_field(obj: Any, name: str, value: Any) -> None:
    """Normalise a field of a frozen options object in ``__post_init__``."""
    object.__setattr__(obj, name, value)


def check_fraction(name: str, value: Any, inclusive_upper: bool = False) -> float:
    """A number in ``(0, 1)`` (or ``(0, 1]``)."""
    return check_positive_float(name, value, upper=1.0, inclusive_upper=inclusive_upper)


def adam(groups: list[dict[str, Any]]) -> torch.optim.Adam:
    """Adam over parameter ``groups``, fused into one kernel per step where this torch has it.

    The fused update (CPU since torch 2.4) replaces about ten small operations per parameter
    tensor; on the filter's 1-D ICNN training (batch 512, width 64, one core) it cut about a
    sixth of an iteration's CPU (docs/filtering.md, "Cost").  Older torch falls back to the
    ``foreach`` update, the same arithmetic.
    """
    try:
        return torch.optim.Adam(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):  # fused Adam unsupported by this torch/device
        return torch.optim.Adam(groups, foreach=True)


# ------------------------------------------------------------------------- divergence checks
def cosine_schedule(
    optimizer: torch.optim.Optimizer, decay: float, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rates following a cosine from their initial value to ``decay`` times it over ``total``
    iterations, for every parameter group alike."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: decay + (1.0 - decay) * 0.5 * (1.0 + math.cos(math.pi * it / total))
    )


def check_points(y: Tensor, step_index: int, it: int) -> None:
    """Raise :class:`TrainingDivergedError` if the transport map returned non-finite points."""
    if not bool(torch.isfinite(y).all()):
        raise TrainingDivergedError(
            f"JKO step {step_index}, iteration {it}: the transport map returned non-finite points"
        )


def transport_distance(x: Tensor, y: Tensor, step_index: int, it: int) -> Tensor:
    """``E||y - x||^2`` over the batch, or :class:`TrainingDivergedError` if it overflowed."""
    w2 = (y - x).square().sum(-1).mean()
    if not torch.isfinite(w2):
        raise TrainingDivergedError(
            f"JKO step {step_index}, iteration {it}: the transport distance overflowed "
            "(the map sends particles to infinity)"
        )
    return w2


def check_gradients(module: nn.Module, step_index: int, it: int, what: str) -> None:
    """Raise :class:`TrainingDivergedError` if a parameter gradient of ``module`` is not finite."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    # one fused reduction and one synchronisation instead of one per parameter
    if grads and not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
        raise TrainingDivergedError(
            f"JKO step {step_index}, iteration {it}: non-finite gradient of the {what}"
        )


def check_finite(x: Tensor, where: str, what: str = "the new map", log_q: Tensor | None = None) -> None:
    """Raise :class:`TrainingDivergedError` if a map sent particles (or their tracked log-densities
    ``log_q``) to non-finite values."""
    if not bool(torch.isfinite(x).all() and (log_q is None or torch.isfinite(log_q).all())):
        raise TrainingDivergedError(f"{where}: {what} sends particles to non-finite values")


def draw_pool(base: Distribution, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
    """``n`` draws of the initial law ``base`` (event shape ``(d,)``), checked to be ``(n, d)``."""
    dim = int(base.event_shape[0])
    x0 = sample_distribution(base, n, generator, device)
    if tuple(x0.shape) != (n, dim):
        raise ValueError(f"init must draw points of shape (n, {dim}), got {tuple(x0.shape[1:])}")
    return x0


def check_explosion(before: Tensor, after: Tensor, where: str) -> None:
    """Raise :class:`TrainingDivergedError` if points moved by far more than their own spread.

    ``E||after - before||^2 > EXPLOSION_FACTOR * (spread + 1)`` with ``spread = E||before - mean||^2``:
    the step exploded.  Such points may still be finite while the target overflows at them, so the
    check runs before the target is evaluated there.
    """
    spread = float((before - before.mean(0)).square().sum(-1).mean())
    moved = float((after - before).square().sum(-1).mean())
    if not moved <= EXPLOSION_FACTOR * (spread + 1.0):
        raise TrainingDivergedError(
            f"{where}: the transport distance exploded (E||T(x) - x||^2 = {moved:.3g} against a "
            f"particle spread of {spread:.3g})"
        )


def pointwise_energy(functional: Any, y: Tensor, log_rho: Tensor | None) -> Tensor | None:
    """Per-point values whose mean is ``functional.estimate(y, log_rho)``, when it is a plain mean
    (potential and internal energies; ``None`` for interaction energies or a missing density)."""
    from wgfinfer.functionals import InternalEnergy, PotentialEnergy

    values = y.new_zeros(y.shape[0])
    for term in functional.terms():
        if type(term) is PotentialEnergy:
            values = values + term.coefficient * term.potential(y)
        elif isinstance(term, InternalEnergy) and log_rho is not None:
            values = values + term.integrand(log_rho)
        else:
            return None
    return values


class MonitorEstimate(NamedTuple):
    """What :func:`monitor_energy` measured on the monitored particles."""

    energy: float | None = None
    """The monitor's free energy."""
    energy_se: float | None = None
    """Its Monte-Carlo standard error, where it is a plain mean."""
    kl: float | None = None
    """For a :class:`~wgfinfer.functionals.KLDivergence` monitor,
    :func:`wgfinfer.importance.importance_kl`."""
    kl_se: float | None = None
    """Its standard error."""


@torch.no_grad()
def monitor_energy(monitor: Any, particles: Tensor, log_q: Tensor | None, n_monitor: int) -> MonitorEstimate:
    """The free energy ``monitor`` on the first ``n_monitor`` particles with their exact log-densities
    ``log_q`` and its standard error (``None`` where it is not a plain mean), and for a
    :class:`~wgfinfer.functionals.KLDivergence` monitor the importance estimate of the KL itself
    (:func:`wgfinfer.importance.importance_kl`); all ``None`` without a monitor, or where a needed
    density is missing."""
    from wgfinfer.functionals import KLDivergence

    if monitor is None or n_monitor == 0:
        return MonitorEstimate()
    if log_q is None and monitor.internal_energies():
        return MonitorEstimate()
    m = min(n_monitor, particles.shape[0] if log_q is None else log_q.shape[0])
    y, lq = particles[:m], None if log_q is None else log_q[:m]
    values = pointwise_energy(monitor, y, lq)
    if values is None:
        return MonitorEstimate(float(monitor.estimate(y, lq)))
    se = float(values.std() / math.sqrt(m)) if m > 1 else None
    kl = kl_se = None
    if isinstance(monitor, KLDivergence) and lq is not None and m > 1 and bool(torch.isfinite(values).all()):
        # beta * values = log q - beta * log p: minus the log importance weights of p^beta, up to a constant
        kl, kl_se = importance_kl(monitor.beta * values)
    return MonitorEstimate(float(values.mean()), se, kl, kl_se)

"""The parameterized Wasserstein gradient flow scheme (PWGF, Jin et al. 2024 §3.3 and Algorithm 4.1).

The law is ``rho_theta = T_theta # lambda`` for a fixed reference ``lambda`` (the initial law, with
``T_theta`` starting at the identity).  The Wasserstein gradient flow of a free energy ``F`` is
replaced by the parameter ODE (Jin et al. 2024 eq. 3.18)

.. math::

    \\dot\\theta = -\\hat G(\\theta)^\\dagger \\nabla_\\theta F(\\theta), \\qquad
    \\hat G(\\theta) = E_{z\\sim\\lambda}\\bigl[\\partial_\\theta T_\\theta(z)^\\top
    \\partial_\\theta T_\\theta(z)\\bigr]\\quad\\text{(eq. 3.17)},

discretised by forward Euler: ``theta <- theta + h eta`` with ``eta`` the minimum-norm solution of
``G_hat eta = -grad F``.  Both ``G_hat`` and ``grad F`` are Monte-Carlo estimates over the same
fresh draws ``z_1..z_N`` of ``lambda`` at every Euler step.  ``G_hat`` is never formed: MINRES (or
CG) only needs ``v -> G_hat v = (1/N) J^T (J v)``, one Jacobian-vector product followed by one
vector-Jacobian product of ``theta -> (T_theta(z_i))_i`` (:func:`metric_vector_product`).

``grad F`` is plain autograd through the reparameterised estimate: with ``y = T_theta(z)``,
``log rho_theta(y) = log lambda(z) - log|det dT_theta/dz (z)|``, and ``F(theta)`` is the
functional's Monte-Carlo estimate from ``y`` and that log-density (the log-density is only computed
when ``F`` has internal energies).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, cg, minres
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer._validation import check_positive_int
from wgfinfer.errors import DensityNotAvailableError, TrainingDivergedError, WGFWarning
from wgfinfer.flow import sample_distribution
from wgfinfer.functionals import Functional, as_functional
from wgfinfer.nn.coupling import AffineCouplingFlow
from wgfinfer.nn.pushforward import AffineMap, PlanarFlow, ResidualPushforward
from wgfinfer.schemes.base import (
    Info,
    Scheme,
    check_explosion,
    check_finite,
    draw_pool,
    monitor_energy,
    pointwise_energy,
)

PWGF_MAPS = ("planar", "affine", "resnet", "coupling")
DEFAULT_LAYERS = {"planar": 40, "coupling": 4}
"""Default ``n_layers`` of the layered maps."""
SOLVERS = ("minres", "cg")
METRIC_DTYPES = {"float32": torch.float32, "float64": torch.float64}
PRECONDITIONERS = ("none", "jacobi")
JACOBI_PROBES = 16
"""Rademacher probes of the Hutchinson estimate of ``diag(G_hat)`` (``preconditioner="jacobi"``)."""
BADLY_OFF_RESIDUAL = 0.5
"""A solve that ends above this relative residual warns: its error is half the right-hand side's size,
so the Euler step is far from the metric's step (below it the history records the shortfall)."""


def _positive_int(value: object, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


@dataclass(frozen=True)
class PWGF(Scheme):
    """The parameterized Wasserstein gradient flow (Jin, Liu, Wu, Ye and Zhou 2024).

    Every option has its default here and only here; ``scheme="pwgf"`` means ``PWGF()``.

    Parameters
    ----------
    map : {"planar", "affine", "resnet", "coupling"}
        Push-forward family: :class:`~wgfinfer.nn.pushforward.PlanarFlow` (Jin et al. 2024 §5.1, exact
        densities everywhere), :class:`~wgfinfer.nn.pushforward.AffineMap` (Gaussian laws),
        :class:`~wgfinfer.nn.pushforward.ResidualPushforward` (Jin et al. 2024 §5.2–5.3; densities of pushed
        draws only) or :class:`~wgfinfer.nn.coupling.AffineCouplingFlow` (not in Jin et al. 2024; exact
        densities everywhere, and far more expressive per parameter than planar layers when the
        target's spread in many directions depends on a few coordinates).
    n_layers : int, optional
        Planar layers (``map="planar"``, default 40) or coupling layers (``map="coupling"``,
        default 4); resolved to its default at construction.
    hidden : tuple of int
        Hidden widths of the residual network (``map="resnet"``) or of each coupling layer's
        conditioner (``map="coupling"``).
    n_samples : int
        Draws of ``lambda`` per Euler step, shared by ``G_hat`` and ``grad F`` (at least 2, which the
        interaction energies' U-statistic needs); see also ``metric_samples``.
    solver : {"minres", "cg"}
        Krylov solver of ``G_hat eta = -grad F`` (Jin et al. 2024 uses MINRES).
    tol : float
        Tolerance passed to the solver (Jin et al. 2024: ``3e-4``), in ``(0, 1)``.  CG stops on the
        relative residual ``|G_hat eta + grad F| / |grad F| <= tol``; MINRES on its own backward-error
        tests, which on an ill-conditioned ``G_hat`` stop at a far larger relative residual (the
        history's ``residual`` is always the relative residual, and ``solves_above_tol`` counts the
        solves that ended above ``tol``).
    max_iter : int
        Solver iterations per Euler step.  A solve that ends above ``tol`` in relative residual (here,
        or by MINRES's own tests) is counted in the history (``solves_above_tol``, ``residual_max``);
        one above :data:`BADLY_OFF_RESIDUAL` also warns.
    warm_start : bool
        Start each solve from the previous Euler step's solution instead of from 0.  Any solution
        of the system moves the draws alike (solutions differ by null vectors ``v`` of ``G_hat``,
        and ``G_hat v = 0`` means ``dT_theta(z_i)/dtheta v = 0`` on every draw), but the minimum-norm
        one is found only from a start in ``range(G_hat)``: a warm start keeps its own null-space
        component (see :func:`pwgf_step`).
    metric_samples : int, optional
        Use only the first ``metric_samples`` of the ``n_samples`` draws in ``G_hat`` (``grad F``
        uses all of them); ``None`` uses all.  Each metric product costs in proportion.
    metric_dtype : {None, "float32", "float64"}
        Precision of the metric products (the map and the draws are cast to it for ``G_hat v``;
        ``grad F``, the solution and the parameters keep the map's own dtype); ``None``: the map's
        dtype.  A float64 map's products in float32 carry a relative rounding error of about
        1e-7, far below the relative residual the solves stop at (about 0.05-0.09, see
        ``max_iter``), and cost 0.6x as much on CPU (2048 draws of a 10-D coupling flow: 11 ms
        against 18 ms per product; ``docs/benchmarks.md``, "PWGF metric solves").
    preconditioner : {"none", "jacobi"}
        ``"jacobi"``: precondition the solve with ``diag(G_hat) + damping``, estimated from
        :data:`JACOBI_PROBES` Rademacher probes (Hutchinson), each one vector-Jacobian product.
    damping : float
        Tikhonov term: solve ``(G_hat + damping I) eta = -grad F``.  The default 0 is the paper's
        scheme (minimum-norm solution); a positive value trades a bias for robustness when
        ``G_hat`` is badly conditioned.
    substeps : int
        Forward-Euler steps per recorded step (each of size ``step_size / substeps``, each with
        fresh draws).
    n_monitor : int
        Fixed draws of ``lambda`` pushed through each new map with their exact log-densities, for
        the free-energy monitor ``energy`` and the divergence checks.
    """

    map: str = "planar"
    n_layers: int | None = None
    hidden: tuple[int, ...] = (100, 100, 100)
    n_samples: int = 4096
    solver: str = "minres"
    tol: float = 3e-4
    max_iter: int = 200
    warm_start: bool = False
    metric_samples: int | None = None
    metric_dtype: str | None = None
    preconditioner: str = "none"
    damping: float = 0.0
    substeps: int = 1
    n_monitor: int = 4096

    name: ClassVar[str] = "pwgf"

    def __post_init__(self) -> None:
        if not isinstance(self.map, str) or self.map not in PWGF_MAPS:
            raise ValueError(f"map must be one of {PWGF_MAPS}, got {self.map!r}")
        if not isinstance(self.solver, str) or self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.n_layers is None:
            object.__setattr__(self, "n_layers", DEFAULT_LAYERS.get(self.map, 1))
        _positive_int(self.n_layers, "n_layers")
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of ints, got {type(self.hidden).__name__}")
        if len(self.hidden) == 0:
            raise ValueError("hidden must be a non-empty sequence of positive ints")
        for width in self.hidden:
            _positive_int(width, "every hidden width")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _positive_int(self.n_samples, "n_samples", minimum=2)
        _positive_int(self.max_iter, "max_iter")
        if not isinstance(self.warm_start, bool):
            raise TypeError(f"warm_start must be a bool, got {type(self.warm_start).__name__}")
        if self.metric_samples is not None:
            _positive_int(self.metric_samples, "metric_samples")
            if self.metric_samples > self.n_samples:
                raise ValueError(
                    f"metric_samples must be <= n_samples ({self.n_samples}), got {self.metric_samples}"
                )
        if self.metric_dtype is not None and (
            not isinstance(self.metric_dtype, str) or self.metric_dtype not in METRIC_DTYPES
        ):
            raise ValueError(
                f"metric_dtype must be None or one of {tuple(METRIC_DTYPES)}, got {self.metric_dtype!r}"
            )
        if not isinstance(self.preconditioner, str) or self.preconditioner not in PRECONDITIONERS:
            raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {self.preconditioner!r}")
        _positive_int(self.substeps, "substeps")
        tol = _real(self.tol, "tol")
        if not 0.0 < tol < 1.0:
            raise ValueError(f"tol must be in (0, 1), got {tol}")
        if _real(self.damping, "damping") < 0:
            raise ValueError(f"damping must be >= 0, got {self.damping}")
        object.__setattr__(self, "n_monitor", check_positive_int("n_monitor", self.n_monitor))

    def scaled(self, lr_scale: float) -> PWGF:
        """A retry takes ``round(1 / lr_scale)`` times as many (smaller) Euler steps."""
        if lr_scale == 1.0:
            return self
        return dataclasses.replace(self, substeps=self.substeps * round(1.0 / lr_scale))


@dataclass(frozen=True)
class PWGFState:
    """The PWGF scheme between recorded steps (never modified: a step returns a new state).

    Attributes
    ----------
    step : int
        Recorded steps done.
    base : torch.distributions.Distribution
        The reference law ``lambda`` (the initial law); fresh draws of it at every Euler step.
    particles : Tensor
        ``(n_monitor, d)`` fixed draws of ``lambda`` for the monitor.
    log_q : Tensor
        Their ``log lambda``.
    maps : tuple of nn.Module
        One snapshot of ``T_theta`` per recorded step (``rho_k = maps[k-1] # lambda``).
    velocity : Tensor, optional
        The last Euler step's solution ``eta`` (flat), the next solve's start under
        ``PWGF(warm_start=True)``; ``None`` before the first step or without warm starts.
    """

    step: int
    base: Distribution
    particles: Tensor
    log_q: Tensor | None
    maps: tuple[nn.Module, ...] = ()
    velocity: Tensor | None = None


def init(
    scheme: PWGF,
    base: Distribution,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    functional: Functional | None = None,
) -> PWGFState:
    """Draw the monitor's ``n_monitor`` fixed points of ``base`` (with ``log lambda`` where it has a
    density)."""
    x0 = draw_pool(base, scheme.n_monitor, generator, device)
    try:
        log_q = base.log_prob(x0)
    except (NotImplementedError, DensityNotAvailableError) as exc:
        if functional is not None and functional.internal_energies():
            raise ValueError(f"the PWGF scheme needs an initial law with a density here: {exc}") from exc
        log_q = None
    return PWGFState(step=0, base=base, particles=x0, log_q=log_q)


def step(
    state: PWGFState,
    functional: Functional | Callable[[Tensor], Tensor],
    step_size: float,
    generator: torch.Generator,
    *,
    scheme: PWGF,
    lr_scale: float = 1.0,
    monitor: Functional | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[PWGFState, Info]:
    """One recorded step: ``substeps`` forward-Euler steps of the parameters (:func:`pwgf_step`), then
    the monitor's fixed draws are pushed through the new map with their exact log-densities.

    ``lr_scale < 1`` (a retry) takes ``round(1 / lr_scale)`` times as many Euler substeps.  Arguments
    as in :func:`wgfinfer.schemes.icnn.step`; ``callback`` is unused.
    """
    functional = as_functional(functional)
    options = scheme.scaled(lr_scale)
    k = state.step
    start = time.perf_counter()
    x0 = state.particles
    current = (
        state.maps[-1]
        if state.maps
        else new_pushforward(x0.shape[1], options, generator, x0.dtype, x0.device)
    )
    start_velocity = state.velocity if options.warm_start else None
    new, fit = pwgf_step(
        current, state.base, functional, step_size, options, generator, step_index=k, velocity=start_velocity
    )
    where = f"JKO step {k}"
    with torch.no_grad():
        if state.log_q is not None and hasattr(new, "map_and_log_det"):
            pushed, log_det = new.map_and_log_det(x0)
            log_q = state.log_q - log_det
        else:
            pushed, log_q = new(x0), None
        check_finite(pushed, where, log_q=log_q)
        before = state.maps[-1](x0) if state.maps else x0
    check_explosion(before, pushed, where)
    monitored_estimate = monitor_energy(monitor, pushed, log_q, options.n_monitor)
    info = Info(
        loss=fit.energy,
        energy=monitored_estimate.energy,
        energy_se=monitored_estimate.energy_se,
        kl=monitored_estimate.kl,
        kl_se=monitored_estimate.kl_se,
        iterations=options.substeps,
        wall_time=time.perf_counter() - start,
        loss_se=fit.energy_se,
        solver_iterations=fit.solver_iterations,
        residual=fit.residual,
        residual_max=fit.residual_max,
        solves_above_tol=fit.solves_above_tol,
        grad_norm=fit.grad_norm,
    )
    velocity = fit.velocity if options.warm_start else None
    return dataclasses.replace(state, step=k + 1, maps=(*state.maps, new), velocity=velocity), info


@dataclass
class PWGFStepInfo:
    """What one call of :func:`pwgf_step` did."""

    energy: float
    """``F(theta)`` before the step, on the draws of its first Euler step."""
    energy_se: float | None
    """Standard error of ``energy`` (``None`` when ``F`` has terms other than potential and internal
    energies, e.g. interaction energies, whose estimate is not a plain mean)."""
    solver_iterations: int
    """Krylov iterations summed over the Euler steps of the call."""
    residual: float
    """``|G_hat eta + grad F| / |grad F|`` of the last solve (damping included in ``G_hat``; with
    ``metric_samples``, the ``G_hat`` of those draws)."""
    grad_norm: float
    """``|grad_theta F|`` before the step."""
    wall_time: float
    """Seconds spent in the call."""
    residual_max: float = float("nan")
    """The largest relative residual of the call's solves."""
    solves_above_tol: int = 0
    """How many of the call's solves ended above ``tol`` in relative residual (at ``max_iter``, or by
    MINRES's own stopping tests)."""
    velocity: Tensor | None = None
    """The last Euler step's ``eta`` (flat, detached)."""


def new_pushforward(
    dim: int,
    config: PWGF,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """A fresh push-forward map of ``config.map``, equal to the identity.

    Parameters
    ----------
    dim : int
        Dimension ``d``.
    config : PWGF
    generator : torch.Generator
        Source of the random initial weights.
    dtype, device
        Where the parameters live.

    Returns
    -------
    nn.Module
        A :class:`PlanarFlow`, :class:`AffineMap`, :class:`ResidualPushforward` or
        :class:`AffineCouplingFlow`.
    """
    if not isinstance(config, PWGF):
        raise TypeError(f"config must be a PWGF, got {type(config).__name__}")
    if config.map == "planar":
        return PlanarFlow(dim, config.n_layers, generator=generator, dtype=dtype, device=device)
    if config.map == "affine":
        return AffineMap(dim, generator=generator, dtype=dtype, device=device)
    if config.map == "coupling":
        return AffineCouplingFlow(
            dim, config.n_layers, config.hidden, generator=generator, dtype=dtype, device=device
        )
    return ResidualPushforward(dim, config.hidden, generator=generator, dtype=dtype, device=device)


def flatten_tensors(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector (in the given order)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_vector(vector: Tensor, like: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Split a flat vector into tensors shaped like ``like`` (the inverse of :func:`flatten_tensors`)."""
    sizes = [t.numel() for t in like]
    if vector.ndim != 1 or vector.numel() != sum(sizes):
        raise ValueError(f"expected a vector of {sum(sizes)} entries, got shape {tuple(vector.shape)}")
    return tuple(part.view_as(t) for part, t in zip(torch.split(vector, sizes), like, strict=True))


def metric_vector_product(
    module: nn.Module,
    params: Mapping[str, Tensor] | None,
    z: Tensor,
    damping: float = 0.0,
) -> Callable[[Tensor], Tensor]:
    """The product ``v -> G_hat v`` of the pullback metric (Jin et al. 2024 eq. 3.17), matrix-free.

    ``G_hat = (1/N) sum_i J_i^T J_i`` with ``J_i = d T_theta(z_i) / d theta``, ``N = len(z)``.  The
    map is evaluated once, with the graph of ``u -> J^T u`` (a reverse pass with ``create_graph``);
    each product then takes two reverse passes over retained graphs: ``J v`` as the gradient of
    ``<J^T u, v>`` in ``u`` (the "double-backward" Jacobian-vector product), then ``J^T (J v) / N``.
    This is several times faster on CPU than ``torch.func.jvp``, whose forward-mode rules run through
    Python decompositions for some of the maps' operations.

    Parameters
    ----------
    module : nn.Module
        The map; it is called as ``module(z)`` with ``params`` substituted for its parameters.
    params : mapping of str to Tensor, optional
        Parameter values by name (``module``'s own when ``None``).  The flat vector's layout is the
        mapping's order, each tensor flattened.
    z : Tensor
        ``(N, d)`` draws of the reference law.
    damping : float, default 0
        Adds ``damping * v``.

    Returns
    -------
    MetricProduct
        Callable, flat vector ``(n_params,)`` to flat vector ``(n_params,)``; its
        :meth:`~MetricProduct.diagonal` estimates ``diag(G_hat)``.
    """
    return MetricProduct(module, params, z, damping)


class MetricProduct:
    """``v -> G_hat v + damping v`` on retained graphs (built by :func:`metric_vector_product`)."""

    def __init__(
        self, module: nn.Module, params: Mapping[str, Tensor] | None, z: Tensor, damping: float = 0.0
    ) -> None:
        if params is None:
            params = dict(module.named_parameters())
        names = list(params)
        self.leaves = tuple(params[k].detach().clone().requires_grad_(True) for k in names)
        z = z.detach()
        self.n = z.shape[0]
        self.damping = float(damping)
        with torch.enable_grad():
            self.y = torch.func.functional_call(module, dict(zip(names, self.leaves, strict=True)), (z,))
            self.u = torch.zeros_like(self.y, requires_grad=True)
            self.transposed = torch.autograd.grad(
                self.y, self.leaves, grad_outputs=self.u, create_graph=True, allow_unused=True
            )
        # parameters T does not depend on (or only through J^T u's constant part) have zero columns
        self.live = [i for i, g in enumerate(self.transposed) if g is not None and g.requires_grad]

    def _pullback(self, w: Tensor) -> Tensor:
        """``J^T w`` as a flat vector, for ``w`` shaped like the pushed draws."""
        with torch.enable_grad():
            out = torch.autograd.grad(
                self.y, self.leaves, grad_outputs=w, retain_graph=True, allow_unused=True
            )
        return flatten_tensors(
            [torch.zeros_like(p) if g is None else g for p, g in zip(self.leaves, out, strict=True)]
        )

    def __call__(self, v: Tensor) -> Tensor:
        tangents = unflatten_vector(v.to(self.leaves[0]), self.leaves)
        with torch.enable_grad():
            if self.live:
                (jv,) = torch.autograd.grad(
                    [self.transposed[i] for i in self.live],
                    self.u,
                    grad_outputs=[tangents[i] for i in self.live],
                    retain_graph=True,
                )
            else:
                jv = torch.zeros_like(self.y)
        flat = self._pullback(jv / self.n)
        return flat + self.damping * v if self.damping else flat

    def diagonal(self, probes: int, generator: torch.Generator) -> Tensor:
        """Hutchinson estimate of ``diag(G_hat) + damping``: the mean of ``(J^T w)^2 / N`` over
        ``probes`` Rademacher vectors ``w`` (unbiased, since ``E[w w^T] = I``)."""
        total = torch.zeros_like(flatten_tensors(self.leaves))
        for _ in range(probes):
            signs = torch.randint(0, 2, self.y.shape, generator=generator, dtype=torch.int64)
            w = (2 * signs - 1).to(self.y)
            total += self._pullback(w).square()
        return total / (probes * self.n) + self.damping


def _energy_and_gradient(
    module: nn.Module, z: Tensor, log_lambda: Tensor | None, functional: Functional
) -> tuple[Tensor, float | None, Tensor]:
    """``F(theta)`` on the draws, its standard error (or ``None``) and the flat ``grad_theta F``."""
    params = list(module.parameters())
    with torch.enable_grad():
        if log_lambda is None:
            y, log_rho = module(z), None
        else:
            y, log_det = module.map_and_log_det(z)
            log_rho = log_lambda - log_det
        values = pointwise_energy(functional, y, log_rho)
        if values is None:
            energy, se = functional.estimate(y, log_rho), None
        else:
            energy = values.mean()
            se = float(values.detach().std() / math.sqrt(values.shape[0]))
        grads = torch.autograd.grad(energy, params, allow_unused=True)
    flat = flatten_tensors(
        [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    )
    return energy.detach(), se, flat


def _metric_product(module: nn.Module, z: Tensor, config: PWGF) -> MetricProduct:
    """The metric product of ``module`` on the draws ``z``, in ``config.metric_dtype`` (a cast copy
    of the map where that differs from the map's dtype)."""
    wanted = METRIC_DTYPES.get(config.metric_dtype)  # None: the map's own dtype
    if wanted is not None and wanted != z.dtype:
        module, z = copy.deepcopy(module).to(wanted), z.to(wanted)
    named = {name: p.detach() for name, p in module.named_parameters()}
    return metric_vector_product(module, named, z, damping=config.damping)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _solve(
    product: Callable[[Tensor], Tensor],
    rhs: Tensor,
    config: PWGF,
    x0: Tensor | None = None,
    diagonal: Tensor | None = None,
) -> tuple[Tensor, int, float]:
    """Krylov solution of ``G_hat eta = rhs``: ``(eta, iterations, relative residual)``.

    Started from ``x0`` (0 when ``None``), preconditioned by ``diag(diagonal)^{-1}`` when given
    (entries below ``1e-12`` of the largest are raised to it: parameters the draws do not move)."""
    rhs_norm = float(torch.linalg.vector_norm(rhs))
    if rhs_norm == 0.0:
        return torch.zeros_like(rhs), 0, 0.0
    like = rhs

    def matvec(v: np.ndarray) -> np.ndarray:
        vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)).to(like)
        return _numpy(product(vt))

    size = rhs.numel()
    operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    b = _numpy(rhs)
    preconditioner = None
    if diagonal is not None:
        d = _numpy(diagonal)
        inverse = 1.0 / np.maximum(d, 1e-12 * max(float(d.max()), np.finfo(np.float64).tiny))
        preconditioner = LinearOperator(
            (size, size), matvec=lambda v: inverse * np.reshape(v, -1), dtype=np.float64
        )
    start = None if x0 is None else _numpy(x0)
    iterations = 0

    def count(_: np.ndarray) -> None:
        nonlocal iterations
        iterations += 1

    solver = minres if config.solver == "minres" else cg
    x, _ = solver(
        operator, b, x0=start, rtol=config.tol, maxiter=config.max_iter, M=preconditioner, callback=count
    )
    eta = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(like)
    residual = float(torch.linalg.vector_norm(product(eta) - rhs)) / rhs_norm
    return eta, iterations, residual


def pwgf_step(
    transport_map: nn.Module,
    base: Distribution,
    functional: Functional,
    step_size: float,
    config: PWGF,
    generator: torch.Generator,
    step_index: int = 0,
    velocity: Tensor | None = None,
) -> tuple[nn.Module, PWGFStepInfo]:
    """Advance the PWGF by ``step_size`` (``config.substeps`` forward-Euler steps, Algorithm 4.1).

    Each Euler step of size ``h = step_size / substeps`` draws ``z_1..z_N ~ base``, computes
    ``F(theta)`` and ``grad_theta F`` by autograd through ``y_i = T_theta(z_i)`` (and, for internal
    energies, ``log rho_theta(y_i) = log base(z_i) - log|det dT_theta/dz (z_i)|``), solves
    ``G_hat eta = -grad F`` matrix-free and sets ``theta <- theta + h eta``.

    **Minimum norm.**  Krylov iterates started from ``eta_0 = 0`` lie in
    ``span{b, G b, G^2 b, ...}``, which is inside ``range(G_hat)`` whenever ``b = -grad F`` is; for
    a symmetric positive semi-definite ``G_hat`` that range is the orthogonal complement of its null
    space, so the solution MINRES or CG converges to is the minimum-norm (pseudo-inverse) one,
    ``-G_hat^+ grad F`` (eq. 3.18).  The system is consistent: ``grad F`` lies in ``range(G_hat)``
    for the exact expectations (Jin et al. 2024 eq. 3.21), and for the Monte-Carlo estimates too along
    directions ``v`` that are null for every draw (``dT_theta(z)/dtheta v = 0`` for all ``z``, e.g.
    the hidden weights of a residual network whose output layer is zero): the change of ``T`` along
    ``v`` vanishes, hence so does the change of its ``z``-Jacobian and log-determinant.

    **Other starts and preconditioners.**  Every solution of the system moves the draws alike: two
    solutions differ by some ``v`` with ``G_hat v = 0``, i.e. ``dT_theta(z_i)/dtheta v = 0`` for
    every draw.  The minimum-norm one only fixes how the parameters drift along such ``v``.  A warm
    start ``eta_0`` (``config.warm_start``) keeps its null-space component, since every Krylov
    correction lies in ``range(G_hat)``: the solution is the minimum-norm one plus the projection of
    ``eta_0`` on ``null(G_hat)``.  The previous Euler step's solution lies in the previous metric's
    range, which differs from this one's only where the null space changes (e.g. the first step of a
    map started at the identity, which is never warm-started).  The Jacobi preconditioner
    ``M = diag(G_hat)^{-1}`` keeps the iterates in ``M range(G_hat)``; that is ``range(G_hat)``
    again for the structural null directions (zero columns, or equal columns with equal diagonal
    entries), which are the ones the coupling and residual maps have.  On a nonsingular but
    ill-conditioned ``G_hat`` all of this concerns the error of an unconverged solve only: a warm
    start carries the previous step's components along poorly determined directions, where a start
    from 0 leaves them small (see ``docs/benchmarks.md``, "PWGF metric solves").

    Parameters
    ----------
    transport_map : nn.Module
        The current map ``T_theta`` (a :mod:`wgfinfer.nn.pushforward` map; not modified).
    base : torch.distributions.Distribution
        The reference law ``lambda``, event shape ``(d,)``.
    functional : Functional
        The free energy ``F``.
    step_size : float
        Time step ``h > 0`` of the call.
    config : PWGF
    generator : torch.Generator
        Source of the draws of ``base``.
    step_index : int, default 0
        Used in error messages.
    velocity : Tensor, optional
        Start of the first solve with ``config.warm_start`` (the previous call's
        :attr:`PWGFStepInfo.velocity`); ignored without warm starts or when its size differs.

    Returns
    -------
    new_map : nn.Module
        A copy of ``transport_map`` with the advanced parameters (``requires_grad`` on).
    info : PWGFStepInfo

    Raises
    ------
    TrainingDivergedError
        If ``F``, its gradient, ``eta`` or the new map's output on the draws is not finite.

    Warns
    -----
    WGFWarning
        If a solve ends above relative residual :data:`BADLY_OFF_RESIDUAL` (smaller shortfalls are
        only recorded: ``residual_max`` and ``solves_above_tol``).
    """
    start = time.perf_counter()
    if not isinstance(config, PWGF):
        raise TypeError(f"config must be a PWGF, got {type(config).__name__}")
    if not isinstance(functional, Functional):
        raise TypeError(f"functional must be a wgfinfer Functional, got {type(functional).__name__}")
    if not isinstance(base, Distribution):
        raise TypeError(f"base must be a torch Distribution, got {type(base).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(transport_map, nn.Module):
        raise TypeError(f"transport_map must be an nn.Module, got {type(transport_map).__name__}")
    if _real(step_size, "step_size") <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    functional.check_scheme("pwgf")
    needs_density = bool(functional.internal_energies())
    if needs_density and not hasattr(transport_map, "map_and_log_det"):
        raise ValueError(
            f"{type(transport_map).__name__} has no map_and_log_det: the internal energies of the "
            "functional need the log-density of the pushed draws"
        )

    module = copy.deepcopy(transport_map)
    params = list(module.parameters())
    if not params:
        raise ValueError("the transport map has no parameters to advance")
    for p in params:
        p.requires_grad_(True)
    dtype, device = params[0].dtype, params[0].device
    h = float(step_size) / config.substeps
    where = f"PWGF step {step_index}"

    energy0, se0, grad_norm0 = float("nan"), None, float("nan")
    iterations, residual, residuals = 0, float("nan"), []
    eta = None if velocity is None else velocity.detach().to(dtype=dtype, device=device)
    n_metric = config.n_samples if config.metric_samples is None else config.metric_samples
    for sub in range(config.substeps):
        raw = sample_distribution(base, config.n_samples, generator, device)
        z = raw.to(dtype)
        log_lambda = base.log_prob(raw).to(dtype) if needs_density else None
        energy, se, grad = _energy_and_gradient(module, z, log_lambda, functional)
        if not (torch.isfinite(energy) and bool(torch.isfinite(grad).all())):
            raise TrainingDivergedError(f"{where}, Euler substep {sub}: non-finite free energy or gradient")
        if sub == 0:
            energy0, se0, grad_norm0 = float(energy), se, float(torch.linalg.vector_norm(grad))
        product = _metric_product(module, z[:n_metric], config)
        diagonal = None
        if config.preconditioner == "jacobi" and isinstance(product, MetricProduct):
            diagonal = product.diagonal(JACOBI_PROBES, generator)
        start_from = eta if config.warm_start and eta is not None and eta.shape == grad.shape else None
        eta, its, residual = _solve(product, -grad, config, x0=start_from, diagonal=diagonal)
        iterations += its
        residuals.append(residual)
        if not bool(torch.isfinite(eta).all()):
            raise TrainingDivergedError(
                f"{where}, Euler substep {sub}: the metric solve returned non-finite values"
            )
        with torch.no_grad():
            before = module(z)
            for p, d in zip(params, unflatten_vector(eta, params), strict=True):
                p.add_(d, alpha=h)
            after = module(z)
            if not bool(torch.isfinite(after).all()):
                raise TrainingDivergedError(
                    f"{where}, Euler substep {sub}: the updated map returned non-finite points"
                )
            # an Euler step far too large for the flow: a divergence, not bad input
            check_explosion(
                before, after, f"{where}, Euler substep {sub} (use a smaller step or more substeps)"
            )
    worst = max(residuals)
    if worst > BADLY_OFF_RESIDUAL:
        warnings.warn(
            f"{where}: a metric solve ended at relative residual {worst:.2g} (tol {config.tol:g}, "
            f"max_iter {config.max_iter}); the Euler step is far from the PWGF step: use smaller "
            "steps, more max_iter or some damping, and no warm_start",
            WGFWarning,
            stacklevel=2,
        )
    info = PWGFStepInfo(
        energy=energy0,
        energy_se=se0,
        solver_iterations=iterations,
        residual=residual,
        grad_norm=grad_norm0,
        wall_time=time.perf_counter() - start,
        residual_max=worst,
        solves_above_tol=sum(r > config.tol for r in residuals),
        velocity=None if eta is None else eta.detach(),
    )
    return module, info

"""``simulate``: the PDE-facing entry point, a Wasserstein gradient flow of any free energy.

The sampler is the case ``F = KLDivergence(log_density)``; ``simulate`` runs any
:mod:`wgfinfer.functionals` free energy from an initial law with one of the four schemes and returns
the same :class:`~wgfinfer.flow.Flow` the sampler uses, with a ``history`` of the steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from wgfinfer.errors import TrainingDivergedError
from wgfinfer.flow import Flow, sample_distribution
from wgfinfer.functionals import SCHEMES, Entropy, FreeEnergy, Functional
from wgfinfer.schemes.common import check_explosion
from wgfinfer.schemes.forward_backward import ComposedStep, forward_step
from wgfinfer.schemes.icnn import ICNNSchemeConfig, icnn_jko_step, new_potential
from wgfinfer.schemes.pwgf import PWGFConfig, new_pushforward, pwgf_step
from wgfinfer.schemes.variational import VariationalSchemeConfig, new_dual, new_map, variational_jko_step

BACKWARD_SCHEMES = ("variational", "icnn")
# the free-energy monitor evaluates interaction terms on at most this many particles (O(n^2) pairs)
MONITOR_PARTICLES = 2048


class EmpiricalMeasure(Distribution):
    """The uniform measure on given particles (an initial law known only by its samples; no density)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, particles: Tensor) -> None:
        if particles.ndim != 2 or particles.shape[0] < 1:
            raise ValueError(f"initial particles must have shape (n, d), got {tuple(particles.shape)}")
        if not bool(torch.isfinite(particles).all()):
            raise ValueError("initial particles must be finite")
        self.particles = particles
        super().__init__(event_shape=particles.shape[1:], validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:  # noqa: D102
        n = int(torch.Size(sample_shape).numel())
        idx = torch.randint(0, self.particles.shape[0], (n,), device=self.particles.device)
        return self.particles[idx].reshape(*sample_shape, *self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:  # noqa: D102
        from wgfinfer.errors import DensityNotAvailableError

        raise DensityNotAvailableError("an initial law given by particles has no density")


def simulate(
    functional: Functional,
    init: Distribution | Tensor,
    scheme: str = "variational",
    step_size: float = 0.05,
    n_steps: int = 10,
    dim: int | None = None,
    *,
    n_particles: int = 4096,
    backward: str = "variational",
    n_reference: int = 10000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress_bar: bool = False,
    **options: Any,
) -> Flow:
    """Run the Wasserstein gradient flow of ``functional`` from ``init`` for ``n_steps`` steps.

    Parameters
    ----------
    functional : Functional
        The free energy, e.g. ``GeneralizedEntropy(2)`` (porous medium) or
        ``InteractionEnergy(W) + 0.1 * GeneralizedEntropy(3)`` (aggregation-diffusion).
    init : torch.distributions.Distribution or Tensor
        The initial law (event shape ``(d,)``), or ``(n, d)`` particles of it (then the flow has no
        densities and internal energies need the variational scheme).
    scheme : {"icnn", "variational", "forward_backward", "pwgf"}
        ``"icnn"``: JKO steps with gradients of input-convex networks and exact densities;
        ``"variational"``: JKO steps with the f-divergence dual formulas (seed 000/001);
        ``"forward_backward"``: explicit steps on the interaction energies, then a JKO step on the
        rest with the ``backward`` scheme (seed 000 §3.3); ``"pwgf"``: the parameterised flow of
        seed 004 (forward Euler in the parameters of one push-forward map of ``init``).
    step_size : float
        JKO step ``a`` (``h``); for PWGF the simulated time per recorded step.
    n_steps : int
        Number of steps recorded in the flow.
    dim : int, optional
        Dimension; checked against ``init`` when given.
    n_particles : int
        Particles of the cached pool of the JKO schemes.
    backward : {"variational", "icnn"}
        JKO scheme of the forward-backward scheme's backward step.
    n_reference : int
        Particles of ``P_k`` in the forward step's Monte-Carlo convolution (seed 000 §4.4: 10^4).
    seed : int
        Seed of the run's ``torch.Generator`` (network initialisation, batches, reference draws).
    device : str or torch.device
    progress_bar : bool
        Show a tqdm bar over the steps.
    **options
        Options of the scheme's configuration: :class:`~wgfinfer.schemes.icnn.ICNNSchemeConfig`,
        :class:`~wgfinfer.schemes.variational.VariationalSchemeConfig` (for ``"forward_backward"``
        too, or ICNN options with ``backward="icnn"``) or :class:`~wgfinfer.schemes.pwgf.PWGFConfig`.

    Returns
    -------
    Flow
        ``flow.sample(n, step=k)`` draws the law after ``k`` steps (``None``: the last);
        ``flow.log_prob(x, step=k)`` where the maps have densities; ``flow.history`` holds one dict
        per step (``time``, ``wall_time``, the scheme's losses and, where the particles' densities
        are exact, ``energy``: the free energy's Monte-Carlo estimate).

    Raises
    ------
    ValueError, TypeError
        For a scheme that cannot handle a term, bad options, shapes or hyper-parameters.
    TrainingDivergedError
        If a step diverges (the flow so far is attached as ``error.flow``).
    """
    if not isinstance(functional, Functional):
        raise TypeError(
            f"functional must be a wgfinfer.functionals free energy, got {type(functional).__name__}"
        )
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    functional.check_scheme(scheme)
    if backward not in BACKWARD_SCHEMES:
        raise ValueError(f"backward must be one of {BACKWARD_SCHEMES}, got {backward!r}")
    step_size = _positive_float(step_size, "step_size")
    for name, value in (("n_steps", n_steps), ("n_particles", n_particles), ("n_reference", n_reference)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    device = torch.device(device)
    base = _initial_law(init, dim)
    d = int(base.event_shape[0])
    generator = torch.Generator().manual_seed(int(seed))
    kind = backward if scheme == "forward_backward" else scheme
    config = _config(kind, options)
    flow = Flow(base, device=device, snapshots=scheme == "pwgf")
    flow.history = []  # type: ignore[attr-defined]
    flow.step_size = step_size  # type: ignore[attr-defined]
    runner = _Runner(functional, flow, scheme, config, step_size, n_particles, n_reference, generator, d)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=f"{scheme} steps", unit="step")
    try:
        for k in range(n_steps):
            start = time.perf_counter()
            try:
                record = runner.step(k)
            except TrainingDivergedError as exc:
                exc.flow = flow  # type: ignore[attr-defined]
                raise
            record = {"step": k + 1, "time": (k + 1) * step_size, **record}
            record["wall_time"] = time.perf_counter() - start
            flow.history.append(record)  # type: ignore[attr-defined]
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return flow


def _positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return float(value)


def _initial_law(init: Distribution | Tensor, dim: int | None) -> Distribution:
    if isinstance(init, Tensor):
        base: Distribution = EmpiricalMeasure(init)
    elif isinstance(init, Distribution):
        base = init
    else:
        raise TypeError(f"init must be a torch Distribution or an (n, d) tensor, got {type(init).__name__}")
    if len(base.event_shape) != 1 or len(base.batch_shape) != 0:
        raise ValueError(
            f"init must have event shape (d,) and no batch shape, got event {tuple(base.event_shape)}, "
            f"batch {tuple(base.batch_shape)} (wrap per-coordinate laws in torch.distributions.Independent)"
        )
    if dim is not None and int(base.event_shape[0]) != dim:
        raise ValueError(f"init has dimension {int(base.event_shape[0])} but dim={dim}")
    return base


def _config(kind: str, options: dict[str, Any]) -> Any:
    cls = {"icnn": ICNNSchemeConfig, "variational": VariationalSchemeConfig, "pwgf": PWGFConfig}[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {kind!r} steps; valid: {sorted(names)}")
    if "hidden" in options:
        options = {**options, "hidden": tuple(int(h) for h in options["hidden"])}
    return cls(**options)


class _Runner:
    """The state of a simulation between steps: the particle pool, its log-densities, the duals."""

    def __init__(
        self,
        functional: Functional,
        flow: Flow,
        scheme: str,
        config: Any,
        step_size: float,
        n_particles: int,
        n_reference: int,
        generator: torch.Generator,
        dim: int,
    ) -> None:
        self.functional, self.flow, self.scheme, self.config = functional, flow, scheme, config
        self.step_size, self.n_reference, self.generator, self.dim = step_size, n_reference, generator, dim
        if scheme == "forward_backward":
            rest = [t for t in functional.terms() if t not in functional.interactions()]
            self.backward_functional: Functional | None = FreeEnergy(rest) if rest else None
        else:
            self.backward_functional = functional
        self.dtype = torch.get_default_dtype()
        self.particles = self.log_q = None
        self.warm: nn.Module | None = None
        self.duals: list[nn.Module] | None = None
        if scheme == "pwgf":
            probe = sample_distribution(flow.base, 1, generator, flow.device)
            self.dtype = probe.dtype
            return
        self.particles = sample_distribution(flow.base, n_particles, generator, flow.device)
        if self.particles.shape != (n_particles, dim):
            raise ValueError(f"init must draw points of shape (n, {dim}), got {tuple(self.particles.shape)}")
        self.dtype = self.particles.dtype
        needs_density = any(not isinstance(t, Entropy) for t in functional.internal_energies())
        tracks = isinstance(config, ICNNSchemeConfig) and scheme != "forward_backward"
        if tracks and not isinstance(flow.base, EmpiricalMeasure):
            self.log_q = flow.base.log_prob(self.particles)
        elif needs_density and isinstance(config, ICNNSchemeConfig):
            raise ValueError(
                "the ICNN scheme evaluates internal energies with the particles' exact densities: "
                "give init as a Distribution with log_prob (or use the variational scheme)"
            )

    def step(self, k: int) -> dict[str, Any]:
        if self.scheme == "pwgf":
            return self._pwgf(k)
        record: dict[str, Any] = {}
        pool = self.particles
        assert pool is not None
        fwd = None
        if self.scheme == "forward_backward":
            fwd = forward_step(
                pool, self.functional.interactions(), self.step_size, self.n_reference, self.generator
            )
            pool = _push(fwd, pool, self.flow.chunk_size)
            _check_finite(pool, k, "the forward step")
        backward_map = None
        if self.backward_functional is not None:
            backward_map, info = self._jko(k, pool)
            record.update(
                {name: getattr(info, name) for name in ("loss", "w2", "potential") if hasattr(info, name)}
            )
            if hasattr(info, "dual_objective"):
                record["dual_objective"] = info.dual_objective
            if hasattr(info, "log_det"):
                record["log_det"] = info.log_det
            self.warm = backward_map
        if fwd is not None:
            step_map: nn.Module = ComposedStep(fwd, backward_map)
            if backward_map is not None:
                pool = _push(backward_map, pool, self.flow.chunk_size)
        else:
            assert backward_map is not None
            step_map = backward_map
            if self.log_q is not None:
                single = Flow(self.flow.base, [backward_map], chunk_size=self.flow.chunk_size)
                pool, self.log_q = single.push(pool, self.log_q)
            else:
                pool = _push(backward_map, pool, self.flow.chunk_size)
        _check_finite(pool, k, "the new map")
        check_explosion(self.particles, pool, f"step {k}")
        self.particles = pool
        self.flow.append(step_map)
        if self.log_q is not None:
            m = min(MONITOR_PARTICLES, pool.shape[0])
            with torch.no_grad():
                record["energy"] = float(self.functional.estimate(pool[:m], self.log_q[:m]))
        return record

    def _jko(self, k: int, pool: Tensor) -> tuple[nn.Module, Any]:
        config, functional = self.config, self.backward_functional
        assert functional is not None
        args = (self.dim, config, self.generator, self.dtype, self.flow.device)
        if isinstance(config, ICNNSchemeConfig):
            warm = self.warm if self.warm is not None and config.warm_start else new_potential(*args)
            return icnn_jko_step(
                warm,
                pool,
                functional,
                self.step_size,
                config,
                self.generator,
                step_index=k,
                particle_log_density=self.log_q,
            )
        warm = self.warm if self.warm is not None else new_map(*args)
        if self.duals is None:
            self.duals = [new_dual(*args) for _ in functional.internal_energies()]
        transport, duals, info = variational_jko_step(
            warm, self.duals, pool, functional, self.step_size, config, self.generator, step_index=k
        )
        self.duals = list(duals)  # type: ignore[arg-type]
        return transport, info

    def _pwgf(self, k: int) -> dict[str, Any]:
        args = (self.dim, self.config, self.generator, self.dtype, self.flow.device)
        current = self.flow.maps[-1] if self.flow.maps else new_pushforward(*args)
        new, info = pwgf_step(
            current,
            self.flow.base,
            self.functional,
            self.step_size,
            self.config,
            self.generator,
            step_index=k,
        )
        self.flow.append(new)
        return dataclasses.asdict(info)


@torch.no_grad()
def _push(module: nn.Module, x: Tensor, chunk_size: int) -> Tensor:
    return torch.cat([module.transport(x[i : i + chunk_size]) for i in range(0, x.shape[0], chunk_size)])


def _check_finite(x: Tensor, k: int, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise TrainingDivergedError(f"step {k}: {what} sends particles to non-finite values")

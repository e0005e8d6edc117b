"""``simulate``: the PDE-facing entry point, a Wasserstein gradient flow of any free energy.

The sampler is the case ``F = KLDivergence(log_density)``; ``simulate`` runs any
:mod:`wgfinfer.functionals` free energy from an initial law with one of the four schemes and returns
the same :class:`~wgfinfer.flow.Flow` the sampler uses, with a ``history`` of the steps.  Its steps
run through the same loop as the sampler's (:mod:`wgfinfer.run`), retries included.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from wgfinfer._validation import check_positive_float, check_positive_int, check_seed
from wgfinfer.errors import DensityNotAvailableError, TrainingDivergedError
from wgfinfer.flow import Flow
from wgfinfer.functionals import Functional
from wgfinfer.run import RunState, run_steps
from wgfinfer.schemes import Scheme, as_scheme


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
        raise DensityNotAvailableError("an initial law given by particles has no density")


def simulate(
    functional: Functional,
    init: Distribution | Tensor,
    scheme: Scheme | str = "variational",
    step_size: float = 0.05,
    n_steps: int = 10,
    dim: int | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_retries: int = 3,
    progress_bar: bool = False,
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
    scheme : {"icnn", "variational", "forward_backward", "pwgf"} or a scheme object
        :class:`wgfinfer.ICNN` (JKO steps with gradients of input-convex networks and exact
        densities), :class:`wgfinfer.Variational` (JKO steps with the f-divergence dual formulas),
        :class:`wgfinfer.ForwardBackward` (explicit steps on the interaction energies, then a JKO
        step of its ``backward`` scheme on the rest) or :class:`wgfinfer.PWGF` (forward Euler in the
        parameters of one push-forward map of ``init``), with all their options; a name means that
        scheme with its defaults.
    step_size : float
        JKO step ``a`` (``h``); for PWGF the simulated time per recorded step.
    n_steps : int
        Number of steps recorded in the flow.
    dim : int, optional
        Dimension; checked against ``init`` when given.
    seed : int
        Seed of the run's ``torch.Generator`` (network initialisation, batches, reference draws).
    device : str or torch.device
    max_retries : int, default 3
        Retries of a diverged step with smaller learning rates (:func:`wgfinfer.run.run_steps`).
    progress_bar : bool
        Show a tqdm bar over the steps.

    Returns
    -------
    Flow
        ``flow.sample(n, step=k)`` draws the law after ``k`` steps (``None``: the last);
        ``flow.log_prob(x, step=k)`` where the maps have densities; ``flow.history`` holds one dict
        per step (``time``, ``wall_time``, the scheme's numbers (:class:`wgfinfer.schemes.Info`) and,
        where the particles' densities are exact, ``energy``: the free energy's Monte-Carlo estimate
        after the step).

    Raises
    ------
    ValueError, TypeError
        For a scheme that cannot handle a term, bad options, shapes or hyper-parameters.
    TrainingDivergedError
        If a step diverges after its retries (the flow so far is attached as ``error.flow``).
    """
    if not isinstance(functional, Functional):
        raise TypeError(
            f"functional must be a wgfinfer.functionals free energy, got {type(functional).__name__}"
        )
    options = as_scheme(scheme)
    functional.check_scheme(options.name)
    step_size = check_positive_float("step_size", step_size)
    n_steps = check_positive_int("n_steps", n_steps)
    check_seed(seed)
    device = torch.device(device)
    base = _initial_law(init, dim)
    generator = torch.Generator().manual_seed(int(seed))
    state = RunState(options.init(base, generator, device=device, functional=functional))
    flow = Flow(base, device=device, snapshots=options.name == "pwgf")
    flow.history = []  # type: ignore[attr-defined]
    flow.step_size = step_size  # type: ignore[attr-defined]

    def on_step(new: RunState) -> None:
        flow.maps = list(new.scheme_state.maps)
        flow.history.append(dict(new.history[-1]))  # type: ignore[attr-defined]

    try:
        run_steps(
            options,
            state,
            functional,
            step_size,
            n_steps,
            generator,
            monitor=functional,
            max_retries=max_retries,
            on_step=on_step,
            progress_bar=progress_bar,
            desc=f"{options.name} steps",
        )
    except TrainingDivergedError as exc:
        exc.flow = flow  # type: ignore[attr-defined]
        raise
    return flow


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

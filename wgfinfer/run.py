"""The one step loop: what :class:`~wgfinfer.WGFSampler`, :func:`~wgfinfer.simulate` and
:class:`~wgfinfer.filtering.JKOFilter` all run.

:func:`run_steps` takes a scheme (:mod:`wgfinfer.schemes`), a :class:`RunState` and a free energy,
and runs steps: each is retried after a divergence with smaller learning rates (a scale passed into
the scheme's ``step``), rolled back by keeping the previous state (the random generators are reset
to where the step began), recorded in the history, reported to a progress bar and to an
``on_step`` hook (checkpoints), and followed by an optional stopping rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from wgfinfer import bars
from wgfinfer.errors import NonFiniteLogDensityError, TrainingDivergedError
from wgfinfer.schemes.base import Info, Scheme

RETRY_LR_FACTOR = 0.25
"""Each retry of a diverged step multiplies the learning rates by this (PWGF: divides the Euler step)."""
ENERGY_RISE = 1.0
"""A step after which the monitored free energy is higher than after the step before by more than
this (nats for a KL monitor) and by more than :data:`ENERGY_RISE_SE` standard errors diverged: a
gradient flow's free energy does not rise (Jordan, Kinderlehrer and Otto 1998; every JKO step
lowers it), so a step that raises it was too large or its map broke somewhere."""
ENERGY_RISE_SE = 3.0
"""Standard errors (of the two estimates' difference, taken as independent) a rise must exceed..."""
ENERGY_JUMP = 100.0
"""... or this many nats, whatever the standard error."""


@dataclass(frozen=True)
class RunState:
    """Everything a run needs to continue besides the random generators' states.

    Attributes
    ----------
    scheme_state : ICNNState, VariationalState, PWGFState or ForwardBackwardState
        The scheme's state (pool, maps, duals, step index).
    history : tuple of dict
        One entry per completed step.
    training_time : float
        Seconds spent in completed steps.
    start_checks : tuple of dict
        The check records of a start that needed no step (:data:`wgfinfer.stopping.START`); empty
        otherwise (the checks after a run that trained live in its last history entry).
    last_energy : (float, float), optional
        The monitored free energy after the last step and its standard error (``Info.energy``,
        ``Info.energy_se``), which the next step's :func:`energy_rise` compares with; ``None``
        before the first step, without a monitor, or once the particles were changed outside a
        step.
    """

    scheme_state: Any
    history: tuple[dict[str, Any], ...] = ()
    training_time: float = 0.0
    start_checks: tuple[dict[str, Any], ...] = ()
    last_energy: tuple[float, float] | None = None

    @property
    def step(self) -> int:
        """Steps done."""
        return int(self.scheme_state.step)


def run_steps(
    scheme: Scheme,
    state: RunState,
    functional: Any,
    step_size: float,
    n_steps: int,
    generator: torch.Generator,
    *,
    monitor: Any = None,
    max_retries: int = 3,
    generators: Sequence[torch.Generator] = (),
    start_time: float = 0.0,
    record: Callable[[dict[str, Any], Info], dict[str, Any]] | None = None,
    on_step: Callable[[RunState], None] | None = None,
    should_stop: Callable[[RunState, Info], bool] | None = None,
    progress_bar: bool = False,
    progress: tuple[int, int] | None = None,
    desc: str = "steps",
    keeps: str = "",
) -> RunState:
    """Run ``n_steps`` steps of ``scheme`` from ``state``.

    Parameters
    ----------
    scheme : Scheme
        The options object; its ``step`` is called as
        ``scheme.step(state, functional, step_size, generator, lr_scale=..., monitor=..., callback=...)``.
    state : RunState
    functional : Functional or callable
        The free energy the steps follow.
    step_size : float
        Time of the flow per step.
    n_steps : int
        Steps to run (fewer if ``should_stop`` says so).
    generator : torch.Generator
        The run's generator.
    monitor : Functional, optional
        Passed to every step (the free energy estimated after it).
    max_retries : int, default 3
        A diverged step (:class:`TrainingDivergedError`, a target that is NaN/inf where the step
        moved particles, or a monitored free energy that rose by far more than its noise since the
        step before: :func:`energy_rise`) is retried from the same state with the learning rates multiplied by
        ``RETRY_LR_FACTOR`` each time; after ``max_retries`` retries the error is raised, carrying
        the attempts as ``error.attempts``.
    generators : sequence of torch.Generator
        Further generators a step advances (a target's mini-batch generator): reset with
        ``generator`` when a step is abandoned.
    start_time : float
        Flow time before the first of these steps (a history entry's ``time`` is the time after it).
    record : callable, optional
        ``record(entry, info) -> entry``: the caller's changes to a history entry.
    on_step : callable, optional
        Called with the new state after every completed step (checkpoints, bookkeeping).
    should_stop : callable, optional
        ``should_stop(state, info) -> bool`` after every step: a stopping rule.
    progress_bar : bool
        Show a tqdm bar.
    progress : (int, int), optional
        The bar's total and initial counts (default ``(n_steps, 0)``).
    desc : str
        The bar's label.
    keeps : str
        Appended to the message of a step that diverged for good (what the caller keeps);
        ``{steps}`` is replaced by the number of completed steps.

    Returns
    -------
    RunState
        The state after the last completed step.  If a step fails (any exception, ``Ctrl-C``
        included) nothing of it is kept: the generators are back where the step began and the
        caller's last state, as given to ``on_step``, is the run's result so far.
    """
    bar = None
    if progress_bar:
        total, initial = progress if progress is not None else (n_steps, 0)
        bar = bars.bar(True, total, desc, unit="step", initial=initial)
    rngs = [generator, *generators]
    try:
        for i in range(n_steps):
            saved = [g.get_state() for g in rngs]
            try:
                state, info = _one_step(
                    scheme, state, functional, step_size, generator, monitor, max_retries, bar, keeps,
                    start_time + (i + 1) * step_size, record,
                )  # fmt: skip
            except BaseException:
                for g, s in zip(rngs, saved, strict=True):
                    g.set_state(s)
                raise
            if on_step is not None:
                on_step(state)
            if bar is not None:
                bar.set_postfix(loss=f"{info.loss:.4g}")
                bar.update(1)
            if should_stop is not None and should_stop(state, info):
                break
    finally:
        if bar is not None:
            bar.close()
    return state


def energy_rise(before: tuple[float, float] | None, after: Info) -> str | None:
    """Why a step counts as diverged by its free-energy monitor, or ``None``.

    ``before`` is the monitored free energy after the step before and its standard error
    (:attr:`RunState.last_energy`), ``after`` the step's :class:`Info`.  The step diverged when its
    ``energy`` is not finite, or higher than ``before`` by more than :data:`ENERGY_RISE` and either
    :data:`ENERGY_RISE_SE` standard errors or :data:`ENERGY_JUMP` (a rise driven by a few particles
    sent where the target is astronomically small inflates its own standard error).
    """
    if before is None or after.energy is None or after.energy_se is None:
        return None
    energy, energy_se = before
    if not math.isfinite(energy):
        return None
    if not math.isfinite(after.energy):
        return f"the monitored free energy is {after.energy} after the step ({energy:.6g} before)"
    rise = after.energy - energy
    se = math.hypot(energy_se, after.energy_se)
    if rise > ENERGY_RISE and (rise > ENERGY_RISE_SE * se or rise > ENERGY_JUMP):
        return (
            f"the monitored free energy rose from {energy:.6g} to {after.energy:.6g} "
            f"(+{rise:.3g}, standard error {se:.2g}); a gradient flow's free energy does not rise"
        )
    return None


def _one_step(
    scheme: Scheme,
    state: RunState,
    functional: Any,
    step_size: float,
    generator: torch.Generator,
    monitor: Any,
    max_retries: int,
    bar: Any,
    keeps: str,
    time_after: float,
    record: Callable[[dict[str, Any], Info], dict[str, Any]] | None,
) -> tuple[RunState, Info]:
    k = state.step
    start = time.perf_counter()
    callback = None
    if bar is not None:
        every = max(1, int(getattr(scheme, "iters_per_step", 50)) // 4)

        def callback(it: int, loss: float) -> None:
            if it % every == 0:
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    attempts: list[dict[str, Any]] = []
    scale = 1.0
    while True:
        try:
            scheme_state, info = scheme.step(
                state.scheme_state, functional, step_size, generator,
                lr_scale=scale, monitor=monitor, callback=callback,
            )  # fmt: skip
            rose = energy_rise(state.last_energy, info)
            if rose is not None:
                raise TrainingDivergedError(f"step {k}: {rose}")
            break
        except (TrainingDivergedError, NonFiniteLogDensityError) as exc:
            # the pool's log-densities were finite when it was drawn: NaN/inf at points a step moved
            # particles to is a diverged step, or a target undefined there
            attempts.append({"lr_scale": scale, "error": str(exc)})
            if len(attempts) > max_retries:
                scales = ", ".join(f"{a['lr_scale']:g}" for a in attempts)
                hint = (
                    " (the target is NaN/inf where the step moved particles: the step diverged, or "
                    "log_density is not finite on all of R^d; sample constrained parameters on an "
                    "unconstrained scale)"
                    if isinstance(exc, NonFiniteLogDensityError)
                    else ""
                )
                error = TrainingDivergedError(
                    f"JKO step {k} diverged {len(attempts)} times (learning rates scaled by {scales}); "
                    f"last error: {exc}{hint}.{(' ' + keeps.format(steps=k)) if keeps else ''}"
                )
                error.attempts = attempts  # type: ignore[attr-defined]
                raise error from exc
            scale *= RETRY_LR_FACTOR
    elapsed = time.perf_counter() - start
    entry: dict[str, Any] = {"step": k + 1, "time": time_after, **info.record()}
    entry["wall_time"] = elapsed
    entry["retries"] = attempts
    if record is not None:
        entry = record(entry, info)
    energy = None if info.energy is None or info.energy_se is None else (info.energy, info.energy_se)
    new_state = RunState(
        scheme_state, (*state.history, entry), state.training_time + elapsed, last_energy=energy
    )
    return new_state, info

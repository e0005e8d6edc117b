"""When a sampler's flow stops: a plateau of its free-energy estimate, a step cap, a time budget.

With ``n_steps=None`` (the default) :class:`~wgfinfer.WGFSampler` first asks whether the start
already is the posterior to the checks' precision (:func:`wgfinfer.checks.start_verdict`; it then
trains no step, reason :data:`START`), and otherwise runs steps until the estimate of
``KL(q || p) - log Z`` on the monitored particles (``kl_minus_log_z`` in the history; the step's
``loss`` where a flow has no densities) has stopped falling, at most ``max_steps`` steps and, when
given, until ``time_budget`` seconds of training are spent.  The rule reads only the history, so a
resumed run stops where an uninterrupted one would, and a converged run trains no further when
``run()`` is called again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from wgfinfer.checks import KHAT_THRESHOLD, MEAN_TOLERANCE, SD_RATIO_BOUNDS
from wgfinfer.errors import WGFWarning

DEFAULT_MAX_STEPS = 20
"""``max_steps`` of a sampler without ``n_steps``."""
PATIENCE = 2
"""Steps without improvement after which the flow counts as converged."""
TOLERANCE = 0.01
"""Improvement (nats of the KL estimate) that counts: over the last :data:`PATIENCE` steps the best
value must fall below the best before them by more than this.  Half the KL of a Gaussian whose sd is
off by 10% in one coordinate is about 0.005 nats (``0.5 (r^2 - 1) - log r`` at ``r = 0.9``), so a
flow that stops here gains less per step than that error in a coordinate or two."""

CONVERGED = "converged"
MAX_STEPS = "max_steps"
N_STEPS = "n_steps"
TIME_BUDGET = "time_budget"
START = "start"
"""The start passed :func:`wgfinfer.checks.start_verdict`: the flow has no step (``n_steps=None`` only)."""


def monitored_values(history: Sequence[dict[str, Any]]) -> list[float]:
    """The quantity the rule watches, one value per step: ``kl_minus_log_z`` when every step has it,
    else the step's ``loss`` (flows without densities, the variational scheme without monitor).

    Not the importance estimate ``kl`` of the KL itself, although it is less noisy where the flow is
    good: where it is not, ``log mean(p / q)`` is carried by a few large weights and falls too
    slowly.  On breast-cancer BLR ``kl`` fell by less than 0.01 nats over two steps at step 15
    (0.87, with k-hat 0.87) while ``kl_minus_log_z``, an unbiased mean, still fell by 0.05 a step."""
    if history and all("kl_minus_log_z" in e for e in history):
        return [float(e["kl_minus_log_z"]) for e in history]
    return [float(e["loss"]) for e in history]


def recent_improvement(history: Sequence[dict[str, Any]], patience: int = PATIENCE) -> float:
    """How far the lowest value of the last ``patience`` steps lies below the lowest before them
    (negative for a rise; ``inf`` with fewer than ``patience + 1`` steps).

    Parameters
    ----------
    history : sequence of dict
        The sampler's history (one entry per completed step).
    patience : int
        Steps the improvement is looked for over.

    Returns
    -------
    float
    """
    values = monitored_values(history)
    if len(values) < patience + 1:
        return math.inf
    return min(values[:-patience]) - min(values[-patience:])


def has_plateaued(
    history: Sequence[dict[str, Any]], patience: int = PATIENCE, tolerance: float = TOLERANCE
) -> bool:
    """Whether the free-energy estimate stopped falling.

    Parameters
    ----------
    history : sequence of dict
        The sampler's history (one entry per completed step).
    patience : int
        Steps the improvement is looked for over.
    tolerance : float
        Smallest improvement that counts.

    Returns
    -------
    bool
        ``True`` when at least ``patience + 1`` steps are done and the lowest value of the last
        ``patience`` steps is not below the lowest value before them by more than ``tolerance``
        (a rise counts as no improvement): :func:`recent_improvement` at most ``tolerance``.
    """
    return recent_improvement(history, patience) <= tolerance


TRAINABLE_CHECKS = ("importance", "moments")
"""Checks whose failure more training can mend (heavy-tailed weights, raw draws off their weighted
moments), unlike a missed mode, a zero gradient or heavier tails than the flow's family."""


def asks_for_training(entry: dict[str, Any]) -> bool:
    """Whether a history entry holds the records of checks after a run of which one in
    :data:`TRAINABLE_CHECKS` failed."""
    return any(r.get("check") in TRAINABLE_CHECKS and r.get("ok") is False for r in entry.get("checks") or ())


GAP_IMPROVEMENT = 0.8
"""A flow that trained on after failed checks goes on again only if :func:`check_gap` has fallen
below this fraction of the previous checks' gap: a failure that more steps do not shrink (a mode
weight, tails heavier than the flow's family) is reported rather than trained to ``max_steps``."""


def check_gap(entry: dict[str, Any]) -> float:
    """How far the checks recorded in a history entry are from passing, in units of their bars
    (:mod:`wgfinfer.checks`): the largest of k-hat / ``KHAT_THRESHOLD`` (0.7), the raw-minus-weighted
    mean difference / ``MEAN_TOLERANCE`` (0.1 sd) and the sd ratio's log distance from 1 / the log of
    ``SD_RATIO_BOUNDS``' upper bound (1.1), over the checks that ran (0 when there are none)."""
    gap = 0.0
    sd_bar = math.log(SD_RATIO_BOUNDS[1])
    for record in entry.get("checks") or ():
        value = record.get("value") or {}
        if record.get("check") == "importance" and value.get("khat") is not None:
            gap = max(gap, float(value["khat"]) / KHAT_THRESHOLD)
        if record.get("check") == "moments" and "max_mean_error" in value:
            gap = max(gap, abs(float(value["max_mean_error"])) / MEAN_TOLERANCE)
            for key in ("sd_ratio_min", "sd_ratio_max"):
                ratio = float(value[key])
                if ratio > 0:
                    gap = max(gap, abs(math.log(ratio)) / sd_bar)
    return gap


def judged_history(history: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """The steps the plateau rule judges: all of them, or from the last step whose checks asked for
    more training (:func:`asks_for_training`) on, that step included as the level to improve on.  A
    flow that has stopped falling but whose draws the checks find wrong goes on for at least
    :data:`PATIENCE` steps, and stops when it has stopped falling again."""
    for i in range(len(history) - 1, -1, -1):
        if asks_for_training(history[i]):
            return history[i:]
    return history


def stop_reason(
    history: Sequence[dict[str, Any]],
    n_steps: int | None,
    max_steps: int,
    training_time: float = 0.0,
    time_budget: float | None = None,
) -> str | None:
    """Why a flow with this history stops now, or ``None`` if it goes on.

    Parameters
    ----------
    history : sequence of dict
        Completed steps.
    n_steps : int or None
        A fixed number of steps, or ``None`` for the plateau rule (on :func:`judged_history`) capped
        by ``max_steps``.
    max_steps : int
        The cap of the plateau rule.
    training_time : float
        Seconds spent in the completed steps.
    time_budget : float, optional
        Seconds of training after which no further step starts.

    Returns
    -------
    str or None
        :data:`N_STEPS`, :data:`CONVERGED`, :data:`MAX_STEPS`, :data:`TIME_BUDGET` or ``None``.
    """
    done = len(history)
    if n_steps is not None:
        if done >= n_steps:
            return N_STEPS
    elif has_plateaued(judged_history(history)):
        return CONVERGED
    elif done >= max_steps:
        return MAX_STEPS
    if time_budget is not None and training_time >= time_budget:
        return TIME_BUDGET
    return None


class BudgetWarning(WGFWarning):
    """The flow was still improving when it reached ``max_steps`` or its time budget."""

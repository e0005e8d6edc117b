"""Checks of a trained flow against its target, run by :meth:`wgfinfer.WGFSampler.run` when it ends.

Each check is a function that returns a plain record (JSON-like, so that it travels in the history of
save files and checkpoints)::

    {"check": name, "ok": bool or None, "value": ..., "message": str, "warning": class name}

``ok`` is ``False`` when the check found a problem (``message`` then says what it is and what to do,
as Stan's and Pathfinder's warnings do), ``True`` when it found none and ``None`` when it could not
run (no density, too few draws, a target that failed there; ``message`` says why).  The checks are

* ``"gradient"`` (:func:`gradient_check`): the log-density and its gradient are finite at the
  flow's draws, and the gradient is not exactly zero at all of them;
* ``"importance"`` (:func:`importance_check`): PSIS Pareto k-hat (Vehtari et al. 2024, by ArviZ)
  and the importance ESS of the flow's draws, from their exact ``log q``;
* ``"moments"`` (:func:`moment_check`, only when k-hat is reliable): the raw draws' means and sds
  against their own importance-weighted estimates (good weights do not make good draws);
* ``"modes"`` (:func:`mode_check`): a multi-start mode search from overdispersed starts (the idea of
  Pathfinder's many starts, Zhang et al. 2022): a mode as high as the flow's draws where the flow
  puts no mass is invisible to the importance weights, which only look where the flow's draws are;
* ``"tails"`` (:func:`tail_check`, only when k-hat is high): whether ``log p - log q`` keeps rising
  beyond the flow's farthest draws, i.e. the target's tails are heavier than the flow's.
* ``"stein"`` (:func:`stein_check`, only for flows without densities, where the importance checks
  cannot run): whether shrinking, widening or shifting the flow's draws along a coordinate lowers
  their kernel Stein discrepancy to the target beyond its standard error.
* ``"drift"`` (:func:`drift_check`, only for flows without densities): whether 30 steps of a
  Langevin MCMC kernel that leaves the target invariant move the draws' mean ``log p`` or a
  coordinate's mean or spread beyond their standard errors or by the signs of their changes (stray
  draws far out, which the Stein discrepancy barely sees, make ``log p`` rise), with a tail test on
  the largest changes of ``log p`` and, where the mode check found several modes, jumps between
  them that see wrong mode weights.

:func:`run_checks` runs them all on one set of draws and :func:`warn_failed` raises one warning (a
subclass of :class:`wgfinfer.errors.PosteriorCheckWarning`) per failed check.  Everything runs in
the flow's working coordinates (whitened for ``init="laplace"`` / ``"gaussian"``): importance
weights, mode heights and log-density differences do not depend on that affine change of variables.
Every constant below bounds the cost or sets a threshold; together the checks take a few hundred
evaluations of the log-density on small batches, and a handful of inversions of the flow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wgfinfer.errors import (
    BiasedDrawsWarning,
    DriftWarning,
    FlatGradientWarning,
    GradientWarning,
    HeavyTailWarning,
    ImportanceWarning,
    MissedModeWarning,
    PosteriorCheckWarning,
    SteinWarning,
    first_line,
)
from wgfinfer.importance import importance_diagnostics, khat_warning_threshold
from wgfinfer.laplace import AffineWhitening

LogDensity = Callable[[Tensor], Tensor]
"""A batched log-density ``(n, d) -> (n,)`` in the flow's working coordinates, differentiable, that
may return NaN or inf (the checks look at where it does)."""

IMPORTANCE_DRAWS = 16384
"""Fresh draws of the flow the checks use (not the scheme's monitored particles, which the last map
was fitted on).  Four times the 4096 that a user's k-hat usually comes from: PSIS k-hat of 4096 draws
scatters by about 0.15 (eight batches of one flow of posteriordb kilpisjarvi: 0.58-0.93), so a check
on 4096 draws warns or not by the draw when the tail is near the threshold; 16384 draws fit the
Pareto tail to twice as many weights (non-centred eight schools: 0.37-0.85 over batches of 4096,
0.82 from 32768, a real heavy tail in tau; kilpisjarvi: 0.45 from 32768)."""
EVALUATION_CHUNK = 4096
"""Draws the target is evaluated on at once (memory of models with per-draw intermediates)."""
MIN_IMPORTANCE_DRAWS = 100
"""Fewer draws than this give no k-hat worth a warning: the importance check does not run."""
KHAT_THRESHOLD = khat_warning_threshold
"""PSIS k-hat above which the importance weights are unreliable: 0.7, ArviZ's, Stan's and
Pathfinder's threshold (Vehtari et al. 2024)."""
GRADIENT_POINTS = 64
"""Draws at which the gradient is checked (as many as the probe before training)."""

MODE_STARTS = 8
"""Overdispersed starts of the mode search: half of them draws of the flow, half draws of
``rho_0``, moved away from their mean by the factors of :data:`OVERDISPERSION`."""
OVERDISPERSION = (3.0, 6.0, 12.0, 24.0)
"""Factors by which the starts are moved away from the mean, cycled over the starts: a ladder, since
the distance of a missed mode is unknown (3 is the classical overdispersion of MCMC starts)."""
RAY_DIRECTIONS = 32
"""Random directions (each both ways) along which the log-density is probed from the flow's mean at
the radii of :data:`RAY_RADII`, in one batch: a bump along a ray (the log-density rising again away
from the flow) is the basin of another mode, and its top point is a further start."""
RAY_RADII = tuple(2.0 ** (k / 2) for k in range(11))
"""Radii of the ray probe, in standard deviations of the flow's draws: 1 to 32 on a geometric grid."""
RAY_STARTS = 4
"""Highest bumps of the ray probe added to the starts."""
MODE_ITERATIONS = 100
"""Iterations of the mode search at most: one batched evaluation (with gradient) of the points still
moving per iteration."""
MODE_TOLERANCE = 0.01
"""A search has converged when half the squared gradient in the draws' whitened coordinates (the
Newton decrement of a target shaped like the flow) is below this, in nats."""
MIN_STEP = 1e-12
"""A search whose step (in the draws' whitened coordinates, per unit gradient) fell below this has
stalled and stops."""
MERGE_RADIUS = 1.0
"""Ends of the search closer than this (in standard deviations of the flow's draws) are one mode."""
LP_QUANTILE = 0.99
"""A mode is as high as the flow's draws if its log-density is at least this quantile of theirs
minus :func:`dimension_margin`."""
DISTANCE_FACTOR = 2.0
"""Without exact densities a mode is away from the flow if it is farther from every draw than this
times the largest nearest-neighbour distance among the draws (in their whitened coordinates)."""
DISTANCE_DRAWS = 1024
"""Draws among which the nearest-neighbour distances are computed (a ``n^2`` matrix)."""

TAIL_DIRECTIONS = 8
"""Directions of the tail probe: from the flow's mean through its farthest draws."""
TAIL_FACTORS = (1.5, 2.0, 3.0)
"""Radii of the tail probe, as multiples of the farthest draws' distance from the mean."""
TAIL_RISE = 1.0
"""``log p - log q`` must rise by more than this (nats) from a draw to the farthest probe, at every
probe, for that direction to count as heavy-tailed."""
TAIL_MIN_DIRECTIONS = 2
"""Heavy-tailed directions needed for the warning (one could be an inversion's error)."""

STEIN_DRAWS = 1024
"""Draws of the flow the Stein check uses (its kernel matrices are ``n x n``)."""
STEIN_COORDINATES = 32
"""Coordinates of the target (the first ones) that the Stein check changes one at a time."""
STEIN_SCALE = 1.5
"""Factor by which the Stein check widens the draws about their mean (and ``1 /`` it, shrinks)."""
STEIN_SHIFT = 0.5
"""Shift of the Stein check, in sds of the draws along the coordinate."""
STEIN_ALPHA = 0.01
"""Probability of a Stein warning for exact draws, at most (a Bonferroni bound over the changes)."""
DRIFT_DRAWS = 1024
"""Draws of the flow the drift check runs chains from (as many more tune the step size)."""
DRIFT_STEPS = 30
"""MALA steps of the drift check's chains."""
DRIFT_COORDINATES = 32
"""Coordinates of the target (the first ones) whose mean and spread the drift check follows."""
DRIFT_ALPHA = 0.01
"""Probability of a drift warning for exact draws, at most (a Bonferroni bound over the statistics)."""
DRIFT_ACCEPTANCE = 0.5
"""Smallest mean acceptance rate of the tuning chains for a step size to be used."""
DRIFT_TUNING_STEPS = 3
"""MALA steps per step size tried in the tuning."""
DRIFT_TUNING_HALVINGS = 12
"""Step sizes tried, halving from ``2 d^{-1/3}``."""
DRIFT_TAIL_DRAWS = 8192
"""Further draws of the flow (after the tested and the tuning ones) from which the drift check's
tail test runs a few MALA steps: stray draws are rare, and 1024 draws hold only a handful."""
DRIFT_TAIL_STEPS = 3
"""MALA steps of the tail test's chains."""
DRIFT_TAIL_TOP = 20
"""The tail test looks at the signs of this many of the largest changes of ``log p``."""
DRIFT_JUMP_STEPS = 5
"""Independence Metropolis-Hastings steps of the drift check's jumps between modes."""
DRIFT_JUMP_SEPARATION = 4.0
"""Modes closer than this (in the Mahalanobis distance of either mode's Laplace covariance) are not
told apart by the jumps."""
DRIFT_JUMP_MAX_DIM = 100
"""Above this dimension the drift check does not jump between modes (each mode's Hessian costs
``d`` gradient evaluations)."""
MODE_POINTS = 8
"""The mode check keeps at most this many of the modes it found, for the drift check."""

CHECK_NAMES = ("gradient", "importance", "moments", "modes", "tails", "stein", "drift")
"""The checks, in the order they run."""
WARNINGS: dict[str, type[PosteriorCheckWarning]] = {
    cls.__name__: cls
    for cls in (
        ImportanceWarning,
        BiasedDrawsWarning,
        MissedModeWarning,
        HeavyTailWarning,
        GradientWarning,
        FlatGradientWarning,
        SteinWarning,
        DriftWarning,
    )
}
"""The warning classes of the checks, by the name a record gives."""


MEAN_TOLERANCE = 0.1
"""The moments check fails when a raw mean is off its importance-weighted estimate by more than this
many (weighted) posterior sds ... (the mean half of the suite's "NUTS quality" bar)"""
SD_RATIO_BOUNDS = (0.9, 1.1)
"""... or a raw sd is outside these bounds relative to its weighted estimate (the sd half)."""
MOMENT_Z = 3.0
"""Either difference must also exceed this many of its own standard errors (not Monte-Carlo noise)."""
RAW_DRAWS_KHAT = 0.5
"""With PSIS k-hat at or above this (and below :data:`KHAT_THRESHOLD`) the moments check fails even
when the raw moments agree with the weighted ones: the weights are usable, but the flow is not close
enough to the posterior for its own draws to be trusted (Yao, Vehtari, Simpson and Gelman 2018), and
the weighted estimates then share the flow's error where it is too narrow (on the posterior suite, a
Student-t's and an HMM's sds 15-20% short, raw and weighted alike, at k-hat 0.56-0.59)."""
MIN_VERIFYING_ESS = (MOMENT_Z / MEAN_TOLERANCE) ** 2
"""900: below this importance ESS a weighted mean has a standard error above ``MEAN_TOLERANCE / MOMENT_Z``
posterior sds, so the moments check could not see a bias of ``MEAN_TOLERANCE``; it then fails on the
ESS itself (``ESS / n`` is about ``1 / (1 + chi^2(p || q))``: so few effective draws mean a flow far
from the posterior somewhere)."""


START_DRAWS = 16384
"""Draws of the start (``rho_0`` pushed through the whitening) that decide whether it needs a flow at
all (:func:`start_verdict`): posteriors of many rows are close to their Laplace approximation
(Bernstein-von Mises), and the start is then already as good as the steps can make it.  As many as
the checks after a run draw: the verdict's bar is the raw-minus-weighted difference plus
:data:`START_Z` standard errors, and with 4096 draws those two standard errors (about 0.035 sd at an
importance ESS of 3000) left a start only 0.015 sd of room; with 16384 they take half as much.  On
the posterior suite (2026-12-02) five more starts passed, all at NUTS quality (waveform, pima, sblri,
arma11, kilpisjarvi; docs/benchmarks.md), for 1-4 s more of verdict on the others."""
START_ADAPT_DRAWS = 2048
"""Draws of the start whose importance-weighted mean and covariance the whitening moves to before
the verdict (:func:`weighted_whitening`): with an importance ESS near 2048 the moved mean is within
about 0.02 sd of the weighted one."""
START_ROUNDS = (START_ADAPT_DRAWS, 2 * START_ADAPT_DRAWS, START_DRAWS, START_DRAWS)
"""Draws of the start's rounds: after each round whose draws the verdict refuses the whitening moves
to their weighted moments (a second move from 4096 draws halves the first one's Monte-Carlo error, a
third from 16384 halves it again); a start is accepted only on a round of :data:`START_DRAWS` draws
that needs no move.  The fourth round was added when the BLR twonorm and ringnorm starts were
refused on the third at 0.052-0.053 sd (the bar: 0.05), what the second move's own Monte-Carlo error
leaves over 21 coordinates; after the third move they, and diamonds' (26-D), passed at NUTS quality
(posterior suite, 2026-12-02)."""
START_KHAT = 0.5
"""The start counts as good only with PSIS k-hat below this: the importance ratio has a finite
variance (Vehtari et al. 2024), well below the warning threshold of 0.7, so that the verdict's
k-hat cannot be a lucky draw of a tail near the threshold (4096-draw k-hat scatters by about 0.15)."""
START_MEAN_TOLERANCE = MEAN_TOLERANCE / 2
"""... and only when every raw mean is within this many weighted sds of its importance-weighted
estimate (half the moments check's bar: the weighted estimate carries its own error, and a start
that sits near the bar would pass or miss by the draw) ..."""
START_SD_RATIO_BOUNDS = (0.95, 1.05)
"""... and every sd ratio within these bounds (half the check's margins) ..."""
START_Z = 2.0
"""... both after moving each raw mean and sd by this many of its standard errors towards the worse
side: the start is used unchanged only when its draws show with some confidence that it is right.
With the full bar (0.1 sd at 2 standard errors) a posteriordb GP regression's start was accepted 0.10
sd from the reference mean."""


def start_verdict(importance: dict[str, Any], moments: dict[str, Any]) -> tuple[bool, str]:
    """Whether the start is good enough to be the flow, from its importance and moments records.

    Stricter than the checks' warnings: k-hat below :data:`START_KHAT`, an importance ESS of at
    least :data:`MIN_VERIFYING_ESS`, and every raw mean within :data:`START_MEAN_TOLERANCE` weighted
    sds and every sd ratio within :data:`START_SD_RATIO_BOUNDS` of the importance-weighted
    estimates even when moved by :data:`START_Z` standard errors.

    Parameters
    ----------
    importance, moments : dict
        Records of :func:`importance_check` and :func:`moment_check` on draws of the start.

    Returns
    -------
    (bool, str)
        The verdict and a sentence saying why.
    """
    if importance.get("ok") is not True or moments.get("ok") is not True:
        return False, "the start fails the importance or moments check"
    imp, mom = importance["value"], moments["value"]
    lo, hi = START_SD_RATIO_BOUNDS
    reasons = []
    if not imp["khat"] < START_KHAT:
        reasons.append(f"k-hat {imp['khat']:.2f} >= {START_KHAT}")
    if not mom["ess_is"] >= MIN_VERIFYING_ESS:
        reasons.append(f"importance ESS {mom['ess_is']:.0f} < {MIN_VERIFYING_ESS:.0f}")
    if not mom["mean_error_bound"] <= START_MEAN_TOLERANCE:
        reasons.append(f"a mean up to {mom['mean_error_bound']:.3f} sd off (> {START_MEAN_TOLERANCE:g})")
    if not lo <= mom["sd_ratio_low"] <= mom["sd_ratio_high"] <= hi:
        low, high = mom["sd_ratio_low"], mom["sd_ratio_high"]
        reasons.append(f"sd ratios up to {low:.3f}-{high:.3f} (not in [{lo}, {hi}])")
    if reasons:
        return False, f"the start needs a flow (at {START_Z:g} standard errors): " + "; ".join(reasons)
    return True, (
        f"the start is already right: k-hat {imp['khat']:.2f}, importance ESS {mom['ess_is']:.0f} of "
        f"{imp['n']}; at {START_Z:g} standard errors its means are within {mom['mean_error_bound']:.3f} sd "
        f"and its sd ratios within {mom['sd_ratio_low']:.3f}-{mom['sd_ratio_high']:.3f} of their "
        "importance-weighted estimates"
    )


def weighted_whitening(x: Tensor, lp: Tensor, log_q: Tensor) -> AffineWhitening | None:
    """The whitening at the importance-weighted mean and covariance of draws ``x`` (target
    coordinates): ``loc`` the weighted mean, ``scale_tril`` the Cholesky factor of the weighted
    covariance; ``None`` where the weights are not finite or that covariance is not positive definite.

    Parameters
    ----------
    x : Tensor
        ``(n, d)`` draws of the start in the target's coordinates.
    lp, log_q : Tensor
        ``(n,)`` log target and exact log-density of the start at the draws.

    Returns
    -------
    AffineWhitening or None
    """
    lw = lp.detach().double() - log_q.detach().double()
    if not bool(torch.isfinite(lw).all()):
        return None
    w = torch.softmax(lw, dim=0)
    xd = x.detach().double()
    mean = w @ xd
    centred = xd - mean
    cov = (centred * w.unsqueeze(-1)).T @ centred
    factor, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0 or not bool(torch.isfinite(factor).all()):
        return None
    return AffineWhitening(mean.to(x.dtype), factor.to(x.dtype))


def moment_check(x: Tensor, lp: Tensor, log_q: Tensor, khat: float | None = None) -> dict[str, Any]:
    """Whether the flow's raw draws agree with their own importance-weighted moments.

    With exact ``log q`` and a reliable k-hat the self-normalised importance estimates of the
    posterior's means and sds are consistent, while the raw draws carry the flow's error; a flow can
    have excellent weights (k-hat near 0) and still put 61% of its mass on a mode of weight 70%,
    which shifts the raw means by 0.15 sd.  Per coordinate, the check compares the raw mean with the
    weighted one (in weighted sds) and the raw sd with the weighted one, each difference with its
    delta-method standard error ``sqrt(sum_i (w_i - 1/n)^2 (f_i - E_w f)^2)``.

    Parameters
    ----------
    x : Tensor
        ``(n, d)`` draws in the coordinates the moments are reported in (the target's).
    lp, log_q : Tensor
        ``(n,)`` log target and exact flow log-density at the draws.
    khat : float, optional
        The draws' PSIS k-hat (from :func:`importance_check`); at :data:`RAW_DRAWS_KHAT` or above the
        check fails whatever the moments say.

    Returns
    -------
    dict
        The record; ``value`` holds the largest ``mean_error`` (weighted sds), the ``sd_ratio``
        range and the coordinates where they are.
    """
    name = "moments"
    lw = (lp.detach().double() - log_q.detach().double()).cpu()
    if not bool(torch.isfinite(lw).all()):
        return _skipped(name, "some log weights are not finite")
    x = x.detach().double().cpu()
    n = x.shape[0]
    w = torch.softmax(lw, dim=0).unsqueeze(-1)
    excess = w - 1.0 / n
    mean_w = (w * x).sum(0)
    centred = x - mean_w
    var_w = (w * centred.square()).sum(0)
    sd_w = var_w.clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    mean_raw = x.mean(0)
    mean_se = (excess.square() * centred.square()).sum(0).sqrt()
    var_raw = (x - mean_raw).square().mean(0)
    var_se = (excess.square() * (centred.square() - var_w).square()).sum(0).sqrt()
    mean_error = (mean_raw - mean_w) / sd_w
    ratio = (var_raw / var_w.clamp_min(torch.finfo(torch.float64).tiny)).sqrt()
    lo, hi = SD_RATIO_BOUNDS
    bad_mean = (mean_error.abs() > MEAN_TOLERANCE) & ((mean_raw - mean_w).abs() > MOMENT_Z * mean_se)
    bad_sd = ((ratio < lo) | (ratio > hi)) & ((var_raw - var_w).abs() > MOMENT_Z * var_se)
    j_mean, j_lo, j_hi = int(mean_error.abs().argmax()), int(ratio.argmin()), int(ratio.argmax())
    value = {
        "max_mean_error": float(mean_error[j_mean]),
        "mean_coordinate": j_mean,
        "sd_ratio_min": float(ratio[j_lo]),
        "sd_ratio_max": float(ratio[j_hi]),
        "sd_coordinates": [j_lo, j_hi],
    }
    summary = (
        f"raw draws against their importance-weighted estimates: largest mean difference "
        f"{float(mean_error[j_mean]):+.2f} sd (coordinate {j_mean}), sd ratios "
        f"{float(ratio[j_lo]):.2f}-{float(ratio[j_hi]):.2f}"
    )
    ess = float(1.0 / w.square().sum())
    value["ess_is"] = ess
    # how far the raw moments may be from the weighted ones at START_Z standard errors (the start's verdict)
    ratio_se = var_se / (2.0 * var_w.clamp_min(torch.finfo(torch.float64).tiny))
    value["mean_error_bound"] = float((mean_error.abs() + START_Z * mean_se / sd_w).max())
    value["sd_ratio_low"] = float((ratio - START_Z * ratio_se).min())
    value["sd_ratio_high"] = float((ratio + START_Z * ratio_se).max())
    if not bool((bad_mean | bad_sd).any()):
        if ess < MIN_VERIFYING_ESS:
            message = (
                f"{summary}, but from an importance ESS of only {ess:.0f} of {n} draws "
                f"({100 * ess / n:.1f}%), below {MIN_VERIFYING_ESS:.0f} = ({MOMENT_Z:g} / "
                f"{MEAN_TOLERANCE:g})^2: the weighted estimates are too noisy to confirm the flow's "
                f"means to {MEAN_TOLERANCE} sd, and so few effective draws mean that the flow differs "
                "from the posterior somewhere, even with k-hat <= 0.7. Train longer (a larger "
                "max_steps, the scheme's iters_per_step) or with a richer map (hidden; another "
                "scheme), widen init; until then treat the draws' moments with care "
                "(docs/diagnostics.md)."
            )
            return _record(name, False, value, message, ImportanceWarning.__name__)
        if khat is not None and khat >= RAW_DRAWS_KHAT:
            message = (
                f"{summary}, but at PSIS k-hat {khat:.2f} (>= {RAW_DRAWS_KHAT}): the importance weights "
                "are usable, but the flow is not close enough to the posterior for its raw draws to be "
                "trusted (Yao et al. 2018), and where it is too narrow the weighted estimates share "
                "its error (sds too short). Train longer (a larger max_steps, the scheme's options) "
                "or with a richer map; sampler.get_samples(n, correct='psis') or correct='imh' "
                "correct what the flow covers (docs/diagnostics.md)."
            )
            return _record(name, False, value, message, BiasedDrawsWarning.__name__)
        return _record(name, True, value, summary)
    message = (
        f"{summary}: the flow's draws are biased by more than {MEAN_TOLERANCE} sd in a mean or "
        f"{int(100 * (hi - 1))}% in an sd, beyond Monte-Carlo error, while its importance weights are "
        "reliable (k-hat <= 0.7), e.g. mass split between modes in the wrong proportions. Use the "
        "importance-corrected draws (sampler.get_samples(n, correct='psis') or correct='imh') "
        "or train longer (a larger max_steps, the scheme's iters_per_step) (docs/diagnostics.md)."
    )
    return _record(name, False, value, message, BiasedDrawsWarning.__name__)


def dimension_margin(dim: int) -> float:
    """``d / 2 + 3 sqrt(d / 2)``: how far ``log q`` (or ``log p``) of draws spreads below its maximum
    for a Gaussian in ``d`` dimensions (``chi^2_d / 2``, its mean plus three standard deviations)."""
    return dim / 2.0 + 3.0 * math.sqrt(dim / 2.0)


def _record(check: str, ok: bool | None, value: Any, message: str, warning: str = "") -> dict[str, Any]:
    return {"check": check, "ok": ok, "value": _plain(value), "message": message, "warning": warning}


def _plain(value: Any) -> Any:
    """Python numbers, strings, lists and dicts only (no tuples, tensors or NumPy scalars), so that a
    record equals itself after a save file round trip; NaN becomes ``None``."""
    if isinstance(value, (Tensor, np.ndarray)):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _skipped(check: str, why: str) -> dict[str, Any]:
    return _record(check, None, None, f"not run: {why}")


# ------------------------------------------------------------------------------ evaluation helpers
def evaluate(log_density: LogDensity, z: Tensor, gradient: bool = False) -> tuple[Tensor, Tensor | None]:
    """``log_density`` at the rows of ``z``, NaN where it fails, and optionally its gradient.

    The batch is evaluated at once; if that raises (a Pyro distribution's validation, say), each row
    is evaluated alone and the rows that raise get NaN (and a NaN gradient).

    Parameters
    ----------
    log_density : callable
        ``(n, d) -> (n,)``, differentiable when ``gradient``.
    z : Tensor
        ``(n, d)`` points.
    gradient : bool, default False
        Also return the ``(n, d)`` gradient (zero where the output does not depend on the input).

    Returns
    -------
    values : Tensor
        ``(n,)``, detached.
    grad : Tensor or None
        ``(n, d)``, detached; ``None`` unless ``gradient``.
    """
    try:
        return _evaluate(log_density, z, gradient)
    except Exception:
        if z.shape[0] <= 1:
            nan = torch.full((z.shape[0],), math.nan, dtype=z.dtype, device=z.device)
            return nan, (torch.full_like(z, math.nan) if gradient else None)
    rows = [evaluate(log_density, z[i : i + 1], gradient) for i in range(z.shape[0])]
    values = torch.cat([r[0] for r in rows])
    return values, (torch.cat([r[1] for r in rows]) if gradient else None)  # type: ignore[misc]


def _evaluate(log_density: LogDensity, z: Tensor, gradient: bool) -> tuple[Tensor, Tensor | None]:
    if not gradient:
        with torch.no_grad():
            return log_density(z).detach(), None
    with torch.enable_grad():
        x = z.detach().clone().requires_grad_(True)
        out = log_density(x)
        grad = None
        if out.requires_grad:
            (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    return out.detach(), (torch.zeros_like(x) if grad is None else grad.detach())


class _Whitener:
    """The affine map to coordinates in which the flow's draws have mean 0 and covariance ``I``."""

    def __init__(self, draws: Tensor) -> None:
        z = draws.detach().to(torch.float64)
        d = z.shape[1]
        self.mean = z.mean(0)
        centred = z - self.mean
        cov = centred.T @ centred / max(z.shape[0] - 1, 1)
        jitter = 1e-10 * max(float(torch.diagonal(cov).mean()), 1e-300)
        self.factor = torch.linalg.cholesky(cov + jitter * torch.eye(d, dtype=z.dtype, device=z.device))
        self.dtype = draws.dtype

    def to_u(self, z: Tensor) -> Tensor:
        centred = (z.detach().to(torch.float64) - self.mean).T
        return torch.linalg.solve_triangular(self.factor, centred, upper=False).T.to(self.dtype)

    def to_z(self, u: Tensor) -> Tensor:
        return self.mean.to(self.dtype) + u @ self.factor.T.to(self.dtype)


# ------------------------------------------------------------------------------------------ checks
def importance_check(lp: Tensor, log_q: Tensor) -> dict[str, Any]:
    """PSIS Pareto k-hat and importance ESS of draws of the flow with their exact ``log q``.

    Parameters
    ----------
    lp : Tensor
        ``(n,)`` (tempered) log target at the draws; ``-inf`` is a zero weight, NaN or ``+inf`` make
        the check skip (the gradient check reports them).
    log_q : Tensor
        ``(n,)`` exact log-density of the flow at the draws.

    Returns
    -------
    dict
        The record; ``value`` holds ``khat``, ``ess_is``, ``ess_is_fraction`` and ``n``.  Fails when
        k-hat exceeds :data:`KHAT_THRESHOLD` (Vehtari et al. 2024).
    """
    name = "importance"
    lw = (lp.detach().double() - log_q.detach().double()).cpu()
    n = lw.shape[0]
    if n < MIN_IMPORTANCE_DRAWS:
        return _skipped(name, f"{n} draws, fewer than {MIN_IMPORTANCE_DRAWS}")
    bad = int((torch.isnan(lw) | torch.isposinf(lw)).sum())
    if bad:
        return _skipped(name, f"the log weights are NaN or +inf at {bad} of {n} draws")
    if bool(torch.isneginf(lw).all()):
        return _skipped(name, f"the target is -inf at all {n} draws")
    found = importance_diagnostics(lw)
    value = {k: found[k] for k in ("khat", "ess_is", "ess_is_fraction", "n")}
    khat = found["khat"]
    summary = (
        f"Pareto k-hat {khat:.2f} (PSIS) over {n} draws of the flow, importance ESS {found['ess_is']:.0f} "
        f"({100 * found['ess_is_fraction']:.1f}%)"
    )
    if not khat > KHAT_THRESHOLD:
        return _record(name, True, value, summary)
    message = (
        f"{summary}: k-hat > {KHAT_THRESHOLD} (Vehtari et al. 2024), the importance weights lp - log q "
        "are heavy-tailed: the flow puts too little mass where the posterior has mass, so estimates "
        "from its draws, the log-evidence and importance-weighted corrections are unreliable. Train "
        "longer (n_steps, the scheme's iters_per_step) or with a richer map (hidden; another scheme, "
        "e.g. wgfinfer.PWGF(map='coupling') for scales that depend on other coordinates), widen init; "
        "sampler.get_samples(resample=True) (PSIS) or correct='imh' correct the draws but stay limited "
        "to what the flow covers (docs/diagnostics.md)."
    )
    return _record(name, False, value, message, ImportanceWarning.__name__)


def gradient_check(log_density: LogDensity, points: Tensor) -> dict[str, Any]:
    """Whether the log-density and its gradient are finite at the flow's draws and the gradient is
    not exactly zero at all of them (the flow moves particles along it).

    Parameters
    ----------
    log_density : callable
        ``(n, d) -> (n,)`` in the flow's coordinates, NaN/inf allowed.
    points : Tensor
        ``(n, d)`` draws of the flow (the first :data:`GRADIENT_POINTS` are used).

    Returns
    -------
    dict
        The record; ``value`` holds ``n``, ``non_finite`` (points where the value or the gradient is
        NaN or inf) and ``zero`` (whether the gradient is zero at all of them).
    """
    name = "gradient"
    z = points[:GRADIENT_POINTS].detach()
    values, grad = evaluate(log_density, z, gradient=True)
    assert grad is not None
    n = z.shape[0]
    finite = torch.isfinite(values) & torch.isfinite(grad).all(-1)
    non_finite = int((~finite).sum())
    zero = n > 1 and non_finite == 0 and not bool(grad.any())
    value = {"n": n, "non_finite": non_finite, "zero": zero}
    if non_finite:
        example = z[int((~finite).nonzero()[0, 0])]
        message = (
            f"the log-density or its gradient is NaN or inf at {non_finite} of {n} draws of the trained "
            f"flow (e.g. at z = {_short(example)} in the flow's coordinates): the flow moves particles "
            "along this gradient, so its draws there are unreliable. Check that log_density is finite "
            "and differentiable on all of R^d (sample constrained parameters on an unconstrained scale, "
            "guard logs and divisions)."
        )
        return _record(name, False, value, message, GradientWarning.__name__)
    if zero:
        message = (
            f"the gradient of the log-density is exactly zero at all {n} checked draws of the trained "
            "flow: the flow moves particles along this gradient and cannot have followed the target. "
            "Is the target flat there (a plateau, a clamp), or is part of it computed outside autograd "
            "(.detach(), .item(), numpy)?"
        )
        return _record(name, False, value, message, FlatGradientWarning.__name__)
    return _record(name, True, value, f"finite, non-zero gradient at {n} draws")


def mode_check(
    log_density: LogDensity,
    draws: Tensor,
    lp: Tensor,
    generator: torch.Generator,
    log_q: Tensor | None = None,
    flow_log_prob: Callable[[Tensor], Tensor] | None = None,
    base_draws: Tensor | None = None,
    to_target: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Any]:
    """Search for modes of the target that the flow misses.

    Starts: :data:`MODE_STARTS` draws of the flow and of ``rho_0`` moved away from their mean by the
    factors of :data:`OVERDISPERSION`, and the tops of the highest bumps of the log-density along
    :data:`RAY_DIRECTIONS` random rays from the flow's mean (:data:`RAY_RADII`).  From each, a
    gradient ascent with a step per start (doubled after an accepted step, cut after a rejected one,
    Armijo's condition) in the coordinates that whiten the flow's draws, for at most
    :data:`MODE_ITERATIONS` batched evaluations.  A mode is *missed* if its log-density is at least
    the :data:`LP_QUANTILE` quantile of the draws' minus :func:`dimension_margin` and the flow puts no
    mass near it: its exact ``log q`` there is below the draws' smallest minus the same margin, or,
    without densities (or where the flow cannot be inverted), it is farther from every draw than
    :data:`DISTANCE_FACTOR` times the draws' largest nearest-neighbour distance.  A search that has
    not converged (:data:`MODE_TOLERANCE`) counts only where it has climbed above every draw of the
    flow: the log-density keeps growing in a region the flow misses (a funnel, an improper
    posterior), whereas a search still on its way up through the flow's tails says nothing.

    Parameters
    ----------
    log_density : callable
        ``(n, d) -> (n,)`` in the flow's coordinates, differentiable, NaN/inf allowed.
    draws : Tensor
        ``(n, d)`` draws of the flow.
    lp : Tensor
        ``(n,)`` ``log_density`` at ``draws``.
    generator : torch.Generator
        Source of the starts and the ray directions (CPU).
    log_q : Tensor, optional
        ``(n,)`` exact log-density of the flow at ``draws``.
    flow_log_prob : callable, optional
        Exact log-density of the flow at arbitrary ``(m, d)`` points, NaN where it cannot be
        computed; with ``log_q``, decides whether the flow puts mass at a mode.
    base_draws : Tensor, optional
        ``(m, d)`` draws of ``rho_0`` (for half of the starts; flow draws otherwise).
    to_target : callable, optional
        The flow's coordinates to the target's, for the points the record names.

    Returns
    -------
    dict
        The record; ``value`` holds ``starts``, ``modes`` (distinct converged ends of the search),
        ``lp_threshold``, ``lp_draws_max`` and ``missed``: one dict per missed mode with ``x`` (the
        point, in the target's coordinates), ``lp``, ``log_q`` (``None`` without density),
        ``distance`` (to the nearest draw, in standard deviations of the flow's draws) and
        ``converged``.
    """
    name = "modes"
    n, d = draws.shape
    finite = torch.isfinite(lp)
    if int(finite.sum()) < 2:
        return _skipped(name, "the log-density is finite at fewer than 2 draws")
    white = _Whitener(draws[finite])
    u_draws = white.to_u(draws[finite])
    lp_draws = lp[finite].double().cpu()
    threshold = float(torch.quantile(lp_draws, LP_QUANTILE)) - dimension_margin(d)

    def log_density_u(u: Tensor) -> Tensor:
        return log_density(white.to_z(u))

    starts = _starts(u_draws, None if base_draws is None else white.to_u(base_draws), generator)
    starts = torch.cat([starts, _ray_starts(log_density_u, d, generator, u_draws)])
    u_end, lp_end, lp_start, converged = _ascend(log_density_u, starts)
    ends = [
        i
        for i in torch.argsort(lp_end, descending=True).tolist()
        if math.isfinite(float(lp_end[i])) and float(lp_end[i]) > float(lp_start[i])
    ]
    modes: list[int] = []
    for i in ends:  # highest first: each mode is represented by its highest end
        if all(float((u_end[i] - u_end[j]).norm()) > MERGE_RADIUS for j in modes):
            modes.append(i)
    # a converged end is a mode, high enough at the threshold; an end still climbing counts only
    # once it is above every draw of the flow (a region the flow misses where the density keeps
    # growing, as in a funnel), not on its way up through the flow's own tails
    lp_max = float(lp_draws.max())
    high = [
        i
        for i in modes
        if (float(lp_end[i]) >= threshold if bool(converged[i]) else float(lp_end[i]) > lp_max)
    ]
    missed: list[dict[str, Any]] = []
    if high:
        u_high = u_end[high]
        distance = torch.cdist(u_high.double(), u_draws.double()).min(1).values
        spread = _nearest_neighbour_spread(u_draws)
        far_by_distance = distance > DISTANCE_FACTOR * spread
        lq_high: Tensor | None = None
        if log_q is not None and flow_log_prob is not None:
            lq_floor = float(log_q[finite].double().min()) - dimension_margin(d)
            lq_high = flow_log_prob(white.to_z(u_high)).double().cpu()
        for k, i in enumerate(high):
            lq = None if lq_high is None else float(lq_high[k])
            far = bool(far_by_distance[k]) if lq is None or not math.isfinite(lq) else lq < lq_floor
            if far:
                z = white.to_z(u_end[i : i + 1])
                x = z if to_target is None else to_target(z)
                missed.append(
                    {
                        "x": x[0].detach().double().cpu().tolist(),
                        "lp": float(lp_end[i]),
                        "log_q": lq if lq is not None and math.isfinite(lq) else None,
                        "distance": float(distance[k]),
                        "converged": bool(converged[i]),
                    }
                )
    points = [i for i in high if bool(converged[i])][:MODE_POINTS]
    value = {
        "starts": int(starts.shape[0]),
        "modes": sum(bool(converged[i]) for i in modes),
        # the converged modes as high as the flow's draws, in the flow's coordinates (for the drift
        # check's jumps between modes)
        "points": white.to_z(u_end[points]).detach().double().cpu().tolist() if points else [],
        "lp_threshold": threshold,
        "lp_draws_max": lp_max,
        "missed": missed,
    }
    if not missed:
        return _record(
            name,
            True,
            value,
            f"{value['modes']} mode(s) found from {starts.shape[0]} starts, none away from the flow's draws",
        )
    first = missed[0]
    unbounded = "" if first["converged"] else (
        " (the search had not converged there: the log-density may keep growing, as in a funnel or an "
        "improper posterior; a non-centred parameterisation helps with funnels)"
    )  # fmt: skip
    message = (
        f"a mode search from {starts.shape[0]} overdispersed starts found {len(missed)} point(s) where "
        f"the log-density is as high as at the flow's draws but the flow puts no mass: the highest at "
        f"x = {_short(torch.tensor(first['x']))} with log-density {first['lp']:.4g} (the flow's draws "
        f"reach {lp_max:.4g}), {first['distance']:.1f} standard deviations of the flow "
        f"from its nearest draw{unbounded}. Importance weights cannot see a mode the flow never visits. "
        "Start from a wider initial measure that covers every mode (init=wgfinfer.Init('normal', "
        "scale=...) or a distribution), use more particles and a longer flow; a multimodal posterior "
        "may need a separate run per mode. The record lists the points (sampler.checks)."
    )
    return _record(name, False, value, message, MissedModeWarning.__name__)


def tail_check(
    log_density: LogDensity,
    draws: Tensor,
    lp: Tensor,
    log_q: Tensor,
    flow_log_prob: Callable[[Tensor], Tensor],
) -> dict[str, Any]:
    """Whether ``log p - log q`` keeps rising beyond the flow's farthest draws.

    Along :data:`TAIL_DIRECTIONS` rays from the draws' mean through the draws farthest from it (in
    their whitened coordinates), the log weight ``log p - log q`` is computed at
    :data:`TAIL_FACTORS` times their distance.  A direction is heavy-tailed when the log weight at
    every probe exceeds the draw's by more than :data:`TAIL_RISE` and rises from probe to probe; the
    check fails with at least :data:`TAIL_MIN_DIRECTIONS` such directions.  Meant for flows whose
    k-hat is high, to say why.

    Parameters
    ----------
    log_density : callable
        ``(n, d) -> (n,)`` in the flow's coordinates, NaN/inf allowed.
    draws, lp, log_q : Tensor
        ``(n, d)`` draws of the flow, ``(n,)`` the log-density and the flow's exact log-density there.
    flow_log_prob : callable
        The flow's exact log-density at arbitrary points (NaN where it cannot be computed).

    Returns
    -------
    dict
        The record; ``value`` holds ``directions``, ``heavy`` (heavy-tailed directions), ``max_rise``
        (nats, over the directions) and ``factors``.
    """
    name = "tails"
    finite = torch.isfinite(lp) & torch.isfinite(log_q)
    if int(finite.sum()) < 2:
        return _skipped(name, "fewer than 2 draws with finite log weights")
    z, lw_draws = draws[finite], (lp[finite] - log_q[finite]).double().cpu()
    white = _Whitener(z)
    u = white.to_u(z)
    far = torch.argsort(u.norm(dim=-1), descending=True)[:TAIL_DIRECTIONS]
    factors = torch.tensor(TAIL_FACTORS, dtype=u.dtype, device=u.device)
    probes = (u[far][:, None, :] * factors[None, :, None]).reshape(-1, u.shape[1])
    zp = white.to_z(probes)
    lp_probe, _ = evaluate(log_density, zp)
    lw = (lp_probe.double().cpu() - flow_log_prob(zp).double().cpu()).reshape(len(far), len(TAIL_FACTORS))
    rise = lw - lw_draws[far.cpu()][:, None]
    steps = torch.cat([rise[:, :1], rise[:, 1:] - rise[:, :-1]], dim=1)
    heavy = torch.isfinite(rise).all(1) & (rise > TAIL_RISE).all(1) & (steps > 0).all(1)
    max_rise = rise[torch.isfinite(rise)].max() if bool(torch.isfinite(rise).any()) else None
    n_heavy = int(heavy.sum())
    value = {
        "directions": len(far),
        "heavy": n_heavy,
        "max_rise": None if max_rise is None else float(max_rise),
        "factors": list(TAIL_FACTORS),
    }
    if n_heavy < TAIL_MIN_DIRECTIONS:
        return _record(
            name, True, value, f"log p - log q does not keep rising beyond the flow's farthest draws "
            f"({n_heavy} of {len(far)} directions)"
        )  # fmt: skip
    top = float(rise[heavy].max())
    message = (
        f"beyond the flow's farthest draws log p - log q keeps rising (by up to {top:.1f} nats at "
        f"{TAIL_FACTORS[-1]:g} times their distance from the flow's mean, in {n_heavy} of {len(far)} "
        "directions): the target's tails are heavier than the flow's, or the flow is too narrow, and "
        "the importance weights are unbounded out there. Use a heavier-tailed initial measure (fewer "
        "degrees of freedom, e.g. init=wgfinfer.Init('auto', df=5), or a Student-t distribution), "
        "reparameterise the model (e.g. a log scale for a positive "
        "parameter), train longer; treat importance-weighted estimates and corrections with care."
    )
    return _record(name, False, value, message, HeavyTailWarning.__name__)


# ------------------------------------------------------------------------ the Stein check (no density)
NO_DENSITY_REMEDY = (
    "and this flow has no density to check or correct them by importance weights. Use "
    "scheme='icnn' (exact densities, importance checks and corrections) or scheme='pwgf', or train "
    "longer (a larger max_steps, the scheme's iters_per_step), and compare (docs/diagnostics.md)."
)
"""The end of the stein and drift checks' messages: what to do where the flow has no density."""


def stein_check(
    log_density: LogDensity,
    draws: Tensor,
    to_target: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Any]:
    """Whether moving the flow's draws brings them closer to the target, by the kernel Stein
    discrepancy (Liu, Lee and Jordan 2016; Gorham and Mackey 2017), which needs the target's score
    only: the check for flows without densities.

    The squared KSD ``S(P, Q)`` is zero when ``P = Q`` and positive otherwise, so for exact draws
    every change of them raises it.  The check compares the draws with a few changed copies: every
    coordinate ``j`` of the target (at most :data:`STEIN_COORDINATES` of them), and all of them
    together, scaled about its mean by ``1 / STEIN_SCALE`` and by ``STEIN_SCALE``, and each
    coordinate shifted by ``+-STEIN_SHIFT`` of its sd.  If a changed copy has a lower KSD than the
    draws, beyond its standard error, the draws are too wide, too narrow or off-centre along that
    coordinate.  The difference of the two KSDs is itself a U-statistic (of the difference of the
    Stein kernels, on the same draws), with the standard error of :func:`wgfinfer.diagnostics.ksd`;
    a change counts when the difference exceeds ``z`` of its standard errors, ``z`` the one-sided
    normal quantile of ``STEIN_ALPHA / m`` for ``m`` changes (Bonferroni), so that exact draws warn
    with probability at most ``STEIN_ALPHA`` whatever the target.  The threshold is relative: no KSD
    value has to be judged large; the price is that a flow that is wrong in another way (a missed
    mode, wrong correlations) may not be caught.

    The KSD is computed in the draws' whitened coordinates (mean 0, covariance ``I``, where the
    median-distance bandwidth suits every coordinate), with one bandwidth for the draws and all
    their changed copies.

    Parameters
    ----------
    log_density : callable
        ``(n, d) -> (n,)`` in the flow's coordinates, differentiable.
    draws : Tensor
        ``(n, d)`` draws of the flow; the first :data:`STEIN_DRAWS` are used.
    to_target : callable, optional
        The flow's coordinates to the target's; when it is affine (a whitening) the coordinates
        changed are the target's, else the flow's.

    Returns
    -------
    dict
        The record; ``value`` holds the draws' squared KSD and its standard error, the number of
        changes tested, the threshold ``z`` and the changes that lowered the KSD (``found``, each with
        its kind, coordinate, difference and ``z`` score, the most significant first).
    """
    name = "stein"
    z = draws.detach()[:STEIN_DRAWS]
    lp, grad = evaluate(log_density, z, gradient=True)
    assert grad is not None
    finite = torch.isfinite(lp) & torch.isfinite(grad).all(1)
    z, grad = z[finite], grad[finite]
    n, d = z.shape
    if n < MIN_IMPORTANCE_DRAWS:
        return _skipped(name, f"only {n} draws with a finite log-density and gradient")
    whitener = _Whitener(z)
    factor = whitener.factor.to(z.dtype)
    u = whitener.to_u(z).double()
    bandwidth = float(torch.pdist(u[:2000]).median())
    if not bandwidth > 0:
        return _skipped(name, "the draws coincide")
    base = _stein_matrix(u, (grad @ factor).double(), bandwidth)
    value0, se0 = _u_statistic(base)
    axes, in_target = _target_axes(z, to_target)
    x_centred = (z - z.mean(0)) @ torch.linalg.pinv(axes).T  # coordinates along the axes, centred
    sd = x_centred.std(0)
    changes: list[tuple[str, int | None, Tensor]] = [
        ("shrink", None, z - (1 - 1 / STEIN_SCALE) * (z - z.mean(0))),
        ("widen", None, z + (STEIN_SCALE - 1) * (z - z.mean(0))),
    ]
    for j in range(min(d, STEIN_COORDINATES)):
        along = axes[:, j]
        changes += [
            ("shrink", j, z - (1 - 1 / STEIN_SCALE) * x_centred[:, j : j + 1] * along),
            ("widen", j, z + (STEIN_SCALE - 1) * x_centred[:, j : j + 1] * along),
            ("shift up", j, z + STEIN_SHIFT * sd[j] * along),
            ("shift down", j, z - STEIN_SHIFT * sd[j] * along),
        ]
    results = []
    for kind, j, moved in changes:
        _, moved_grad = evaluate(log_density, moved, gradient=True)
        assert moved_grad is not None
        if not bool(torch.isfinite(moved_grad).all()):
            continue  # the change leaves the target's support: nothing to compare
        other = _stein_matrix(whitener.to_u(moved).double(), (moved_grad @ factor).double(), bandwidth)
        diff, diff_se = _u_statistic(base - other)
        score = diff / diff_se if diff_se > 0 else (math.inf if diff > 0 else -math.inf)
        results.append({"change": kind, "coordinate": j, "difference": diff, "z": score})
    m = len(results)
    if m == 0:
        return _skipped(name, "every changed copy of the draws left the target's support")
    threshold = NormalDist().inv_cdf(1.0 - STEIN_ALPHA / m)
    found = sorted((r for r in results if r["z"] > threshold), key=lambda r: -r["z"])
    value = {
        "ksd2": value0,
        "ksd2_se": se0,
        "n": n,
        "changes": m,
        "threshold_z": threshold,
        "found": found[:8],
        "coordinates": "target" if in_target else "flow",
    }
    summary = (
        f"squared KSD of {n} draws {value0:.3g} +- {se0:.2g}; of {m} changed copies (scaled by "
        f"{1 / STEIN_SCALE:.2f} or {STEIN_SCALE:g}, shifted by +-{STEIN_SHIFT:g} sd) "
    )
    if not found:
        return _record(name, True, value, summary + f"none is closer to the target beyond {threshold:.1f} se")
    frame = "the target's" if in_target else "the flow's"
    where = ", ".join(f"{_change_name(r)} (z = {r['z']:.1f})" for r in found[:4])
    message = (
        f"{summary}{len(found)} are closer to the target beyond {threshold:.1f} standard errors: "
        f"{where}. The flow's draws are too wide (if shrinking helps), too narrow (widening) or "
        f"off-centre (shifting) along those of {frame} coordinates, {NO_DENSITY_REMEDY}"
    )
    return _record(name, False, value, message, SteinWarning.__name__)


def _change_name(result: dict[str, Any]) -> str:
    j = result["coordinate"]
    return f"{result['change']} {'all coordinates' if j is None else f'coordinate {j}'}"


def _target_axes(z: Tensor, to_target: Callable[[Tensor], Tensor] | None) -> tuple[Tensor, bool]:
    """Directions in the flow's coordinates along which the target's coordinates move (the columns
    of the inverse of an affine ``to_target``) and ``True``; the flow's own axes and ``False`` when
    ``to_target`` is missing or not affine."""
    d = z.shape[1]
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    if to_target is not None:
        with torch.no_grad():
            points = torch.cat([torch.zeros_like(eye[:1]), eye])
            image = to_target(points)
            if image.shape == points.shape:
                offset, matrix = image[0], (image[1:] - image[0]).T
                probe = z[:4]
                affine = torch.allclose(to_target(probe), offset + probe @ matrix.T, rtol=1e-4, atol=1e-6)
                if affine and bool(torch.isfinite(matrix).all()):
                    return torch.linalg.inv(matrix), True
    return eye, False


def _stein_matrix(u: Tensor, s: Tensor, bandwidth: float) -> Tensor:
    """The RBF Stein kernel ``u_ij`` of :func:`wgfinfer.diagnostics.ksd` between points ``u`` with
    scores ``s`` (float64), with a zero diagonal."""
    d = u.shape[1]
    inv_l2 = 1.0 / bandwidth**2
    uu, su = u.square().sum(1), (s * u).sum(1)
    sq_dist = (uu[:, None] + uu[None, :] - 2 * u @ u.T).clamp_min(0)
    s_dot_r = su[:, None] + su[None, :] - s @ u.T - u @ s.T
    kernel = torch.exp(-0.5 * inv_l2 * sq_dist) * (s @ s.T + inv_l2 * (s_dot_r + d) - inv_l2**2 * sq_dist)
    return kernel.fill_diagonal_(0.0)


def _u_statistic(kernel: Tensor) -> tuple[float, float]:
    """The U-statistic of a symmetric ``(n, n)`` kernel matrix with a zero diagonal and its standard
    error, as :func:`wgfinfer.diagnostics.ksd` computes them."""
    n = kernel.shape[0]
    pairs = n * (n - 1)
    estimate = float(kernel.sum()) / pairs
    zeta1 = float((kernel.sum(1) / (n - 1)).var())
    zeta2 = max(float(kernel.square().sum()) / pairs - estimate**2, 0.0)
    return estimate, math.sqrt(max(4 * (n - 2) * zeta1 + 2 * zeta2, 0.0) / pairs)


# ------------------------------------------------------------------- the Langevin drift check (no density)
def drift_check(
    log_density: LogDensity,
    draws: Tensor,
    generator: torch.Generator,
    to_target: Callable[[Tensor], Tensor] | None = None,
    modes: Tensor | None = None,
) -> dict[str, Any]:
    """Whether a short MCMC run that leaves the target invariant moves the flow's draws: the check for
    flows without densities that sees stray draws in regions of very low density.

    If ``X_0`` are exact draws of the target ``p``, ``X_K`` after ``K`` steps of any ``p``-invariant
    Markov kernel are exact draws too, so ``E[f(X_K) - f(X_0)] = 0`` for every ``f``; the paired
    differences of independent chains are independent, which makes their mean's standard error
    exact.  The kernel here is the Metropolis-adjusted Langevin algorithm (Roberts and Tweedie
    1996), preconditioned by the robust scales (interquartile ranges) of the flow's draws, with a
    step size tuned on draws other than those tested (so that the kernel does not depend on them);
    it needs the target's log-density up to a constant and its gradient, no ``log q``.  The
    statistics are ``log p`` and, per coordinate of the target (the first
    :data:`DRIFT_COORDINATES`), its value and its squared distance from the tuning draws' mean:
    ``log p`` rises when draws lie where the target has little mass (too wide, or a few stray draws
    far out), a coordinate's mean moves when it is off-centre, its spread shrinks when it is too wide
    and grows when it is too narrow.  A difference counts when it exceeds ``z`` standard errors,
    ``z`` the two-sided normal quantile of ``DRIFT_ALPHA / m`` for ``m`` statistics (Bonferroni), so
    that exact draws warn with probability at most ``DRIFT_ALPHA`` whatever the target.  When no step
    size of the ladder (down to ``2 d^{-1/3} / 2^11`` in units of the draws' robust scales) is
    accepted, the check fails too: chains started at exact draws accept small enough steps with
    probability near one, and a ladder that ends rejected means that the target is thousands of
    times narrower than the draws' spread somewhere (non-centred eight schools under the variational
    scheme: sds up to 78 times the reference's, which the Stein check did not see).

    Parameters
    ----------
    log_density : callable
        ``(n, d) -> (n,)`` in the flow's coordinates, differentiable.
    draws : Tensor
        ``(n, d)`` draws of the flow: the first :data:`DRIFT_DRAWS` are tested, the next as many tune
        the step size.
    generator : torch.Generator
        Source of the chains' noise.
    to_target : callable, optional
        The flow's coordinates to the target's, in which the coordinates' statistics are taken.
    modes : Tensor, optional
        ``(k, d)`` modes of the target in the flow's coordinates (the mode check's ``points``).  With
        two or more well separated ones, :data:`DRIFT_JUMP_STEPS` independence Metropolis-Hastings
        steps from the tail test's draws (the tested ones if there are too few), proposing from
        the mixture of the modes' Laplace approximations, move draws between modes; the share of
        each mode's draws is then a statistic too (with its sign test), which sees wrong mode
        weights that local chains never correct.

    Returns
    -------
    dict
        The record; ``value`` holds the step size, the acceptance rate, the change of mean ``log p``
        with its standard error, the threshold ``z`` and the statistics that moved (``found``).
    """
    name = "drift"
    draws = draws.detach()
    n = min(DRIFT_DRAWS, draws.shape[0] // 2)
    if n < MIN_IMPORTANCE_DRAWS:
        return _skipped(name, f"{draws.shape[0]} draws are too few")
    tested, tuning = draws[:n], draws[n : 2 * n]
    lp0, grad0 = evaluate(log_density, tested, gradient=True)
    assert grad0 is not None
    keep = torch.isfinite(lp0) & torch.isfinite(grad0).all(1)
    tested, lp0, grad0 = tested[keep], lp0[keep], grad0[keep]
    if tested.shape[0] < MIN_IMPORTANCE_DRAWS:
        return _skipped(name, f"only {tested.shape[0]} draws with a finite log-density and gradient")
    scale = (torch.quantile(tuning, 0.75, dim=0) - torch.quantile(tuning, 0.25, dim=0)) / 1.349
    fallback = tuning.std(0)
    scale = torch.where(scale > 0, scale, fallback).clamp_min(torch.finfo(draws.dtype).tiny)
    step = _tune_step(log_density, tuning, scale, generator)
    if step is None:
        smallest = _largest_step(draws.shape[1]) / 2.0 ** (DRIFT_TUNING_HALVINGS - 1)
        message = (
            f"Langevin (MALA) chains started at the flow's draws rejected every step size down to "
            f"{smallest:.2g} (in units of the draws' interquartile scales; fewer than "
            f"{int(100 * DRIFT_ACCEPTANCE)}% of the moves accepted): chains from exact draws accept small "
            "steps almost always, so the target is far narrower than the draws' spread somewhere, or "
            "the draws sit where its gradient is enormous (stray draws far out), " + NO_DENSITY_REMEDY
        )
        return _record(
            name, False, {"step_size": None, "smallest_step": smallest}, message, DriftWarning.__name__
        )
    z, lp, grad = tested, lp0, grad0
    accepted = torch.zeros((), dtype=torch.float64)
    for _ in range(DRIFT_STEPS):
        z, lp, grad, rate = _mala_step(log_density, z, lp, grad, scale, step, generator)
        accepted = accepted + rate
    x0 = tested if to_target is None else to_target(tested)
    xk = z if to_target is None else to_target(z)
    x0, xk = x0.detach().double(), xk.detach().double()
    centre = (tuning if to_target is None else to_target(tuning)).detach().double().mean(0)
    k = min(x0.shape[1], DRIFT_COORDINATES)
    stats = [("log p", None, (lp - lp0).double())]
    for j in range(k):
        stats.append(("mean", j, xk[:, j] - x0[:, j]))
        stats.append(("spread", j, (xk[:, j] - centre[j]).square() - (x0[:, j] - centre[j]).square()))
    further = draws[2 * n : 2 * n + DRIFT_TAIL_DRAWS]  # the tail test's and the jumps' draws
    jump_draws = further if further.shape[0] >= MIN_IMPORTANCE_DRAWS else tested
    jumps = None if modes is None else _mode_jumps(log_density, jump_draws, modes, generator)
    if jumps is not None:
        for i, moved in enumerate(jumps[: max(1, len(jumps) - 1)]):  # k - 1 shares determine the last
            stats.append(("share of mode", i, moved))
    tail = _tail_signs(log_density, further, scale, step, generator)
    tests = 2 * len(stats) + (tail is not None)  # a mean and a sign test per statistic, the tail test
    threshold = NormalDist().inv_cdf(1.0 - DRIFT_ALPHA / (2 * tests))
    results = []
    for kind, j, diff in stats:
        mean, se = float(diff.mean()), float(diff.std() / math.sqrt(diff.shape[0]))
        score = mean / se if se > 0 else 0.0
        results.append({"statistic": kind, "coordinate": j, "change": mean, "se": se, "z": score})
    for kind, j, diff in stats:  # the signs: exact whatever the tails of the differences
        moved = diff[diff != 0]
        if moved.shape[0] < MIN_IMPORTANCE_DRAWS:
            continue
        share = float((moved > 0).double().mean())
        score = (share - 0.5) * 2.0 * math.sqrt(moved.shape[0])
        results.append(
            {"statistic": f"{kind} (signs)", "coordinate": j, "change": share - 0.5, "se": None, "z": score}
        )
    found = sorted((r for r in results if abs(r["z"]) > threshold), key=lambda r: -abs(r["z"]))
    if tail is not None:
        rising, top = tail
        p_value = _binomial_upper_tail(rising, top)
        # one-sided: stray draws far out are what the test is for, and their log p rises
        if p_value <= DRIFT_ALPHA / tests:
            found.append(
                {
                    "statistic": "largest log p changes (signs)",
                    "coordinate": None,
                    "change": rising,
                    "se": None,
                    "z": NormalDist().inv_cdf(1.0 - p_value) if p_value > 0 else math.inf,
                    "top": top,
                }
            )
            found.sort(key=lambda r: -abs(r["z"]))
    rate = float(accepted) / DRIFT_STEPS
    value = {
        "n": int(x0.shape[0]),
        "steps": DRIFT_STEPS,
        "step_size": step,
        "acceptance": rate,
        "log_p_change": results[0]["change"],
        "log_p_change_se": results[0]["se"],
        "statistics": len(results) + (tail is not None),
        "tail": None if tail is None else {"rising": tail[0], "of": tail[1]},
        "mode_jumps": 0 if jumps is None else len(jumps),
        "threshold_z": threshold,
        "found": found[:8],
    }
    summary = (
        f"{DRIFT_STEPS} Langevin (MALA) steps from {x0.shape[0]} draws, acceptance {rate:.2f}: mean "
        f"log p changed by {results[0]['change']:+.3g} +- {results[0]['se']:.2g}"
    )
    if not found:
        return _record(name, True, value, f"{summary}; no statistic moved beyond {threshold:.1f} se")
    where = ", ".join(_drift_name(r) for r in found[:4])
    message = (
        f"{summary}; {len(found)} of {len(results)} statistics moved beyond {threshold:.1f} standard "
        f"errors ({where}), which a chain that leaves the target invariant cannot do from exact draws: "
        "the flow's draws are not the target's (log p rising: draws where the target has little mass, "
        "too wide or stray draws far out; a spread shrinking: too wide there; growing: too narrow; a "
        f"mean moving: off-centre), {NO_DENSITY_REMEDY}"
    )
    return _record(name, False, value, message, DriftWarning.__name__)


def _drift_name(result: dict[str, Any]) -> str:
    j = result["coordinate"]
    if "top" in result:
        return f"log p rose at {result['change']} of the {result['top']} largest changes"
    statistic = result["statistic"]
    if statistic.startswith("share of mode"):
        what = f"share of mode {j}" + (" (signs)" if statistic.endswith("(signs)") else "")
    elif statistic.startswith("log p"):
        what = statistic
    else:
        kind, _, signs = statistic.partition(" ")
        what = f"{kind} of coordinate {j}" + (f" {signs}" if signs else "")
    if result["se"] is None:  # a sign test: the share of rises minus a half
        return f"{what}: {100 * (0.5 + result['change']):.0f}% rose (z = {result['z']:+.1f})"
    return f"{what} {result['change']:+.3g} (z = {result['z']:+.1f})"


def _tail_signs(
    log_density: LogDensity, draws: Tensor, scale: Tensor, step: float, generator: torch.Generator
) -> tuple[int, int] | None:
    """The drift check's tail test: :data:`DRIFT_TAIL_STEPS` MALA steps from ``draws``, and of the
    :data:`DRIFT_TAIL_TOP` largest changes of ``log p`` (in absolute value), how many are rises:
    ``(rises, looked at)``, or ``None`` with too few draws or moves.

    From exact draws, ``(X_0, X_K)`` of a reversible kernel is exchangeable, so each change
    ``log p(X_K) - log p(X_0)`` is symmetric about zero and its sign is independent of its size: the
    signs of the largest changes are fair coins, whatever the target.  A few stray draws far out in
    the tails, where ``log p`` is hundreds below the bulk's, jump back in the first steps and make
    the largest changes all rises, while they barely move a mean over thousands of draws."""
    if draws.shape[0] < MIN_IMPORTANCE_DRAWS:
        return None
    lp0, grad = evaluate(log_density, draws, gradient=True)
    assert grad is not None
    keep = torch.isfinite(lp0) & torch.isfinite(grad).all(1)
    z, lp, grad = draws[keep], lp0[keep], grad[keep]
    start = lp
    for _ in range(DRIFT_TAIL_STEPS):
        z, lp, grad, _ = _mala_step(log_density, z, lp, grad, scale, step, generator)
    change = (lp - start).double()
    change = change[change != 0]
    top = min(DRIFT_TAIL_TOP, change.shape[0])
    if top < DRIFT_TAIL_TOP:
        return None
    largest = change[change.abs().topk(top).indices]
    return int((largest > 0).sum()), top


def _mode_jumps(
    log_density: LogDensity, draws: Tensor, modes: Tensor, generator: torch.Generator
) -> list[Tensor] | None:
    """The drift check's jumps between modes: for each of the well separated ``modes`` (at least two,
    each with a positive definite Hessian; at most :data:`DRIFT_JUMP_MAX_DIM` dimensions), the
    paired change, over :data:`DRIFT_JUMP_STEPS` independence Metropolis-Hastings steps from
    ``draws``, of the indicator that a draw is nearest that mode (by the modes' Laplace densities);
    ``None`` when fewer than two such modes remain.

    The proposal, an equal-weight mixture of the modes' Laplace approximations with covariances
    widened by 1.2^2, does not depend on the draws, so the kernel leaves the target invariant and
    every statistic's change is symmetric about zero from exact draws (the modes come from a search
    started at the flow's draws, a dependence on them this neglects)."""
    dtype = draws.dtype
    if draws.shape[1] > DRIFT_JUMP_MAX_DIM:
        return None
    centres, factors = [], []
    for mode in modes.to(draws):
        try:
            hess = torch.autograd.functional.hessian(lambda v: log_density(v[None])[0], mode.detach())
            chol = torch.linalg.cholesky(torch.linalg.inv(-0.5 * (hess + hess.T)))
        except (RuntimeError, torch.linalg.LinAlgError):
            continue  # a saddle or a flat direction: no Laplace approximation there
        if not bool(torch.isfinite(chol).all()):
            continue
        separated = all(
            float(torch.linalg.solve_triangular(f, (mode - c)[:, None], upper=False).norm())
            > DRIFT_JUMP_SEPARATION
            and float(torch.linalg.solve_triangular(chol, (mode - c)[:, None], upper=False).norm())
            > DRIFT_JUMP_SEPARATION
            for c, f in zip(centres, factors, strict=True)
        )
        if separated:
            centres.append(mode)
            factors.append(1.2 * chol)
    if len(centres) < 2:
        return None
    components = [
        torch.distributions.MultivariateNormal(c.double(), scale_tril=f.double())
        for c, f in zip(centres, factors, strict=True)
    ]

    def log_proposal_and_nearest(x: Tensor) -> tuple[Tensor, Tensor]:
        parts = torch.stack([comp.log_prob(x.double()) for comp in components])
        return torch.logsumexp(parts, 0), parts.argmax(0)

    z = draws.detach()
    lp = evaluate_draws(log_density, z).double()
    z, lp = z[torch.isfinite(lp)], lp[torch.isfinite(lp)]
    lq, nearest0 = log_proposal_and_nearest(z)
    for _ in range(DRIFT_JUMP_STEPS):
        pick = torch.randint(len(components), (z.shape[0],), generator=generator)
        eps = torch.randn(z.shape, generator=generator, dtype=torch.float64)
        centre = torch.stack(centres).double()[pick]
        scale = torch.stack(factors).double()[pick]
        proposal = (centre + (scale @ eps.unsqueeze(-1)).squeeze(-1)).to(dtype)
        lp_new = evaluate_draws(log_density, proposal).double()
        lp_new = torch.where(torch.isfinite(lp_new), lp_new, torch.full_like(lp_new, -math.inf))
        lq_new, _ = log_proposal_and_nearest(proposal)
        u = torch.rand(z.shape[0], generator=generator, dtype=torch.float64)
        accept = torch.log(u) < (lp_new - lp) - (lq_new - lq)
        z = torch.where(accept[:, None], proposal, z)
        lp, lq = torch.where(accept, lp_new, lp), torch.where(accept, lq_new, lq)
    _, nearest = log_proposal_and_nearest(z)
    return [(nearest == i).double() - (nearest0 == i).double() for i in range(len(components))]


def _binomial_upper_tail(k: int, n: int) -> float:
    """``P(B >= k)`` for ``B ~ Binomial(n, 1/2)``."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n


def _mala_step(
    log_density: LogDensity,
    z: Tensor,
    lp: Tensor,
    grad: Tensor,
    scale: Tensor,
    step: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """One preconditioned MALA step (preconditioner ``diag(scale^2)``) of every chain at once."""
    m = scale.square()
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    proposal = z + 0.5 * step * m * grad + math.sqrt(step) * scale * noise
    lp_new, grad_new = evaluate(log_density, proposal, gradient=True)
    assert grad_new is not None
    ok = torch.isfinite(lp_new) & torch.isfinite(grad_new).all(1)
    lp_new = torch.where(ok, lp_new, torch.full_like(lp_new, -math.inf))
    grad_new = torch.where(ok[:, None], grad_new, torch.zeros_like(grad_new))

    def log_kernel(to: Tensor, at: Tensor, g: Tensor) -> Tensor:  # log q(to | at), up to a constant
        return -((to - at - 0.5 * step * m * g) / scale).square().sum(1) / (2 * step)

    log_ratio = lp_new - lp + log_kernel(z, proposal, grad_new) - log_kernel(proposal, z, grad)
    u = torch.rand(z.shape[0], generator=generator, dtype=z.dtype).to(z.device)
    accept = ok & (torch.log(u) < log_ratio)
    z = torch.where(accept[:, None], proposal, z)
    lp = torch.where(accept, lp_new, lp)
    grad = torch.where(accept[:, None], grad_new, grad)
    return z, lp, grad, float(accept.double().mean())


def _largest_step(dim: int) -> float:
    """The first step size of the drift check's halving ladder: ``2 d^{-1/3}`` (Roberts and Rosenthal
    1998: MALA's step of order ``d^{-1/3}``)."""
    return 2.0 * dim ** (-1.0 / 3.0)


def _tune_step(
    log_density: LogDensity, draws: Tensor, scale: Tensor, generator: torch.Generator
) -> float | None:
    """The largest step size of a halving ladder whose MALA chains, started at ``draws``, accept at
    least :data:`DRIFT_ACCEPTANCE` of their moves over a few steps; ``None`` if none does."""
    lp, grad = evaluate(log_density, draws, gradient=True)
    assert grad is not None
    keep = torch.isfinite(lp) & torch.isfinite(grad).all(1)
    z, lp, grad = draws[keep], lp[keep], grad[keep]
    if z.shape[0] < 2:
        return None
    step = _largest_step(z.shape[1])
    for _ in range(DRIFT_TUNING_HALVINGS):
        rates = []
        zz, ll, gg = z, lp, grad
        for _ in range(DRIFT_TUNING_STEPS):
            zz, ll, gg, rate = _mala_step(log_density, zz, ll, gg, scale, step, generator)
            rates.append(rate)
        if sum(rates) / len(rates) >= DRIFT_ACCEPTANCE:
            return step
        step /= 2.0
    return None


# ------------------------------------------------------------------------------------ all of them
def evaluate_draws(log_density: LogDensity, draws: Tensor) -> Tensor:
    """``log_density`` at ``(n, d)`` draws, :data:`EVALUATION_CHUNK` at a time, without gradients:
    ``(n,)``."""
    return torch.cat([evaluate(log_density, chunk)[0] for chunk in draws.detach().split(EVALUATION_CHUNK)])


def run_checks(
    log_density: LogDensity,
    draws: Tensor,
    generator: torch.Generator,
    log_q: Tensor | None = None,
    flow_log_prob: Callable[[Tensor], Tensor] | None = None,
    base_draws: Tensor | None = None,
    to_target: Callable[[Tensor], Tensor] | None = None,
    lp: Tensor | None = None,
) -> list[dict[str, Any]]:
    """Run every check on one set of draws of the flow; a check that raises is recorded as not run.

    The gradient check runs first: when the gradient is zero everywhere, the other checks, whose
    findings would only restate it, do not run.  The tail check runs only when the
    importance check failed.

    Parameters
    ----------
    log_density : callable
        The (tempered) target ``(n, d) -> (n,)`` in the flow's coordinates, differentiable, NaN/inf
        allowed.
    draws : Tensor
        ``(n, d)`` draws of the flow.
    generator : torch.Generator
        Source of the mode search's starts and directions.
    log_q : Tensor, optional
        ``(n,)`` exact log-density of the flow at ``draws`` (flows with densities).
    flow_log_prob : callable, optional
        Exact log-density of the flow at arbitrary points, NaN where it cannot be computed.
    base_draws : Tensor, optional
        Draws of ``rho_0``, for the mode search's starts.
    to_target : callable, optional
        The flow's coordinates to the target's (for the points the records name).
    lp : Tensor, optional
        ``(n,)`` ``log_density`` at ``draws``, where the caller has it (evaluated here otherwise).

    Returns
    -------
    list of dict
        One record per check, in the order of :data:`CHECK_NAMES`.
    """
    draws = draws.detach()
    if lp is None:
        lp = evaluate_draws(log_density, draws)
    else:
        lp = lp.detach()
    records: list[dict[str, Any]] = []

    def guarded(name: str, check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            record = check()
        except Exception as exc:  # a check never makes a finished run fail
            record = _skipped(name, f"{type(exc).__name__}: {first_line(exc)}")
        records.append(record)
        return record

    gradient = guarded("gradient", lambda: gradient_check(log_density, draws))
    flat = bool(gradient["value"] and gradient["value"].get("zero"))
    if flat:  # an improper target: the weights would only restate it
        importance = guarded(
            "importance", lambda: _skipped("importance", "the gradient is zero at every checked draw")
        )
    elif log_q is None:
        importance = guarded("importance", lambda: _skipped("importance", "the flow has no density"))
    else:
        importance = guarded("importance", lambda: importance_check(lp, log_q))
    if importance["ok"] is True:
        assert log_q is not None
        x = draws if to_target is None else to_target(draws)
        guarded("moments", lambda: moment_check(x, lp, log_q, khat=importance["value"]["khat"]))
    else:
        guarded("moments", lambda: _skipped("moments", "no reliable importance weights"))
    if flat:
        guarded("modes", lambda: _skipped("modes", "the gradient is zero at every checked draw"))
    else:
        guarded(
            "modes",
            lambda: mode_check(
                log_density, draws, lp, generator, log_q, flow_log_prob, base_draws, to_target
            ),
        )
    if importance["ok"] is not False or flat or flow_log_prob is None:
        why = (
            "the gradient is zero at every checked draw"
            if flat
            else "the importance check passed"
            if importance["ok"]
            else "no high k-hat to explain"
        )
        guarded("tails", lambda: _skipped("tails", why))
    else:
        assert log_q is not None
        guarded("tails", lambda: tail_check(log_density, draws, lp, log_q, flow_log_prob))
    if flat:
        guarded("stein", lambda: _skipped("stein", "the gradient is zero at every checked draw"))
    elif log_q is not None:
        guarded("stein", lambda: _skipped("stein", "the flow has densities: the importance checks run"))
    else:
        guarded("stein", lambda: stein_check(log_density, draws, to_target))
    if flat:
        guarded("drift", lambda: _skipped("drift", "the gradient is zero at every checked draw"))
    elif log_q is not None:
        guarded("drift", lambda: _skipped("drift", "the flow has densities: the importance checks run"))
    else:
        found = next((r for r in records if r["check"] == "modes"), None)
        points = (found["value"] or {}).get("points") if found is not None else None
        mode_points = torch.tensor(points, dtype=draws.dtype) if points and len(points) > 1 else None
        guarded("drift", lambda: drift_check(log_density, draws, generator, to_target, mode_points))
    return records


def failed(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the checks that found a problem (``ok`` is ``False``)."""
    return [r for r in records if r.get("ok") is False]


def warn_failed(records: Sequence[dict[str, Any]], stacklevel: int = 2, skip: Sequence[str] = ()) -> None:
    """Raise one warning per failed check, of the class its record names.

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`run_checks`.
    stacklevel : int, default 2
        As in :func:`warnings.warn`, counted from the caller of this function.
    skip : sequence of str
        Names of warning classes not to raise (a problem told about already).
    """
    for record in failed(records):
        name = record.get("warning") or ""
        if name in skip:
            continue
        warnings.warn(
            str(record["message"]), WARNINGS.get(name, PosteriorCheckWarning), stacklevel=stacklevel + 1
        )


# ------------------------------------------------------------------------------- mode search parts
def _short(v: Tensor, limit: int = 6) -> str:
    values = [f"{float(x):.3g}" for x in v.reshape(-1)[:limit]]
    return "[" + ", ".join(values) + (", ...]" if v.numel() > limit else "]")


def _starts(u_draws: Tensor, u_base: Tensor | None, generator: torch.Generator) -> Tensor:
    """Draws of the flow (and of ``rho_0``) moved away from their mean by the overdispersion ladder."""
    half = MODE_STARTS // 2
    pick = torch.randint(0, u_draws.shape[0], (MODE_STARTS,), generator=generator).to(u_draws.device)
    factors = torch.tensor(
        [OVERDISPERSION[j % len(OVERDISPERSION)] for j in range(MODE_STARTS)],
        dtype=u_draws.dtype,
        device=u_draws.device,
    )[:, None]
    starts = factors * u_draws[pick]  # the draws' mean is 0 in these coordinates
    if u_base is not None and u_base.shape[0] >= 1:
        centre = u_base.mean(0) if u_base.shape[0] > 1 else torch.zeros_like(u_base[0])
        rows = torch.randint(0, u_base.shape[0], (MODE_STARTS - half,), generator=generator)
        base = u_base[rows.to(u_base.device)]
        starts[half:] = centre + factors[half:] * (base - centre)
    return starts


def _ray_starts(log_density_u: LogDensity, dim: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """The tops of the highest bumps of the log-density along random rays from the flow's mean."""
    directions = torch.randn(RAY_DIRECTIONS, dim, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    rays = torch.cat([directions, -directions]).to(dtype=like.dtype, device=like.device)
    radii = torch.tensor(RAY_RADII, dtype=like.dtype, device=like.device)
    points = rays[:, None, :] * radii[None, :, None]
    values, _ = evaluate(log_density_u, points.reshape(-1, dim))
    v = values.reshape(len(rays), len(RAY_RADII)).double().cpu()
    v = torch.where(torch.isfinite(v), v, torch.full_like(v, -math.inf))
    previous = torch.cat([torch.full_like(v[:, :1], math.inf), v[:, :-1]], dim=1)  # never a bump at radius 1
    following = torch.cat([v[:, 1:], torch.full_like(v[:, :1], -math.inf)], dim=1)
    bump = (v > previous) & (v >= following) & torch.isfinite(v)
    if not bool(bump.any()):
        return like.new_zeros((0, dim))
    height = torch.where(bump, v, torch.full_like(v, -math.inf)).reshape(-1)
    top = torch.argsort(height, descending=True)[: min(RAY_STARTS, int(bump.sum()))]
    return points.reshape(-1, dim)[top.to(points.device)]


def _ascend(log_density_u: LogDensity, starts: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradient ascent from every start with its own step: ends, their log-density, the log-density
    at the starts and whether each converged (:data:`MODE_TOLERANCE`, or a step that collapsed)."""
    u = starts.detach().clone()
    f, g = evaluate(log_density_u, u, gradient=True)
    assert g is not None
    alive = torch.isfinite(f) & torch.isfinite(g).all(-1)
    f = torch.where(alive, f, torch.full_like(f, -math.inf))
    g = torch.where(alive[:, None], g, torch.zeros_like(g))
    f_start = f.clone()
    step = torch.ones_like(f)
    done = ~alive

    def converged() -> Tensor:
        return 0.5 * g.square().sum(-1) < MODE_TOLERANCE

    for _ in range(MODE_ITERATIONS):
        active = (~done & ~converged() & (step > MIN_STEP)).nonzero().squeeze(-1)
        if active.numel() == 0:
            break
        proposal = u[active] + step[active, None] * g[active]
        f_new, g_new = evaluate(log_density_u, proposal, gradient=True)
        assert g_new is not None
        gain = 1e-4 * step[active] * g[active].square().sum(-1)
        accept = torch.isfinite(f_new) & torch.isfinite(g_new).all(-1) & (f_new >= f[active] + gain)
        took = active[accept]
        u[took], f[took], g[took] = proposal[accept], f_new[accept], g_new[accept]
        step[took] = step[took] * 2.0
        step[active[~accept]] = step[active[~accept]] * 0.25
    # a search whose step collapsed cannot climb further: numerically at a local maximum
    return u, f, f_start, (converged() | (step <= MIN_STEP)) & alive


def _nearest_neighbour_spread(u: Tensor) -> float:
    """The largest distance from one of (at most :data:`DISTANCE_DRAWS`) draws to its nearest other."""
    x = u[:DISTANCE_DRAWS].double()
    if x.shape[0] < 2:
        return 0.0
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(math.inf)
    return float(dist.min(1).values.max())

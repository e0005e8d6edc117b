"""Exceptions raised by wgfinfer."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (``""`` if it has none), for messages that quote a
    long error (Pyro appends its trace shapes)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class WGFError(Exception):
    """Base class of wgfinfer's own exceptions."""


class TrainingDivergedError(WGFError, RuntimeError):
    """A JKO step produced a non-finite loss, map or parameter.

    The sampler keeps the maps of every step completed before the failing one, so
    ``sample`` and ``log_prob`` still work on the last good flow.
    """


class NonFiniteLogDensityError(WGFError, ValueError):
    """The target's log-density is NaN or inf at some of the points it was given.

    At the initial measure's draws this is bad input.  During training, at points a JKO step moved
    particles to, the sampler treats it as a diverged step (retried with smaller learning rates; a
    :class:`TrainingDivergedError` naming it when the retries run out).
    """


class NonPositiveHessianError(WGFError, ArithmeticError):
    """A Hessian that should be positive definite failed its Cholesky factorisation."""


class DensityNotAvailableError(WGFError, NotImplementedError):
    """The flow's maps have no tractable density (e.g. residual maps of the variational scheme).

    Draws still work; ``log_prob``, ``log q`` and everything built on importance weights need maps
    with exact log-determinants (``method="icnn"``, or ``method="variational", map="icnn"``).
    """


class SaveFileError(WGFError, ValueError):
    """A save file or checkpoint cannot be read: not a torch file, truncated or corrupted, not written
    by wgfinfer, of another format or format version, or with damaged entries.  The message names the
    file."""


class CheckpointInUseError(WGFError, RuntimeError):
    """Another run holds the checkpoint directory's lock: two runs writing one directory would resume
    and overwrite each other's steps.  The message names the directory and the process holding it."""


class WGFWarning(UserWarning):
    """Base class of wgfinfer's own warnings: something the library can tell about a run or a target
    that makes its result unreliable, with what to do about it.  Filter them as one category with
    ``warnings.simplefilter("error", wgfinfer.WGFWarning)``."""


class FlatTargetWarning(WGFWarning):
    """The log-density's gradient is exactly zero at every probe point: the flow cannot move."""


class PosteriorCheckWarning(WGFWarning):
    """A check that :meth:`wgfinfer.WGFSampler.run` ran on the trained flow failed
    (:mod:`wgfinfer.checks`); the message names the problem and what to do about it, and the check's
    record is in ``sampler.checks``."""


class ImportanceWarning(PosteriorCheckWarning):
    """The importance weights ``lp - log q`` of the flow's draws are unreliable (PSIS Pareto k-hat
    above 0.7), or too uneven to verify the draws' moments (importance ESS below 900 of 4096): the
    flow misses part of the target."""


class BiasedDrawsWarning(PosteriorCheckWarning):
    """The flow's draws disagree with their own importance-weighted estimates (reliable, k-hat at
    most 0.7) by more than a tenth of a posterior sd in a mean, or 10% in an sd: the draws are biased
    and the weighted ones are better."""


class MissedModeWarning(PosteriorCheckWarning):
    """A mode search found a point where the target's log-density is as high as at the flow's
    draws but where the flow puts no mass: the flow misses a mode (or a region) of the target."""


class HeavyTailWarning(PosteriorCheckWarning):
    """Beyond the flow's farthest draws the target's log-density falls off more slowly than the
    flow's: the target's tails are heavier than the flow's (or the flow is too narrow)."""


class SteinWarning(PosteriorCheckWarning):
    """For a flow without densities (the variational scheme's residual maps): moving the flow's draws
    (shrinking, widening or shifting them along a coordinate) lowers their kernel Stein discrepancy
    to the target by more than its standard error allows, so the draws are too wide, too narrow or
    off-centre there."""


class DriftWarning(PosteriorCheckWarning):
    """For a flow without densities: a short Langevin MCMC run that leaves the target invariant,
    started at the flow's draws, moves their mean log-density or a coordinate's mean or spread by
    more than its standard error allows, which it cannot do from exact draws: the draws are too wide,
    too narrow, off-centre or have stray draws where the target has little mass."""


class GradientWarning(PosteriorCheckWarning):
    """At some of the trained flow's draws the log-density or its gradient is not finite: the flow
    moves particles along that gradient."""


class FlatGradientWarning(GradientWarning, FlatTargetWarning):
    """At every checked draw of the trained flow the log-density's gradient is exactly zero: the
    flow could not have moved its particles (a :class:`FlatTargetWarning` too)."""

"""Exceptions raised by wgfinfer."""

from __future__ import annotations


class WGFError(Exception):
    """Base class of wgfinfer's own exceptions."""


class TrainingDivergedError(WGFError, RuntimeError):
    """A JKO step produced a non-finite loss, map or parameter.

    The sampler keeps the maps of every step completed before the failing one, so
    ``sample`` and ``log_prob`` still work on the last good flow.
    """


class NonPositiveHessianError(WGFError, ArithmeticError):
    """A Hessian that should be positive definite failed its Cholesky factorisation."""

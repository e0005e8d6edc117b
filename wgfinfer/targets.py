"""Targets: what the user gives, turned into a batched log-density on an unconstrained ``R^d``.

Everything downstream of a target (schemes, flows, outputs) only calls
:meth:`LogDensityTarget.log_density` on ``(n, d)`` tensors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from wgfinfer.errors import FlatTargetWarning, NonFiniteLogDensityError

LogDensityFn = Callable[[Tensor], Tensor]


class LogDensityTarget:
    """An unnormalized log-density ``f: (n, d) -> (n,)``; the target is ``exp(f) / Z``.

    Parameters
    ----------
    log_density : callable
        Maps an ``(n, d)`` tensor to an ``(n,)`` tensor of unnormalized log-densities, differentiably
        (the JKO schemes need ``grad f``).
    dim : int
        The dimension ``d``.

    Notes
    -----
    Every call checks the output's type, shape and finiteness, so that a bad target fails with a
    message naming the problem instead of training a network on NaNs.
    """

    def __init__(self, log_density: LogDensityFn, dim: int) -> None:
        if not callable(log_density):
            raise TypeError(f"log_density must be callable, got {type(log_density).__name__}")
        self._fn = log_density
        self.dim = int(dim)
        self.initial_point: Tensor | None = None
        """Where a mode search starts (``init="laplace"``); ``None`` means the origin."""
        self.generators: tuple[torch.Generator, ...] = ()
        """Generators the target draws from (a Pyro target's mini-batch indices): run state."""

    is_model = False
    """Whether the target is a probabilistic model with sites and data (a Pyro model)."""

    def samples(self, z: Tensor) -> dict[str, Tensor]:
        """Draws as ``{name: (n, *shape)}``: ``{"x": z}`` for a log-density."""
        return {"x": z.detach()}

    def __call__(self, x: Tensor) -> Tensor:
        return self.log_density(x)

    def log_density(self, x: Tensor, progress_bar: bool = False) -> Tensor:
        """Evaluate and check the log-density at ``(n, d)`` points.

        Parameters
        ----------
        x : Tensor
            ``(n, d)`` points.
        progress_bar : bool, default False
            Show a tqdm bar over the evaluation where the target evaluates its points in more than
            one chunk (a Pyro model with much data, or one evaluated per particle); a log-density
            callable is called once for all points, without a bar.

        Returns
        -------
        Tensor
            ``(n,)`` log-densities.

        Raises
        ------
        TypeError
            If the output is not a tensor.
        ValueError
            If the output does not have shape ``(n,)``; :class:`NonFiniteLogDensityError` (a
            ``ValueError``) if it holds NaN/inf values.
        """
        return self._checked(x, self._evaluate(x, progress_bar))

    def _evaluate(self, x: Tensor, progress_bar: bool) -> object:
        """The unchecked output of the log-density at ``x`` (a callable has no chunks, so no bar)."""
        return self._fn(x)

    def unchecked_log_density(self, x: Tensor) -> Tensor:
        """The log-density at ``(n, d)`` points with its type and shape checked but NaN and inf
        left in place (the checks after a run look at where it is not finite).

        Where the evaluation itself reports an undefined value (a
        :class:`~wgfinfer.errors.NonFiniteLogDensityError`, e.g. a distribution of a Pyro model
        rejecting its parameters, which fails a batched evaluation as a whole), the batch is split
        in halves until those points are found, and they get NaN: about ``2 * k * log2(n)`` extra
        evaluations for ``k`` of them.

        Raises
        ------
        TypeError, ValueError
            If the output is not a tensor of shape ``(n,)``.
        """
        try:
            return self._shaped(x, self._evaluate(x, progress_bar=False))
        except NonFiniteLogDensityError:
            if x.shape[0] == 1:
                return torch.full((1,), math.nan, dtype=x.dtype, device=x.device)
            half = x.shape[0] // 2
            return torch.cat([self.unchecked_log_density(x[:half]), self.unchecked_log_density(x[half:])])

    def _shaped(self, x: Tensor, out: object) -> Tensor:
        """``out`` if it is an ``(n,)`` tensor for the ``(n, d)`` points ``x``, else an error."""
        if not isinstance(out, Tensor):
            raise TypeError(f"log_density must return a torch.Tensor of shape (n,), got {type(out).__name__}")
        n = x.shape[0]
        if out.shape != (n,):
            raise ValueError(
                f"log_density must map an (n, d) = {tuple(x.shape)} tensor to shape ({n},), "
                f"got shape {tuple(out.shape)}"
            )
        return out

    def _checked(self, x: Tensor, out: object) -> Tensor:
        """``out`` if it is a finite ``(n,)`` tensor for the ``(n, d)`` points ``x``, else an error."""
        out = self._shaped(x, out)
        n = x.shape[0]
        finite = torch.isfinite(out)
        if not bool(finite.all()):
            bad = (~finite).nonzero().squeeze(-1)
            example = x[bad[0]].detach().cpu().tolist()
            raise NonFiniteLogDensityError(
                f"log_density returned {bad.numel()} non-finite value(s) (NaN or inf) for {n} "
                f"finite input points, e.g. at x = {example}"
            )
        return out

    def training_log_density(self, x: Tensor) -> Tensor:
        """The potential the JKO steps train on (the log-density itself; Pyro targets may subsample)."""
        return self.log_density(x)

    def validate(self, probe: Tensor) -> bool:
        """Check the log-density on probe points: shape, finiteness and differentiability.

        Parameters
        ----------
        probe : Tensor
            ``(n, d)`` points, typically draws from the initial measure.

        Returns
        -------
        bool
            Whether the gradient is exactly zero at every probe point (a :class:`FlatTargetWarning`
            was raised).

        Raises
        ------
        TypeError
            If the output is not a tensor or is not differentiable with respect to the input.
        ValueError
            If the output has the wrong shape, or it or its gradient is not finite.
        """
        x = probe.detach().clone().requires_grad_(True)
        try:
            out = self.log_density(x)
        except RuntimeError as exc:  # e.g. "mat1 and mat2 shapes cannot be multiplied" from x @ x
            raise TypeError(
                f"log_density failed on a batch of shape {tuple(x.shape)}: it is called on an (n, d) "
                "batch of points and must return an (n,) tensor (write it for a batch, e.g. "
                f"-0.5 * (x * x).sum(-1) instead of -0.5 * x @ x); the error was: {exc}"
            ) from exc
        if out.dtype != x.dtype:
            raise TypeError(f"log_density returned dtype {out.dtype} for inputs of dtype {x.dtype}")
        if not out.requires_grad:
            raise TypeError(
                "log_density is not differentiable: its output does not depend on its input through "
                "torch operations (write it with torch functions, not numpy/float conversions)"
            )
        (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
        if grad is None:
            raise TypeError("log_density's output does not depend on its input")
        finite = torch.isfinite(grad).all(dim=-1)
        if not bool(finite.all()):
            raise ValueError(
                f"the gradient of log_density is not finite at {int((~finite).sum())} of "
                f"{x.shape[0]} probe points"
            )
        if x.shape[0] > 1 and not bool(grad.any()):
            warnings.warn(
                f"the gradient of log_density is exactly zero at all {x.shape[0]} probe points (draws "
                "of the initial measure): the flow moves particles along this gradient and will not "
                "move them. Is the target flat there (a plateau, a clamp), or is part of it computed "
                "outside autograd (.detach(), .item(), numpy)?",
                FlatTargetWarning,
                stacklevel=4,
            )
            return True
        return False

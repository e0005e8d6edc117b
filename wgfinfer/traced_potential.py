"""A Pyro model's batched log joint traced once per input shape and replayed as a tensor function.

Every eager evaluation of a Pyro model's log joint runs the model through Pyro's effect handlers
(``poutine.trace`` / ``condition``, the particle plate, ``compute_log_prob``): about a millisecond of
Python per call, whatever the number of particles.  :class:`TracedPotential` records the tensor
operations of one evaluation with :func:`torch.jit.trace` (the particles ``(n, d)`` and any data
mini-batch indices are the inputs; the data and the model's constants are baked in) and replays the
recording for later calls of the same shapes, without running Pyro.

How a shape gets its recording (a *key*: the particles' shape, dtype and device, whether a gradient is
wanted, and the shapes of the mini-batch indices):

1. its first call is evaluated eagerly;
2. its second call is evaluated eagerly, then traced (at that call's input, Pyro's validation off, as
   Pyro's own ``jit_compile=True`` does: its data-dependent checks cannot be recorded);
3. its third call is evaluated eagerly and by the recording, at that (fresh) input; the values, and
   the gradients with respect to the particles where a gradient is wanted, must agree to
   :data:`VERIFY_ULPS` units in the last place of the output's dtype.  From then on the key is
   replayed.

A shape used once or twice is never traced, so short-lived shapes cost nothing extra.  With the
default ``jit_compile=None``, a key that asks for a gradient is only traced when its particles times
the model's observed values are at most :data:`AUTO_GRADIENT_ELEMENTS`: beyond that the tensor
arithmetic dominates, Pyro's overhead is a few per cent and the replay measured 0.94-1.09x the
speed of the eager evaluation, no gain (``docs/benchmarks.md``, section ``potential``);
``jit_compile=True`` traces every key.  A tracing error
or a disagreement (the model's Python control flow depends on sampled values, it draws random
numbers, it converts tensors to Python numbers) switches the recordings off for good, and
:attr:`TracedPotential.reason` records why.

The recording is replayed with TorchScript's optimising executor off
(``torch.jit.optimized_execution(False)``): the interpreter runs the recorded ATen operations of the
forward pass one by one and autograd differentiates them with its own formulas, so higher derivatives
(the Laplace start's Hessian) work as in eager mode.  Values and gradients matched the eager ones to
the last bit wherever we compared them (the tests, the draws of whole default runs); the recording
is not the same kernel sequence as the eager run, though (a Python number of the model becomes a
constant tensor; on ``nes`` the replay runs more, smaller multiplications in its backward pass).
The optimising executor, which differentiates its graphs symbolically, was no faster in a prototype
(faster on ``nes``, slower on ``diamonds`` at 256 particles, both within the noise of a shared
machine) and only optimises after profiling runs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from wgfinfer._validation import check_jit_compile
from wgfinfer.errors import first_line

__all__ = ["TracedPotential", "check_jit_compile"]

TRACE_ON_CALL = 2
"""A key is traced on this call of it (and verified on the next)."""

AUTO_GRADIENT_ELEMENTS = 2**20
"""With ``jit_compile=None``, keys with a gradient are traced up to this many particles x observed
values: below it the replay measured 0.95-2.35x the speed of eager Pyro (the gain grows as the
batch shrinks: about 2x for one particle), above it 0.94-1.09x."""

MAX_TRACES = 32
"""At most this many keys are traced; later keys are evaluated eagerly."""

VERIFY_ULPS = 1024
"""Tolerance of the check of a recording against the eager evaluation, in units of the output dtype's
machine epsilon, relative to ``1 + max |eager|`` (values and gradients apart).  A faithful recording
agreed exactly in every comparison we ran; the margin only absorbs rounding-order differences, far
below what a wrong branch or a baked-in random draw changes."""

EagerFn = Callable[[Tensor, "dict[str, Tensor] | None"], Tensor]
Key = tuple[Any, ...]


class TracedPotential:
    """The batched log joint ``(z, indices) -> (n,)`` of a Pyro model, replayed from recordings.

    Parameters
    ----------
    eager : callable
        ``eager(z, indices)``: the eager log joint of ``(n, d)`` particles, with the mini-batch
        indices ``{plate: (B,) long tensor}`` or ``None`` (the full data).
    jit_compile : bool or None, default None
        ``None``: trace where the recording verifies, silently evaluating eagerly otherwise;
        ``True``: the same, with a warning when the recordings are switched off; ``False``: never
        trace.
    reason : str, optional
        Why recordings are off from the start (the model is evaluated one particle at a time).
    observed_size : int, default 0
        The number of observed values of the model (the work per particle that
        :data:`AUTO_GRADIENT_ELEMENTS` bounds).
    tracing_context : callable, optional
        A context manager factory entered while tracing: the Pyro target passes Pyro's validation
        off (this module does not import Pyro).

    Attributes
    ----------
    reason : str or None
        Why the recordings are off (``None`` while they are on).
    """

    def __init__(
        self,
        eager: EagerFn,
        jit_compile: bool | None = None,
        reason: str | None = None,
        observed_size: int = 0,
        tracing_context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.eager = eager
        self.tracing_context = tracing_context
        self.jit_compile = jit_compile
        self.observed_size = int(observed_size)
        self.reason: str | None = "jit_compile=False" if jit_compile is False else None
        self._calls: dict[Key, int] = {}
        self._pending: dict[Key, tuple[Any, Tensor]] = {}
        self._traced: dict[Key, Any] = {}
        if reason is not None and self.reason is None:
            self._switch_off(reason)

    @property
    def active(self) -> bool:
        """Whether recordings are made and replayed."""
        return self.reason is None

    @property
    def traced_keys(self) -> list[Key]:
        """The verified keys, replayed on every call: ``(shape, dtype, device, grad, index shapes)``."""
        return list(self._traced)

    def __call__(self, z: Tensor, indices: dict[str, Tensor] | None = None) -> Tensor:
        """The log joint of ``(n, d)`` particles ``z`` (with mini-batch ``indices``): ``(n,)``."""
        if self.reason is not None or torch.is_inference_mode_enabled() or torch.jit.is_tracing():
            return self.eager(z, indices)
        names = sorted(indices or {})
        index_values = tuple((indices or {})[name] for name in names)
        grad = torch.is_grad_enabled() and z.requires_grad
        if grad and self.jit_compile is None and z.shape[0] * self.observed_size > AUTO_GRADIENT_ELEMENTS:
            return self.eager(z, indices)
        key = (
            tuple(z.shape),
            z.dtype,
            z.device,
            grad,
            tuple((name, tuple(v.shape), v.dtype) for name, v in zip(names, index_values, strict=True)),
        )
        recording = self._traced.get(key)
        if recording is not None:
            return _replay(recording, z, index_values)
        if key in self._pending:
            return self._verify(key, z, indices, index_values, grad)
        out = self.eager(z, indices)
        calls = self._calls[key] = self._calls.get(key, 0) + 1
        if calls >= TRACE_ON_CALL and len(self._traced) + len(self._pending) < MAX_TRACES:
            self._trace(key, z, names, index_values)
        return out

    # ------------------------------------------------------------------ internals
    def _trace(self, key: Key, z: Tensor, names: list[str], index_values: tuple[Tensor, ...]) -> None:
        eager = self.eager

        def log_joint(u: Tensor, *idx: Tensor) -> Tensor:
            return eager(u, dict(zip(names, idx, strict=True)) if names else None)

        example = z.detach()
        try:
            with self.tracing_context(), _quiet_tracing():
                recording = torch.jit.trace(log_joint, (example, *index_values), check_trace=False)
        except Exception as exc:  # noqa: BLE001 - any failure means eager evaluation
            self._switch_off(f"torch.jit.trace failed: {type(exc).__name__}: {first_line(exc)}")
            return
        self._pending[key] = (recording, example.clone())

    def _verify(
        self,
        key: Key,
        z: Tensor,
        indices: dict[str, Tensor] | None,
        index_values: tuple[Tensor, ...],
        grad: bool,
    ) -> Tensor:
        """Evaluate eagerly and by the pending recording at ``z``; keep the recording if they agree."""
        recording, example = self._pending[key]
        out = self.eager(z, indices)
        if torch.equal(z.detach(), example):  # not a fresh input: check at the next call
            return out
        del self._pending[key]
        fresh = z.detach().clone().requires_grad_(grad)
        try:
            with torch.enable_grad() if grad else contextlib.nullcontext():
                replayed = _replay(recording, fresh, index_values)
                if grad:
                    (eager_grad,) = torch.autograd.grad(out.sum(), z, retain_graph=True, allow_unused=True)
                    (replayed_grad,) = torch.autograd.grad(replayed.sum(), fresh, allow_unused=True)
        except Exception as exc:  # noqa: BLE001 - the recording does not run: eager evaluation
            self._switch_off(f"the traced log joint failed to run: {type(exc).__name__}: {first_line(exc)}")
            return out
        problems = []
        difference = _disagreement(out.detach(), replayed.detach())
        if difference is not None:
            problems.append(f"value: {difference}")
        if grad:
            difference = _disagreement(eager_grad, replayed_grad)
            if difference is not None:
                problems.append(f"gradient: {difference}")
        if problems:
            self._switch_off(
                f"the traced log joint of {z.shape[0]} particles differs from Pyro's at a fresh input ("
                + "; ".join(problems)
                + "): the model's Python control flow depends on sampled values, or it draws random "
                "numbers or converts tensors to Python numbers"
            )
            return out
        self._traced[key] = recording
        return out

    def _switch_off(self, reason: str) -> None:
        self.reason = reason
        self._pending.clear()
        self._traced.clear()
        if self.jit_compile:
            warnings.warn(
                f"jit_compile=True: the Pyro model's log joint is evaluated eagerly, without tracing: "
                f"{reason}.",
                UserWarning,
                stacklevel=4,
            )


def _replay(recording: Any, z: Tensor, index_values: tuple[Tensor, ...]) -> Tensor:
    """Run a recording with TorchScript's optimising executor off (see the module docstring)."""
    with torch.jit.optimized_execution(False):
        return recording(z, *index_values)


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """The tracer's warnings silenced: Pyro's own code converts shape tensors to Python values while
    tracing, and the recording is checked against the eager evaluation instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r".*torch\.jit\.trace.* is deprecated", DeprecationWarning)
        yield


def _disagreement(reference: Tensor | None, other: Tensor | None) -> str | None:
    """``None`` where ``other`` matches ``reference`` (the eager result) to :data:`VERIFY_ULPS`, else
    a description of the largest difference."""
    if reference is None or other is None:
        return None if reference is None and other is None else "one side does not depend on the particles"
    if reference.shape != other.shape or reference.dtype != other.dtype:
        return (
            f"shape/dtype {tuple(other.shape)}/{other.dtype}, expected "
            f"{tuple(reference.shape)}/{reference.dtype}"
        )
    finite = torch.isfinite(reference)
    if not torch.equal(finite, torch.isfinite(other)):
        return "they are not finite at the same particles"
    if not bool(finite.all()):
        outside = ~finite
        same = (reference[outside] == other[outside]) | (reference[outside].isnan() & other[outside].isnan())
        if not bool(same.all()):
            return "their non-finite values differ"
    if not bool(finite.any()):
        return None
    ref, oth = reference[finite], other[finite]
    tol = VERIFY_ULPS * torch.finfo(reference.dtype).eps * (1.0 + float(ref.abs().max()))
    largest = float((ref - oth).abs().max())
    return None if largest <= tol else f"max |difference| {largest:.3g} > {tol:.3g}"

"""``WGFSampler``: the user-facing facade.

It holds the run options, a target, a scheme (:mod:`wgfinfer.schemes`) and one explicit run state
(:class:`~wgfinfer.run.RunState`); :meth:`WGFSampler.run` hands them to the one step loop
(:mod:`wgfinfer.run`), and the outputs are computed from the flow and the target
(:mod:`wgfinfer.outputs`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from wgfinfer import checks as wgf_checks
from wgfinfer import io as wgf_io
from wgfinfer import stopping
from wgfinfer._validation import (
    check_dtype,
    check_jit_compile,
    check_positive_float,
    check_positive_int,
    check_seed,
    resolve_dim,
)
from wgfinfer._version import __version__
from wgfinfer.errors import DensityNotAvailableError
from wgfinfer.flow import Flow, sample_distribution
from wgfinfer.functionals import KLDivergence
from wgfinfer.importance import importance_diagnostics, khat_warning_threshold, warn_if_unreliable
from wgfinfer.init import Init, as_init, base_measure, check_scale, whitening
from wgfinfer.laplace import AffineWhitening
from wgfinfer.outputs import corrected_draws, inference_data, weighted_draws
from wgfinfer.run import RunState, run_steps
from wgfinfer.schemes import ICNN, PWGF, Scheme, as_scheme
from wgfinfer.stopping import DEFAULT_MAX_STEPS
from wgfinfer.targets import LogDensityTarget

NO_DENSITY_NOTE = (
    "unavailable: residual maps (map='resnet' or 'linear') have no tractable density, so log_q and "
    "log_weight are omitted; use map='icnn' for them"
)
SAMPLER_SCHEMES = ("icnn", "variational", "pwgf")
DEFAULT_SCHEME = PWGF(
    map="coupling", n_layers=6, hidden=(32,), substeps=3, metric_samples=2048, metric_dtype="float32"
)
"""The scheme of ``WGFSampler(model=..., scheme=None)`` (a Pyro model with at least two unconstrained
coordinates): the PWGF scheme (Jin et al. 2024) moving six affine coupling layers (conditioners of 32
tanh units) by three forward-Euler substeps per step of 1.0, the metric of each from 2048 of its 4096
draws, its products in float32 (the solves stop far above float32's rounding; on breast cancer the
solves took 0.62x the CPU at the same free energy, docs/benchmarks.md "PWGF metric solves").  Chosen
on the posterior suite (``benchmarks/posteriors.py``, 2026-12-02, docs/benchmarks.md) against the
previous default, :data:`DEFAULT_LOG_DENSITY_SCHEME`: all five BLR data sets at NUTS quality
instead of four (breast cancer in about 30 s of CPU instead of a miss after 213 s) and 12 of 13
posteriordb posteriors as before, in less CPU on most trained ones (mesquite 6.9 s instead of
22.5 s).  The coupling layers start at the identity on the whitened start (the Laplace fit), where
the posterior's scales already are; ``scheme="pwgf"`` still means ``PWGF()`` (planar layers)."""
DEFAULT_LOG_DENSITY_SCHEME = ICNN(hidden=(32, 32))
"""The scheme of ``WGFSampler(log_density, scheme=None)`` and of one-dimensional models (a coupling
layer needs two coordinates): the ICNN scheme with hidden widths (32, 32) instead of the class default
(64, 64), as accurate on the posterior suite (2026-12-01) at 1.3-2x less CPU.  A log-density starts at
``init="normal"``, a unit normal that may be far from the target's scale: the ICNN scheme's implicit
JKO steps are stable for any step, while PWGF's explicit Euler steps exploded there on Neal's funnel
(suite, 2026-12-02).  ``scheme="icnn"`` still means ``ICNN()``."""
MCMC_ONLY_ATTRIBUTES = frozenset({"num_chains", "num_samples", "kernel"})
"""Attributes of ``pyro.infer.MCMC`` that converters such as ``az.from_pyro`` read and a sampler,
which stores no chains, does not have: asking for them raises an ``AttributeError`` that says what
to use instead."""


def _check_notes(records: list[dict[str, Any]]) -> list[str]:
    """The lines on the checks after ``run()`` that :meth:`WGFSampler.summary` prints last."""
    if not records:
        return []
    bad = wgf_checks.failed(records)
    ran = [r["check"] for r in records if r["ok"] is not None]
    if not bad:
        return [f"Checks after run(): none failed ({', '.join(ran)} ran; sampler.checks has them)."]
    lines = [f"Checks after run(): {len(bad)} of {len(ran)} failed (sampler.checks has them):"]
    for record in bad:
        lines += textwrap.wrap(
            f"{record['check']}: {record['message']}",
            width=100,
            initial_indent="  ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    return lines


def _summary_notes(
    num_samples: int,
    found: dict[str, float] | None,
    has_density: bool,
    records: list[dict[str, Any]] | None = None,
) -> str:
    """The lines :meth:`WGFSampler.summary` prints under Pyro's table."""
    checks_lines = _check_notes(records or [])
    lines = [
        f"{num_samples} independent draws of the flow, not a Markov chain: n_eff is close to the",
        "number of draws and r_hat close to 1 by construction, whatever the flow's quality.",
    ]
    if not has_density:
        lines.append(
            "Importance diagnostics: unavailable, residual maps (map='resnet' or 'linear') have no "
            "tractable density (map='icnn' has one; wgfinfer.diagnostics.ksd needs none)."
        )
        return "\n".join(lines + checks_lines)
    if found is None:
        lines.append("Importance diagnostics: need at least 2 draws.")
        return "\n".join(lines + checks_lines)
    khat = found["khat"]
    if khat > khat_warning_threshold:
        reading = "unreliable: the flow misses part of the posterior; see docs/diagnostics.md"
    elif khat > 0.5:
        reading = "usable"
    else:
        reading = "good"
    lines += [
        "Importance diagnostics of these draws against the posterior (weights lp - log q):",
        f"  PSIS k-hat {khat:.2f} ({reading}; < 0.5 good, 0.5-{khat_warning_threshold} usable, "
        f"> {khat_warning_threshold} unreliable)",
        f"  importance ESS {found['ess_is']:.0f} of {num_samples} ({100 * found['ess_is_fraction']:.1f}%)",
        f"  log Z (log evidence of a Pyro model) {found['log_evidence']:.2f} +- "
        f"{found['log_evidence_se']:.2f}",
    ]
    return "\n".join(lines + checks_lines)


def data_dtype(model_args: Sequence[Any], model_kwargs: dict[str, Any]) -> torch.dtype:
    """The widest floating-point dtype among the tensors of a model's arguments (float64 when they
    hold none): the precision a Pyro model computes in."""
    found = [
        value.dtype
        for value in (*model_args, *model_kwargs.values())
        if isinstance(value, Tensor) and value.is_floating_point()
    ]
    return max(found, key=lambda d: torch.finfo(d).bits, default=torch.float64)


class WGFSampler:
    """Sample an unnormalized density with a Wasserstein gradient flow (JKO scheme).

    The flow starts at ``init`` and takes ``n_steps`` steps of size ``step_size`` of the chosen
    scheme towards the target ``prop. to exp(beta * log_density)``; the result can be sampled
    cheaply and (for maps with densities) has an exact density.

    Parameters
    ----------
    log_density : callable, optional
        Unnormalized log target, ``(n, d) tensor -> (n,) tensor``, written with differentiable torch
        operations.  Give exactly one of ``log_density`` and ``model``.
    model : callable, optional
        A Pyro model; its arguments go to :meth:`run`.  The flow samples the posterior of its
        continuous latent sites on Pyro's unconstrained space (see ``docs/pyro.md``).
    dim : int, optional
        Dimension ``d``; inferred from ``init`` (or the model) when omitted.
    scheme : {"icnn", "variational", "pwgf"} or a scheme object, optional
        The scheme and all its options: :class:`wgfinfer.ICNN` (gradients of input-convex networks,
        exact densities; Mokrov et al. 2021), :class:`wgfinfer.Variational` (a transport map and a
        dual network, no log-det in training; Fan et al. 2022) or :class:`wgfinfer.PWGF` (one
        push-forward map moved by forward Euler under the pullback metric; Jin et al. 2024).  A
        name means that scheme with its defaults.  Default, chosen on the posterior suite: for a
        Pyro model :data:`DEFAULT_SCHEME` (PWGF with six affine coupling layers), for a log-density
        or a one-dimensional model :data:`DEFAULT_LOG_DENSITY_SCHEME` (ICNN with narrower networks
        than ``ICNN()``).  See ``docs/methods.md``.
    init : {"auto", "laplace", "gaussian", "normal"}, Init or Distribution, optional
        Initial measure ``rho_0`` (:class:`wgfinfer.Init` documents the kinds and their ``scale``).
        Default: ``"auto"`` (the Laplace approximation, refined by a Gaussian fit where its
        importance weights say it is far off) for a Pyro model, ``"normal"`` for a log-density (which
        may be multimodal, where a Laplace approximation at one mode would miss the others).  A
        distribution with event shape ``(d,)`` is used as it is.
    n_steps : int, optional
        A fixed number of steps ``K`` (the flow covers time ``K * step_size``).  By default the flow
        stops by itself when its free-energy estimate (``kl_minus_log_z`` of the history) has
        stopped falling, after at most ``max_steps`` steps (:mod:`wgfinfer.stopping`).
    max_steps : int, default 20
        The most steps a flow without ``n_steps`` takes; reaching it while still improving raises
        a :class:`~wgfinfer.stopping.BudgetWarning` (``run()`` again with a larger ``max_steps``
        continues the flow).
    time_budget : float, optional
        Seconds of training one :meth:`run` call may spend: no step starts after them (the run can
        be continued by calling :meth:`run` again).
    step_size : float, default 1.0
        Step ``h`` (time of the gradient flow covered by one step).  JKO steps are implicit and
        stable for any ``h``; large steps reach the target in fewer steps, small ones (e.g. 0.05)
        follow the flow's dynamics in time.
    beta : float, default 1.0
        Inverse temperature; ``beta = 1`` samples the target itself.
    seed : int, default 0
        Seed of the sampler's own random generator (weights, batches, draws); no global seed is set.
    device : str or torch.device, default "cpu"
    dtype : torch.dtype, optional
        Precision of the flow.  Default for a Pyro model: the precision of its data (the widest
        floating-point dtype among the tensors of the ``run()`` arguments; float64 when they hold
        none), so that the draws work with the data downstream, as in ``Predictive``; give float64
        data for posteriors in the units of their data (regression coefficients in dollars have
        Hessians with condition numbers near 1e11, which float32 cannot resolve: the Laplace start
        then fails; ``docs/design.md``).  Default for a log-density: ``torch.float32``.
    max_retries : int, default 3
        Times a diverged step is retried with the learning rates multiplied by 0.25 (PWGF: with four
        times as many Euler substeps) before ``run`` gives up with :class:`TrainingDivergedError`
        (``docs/reliability.md``).
    progress_bar : bool, default True
        Show tqdm bars (``tqdm.auto``, on stderr or as notebook widgets) over every phase that can
        take long: the start fit of ``init="laplace"`` / ``"gaussian"`` ("start: mode search",
        "start: Hessian", "start: Gaussian fit"), the steps (with the current loss) and, in
        :meth:`sample`, :meth:`log_prob`, :meth:`diagnostics`, :meth:`summary`,
        :meth:`get_samples` and :meth:`to_inference_data`, the computations done in chunks (flow
        draws and inversions, a Pyro model's log joint, log-likelihoods and site values) when they
        take more than one chunk, so that small calls print nothing.  ``False`` switches all of
        them off.
    subsample_size : int or dict of str to int, optional
        Train on mini-batches of a Pyro model's data: each training evaluation draws fresh indices
        of the data plate (``int``: the model's only plate around observed sites; ``dict``: sizes by
        plate name) and Pyro scales the mini-batch log-likelihood by ``N / B``, an unbiased estimate
        of the full one.  The model must index its data with the plate's indices.  ``lp``,
        ``log_weight`` and every diagnostic use the full data.
    jit_compile : bool or None, default None
        How a Pyro model's log joint is evaluated (:class:`wgfinfer.pyro_target.PyroTarget`):
        ``None`` replays a :func:`torch.jit.trace` recording of each input shape, checked against
        Pyro's value and gradient at a fresh input before use, and runs the model through Pyro where
        tracing fails or the check does not pass (the reason is ``sampler.target.jit_reason``);
        ``True`` does the same and warns when it falls back; ``False`` always runs the model through
        Pyro.  Values and gradients are the same either way; the recording saves Pyro's per-call
        overhead (``docs/pyro.md``).
    check : bool, default True
        When :meth:`run` has trained steps, check the flow against the target
        (:mod:`wgfinfer.checks`): PSIS k-hat and importance ESS of its draws, a multi-start mode
        search for modes the flow misses, zero or non-finite gradients, heavy tails where k-hat is
        high, and, for a flow without densities, a kernel Stein discrepancy check of its draws that
        needs no ``log q`` and a short Langevin MCMC run from them.  Each failed check raises one
        warning (a :class:`wgfinfer.PosteriorCheckWarning`) that names the remedy; the records are in
        :attr:`checks`, the last history entry, :meth:`diagnostics` (flows with densities),
        :meth:`summary` and the ArviZ attrs (``docs/diagnostics.md``).  The
        checks cost a few hundred evaluations of the log-density on small batches.

    Attributes
    ----------
    history : list of dict
        One entry per completed step: ``step``, ``time`` (flow time ``(k+1) h``), ``loss``,
        ``kl_minus_log_z`` (``E_q[log q - beta * log_density]`` on the full data: the KL divergence
        to the target minus its unknown ``log Z``) with ``kl_minus_log_z_se``, ``kl`` and ``kl_se``
        (ICNN and PWGF: the importance estimate of the KL itself,
        :func:`wgfinfer.importance.importance_kl`), ``iterations``,
        ``wall_time``, ``retries`` and the scheme's own numbers (:class:`wgfinfer.schemes.Info`).
        ICNN and PWGF: ``kl_minus_log_z`` uses the exact ``log q`` of the monitored particles;
        variational scheme: it is the variational estimate (no ``log q`` needed).  The entry of the
        last step of a :meth:`run` (with ``check=True``) also holds ``checks``, the records of the
        checks after it.
    run_state : RunState or None
        The explicit state of the run (scheme state, history, training time); ``None`` before the
        first :meth:`run`.

    Examples
    --------
    >>> import torch, wgfinfer
    >>> f = lambda x: -0.5 * (x - 1.0).square().sum(-1)
    >>> scheme = wgfinfer.ICNN(iters_per_step=20)
    >>> s = wgfinfer.WGFSampler(f, dim=2, scheme=scheme, n_steps=2, progress_bar=False).run()
    >>> x, log_q = s.sample(5, return_log_prob=True)
    >>> x.shape, log_q.shape
    (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        log_density: Callable[[Tensor], Tensor] | None = None,
        *,
        model: Callable[..., Any] | None = None,
        dim: int | None = None,
        scheme: Scheme | str | None = None,
        init: Init | Distribution | str | None = None,
        n_steps: int | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        time_budget: float | None = None,
        step_size: float = 1.0,
        beta: float = 1.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        max_retries: int = 3,
        progress_bar: bool = True,
        subsample_size: int | dict[str, int] | None = None,
        check: bool = True,
        jit_compile: bool | None = None,
    ) -> None:
        if (log_density is None) == (model is None):
            raise TypeError("WGFSampler needs exactly one of log_density (a callable) or model (Pyro)")
        if subsample_size is not None and model is None:
            raise TypeError(
                "subsample_size needs a Pyro model (its data plate is what gets subsampled); a "
                "log_density callable cannot be subsampled"
            )
        check_jit_compile(jit_compile)
        if jit_compile is not None and model is None:
            raise TypeError(
                "jit_compile applies to a Pyro model's log joint; a log_density callable is called as "
                "given (trace or compile it yourself)"
            )
        if model is not None and not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        self.jit_compile = jit_compile
        self._dtype_from_data = dtype is None and model is not None
        if dtype is None:
            dtype = torch.float64 if model is not None else torch.float32
        check_dtype(dtype)
        check_seed(seed)
        if not isinstance(check, bool):
            raise TypeError(f"check must be a bool, got {type(check).__name__}")
        self.check = check
        self._default_scheme = scheme is None
        if scheme is None:
            scheme = DEFAULT_SCHEME if model is not None else DEFAULT_LOG_DENSITY_SCHEME
        self.scheme = as_scheme(scheme, SAMPLER_SCHEMES)
        self.subsample_size = subsample_size
        self.device = torch.device(device)
        self.dtype = dtype
        self.step_size = check_positive_float("step_size", step_size)
        self.n_steps = None if n_steps is None else check_positive_int("n_steps", n_steps)
        self.max_steps = check_positive_int("max_steps", max_steps)
        self.time_budget = None if time_budget is None else check_positive_float("time_budget", time_budget)
        self.stop_reason: str | None = None
        self.beta = check_positive_float("beta", beta)
        self.seed = seed
        self.progress_bar = bool(progress_bar)
        self.max_retries = check_positive_int("max_retries", max_retries, allow_zero=True)
        self.model = model
        self.init = as_init(init, "auto" if model is not None else "normal")
        if isinstance(self.init, Init):
            check_scale(self.init, dtype)
        self.dim: int | None = None
        self.target: LogDensityTarget | None = None
        self.last_correction: dict[str, Any] | None = None
        self.run_state: RunState | None = None
        self._generator = torch.Generator().manual_seed(seed)
        self._base: Distribution | None = None
        self._whitening: AffineWhitening | None = None
        self._requested_dim = dim
        if model is None:
            self._set_target(LogDensityTarget(log_density, resolve_dim(dim, self._init_distribution)))
        elif dim is not None or self._init_distribution is not None:
            resolve_dim(dim, self._init_distribution)  # type checks now; consistency with the model in run()

    @property
    def method(self) -> str:
        """The scheme's name."""
        return self.scheme.name

    @property
    def _init_distribution(self) -> Distribution | None:
        return self.init if isinstance(self.init, Distribution) else None

    @property
    def generator(self) -> torch.Generator:
        """The sampler's random generator (its state is part of the run's state)."""
        return self._generator

    @property
    def generators(self) -> tuple[torch.Generator, ...]:
        """Every generator a run advances: the sampler's, then the target's (mini-batch indices)."""
        return (self._generator, *(() if self.target is None else self.target.generators))

    @property
    def flow(self) -> Flow | None:
        """``rho_0``, the maps of the completed steps and the whitening (``None`` before a Pyro
        model's first :meth:`run`)."""
        if self._base is None:
            return None
        maps = () if self.run_state is None else self.run_state.scheme_state.maps
        return Flow(
            self._base,
            list(maps),
            device=self.device,
            whitening=self._whitening,
            snapshots=self.scheme.name == "pwgf",
        )

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per completed step (see the class docstring)."""
        return [] if self.run_state is None else [dict(e) for e in self.run_state.history]

    @property
    def checks(self) -> list[dict[str, Any]]:
        """The records of the checks after the last :meth:`run` that trained (``[]`` if it did not
        check): one dict per check, ``{"check", "ok", "value", "message", "warning"}``, with ``ok``
        ``False`` for a problem, ``True`` for none and ``None`` for a check that could not run
        (:mod:`wgfinfer.checks`)."""
        if self.run_state is None:
            return []
        history = self.run_state.history
        if not history:  # a start that needed no step
            return copy.deepcopy(list(self.run_state.start_checks))
        return copy.deepcopy(list(history[-1].get("checks", [])))

    @property
    def training_time(self) -> float:
        """Seconds spent in completed steps."""
        return 0.0 if self.run_state is None else self.run_state.training_time

    @property
    def whitening(self) -> AffineWhitening | None:
        """The affine whitening of ``init="laplace"`` / ``"gaussian"`` (``None`` before it is fitted)."""
        return self._whitening

    def restore(
        self,
        run_state: RunState | None,
        base: Distribution,
        whitening_map: AffineWhitening | None,
        generator_states: Sequence[Tensor],
    ) -> None:
        """Install a run state, ``rho_0``, the whitening and the generators' states (what a save
        file or a checkpoint holds)."""
        self._base, self._whitening, self.run_state = base, whitening_map, run_state
        for g, s in zip(self.generators, generator_states, strict=False):
            g.set_state(s)

    def _set_target(self, target: LogDensityTarget) -> None:
        dim = resolve_dim(target.dim, self._init_distribution)
        if self._default_scheme and dim < 2:
            self.scheme = DEFAULT_LOG_DENSITY_SCHEME
        if getattr(self.scheme, "map", None) == "coupling" and dim < 2:
            raise ValueError(
                f"map='coupling' needs dim >= 2 (a coupling layer splits the coordinates in two), got "
                f"dim={dim}; use map='planar' for a 1-D target"
            )
        self.dim, self.target = dim, target
        self._base = base_measure(self.init, dim, self.dtype, self.device, densities=self._flow_has_densities)

    # ------------------------------------------------------------------ training
    def run(
        self,
        *model_args: Any,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        **model_kwargs: Any,
    ) -> WGFSampler:
        """Train the steps not yet done (all ``n_steps`` on a new sampler).

        Parameters
        ----------
        *model_args, **model_kwargs
            For a Pyro model: its arguments, as in ``pyro.infer.MCMC.run``.  Needed on the first call;
            a later call (to continue training) may omit them.  ``checkpoint_dir`` and ``resume`` are
            never passed to the model.
        checkpoint_dir : str or os.PathLike, optional
            After every completed step, write the sampler's full state (options, scheme, run state,
            random generator states) atomically to ``checkpoint_dir / "checkpoint.pt"``, a save file
            that :meth:`load` also reads.  The directory is created if needed.
        resume : bool, default False
            With ``checkpoint_dir``: if it holds a checkpoint, replace this sampler's state by the
            checkpoint's and continue from its last completed step (on CPU the result is
            bit-identical to an uninterrupted run); without a checkpoint, start fresh.  The sampler
            must be configured as the one that wrote the checkpoint (``n_steps`` may be larger).

        Returns
        -------
        WGFSampler
            ``self``, so that ``WGFSampler(...).run().sample(n)`` reads naturally.

        Raises
        ------
        ValueError, TypeError
            If the log-density is malformed (checked on draws of ``rho_0`` before training).
        TrainingDivergedError
            If a step diverges after its retries; the sampler keeps every step completed before it.
        ValueError
            With ``resume=True``, if the checkpoint's configuration or dimension differs from this
            sampler's (the message lists the differences).
        SaveFileError
            If the checkpoint to resume from is damaged.

        Notes
        -----
        An exception (``KeyboardInterrupt`` included) during a step drops that step whole, random
        generator states included: the sampler holds every completed step, can be sampled, saved,
        and a later ``run()`` continues exactly as if it had not been interrupted.
        """
        checkpoints = wgf_io.checkpoint_directory(checkpoint_dir, resume)
        if self.model is not None:
            self._prepare_model(model_args, model_kwargs)
        elif model_args or model_kwargs:
            raise TypeError("run() takes model arguments only when the sampler was given a Pyro model")
        assert self.target is not None
        told_flat = False
        with checkpoints if checkpoints is not None else contextlib.nullcontext():
            if checkpoints is not None:
                checkpoints.prepare(self, resume)
            if self.run_state is None:
                told_flat = self._start()
            records = self._accept_start(checkpoints)
            if records is None:
                records = self._train_and_check(checkpoints)
        # one warning per failed check, pointing at the caller's run(); a flat target told about
        # before training is not told about again
        skip = (wgf_checks.FlatGradientWarning.__name__,) if told_flat else ()
        wgf_checks.warn_failed(records, stacklevel=2, skip=skip)
        return self

    def _start(self) -> bool:
        """Fit the whitening (``"laplace"`` / ``"gaussian"``), draw the scheme's initial state and check
        the target on some of its points; on any error the sampler is left as it was.  Returns whether
        the target was found flat at the probe points (a :class:`FlatTargetWarning` was raised)."""
        assert self.target is not None and self._base is not None and self.dim is not None
        saved = [g.get_state() for g in self.generators]
        try:
            white = self._whitening
            if white is None and isinstance(self.init, Init) and self.init.kind != "normal":
                start = self.target.initial_point
                if start is None:
                    start = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
                self.target.validate(start.unsqueeze(0))
                target, beta = self.target, self.beta
                white = whitening(
                    self.init,
                    lambda x: beta * target.log_density(x),
                    lambda x: beta * target.training_log_density(x),
                    start,
                    self._generator,
                    progress_bar=self.progress_bar,
                )
            state = self.scheme.init(self._base, self._generator, device=self.device)
            x0 = state.particles
            if x0.dtype != self.dtype:
                raise ValueError(
                    f"init must draw points of shape (n, {self.dim}) and dtype {self.dtype}, "
                    f"got {tuple(x0.shape[1:])} and {x0.dtype}"
                )
            probe = x0[: min(64, x0.shape[0])]
            flat = self.target.validate(probe if white is None else white.forward(probe))
        except BaseException:
            for g, s in zip(self.generators, saved, strict=True):
                g.set_state(s)
            raise
        self._whitening = white
        self.run_state = RunState(state)
        return flat

    def _to_target_space(self, z: Tensor) -> Tensor:
        """Points of the flow's working coordinates in the target's coordinates."""
        return z if self._whitening is None else self._whitening.forward(z)

    def _working_log_density(self, z: Tensor) -> Tensor:
        """The full-data target in the flow's working coordinates."""
        assert self.target is not None
        return self.target.log_density(self._to_target_space(z))

    def _working_training_log_density(self, z: Tensor) -> Tensor:
        """The training potential in the flow's working coordinates (a mini-batch estimate with
        ``subsample_size``)."""
        assert self.target is not None
        return self.target.training_log_density(self._to_target_space(z))

    def _train(self, checkpoints: wgf_io.CheckpointDirectory | None, started: float) -> int:
        """Train the steps not done yet; returns how many were trained.  ``started``: the training
        time at which this ``run()`` began, from which ``time_budget`` counts."""
        assert self.run_state is not None
        done, n_steps = self.run_state.step, self.n_steps
        if n_steps is not None and done > n_steps:
            warnings.warn(
                f"the sampler already holds {done} completed steps, more than n_steps={n_steps}: "
                f"nothing is trained and its flow keeps all {done} steps (completed steps are never "
                f"undone; for a {n_steps}-step flow, train a new sampler)",
                UserWarning,
                stacklevel=3,
            )
        if n_steps is None and self.run_state.start_checks and done == 0:
            self.stop_reason = stopping.START  # a start that needed no step trains no further
            return 0
        cap = self.max_steps if n_steps is None else n_steps

        def reason(state: RunState) -> str | None:
            return stopping.stop_reason(
                state.history, n_steps, self.max_steps, state.training_time - started, self.time_budget
            )

        self.stop_reason = reason(self.run_state)  # never None once done >= cap
        if self.stop_reason is not None:
            return 0
        beta = self.beta
        correction = 0.0 if self._whitening is None else float(self._whitening.log_abs_det)

        def record(entry: dict[str, Any], info: Any) -> dict[str, Any]:
            # the free energy is beta^{-1}(KL - log Z) in working coordinates; the history reports
            # KL - log Z in the target's (log q carries the whitening's log-Jacobian)
            energy, energy_se = entry.pop("energy", None), entry.pop("energy_se", None)
            if energy is not None:
                entry["kl_minus_log_z"] = beta * energy - correction
            if energy_se is not None:
                entry["kl_minus_log_z_se"] = beta * energy_se
            return entry

        def on_step(state: RunState) -> None:
            self.run_state = state
            if checkpoints is not None:
                checkpoints.write(self)

        run_steps(
            self.scheme,
            self.run_state,
            KLDivergence(self._working_training_log_density, beta=beta),
            self.step_size,
            cap - done,
            self._generator,
            monitor=KLDivergence(self._working_log_density, beta=beta),
            max_retries=self.max_retries,
            generators=self.generators[1:],
            start_time=done * self.step_size,
            record=record,
            on_step=on_step,
            should_stop=lambda state, info: reason(state) is not None,
            progress_bar=self.progress_bar,
            progress=(cap, done),
            desc="JKO steps",
            keeps="The sampler keeps its {steps} completed steps.",
        )
        self.stop_reason = reason(self.run_state)
        if self.stop_reason in (stopping.MAX_STEPS, stopping.TIME_BUDGET):
            fell = stopping.recent_improvement(self.run_state.history)
            what = (
                f"max_steps={self.max_steps} steps"
                if self.stop_reason == stopping.MAX_STEPS
                else f"its time_budget of {self.time_budget:g} s"
            )
            remedy = "a larger max_steps" if self.stop_reason == stopping.MAX_STEPS else "more time"
            how = (
                f"fell by {fell:.3g} nats over the last {stopping.PATIENCE} steps"
                if math.isfinite(fell)
                else f"has fewer than {stopping.PATIENCE + 1} steps to judge by"
            )
            warnings.warn(
                f"the flow was still improving when it reached {what}: its free-energy estimate "
                f"{how} (the rule stops at {stopping.TOLERANCE:g} or less). Call run() again with "
                f"{remedy} to continue it, or check the posterior with diagnostics()",
                stopping.BudgetWarning,
                stacklevel=3,
            )
        return self.run_state.step - done

    def _train_and_check(self, checkpoints: wgf_io.CheckpointDirectory | None) -> list[dict[str, Any]]:
        """Train, then check the flow (``check=True``); the records of the last checks.

        Without ``n_steps``, a flow that converged while a check that training can mend failed
        (:data:`wgfinfer.stopping.TRAINABLE_CHECKS`: heavy-tailed weights, raw draws off their
        weighted moments) trains on, the plateau rule judging the steps from there
        (:func:`wgfinfer.stopping.judged_history`), until it converges with the checks passing, or
        reaches ``max_steps`` or the time budget, or checks that still fail show no progress (their
        :func:`wgfinfer.stopping.check_gap` above :data:`~wgfinfer.stopping.GAP_IMPROVEMENT` times the
        previous one's).  On non-centred eight schools the first plateau came after 6 steps with
        tau's sd 14% short; two more steps reached the reference (docs/benchmarks.md).
        """
        records: list[dict[str, Any]] = []
        assert self.run_state is not None
        started = self.run_state.training_time
        previous_gap = math.inf
        while True:
            trained = self._train(checkpoints, started)
            if not (trained and self.check):
                return records
            records = self._check_run(checkpoints)
            assert self.run_state is not None
            last = self.run_state.history[-1]
            if not (
                self.n_steps is None
                and self.stop_reason == stopping.CONVERGED
                and stopping.asks_for_training(last)
                and self.run_state.step < self.max_steps
            ):
                return records
            gap = stopping.check_gap(last)
            if not gap < stopping.GAP_IMPROVEMENT * previous_gap:
                return records
            previous_gap = gap

    def _accept_start(self, checkpoints: wgf_io.CheckpointDirectory | None) -> list[dict[str, Any]] | None:
        """Before the first step of a run with ``n_steps=None``: whether the start (``rho_0`` through
        the whitening) needs a flow at all.

        The mode of a skewed posterior is not its mean (scale parameters, hierarchical precisions),
        so in rounds of fresh draws (:data:`~wgfinfer.checks.START_ROUNDS`: 2048, 4096, 16384,
        16384) whose importance weights pass the importance check (k-hat at most 0.7) but which
        :func:`wgfinfer.checks.start_verdict` refuses, the whitening moves to their
        importance-weighted mean and covariance (adaptive importance sampling, Cappe et al. 2004).
        The start passes when the verdict accepts a round of
        :data:`~wgfinfer.checks.START_DRAWS` draws, in the unconstrained coordinates and in those
        the user reads (a Pyro model's site values, log of positive ones), and the other checks find
        nothing on those draws.  Then the flow keeps no step and the check records are returned (the
        caller warns); otherwise the whitening is left as it was and ``None`` is returned (train).

        Only for flows with densities (the verdict needs exact ``log q``) and with ``check=True``."""
        assert self.run_state is not None
        run = self.run_state
        if not (self.check and self.n_steps is None and run.step == 0 and not run.start_checks):
            return None
        if not self._flow_has_densities:
            return None
        generator = self._check_generator(run.step)
        flow = self._working_flow()
        log_density = self._checked_working_log_density()
        original = self._whitening
        records = None
        for size in wgf_checks.START_ROUNDS:
            drawn = self._weighted_start_draws(flow, generator, log_density, size)
            if drawn is None:  # no density, or weights that fail the importance check
                break
            good = self._start_is_good(*drawn)
            if good and size >= wgf_checks.START_DRAWS:
                z, log_q, lp, _ = drawn
                records = self._run_checks_on(flow, generator, z, log_q, lp)
                if wgf_checks.failed(records):  # a missed mode, a heavy tail: the flow has work to do
                    records = None
                break
            if not good:
                if self._whitening is None:  # nothing to move
                    break
                # moved only where it needs to be: a move adds the weighted moments' Monte-Carlo error
                z, log_q, lp, _ = drawn
                moved = wgf_checks.weighted_whitening(self._to_target_space(z), lp, log_q)
                if moved is None:
                    break
                self._whitening = moved
        if records is None:
            self._whitening = original
            return None
        self.run_state = dataclasses.replace(run, start_checks=tuple(records))
        self.stop_reason = stopping.START
        if checkpoints is not None:
            checkpoints.write(self)
        return records

    def _weighted_start_draws(
        self, flow: Flow, generator: torch.Generator, log_density: Callable[[Tensor], Tensor], n: int
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]] | None:
        """``n`` fresh draws of the start with ``log q``, ``log p`` and their importance record;
        ``None`` where the start has no density or its weights fail the importance check."""
        z, log_q = self._check_draws(flow, generator, n)
        if log_q is None:
            return None
        lp = wgf_checks.evaluate_draws(log_density, z)
        importance = wgf_checks.importance_check(lp, log_q)
        if importance["ok"] is not True:
            return None
        return z, log_q, lp, importance

    def _start_is_good(self, z: Tensor, log_q: Tensor, lp: Tensor, importance: dict[str, Any]) -> bool:
        """:func:`wgfinfer.checks.start_verdict` on the unconstrained coordinates and, for a Pyro
        model, on the coordinates the user reads: a start with the right mean and covariance on the
        unconstrained scale can still have the wrong shape, which shows in the sites' own values
        (posteriordb's hmm_drive_0: the log of an ordered rate had its sd 17% short)."""
        assert self.target is not None
        x = self._to_target_space(z)
        good, _ = wgf_checks.start_verdict(importance, wgf_checks.moment_check(x, lp, log_q))
        reading = getattr(self.target, "reading_coordinates", None)
        if good and reading is not None:
            good, _ = wgf_checks.start_verdict(importance, wgf_checks.moment_check(reading(x), lp, log_q))
        return good

    def _init_base_name(self) -> str:
        """What the flow starts from: ``"normal"``, ``"student_t(df=...)"`` or a given distribution's
        class name (the ``init_base`` attribute)."""
        if not isinstance(self.init, Init):
            return type(self.init).__name__
        df = self.init.base_df(self._flow_has_densities)
        return "normal" if math.isinf(df) else f"student_t(df={df:g})"

    @property
    def _flow_has_densities(self) -> bool:
        """Whether the scheme's flows have exact densities: all but the variational scheme's residual
        maps (the default start's tails depend on it, :meth:`wgfinfer.init.Init.base_df`)."""
        return self.scheme.name != "variational" or getattr(self.scheme, "map", "resnet") != "resnet"

    # ------------------------------------------------------------------ checks after a run
    def _working_flow(self) -> Flow:
        """The flow in its working coordinates (without the whitening)."""
        assert self._base is not None and self.run_state is not None
        return Flow(
            self._base,
            list(self.run_state.scheme_state.maps),
            device=self.device,
            snapshots=self.scheme.name == "pwgf",
        )

    def _check_draws(
        self, flow: Flow, generator: torch.Generator, n: int = wgf_checks.IMPORTANCE_DRAWS
    ) -> tuple[Tensor, Tensor | None]:
        """``n`` fresh draws of the flow in working coordinates and their exact ``log q`` (``None``
        without densities).

        Not the monitored particles: the last map was fitted on them, so their importance weights
        flatter the flow (on breast cancer an importance ESS of 22% on the pool against 1% on fresh
        draws), as a training error flatters a model."""
        if flow.has_density:
            try:
                z, log_q = flow.sample(n, generator, return_log_prob=True)
                return z, log_q
            except (DensityNotAvailableError, NotImplementedError):  # rho_0 without log_prob
                pass
        return flow.sample(n, generator), None

    def _check_generator(self, step: int) -> torch.Generator:
        """A generator of the checks' own, so that checking changes no draw of the sampler's."""
        return torch.Generator().manual_seed(((self.seed + 1) * 1_000_003 + step) % 2**62)

    def _checked_working_log_density(self) -> Callable[[Tensor], Tensor]:
        """The tempered full-data target in working coordinates, NaN/inf allowed (the checks')."""
        assert self.target is not None
        target, beta = self.target, self.beta

        def log_density(z: Tensor) -> Tensor:
            return beta * target.unchecked_log_density(self._to_target_space(z))

        return log_density

    def _run_checks_on(
        self,
        flow: Flow,
        generator: torch.Generator,
        z: Tensor,
        log_q: Tensor | None,
        lp: Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """:func:`wgfinfer.checks.run_checks` on draws ``z`` of ``flow`` (working coordinates)."""
        assert self._base is not None

        def flow_log_prob(y: Tensor) -> Tensor:
            x0, total, ok = flow.inverse(y)
            log_q = flow.base.log_prob(x0) - total
            return torch.where(ok, log_q, torch.full_like(log_q, float("nan")))

        base_draws = sample_distribution(self._base, wgf_checks.MODE_STARTS, generator, self.device)
        return wgf_checks.run_checks(
            self._checked_working_log_density(),
            z,
            generator,
            log_q=log_q,
            flow_log_prob=flow_log_prob if log_q is not None else None,
            base_draws=base_draws,
            to_target=self._to_target_space,
            lp=lp,
        )

    def _check_run(self, checkpoints: wgf_io.CheckpointDirectory | None) -> list[dict[str, Any]]:
        """Run the checks on the trained flow and store their records in the last history entry (and
        the checkpoint); the caller warns."""
        assert self.run_state is not None and self.target is not None and self._base is not None
        run = self.run_state
        generator = self._check_generator(run.step)
        flow = self._working_flow()
        z, log_q = self._check_draws(flow, generator)
        records = self._run_checks_on(flow, generator, z, log_q)
        last = {**run.history[-1], "checks": records}
        self.run_state = dataclasses.replace(run, history=(*run.history[:-1], last))
        if checkpoints is not None:
            checkpoints.rewrite(self)
        return records

    def _prepare_model(self, model_args: tuple, model_kwargs: dict[str, Any]) -> None:
        from wgfinfer.pyro_target import PyroTarget

        if self.target is not None and not (model_args or model_kwargs):
            return
        if self._dtype_from_data and self.target is None:
            self.dtype = data_dtype(model_args, model_kwargs)
        target = PyroTarget(
            self.model,
            model_args,
            model_kwargs,
            dtype=self.dtype,
            device=self.device,
            subsample_size=self.subsample_size,
            seed=self.seed,
            jit_compile=self.jit_compile,
        )
        if self._requested_dim is not None and self._requested_dim != target.dim:
            raise ValueError(
                f"dim={self._requested_dim} does not match the model's {target.dim} unconstrained "
                f"latent dimensions ({', '.join(target.site_names)})"
            )
        if self.target is None:
            self._set_target(target)
            return
        old = self.target
        if old.site_shapes != target.site_shapes:  # type: ignore[attr-defined]
            raise ValueError(
                f"the model's latent sites changed between run() calls: {dict(old.site_shapes)} -> "  # type: ignore[attr-defined]
                f"{dict(target.site_shapes)}"
            )
        # the new target continues the old one's mini-batch stream
        for new, previous in zip(target.generators, old.generators, strict=True):
            new.set_state(previous.get_state())
        self.target = target

    # ------------------------------------------------------------------ outputs
    def _require_trained(self) -> None:
        if self.run_state is None or not (self.run_state.scheme_state.maps or self.run_state.start_checks):
            raise RuntimeError("the sampler has no trained JKO step yet: call run() first")

    def _generator_for(self, seed: int | None) -> torch.Generator:
        return self._generator if seed is None else torch.Generator().manual_seed(int(seed))

    def sample(
        self, n: int, return_log_prob: bool = False, seed: int | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw from the trained flow ``rho_K``.

        Parameters
        ----------
        n : int
            Number of draws.
        return_log_prob : bool
            Also return the exact log-density of the flow at each draw (tracked along the trajectory,
            no inversion needed).
        seed : int, optional
            Seed for these draws only; by default the sampler's generator advances.

        Returns
        -------
        x : Tensor
            ``(n, d)`` draws.
        log_q : Tensor
            ``(n,)`` log-densities, when ``return_log_prob`` is true.
        """
        self._require_trained()
        n = check_positive_int("n", n)
        return self.flow.sample(
            n, self._generator_for(seed), return_log_prob=return_log_prob, progress_bar=self.progress_bar
        )

    def log_prob(self, y: Tensor, tol: float | None = None, max_iter: int = 100) -> Tensor:
        """Exact log-density of the flow at arbitrary points, by inverting every map.

        Parameters
        ----------
        y : Tensor
            ``(n, d)`` points.
        tol : float, optional
            Newton tolerance of each inversion (default: 1e-10 in float64, 1e-4 in float32).
        max_iter : int
            Newton iterations at most per map.

        Returns
        -------
        Tensor
            ``(n,)`` log-densities; NaN (with a ``RuntimeWarning``) where an inversion did not
            converge.
        """
        self._require_trained()
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"y must have shape (n, {self.dim}), got {tuple(y.shape)}")
        return self.flow.log_prob(
            y.to(dtype=self.dtype, device=self.device),
            tol=tol,
            max_iter=max_iter,
            progress_bar=self.progress_bar,
        )

    def to_inference_data(
        self,
        num_samples: int = 1000,
        num_chains: int = 1,
        seed: int | None = None,
        log_likelihood: bool = True,
        posterior_predictive: bool = False,
        predictions_args: Sequence[Any] | None = None,
        predictions_kwargs: dict[str, Any] | None = None,
    ):
        """Fresh draws of the flow as ArviZ data, with ``lp``, ``log_q`` and ``log_weight``.

        Counts follow ``pyro.infer.MCMC(num_samples=N, num_chains=C)``: ``num_samples`` draws *per
        chain*, so ``to_inference_data(1000, num_chains=4)`` holds 4 x 1000 = 4000 draws.

        Parameters
        ----------
        num_samples : int, default 1000
            Draws per chain.
        num_chains : int, default 1
            Chains.  The draws are independent, so chains are only a grouping of them that lets
            ArviZ's between-chain functions run: ``r_hat`` is close to 1 and the ESS close to the
            number of draws whatever the flow's quality (``docs/diagnostics.md``).
        seed : int, optional
            Seed for these draws (and the model's random numbers) only; by default the sampler's
            generator advances.  Torch's global random state is never used or changed.
        log_likelihood : bool, default True
            For a Pyro model, include the pointwise ``log_likelihood`` group (draws x observations
            values: switch it off for large data sets).
        posterior_predictive : bool, default False
            For a Pyro model, add the ``posterior_predictive`` group: every observed site drawn from
            the model given each posterior draw (what ``pyro.infer.Predictive(model,
            posterior_samples)`` returns for a model called without its data), with the dims of
            ``observed_data``, so that ``az.plot_ppc(idata)`` works as it is.
        predictions_args, predictions_kwargs : optional
            For a Pyro model, add the ``predictions`` group: the model called as
            ``model(*predictions_args, **predictions_kwargs)`` (new data, e.g. ``(x_new,)``) given
            each posterior draw; it holds the observed sites, drawn, and the ``pyro.deterministic``
            sites at these arguments.  Giving either one adds the group.

        Returns
        -------
        arviz.InferenceData (ArviZ 0.x) or xarray.DataTree (ArviZ >= 1.0)
            Group ``posterior`` holds ``x`` with dims ``(chain, draw, x_dim_0)``, or for a Pyro model
            one variable per latent site (constrained) and per ``pyro.deterministic`` site (its
            value at each draw); ``sample_stats`` holds ``lp`` (unnormalized log target), ``log_q``
            (flow log-density) and ``log_weight = lp - log_q``.  For a Pyro model
            ``log_likelihood`` holds one variable per observed site (``pyro.deterministic`` sites
            are not observations), and ``observed_data`` the data.  Every group's draws are the same
            draws: ``posterior_predictive[..., c, d]`` is drawn given ``posterior[..., c, d]``.

        Raises
        ------
        ValueError
            If ``posterior_predictive`` or predictions are asked of a sampler without a Pyro model.

        Notes
        -----
        The model runs once for all draws where it can be run in a particle plate; otherwise (models
        written for one particle) the posterior predictive and predictions take one model run per
        draw through ``pyro.infer.Predictive``, as Pyro's own ``Predictive`` does by default.
        """
        num_samples = check_positive_int("num_samples", num_samples)
        num_chains = check_positive_int("num_chains", num_chains)
        self._require_trained()
        assert self.target is not None
        wants_predictions = predictions_args is not None or predictions_kwargs is not None
        if (posterior_predictive or wants_predictions) and not self.target.is_model:
            raise ValueError(
                "posterior_predictive and predictions_args / predictions_kwargs need a sampler of a "
                "Pyro model (WGFSampler(model=...)): a log-density has no observations to predict"
            )
        predictions = None
        if wants_predictions:
            predictions = (tuple(predictions_args or ()), dict(predictions_kwargs or {}))
        return inference_data(
            self.flow, self.target, self.beta, num_samples, num_chains, self._generator_for(seed),
            log_likelihood, attrs=self.attrs(), posterior_predictive=bool(posterior_predictive),
            predictions=predictions, progress_bar=self.progress_bar,
        )  # fmt: skip

    def get_samples(
        self,
        num_samples: int = 1000,
        seed: int | None = None,
        group_by_chain: bool = False,
        resample: bool = False,
        correct: str | None = None,
    ) -> dict[str, Tensor]:
        """Fresh draws in the shapes of ``pyro.infer.MCMC.get_samples``.

        A flow keeps no draws: every call draws ``num_samples`` new ones (``MCMC.get_samples()``
        returns the draws its run kept, ``num_samples * num_chains`` of them).  The default of 1000
        is only a default; ask for as many as needed, each costs one pass through the maps.

        Parameters
        ----------
        num_samples : int, default 1000
            Number of draws, in all (as in ``MCMC.get_samples(num_samples)``).
        seed : int, optional
            Seed for these draws only; by default the sampler's generator advances.
        group_by_chain : bool
            Add a leading chain dimension of size 1, ``(1, num_samples, ...)``, as MCMC does with
            ``group_by_chain=True`` for one chain.  For several chains of ``num_samples`` draws each
            use :meth:`to_inference_data`.
        resample : bool
            Shorthand for ``correct="psis"``.
        correct : {None, "psis", "imh"}
            Correct the flow's draws towards the target with the exact importance weights
            ``lp - log q``: ``"psis"`` resamples ``num_samples`` draws with Pareto-smoothed weights;
            ``"imh"`` runs an independence Metropolis-Hastings chain with the flow as proposal (exact
            for any flow that covers the target; the acceptance rate is stored in
            ``self.last_correction``).

        Returns
        -------
        dict of str to Tensor
            For a Pyro model, one entry per latent site in its constrained space with shape
            ``(num_samples, *site_shape)``, usable as ``Predictive(model, posterior_samples=...)``
            (``pyro.deterministic`` sites are not latent: ``Predictive`` returns them, and
            :meth:`to_inference_data` puts them in the posterior); for a log-density,
            ``{"x": (num_samples, d)}``.
        """
        self._require_trained()
        assert self.target is not None
        num_samples = check_positive_int("num_samples", num_samples)
        correct = "psis" if resample and correct is None else correct
        if correct not in (None, "psis", "imh"):
            raise ValueError(f"correct must be None, 'psis' or 'imh', got {correct!r}")
        if correct is None:
            z = self.sample(num_samples, seed=seed)
        else:
            generator = self._generator_for(seed)
            z, self.last_correction = corrected_draws(
                self.flow, self.target, self.beta, num_samples, generator, correct, self.progress_bar
            )
        samples = self.target.samples(z)
        if group_by_chain:
            samples = {k: v.unsqueeze(0) for k, v in samples.items()}
        return samples

    def diagnostics(self, num_samples: int = 4000, seed: int | None = None) -> dict[str, Any]:
        """Importance diagnostics of the flow against the target, from fresh draws.

        Returns
        -------
        dict
            ``khat`` (PSIS Pareto k-hat via ArviZ; above 0.7 the weights are unreliable and a warning
            is raised), ``ess_is`` and ``ess_is_fraction`` (importance-sampling effective sample
            size), ``log_evidence`` (``log Z`` estimate, ``logmeanexp(lp - log q)``, exact in
            expectation because ``log q`` is exact), ``log_evidence_se`` and ``n``.  For a Pyro model
            ``log_evidence`` estimates the log marginal likelihood ``log p(data)``.  ``checks``: the
            records of the checks after the last :meth:`run` (:attr:`checks`; ``[]`` without them).
            See ``docs/diagnostics.md``.
        """
        self._require_trained()
        assert self.target is not None
        n = check_positive_int("num_samples", num_samples)
        _, log_q, lp = weighted_draws(
            self.flow, self.target, self.beta, n, self._generator_for(seed), self.progress_bar
        )
        result: dict[str, Any] = importance_diagnostics(lp - log_q)
        warn_if_unreliable(result)
        result["checks"] = self.checks
        return result

    def summary(self, num_samples: int = 1000, prob: float = 0.9, seed: int | None = None) -> None:
        """Print Pyro's table of posterior statistics, as ``pyro.infer.MCMC.summary`` does, and under
        it the diagnostics that mean something for a flow.

        The table is Pyro's ``print_summary`` of ``num_samples`` fresh draws: mean, std, median, the
        ``prob`` credible interval, ``n_eff`` and ``r_hat``.  The draws are independent, not a
        Markov chain, so ``n_eff`` is close to ``num_samples`` and ``r_hat`` close to 1 *by
        construction*: unlike MCMC's, they say nothing about how close the draws are to the
        posterior.  Under the table come the importance diagnostics of the same draws (their weights
        ``lp - log q``, as in :meth:`diagnostics`): PSIS k-hat with its reading, the
        importance-sampling ESS and the log-evidence estimate.  A flow without densities (residual
        maps) has no weights, which a line says.  Last come the checks after :meth:`run`
        (:attr:`checks`): the failed ones with their messages.

        Parameters
        ----------
        num_samples : int, default 1000
            Draws the table and the diagnostics are computed from.
        prob : float, default 0.9
            Probability mass of the credible interval.
        seed : int, optional
            Seed for these draws only; by default the sampler's generator advances.
        """
        from wgfinfer.pyro_target import print_summary

        self._require_trained()
        assert self.target is not None
        n = check_positive_int("num_samples", num_samples)
        prob = check_positive_float("prob", prob, upper=1.0)
        flow, generator = self.flow, self._generator_for(seed)
        if flow.has_density:
            z, log_q, lp = weighted_draws(flow, self.target, self.beta, n, generator, self.progress_bar)
            found = importance_diagnostics(lp - log_q) if n >= 2 else None
        else:
            z, found = flow.sample(n, generator, progress_bar=self.progress_bar), None
        print_summary(self.target.samples(z), prob=prob)
        print(_summary_notes(n, found, flow.has_density, self.checks))

    def attrs(self) -> dict[str, Any]:
        """Scheme and its options, run options, wgfinfer version, training time and the names of the
        checks after the last run that failed (``failed_checks``), as ArviZ attrs."""
        flow = self.flow
        attrs: dict[str, Any] = {
            "inference_library": "wgfinfer",
            "inference_library_version": __version__,
            "method": self.scheme.name,
            "step_size": self.step_size,
            "n_steps": 0 if flow is None else len(flow),
        }
        for name, value in self.scheme.options().items():
            if value is not None and not isinstance(value, dict):
                # netCDF attributes hold numbers, strings and lists of them, not booleans
                attrs[name] = str(value) if isinstance(value, bool) else value
        attrs.update(
            beta=self.beta,
            subsample_size=str(self.subsample_size) if self.subsample_size is not None else "none",
            init=self.init.kind if isinstance(self.init, Init) else type(self.init).__name__,
            init_scale=self.init.scale if isinstance(self.init, Init) else float("nan"),
            init_base=self._init_base_name(),
            training_time=self.training_time,
            stop_reason=self.stop_reason or "none",
            flow_density="exact" if flow is None or flow.has_density else NO_DENSITY_NOTE,
            failed_checks=self._failed_checks_attr(),
        )
        return attrs

    def _failed_checks_attr(self) -> str:
        """The names of the failed checks after the last run, comma-separated (``"none"``; ``"not
        run"`` without checks): one string, which netCDF attributes hold."""
        records = self.checks
        if not records:
            return "not run"
        return ", ".join(r["check"] for r in wgf_checks.failed(records)) or "none"

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes the sampler does not have: say why the MCMC ones are missing
        if name in MCMC_ONLY_ATTRIBUTES:
            raise AttributeError(
                f"WGFSampler has no {name!r}: it is not a pyro.infer.MCMC run with stored chains but "
                "draws fresh samples on demand, so az.from_pyro(sampler), which reads an MCMC's "
                "num_chains, num_samples, kernel and samples, cannot convert it. Use "
                "sampler.to_inference_data(num_samples, num_chains, posterior_predictive=True) for "
                "ArviZ data, or run MCMC(wgfinfer.pyro_kernel.WGFKernel(sampler=sampler), ...) and "
                "convert that run with wgfinfer.pyro_kernel.from_mcmc(mcmc)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return (
            f"WGFSampler(scheme={self.scheme!r}, dim={self.dim}, step_size={self.step_size}, "
            f"steps={0 if self.run_state is None else self.run_state.step}/{self.n_steps}, "
            f"device={self.device}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ save files
    def save(self, path: str | os.PathLike, save_init: bool = True) -> None:
        """Write the trained sampler to a save file, atomically.

        The file holds the run options, the scheme's options, ``rho_0``, the whitening, the run state
        (the scheme's state: maps, particle pool, duals; history, training time) and the random
        generator states (so that :meth:`run` can continue after :meth:`load`), as plain tensors and
        values; the target (log-density or Pyro model) is code and is not stored.  See
        ``docs/reliability.md``.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file (its directory must exist); an existing file is replaced atomically.
        save_init : bool, default True
            ``rho_0`` is stored for ``Independent(Normal)`` and ``MultivariateNormal`` (every string
            ``init``); any other distribution raises ``TypeError`` unless ``save_init=False``, which
            records only its type and requires passing it again as ``load(..., init=...)``.

        Raises
        ------
        TypeError
            If ``rho_0`` is of a kind that cannot be saved (and ``save_init`` is true).
        RuntimeError
            If a Pyro-model sampler has not been run yet (its dimension is unknown).
        """
        wgf_io.save_sampler(self, path, save_init=save_init)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        log_density: Callable[[Tensor], Tensor] | None = None,
        model: Callable[..., Any] | None = None,
        model_args: Sequence[Any] = (),
        model_kwargs: dict[str, Any] | None = None,
        init: Distribution | None = None,
        check_target: bool = True,
    ) -> WGFSampler:
        """Rebuild a sampler written by :meth:`save` (or a checkpoint of :meth:`run`).

        The file is read with ``torch.load(path, weights_only=True)``: no code from the file runs.  On
        CPU the loaded sampler gives bit-identical ``sample(n, seed=...)`` draws to the saved one, its
        generator continues where the saved one stood, and :meth:`run` with a larger ``n_steps``
        continues training.

        Parameters
        ----------
        path : str or os.PathLike
        log_density : callable, optional
            The target of a log-density sampler, passed again (code is never stored).
        model : callable, optional
            The Pyro model of a Pyro-model sampler, passed again with ``model_args`` and
            ``model_kwargs``; its latent sites must have the saved shapes.
        model_args : sequence, optional
        model_kwargs : dict, optional
        init : torch.distributions.Distribution, optional
            Needed only for files written with ``save_init=False``: the same ``rho_0`` again.
        check_target : bool, default True
            The file holds the target's log-density at a few points (its fingerprint); a target
            that gives other values there raises ``ValueError``.  With ``False`` it is loaded with a
            warning that names the difference (to use a saved flow with a changed target on
            purpose, e.g. as a start).

        Returns
        -------
        WGFSampler

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        SaveFileError
            If the file is not a readable wgfinfer sampler file of this format version (the message
            names the file).
        ValueError
            If the target does not match the file (kind, dimension, Pyro site names and shapes, or,
            unless ``check_target=False``, its log-density at the stored points) or ``init``
            differs from the saved ``rho_0``.
        """
        content = wgf_io.read_sampler(path)
        options, target = content["options"], content["target"]
        kind = target["kind"]
        if (log_density is None) == (model is None):
            raise TypeError("WGFSampler.load needs exactly one of log_density (a callable) or model (Pyro)")
        if kind == "pyro_model" and model is None:
            raise ValueError(
                f"{str(path)!r} was saved from a sampler of a Pyro model ({target.get('model_name', '?')}, "
                f"sites {target.get('site_shapes')}): pass model= (and its model_args) to load it"
            )
        if kind == "log_density" and log_density is None:
            raise ValueError(
                f"{str(path)!r} was saved from a log-density sampler: pass log_density= to load it"
            )
        for name, fn in (("log_density", log_density), ("model", model)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        dtype = wgf_io.parse_dtype(options["dtype"], path)
        device = wgf_io.parse_device(options["device"], path)
        dim = options["dim"]
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise wgf_io.SaveFileError(f"{str(path)!r} is damaged: dim {dim!r}")
        init_arg = wgf_io.init_for_load(content["rho_0"], options["init"], init, path, dtype, device, dim)
        scheme = wgf_io.scheme_from_entry(content["scheme"], path)
        try:
            sampler = cls(
                log_density,
                model=model,
                dim=dim if model is None else None,
                scheme=scheme,
                init=init_arg,
                n_steps=options["n_steps"],
                max_steps=options.get("max_steps", wgf_io.OPTION_DEFAULTS["max_steps"]),
                time_budget=options.get("time_budget", wgf_io.OPTION_DEFAULTS["time_budget"]),
                step_size=options["step_size"],
                beta=options["beta"],
                seed=options["seed"],
                device=device,
                dtype=dtype,
                max_retries=options["max_retries"],
                progress_bar=options["progress_bar"],
                subsample_size=options["subsample_size"],
                check=options.get("check", wgf_io.OPTION_DEFAULTS["check"]),
                jit_compile=options.get("jit_compile", wgf_io.OPTION_DEFAULTS["jit_compile"]),
            )
        except (TypeError, ValueError) as exc:
            raise wgf_io.SaveFileError(
                f"{str(path)!r} holds options this wgfinfer does not accept: {exc}"
            ) from exc
        if not isinstance(check_target, bool):
            raise TypeError(f"check_target must be a bool, got {type(check_target).__name__}")
        if model is not None:
            sampler._prepare_model(tuple(model_args), dict(model_kwargs or {}))
        wgf_io.check_target(sampler, target, dim, path, "the file", strict=check_target)
        wgf_io.restore_from_content(sampler, content, path)
        return sampler

    def options(self) -> dict[str, Any]:
        """The run options as plain values (what save files and checkpoints store besides the
        scheme's options)."""
        subsample = self.subsample_size
        return {
            "dim": self.dim,
            "step_size": self.step_size,
            "n_steps": self.n_steps,
            "max_steps": self.max_steps,
            "time_budget": self.time_budget,
            "init": (
                {"kind": self.init.kind, "scale": self.init.scale, "df": self.init.df}
                if isinstance(self.init, Init)
                else "distribution"
            ),
            "beta": self.beta,
            "seed": self.seed,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "progress_bar": self.progress_bar,
            "subsample_size": dict(subsample) if isinstance(subsample, dict) else subsample,
            "max_retries": self.max_retries,
            "check": self.check,
            "jit_compile": self.jit_compile,
        }

"""``WGFSampler``: the user-facing facade.

It holds the configuration, turns the user's input into a target, runs the JKO steps of the chosen
scheme and answers questions about the trained flow (draws, densities, InferenceData).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from wgfinfer import io as wgf_io
from wgfinfer._validation import check_positive_float, check_positive_int, resolve_dim
from wgfinfer.flow import Flow
from wgfinfer.importance import importance_diagnostics, warn_if_unreliable
from wgfinfer.laplace import AffineWhitening, fit_gaussian, laplace_whitening
from wgfinfer.nn.mlp import DualNetwork
from wgfinfer.outputs import corrected_draws, inference_data, site_samples, weighted_draws
from wgfinfer.schemes import METHODS, scheme_config
from wgfinfer.schemes.icnn import ICNNSchemeConfig, as_hidden
from wgfinfer.schemes.pwgf import PWGFConfig
from wgfinfer.schemes.variational import VariationalSchemeConfig
from wgfinfer.targets import LogDensityTarget
from wgfinfer.training import initial_pool, train_steps

NO_DENSITY_NOTE = (
    "unavailable: residual maps (map='resnet' or 'linear') have no tractable density, so log_q and "
    "log_weight are omitted; use map='icnn' for them"
)
INITS = ("laplace", "gaussian", "normal")


class WGFSampler:
    """Sample an unnormalized density with a Wasserstein gradient flow (JKO scheme).

    The flow starts at ``init`` and takes ``n_steps`` JKO steps of size ``step_size`` towards the
    target ``prop. to exp(beta * log_density)``; every step is a convex-gradient map, so the result
    can be sampled cheaply and has an exact density.

    Parameters
    ----------
    log_density : callable
        Unnormalized log target, ``(n, d) tensor -> (n,) tensor``, written with differentiable torch
        operations.
    dim : int, optional
        Dimension ``d``; inferred from ``init`` when omitted.
    method : {"icnn", "variational"}
        The JKO scheme. ``"icnn"``: gradient of an input-convex network with the exact log-det of its
        Hessian (seed 002); draws come with exact densities.  ``"variational"``: a transport map and
        a dual network trained on the variational formula of the KL divergence (seeds 000/001): no
        log-det in training, so the cost per iteration hardly grows with the dimension; densities
        only with ``map="icnn"``.  ``"pwgf"``: the parameterized Wasserstein gradient flow of seed 004
        (one push-forward map of ``init`` moved by forward Euler under the pullback metric, solved
        matrix-free by MINRES/CG); each of the ``n_steps`` recorded steps covers ``step_size`` of flow
        time in ``substeps`` Euler steps.  See ``docs/methods.md`` and ``docs/pde.md``.
    step_size : float, default 1.0
        JKO step ``h`` (time of the gradient flow covered by one step).  The scheme is implicit and
        stable for any ``h``; large steps reach the target in fewer steps, small ones (e.g. 0.05)
        follow the flow's dynamics in time.
    n_steps : int, default 20
        Number of JKO steps ``K``; the flow covers time ``K * h``.
    iters_per_step : int, default 200
        Adam iterations per step.
    batch_size : int, optional
        Particles per iteration (default 256); for ``method="pwgf"`` the draws of ``rho_0`` per Euler
        step for the metric and the gradient (default 4096).
    lr : float, default 5e-3
        Adam learning rate at the start of every JKO step.
    lr_decay : float, default 0.1
        Within every step the learning rate follows a cosine from ``lr`` to ``lr * lr_decay``
        (1 keeps it constant).  Measured on a 10-D correlated Gaussian with the other defaults:
        KL(q || p) 0.008 with 0.1, 0.029 with a constant rate.
    affine_lr_scale : float, default 1.0
        Learning rate of the affine part of each map (a quadratic and a linear term) relative to
        ``lr``.  Larger values let the maps shift and rescale mass faster, which matters when the
        start is far from the target in whitened units (see ``wgfinfer.logistic.SETTINGS``).
    hidden : sequence of int, default (64, 64)
        Hidden widths of the maps (the ICNN, the residual MLP of ``map="resnet"``, or each
        conditioner of ``map="coupling"``).
    map : {"resnet", "icnn", "linear"} or {"planar", "affine", "resnet", "coupling"}, optional
        Variational scheme (default ``"resnet"``): ``T(x) = x + MLP(x)``; the gradient of an
        ICNN (invertible: ``log_prob``, ``log q`` and the importance diagnostics work, log-dets are
        computed only when asked for); or an affine residual map (Gaussian targets, OU flows).
        PWGF (default ``"planar"``): a planar normalizing flow of ``n_layers`` layers (exact
        densities), an affine map, a residual tanh MLP with widths ``hidden`` (draws only), or
        ``n_layers`` affine coupling layers with conditioners of widths ``hidden`` (exact densities;
        :class:`wgfinfer.nn.coupling.AffineCouplingFlow`).
    dual_hidden : sequence of int, default (64, 64, 64)
        Variational scheme only: hidden widths of the dual network ``h``.
    dual_head : {"softplus", "expm1", "exp"}, default "softplus"
        Variational scheme only: positive output head of ``h`` (``"expm1"``: ``h = exp(hbar) - 1``
        with a bounded ``hbar``, seed 001 App. E.2; see ``docs/methods.md`` for the measurement that
        chose it).
    dual_steps : int, default 3
        Variational scheme only: Adam steps on ``h`` per outer iteration (seed default).
    map_steps : int, default 1
        Variational scheme only: Adam steps on ``T`` per outer iteration (seed default).
    dual_lr : float, optional
        Variational scheme only: learning rate of ``h`` (default: ``lr``).
    n_layers : int, optional
        PWGF only: layers of the planar flow (default 40, seed 004 §5.1) or of the coupling flow
        (default 4; ``map="coupling"``).
    substeps : int, default 1
        PWGF only: forward Euler steps per recorded step (Euler step ``step_size / substeps``).
    solver : {"minres", "cg"}, default "minres"
        PWGF only: Krylov solver of the metric system (see :mod:`wgfinfer.schemes.pwgf`).
    solver_tol : float, default 3e-4
        PWGF only: the solver's relative tolerance (seed 004 §4).
    init : {"laplace", "gaussian", "normal"} or torch.distributions.Distribution, optional
        Initial measure ``rho_0``.  ``"normal"``: ``N(0, init_scale^2 I)``.  ``"laplace"``: the
        Laplace approximation at the mode, ``N(mode, init_scale^2 H^{-1})``, and the flow runs in the
        coordinates that whiten it (see :mod:`wgfinfer.laplace`); narrow, anisotropic posteriors then
        need few steps.  A distribution with event shape ``(d,)`` is used as it is.  Default:
        ``"laplace"`` for a Pyro model, ``"normal"`` for a log-density (which may be multimodal, where
        a Laplace approximation at one mode would miss the others).  ``"gaussian"``: the Laplace
        approximation refined by a full-rank Gaussian fit minimising ``KL(q || p)`` (1000 Adam
        iterations, :func:`wgfinfer.laplace.fit_gaussian`), for posteriors whose mass sits far from
        the joint mode, as in hierarchical models.
    init_scale : float, default 1.0
        Scale of the ``"normal"`` and ``"laplace"`` initial measures.  It should cover the target's
        mass: the flow moves mass but a Fokker-Planck flow of finite time cannot find modes far
        outside ``rho_0``.
    beta : float, default 1.0
        Inverse temperature.  ``beta = 1`` samples the target itself.
    n_particles : int, optional
        Size of the cached particle pool of ``rho_k`` that mini-batches are drawn from; default
        ``iters_per_step * batch_size``, so that each particle is used about once per step.  The pool
        is pushed through each new map once.  Much smaller pools overfit the maps to the pool
        (measured on a 2-D mixture: KL 0.0145 with 4096 particles, 0.0014 with 65536).
    n_monitor : int, default 4096
        Pool particles whose exact log-density is tracked for ``history["kl_plus_log_z"]``.
    rank : int, default 1
        Rank of the convex quadratic input terms of the ICNN.
    strong_convexity : float, default 1e-3
        Lower bound on every map's Jacobian eigenvalues (keeps the maps invertible).
    seed : int, default 0
        Seed of the sampler's own random generator (weights, mini-batches, draws); no global seed is
        set.
    device : str or torch.device, default "cpu"
    dtype : torch.dtype, default torch.float32
    max_retries : int, default 3
        Times a diverged JKO step is retried from its warm start with the learning rates multiplied
        by 0.25 before ``run`` gives up with :class:`TrainingDivergedError` (``docs/reliability.md``).
    progress_bar : bool, default True
        Show a tqdm bar over JKO steps with the current loss.
    model : callable, optional
        A Pyro model, instead of ``log_density``; its arguments go to :meth:`run`.  The flow samples
        the posterior of its continuous latent sites on Pyro's unconstrained space (see
        ``docs/pyro.md``).
    subsample_size : int or dict of str to int, optional
        Train on mini-batches of a Pyro model's data: each training evaluation draws fresh indices
        of the data plate (``int``: the model's only plate around observed sites; ``dict``: sizes by
        plate name) and Pyro scales the mini-batch log-likelihood by ``N / B``, an unbiased estimate
        of the full one (seed 002, sec. 4.4).  The model must index its data with the plate's
        indices.  ``lp``, ``log_weight`` and every diagnostic use the full data.

    Attributes
    ----------
    history : list of dict
        One entry per completed JKO step: ``step``, ``time`` (flow time ``(k+1) h``), ``loss``,
        ``w2``, ``potential``, ``kl_plus_log_z`` (``E_q[log q - beta * log_density]``, the KL
        divergence to the target up to its unknown ``log Z``, on the full data), ``iterations``,
        ``wall_time``.  ICNN scheme: ``kl_plus_log_z`` uses the exact ``log q`` of ``n_monitor`` pool
        particles, and ``log_det`` is the step's entropy gain.  Variational scheme:
        ``kl_plus_log_z`` is the variational estimate (seed 001 Fig. 3b; no ``log q`` needed) with
        its standard error ``kl_plus_log_z_se``, and ``dual_objective`` is the dual's objective.

    Examples
    --------
    >>> import torch, wgfinfer
    >>> f = lambda x: -0.5 * (x - 1.0).square().sum(-1)
    >>> s = wgfinfer.WGFSampler(f, dim=2, n_steps=2, iters_per_step=20, progress_bar=False).run()
    >>> x, log_q = s.sample(5, return_log_prob=True)
    >>> x.shape, log_q.shape
    (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        log_density: Callable[[Tensor], Tensor] | None = None,
        dim: int | None = None,
        method: str = "icnn",
        step_size: float = 1.0,
        n_steps: int = 20,
        iters_per_step: int = 200,
        batch_size: int | None = None,
        lr: float = 5e-3,
        lr_decay: float = 0.1,
        affine_lr_scale: float = 1.0,
        hidden: Sequence[int] = (64, 64),
        map: str | None = None,
        dual_hidden: Sequence[int] = (64, 64, 64),
        dual_head: str = "softplus",
        dual_steps: int = 3,
        map_steps: int = 1,
        dual_lr: float | None = None,
        n_layers: int | None = None,
        substeps: int = 1,
        solver: str = "minres",
        solver_tol: float = 3e-4,
        init: Distribution | str | None = None,
        init_scale: float = 1.0,
        beta: float = 1.0,
        n_particles: int | None = None,
        n_monitor: int = 4096,
        rank: int = 1,
        strong_convexity: float = 1e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_retries: int = 3,
        progress_bar: bool = True,
        model: Callable[..., Any] | None = None,
        subsample_size: int | dict[str, int] | None = None,
    ) -> None:
        if (log_density is None) == (model is None):
            raise TypeError("WGFSampler needs exactly one of log_density (a callable) or model (Pyro)")
        if subsample_size is not None and model is None:
            raise TypeError(
                "subsample_size needs a Pyro model (its data plate is what gets subsampled); a "
                "log_density callable cannot be subsampled"
            )
        self.subsample_size = subsample_size
        if model is not None and not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.step_size = check_positive_float("step_size", step_size)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.beta = check_positive_float("beta", beta)
        init_scale = check_positive_float("init_scale", init_scale)
        finfo = torch.finfo(dtype)
        if not finfo.tiny**0.5 < init_scale < finfo.max**0.5:
            raise ValueError(
                f"init_scale={init_scale} is not representable in {dtype}: its square must lie between "
                f"{finfo.tiny:.3g} and {finfo.max:.3g}"
            )
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self.method = method
        self.progress_bar = bool(progress_bar)
        self.max_retries = check_positive_int("max_retries", max_retries, allow_zero=True)
        self.config = scheme_config(
            method,
            hidden=as_hidden(hidden),
            iters_per_step=check_positive_int("iters_per_step", iters_per_step),
            batch_size=None if batch_size is None else check_positive_int("batch_size", batch_size),
            lr=check_positive_float("lr", lr),
            lr_decay=check_positive_float("lr_decay", lr_decay, upper=1.0, inclusive_upper=True),
            rank=check_positive_int("rank", rank, allow_zero=True),
            strong_convexity=check_positive_float("strong_convexity", strong_convexity, upper=1.0),
            affine_lr_scale=check_positive_float("affine_lr_scale", affine_lr_scale),
            map=map,
            dual_hidden=as_hidden(dual_hidden),
            dual_head=dual_head,
            dual_steps=check_positive_int("dual_steps", dual_steps),
            map_steps=check_positive_int("map_steps", map_steps),
            dual_lr=lr if dual_lr is None else check_positive_float("dual_lr", dual_lr),
            n_layers=None if n_layers is None else check_positive_int("n_layers", n_layers),
            substeps=check_positive_int("substeps", substeps),
            solver=solver,
            solver_tol=check_positive_float("solver_tol", solver_tol, upper=1.0),
        )
        if n_particles is None:
            # PWGF keeps no training pool: its particles are only the monitor's draws of rho_0
            n_particles = (
                n_monitor if method == "pwgf" else self.config.iters_per_step * self.config.batch_size  # type: ignore[union-attr]
            )
        self.n_particles = check_positive_int("n_particles", n_particles)
        self.n_monitor = min(check_positive_int("n_monitor", n_monitor), self.n_particles)
        self.model = model
        if init is None:
            init = "laplace" if model is not None else "normal"
        if isinstance(init, str) and init not in INITS:
            raise ValueError(f"init must be one of {INITS} or a torch Distribution, got {init!r}")
        if not isinstance(init, (str, Distribution)):
            raise TypeError(f"init must be one of {INITS} or a torch Distribution, got {type(init).__name__}")
        self._init, self._init_scale = init, init_scale
        self.dim: int | None = None
        self.target: LogDensityTarget | None = None
        self.flow: Flow | None = None
        if model is None:
            self._set_target(LogDensityTarget(log_density, resolve_dim(dim, self._init_distribution)))
        elif dim is not None or self._init_distribution is not None:
            resolve_dim(dim, self._init_distribution)  # type checks now; consistency with the model in run()
        self._requested_dim = dim
        self.last_correction: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.training_time = 0.0
        self._generator = torch.Generator().manual_seed(seed)
        self._particles: Tensor | None = None
        self._particles_log_q: Tensor | None = None
        self._dual: DualNetwork | None = None  # the variational scheme's h, carried across steps

    @property
    def _init_distribution(self) -> Distribution | None:
        return None if isinstance(self._init, str) else self._init

    def _set_target(self, target: LogDensityTarget) -> None:
        dim = resolve_dim(target.dim, self._init_distribution)
        if isinstance(self.config, PWGFConfig) and self.config.map == "coupling" and dim < 2:
            raise ValueError(
                f"map='coupling' needs dim >= 2 (a coupling layer splits the coordinates in two), got "
                f"dim={dim}; use map='planar' for a 1-D target"
            )
        init = self._init_distribution
        if init is None:
            init = Independent(
                Normal(
                    torch.zeros(dim, dtype=self.dtype, device=self.device),
                    torch.full((dim,), self._init_scale, dtype=self.dtype, device=self.device),
                ),
                1,
            )
        self.dim, self.target = dim, target
        self.flow = Flow(init, device=self.device, snapshots=self.method == "pwgf")

    # ------------------------------------------------------------------ training
    def run(
        self,
        *model_args: Any,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        **model_kwargs: Any,
    ) -> WGFSampler:
        """Train the JKO steps not yet done (all ``n_steps`` on a new sampler).

        Parameters
        ----------
        *model_args, **model_kwargs
            For a Pyro model: its arguments, as in ``pyro.infer.MCMC.run``.  Needed on the first call;
            a later call (to continue training) may omit them.  ``checkpoint_dir`` and ``resume`` are
            never passed to the model.
        checkpoint_dir : str or os.PathLike, optional
            After every completed JKO step, write the sampler's full state (maps, history, particle
            pool, random generator states) atomically to ``checkpoint_dir / "checkpoint.pt"``, a save
            file that :meth:`load` also reads.  The directory is created if needed.
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
            If a step diverges; the sampler keeps every step completed before it.
        ValueError
            With ``resume=True``, if the checkpoint's configuration or dimension differs from this
            sampler's (the message lists the differences).
        SaveFileError
            If the checkpoint to resume from is damaged.

        Notes
        -----
        A ``KeyboardInterrupt`` during a step undoes that step's partial work (random generator
        states included) and propagates: the sampler holds every completed step, can be sampled,
        saved, and a later ``run()`` continues exactly as if it had not been interrupted.
        """
        checkpoint = wgf_io.checkpoint_path(checkpoint_dir, resume)
        if self.model is not None:
            self._prepare_model(model_args, model_kwargs)
        elif model_args or model_kwargs:
            raise TypeError("run() takes model arguments only when the sampler was given a Pyro model")
        assert self.target is not None and self.flow is not None
        if checkpoint is not None:
            wgf_io.prepare_checkpoint(self, checkpoint, resume)
        if self._particles is None:
            initial_pool(self)
        train_steps(self, checkpoint)
        return self

    def _laplace_whitening(self) -> AffineWhitening:
        assert self.target is not None and self.dim is not None
        start = self.target.initial_point
        if start is None:
            start = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        self.target.validate(start.unsqueeze(0))
        target, beta = self.target, self.beta
        whitening = laplace_whitening(lambda x: beta * target.log_density(x), start)
        if self._init == "gaussian":
            whitening = fit_gaussian(
                lambda x: beta * target.training_log_density(x), whitening, self._generator
            )
        return whitening

    def _to_target_space(self, z: Tensor) -> Tensor:
        """Points of the flow's working coordinates in the target's coordinates."""
        assert self.flow is not None
        return z if self.flow.whitening is None else self.flow.whitening.forward(z)

    def _working_log_density(self, z: Tensor) -> Tensor:
        """The training potential in the flow's working coordinates (whitened with
        ``init="laplace"``; a mini-batch estimate with ``subsample_size``)."""
        assert self.target is not None
        return self.target.training_log_density(self._to_target_space(z))

    def _prepare_model(self, model_args: tuple, model_kwargs: dict[str, Any]) -> None:
        from wgfinfer.pyro_target import PyroTarget

        if self.target is not None and not (model_args or model_kwargs):
            return
        target = PyroTarget(
            self.model,
            model_args,
            model_kwargs,
            dtype=self.dtype,
            device=self.device,
            subsample_size=self.subsample_size,
            seed=self.seed,
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
        assert isinstance(old, PyroTarget)
        if old.site_shapes != target.site_shapes:
            raise ValueError(
                f"the model's latent sites changed between run() calls: {dict(old.site_shapes)} -> "
                f"{dict(target.site_shapes)}"
            )
        self.target = target

    # ------------------------------------------------------------------ outputs
    def _require_trained(self) -> None:
        if self.flow is None or not self.flow.maps:
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
        return self.flow.sample(n, self._generator_for(seed), return_log_prob=return_log_prob)

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
        return self.flow.log_prob(y.to(dtype=self.dtype, device=self.device), tol=tol, max_iter=max_iter)

    def to_inference_data(
        self,
        num_samples: int = 1000,
        num_chains: int = 1,
        seed: int | None = None,
        log_likelihood: bool = True,
    ):
        """Draws of the flow as ArviZ data, with ``lp``, ``log_q`` and ``log_weight``.

        Parameters
        ----------
        num_samples : int
            Draws per chain.
        num_chains : int
            Chains; the draws are independent, so chains are only a grouping that lets ArviZ's
            between-chain diagnostics run.
        seed : int, optional
            Seed for these draws only.
        log_likelihood : bool
            For a Pyro model, include the pointwise ``log_likelihood`` group (draws x observations
            values: switch it off for large data sets).

        Returns
        -------
        arviz.InferenceData (ArviZ 0.x) or xarray.DataTree (ArviZ >= 1.0)
            Group ``posterior`` holds ``x`` with dims ``(chain, draw, x_dim_0)``; ``sample_stats``
            holds ``lp`` (unnormalized log target), ``log_q`` (flow log-density) and
            ``log_weight = lp - log_q``.
        """
        num_samples = check_positive_int("num_samples", num_samples)
        num_chains = check_positive_int("num_chains", num_chains)
        self._require_trained()
        return inference_data(self, num_samples, num_chains, self._generator_for(seed), log_likelihood)

    def get_samples(
        self,
        num_samples: int = 1000,
        seed: int | None = None,
        group_by_chain: bool = False,
        resample: bool = False,
        correct: str | None = None,
    ) -> dict[str, Tensor]:
        """Fresh draws in the shapes of ``pyro.infer.MCMC.get_samples``.

        Parameters
        ----------
        num_samples : int
            Number of draws.
        seed : int, optional
            Seed for these draws only.
        group_by_chain : bool
            Add a leading chain dimension of size 1, as MCMC does with ``group_by_chain=True``.
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
            ``(num_samples, *site_shape)``, usable as ``Predictive(model, posterior_samples=...)``;
            for a log-density, ``{"x": (num_samples, d)}``.
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
            z, self.last_correction = corrected_draws(self, num_samples, generator, correct)
        samples = site_samples(self.target, z)
        if group_by_chain:
            samples = {k: v.unsqueeze(0) for k, v in samples.items()}
        return samples

    def diagnostics(self, num_samples: int = 4000, seed: int | None = None) -> dict[str, float]:
        """Importance diagnostics of the flow against the target, from fresh draws.

        Returns
        -------
        dict
            ``khat`` (PSIS Pareto k-hat via ArviZ; above 0.7 the weights are unreliable and a warning
            is raised), ``ess_is`` and ``ess_is_fraction`` (importance-sampling effective sample
            size), ``log_evidence`` (``log Z`` estimate, ``logmeanexp(lp - log q)``, exact in
            expectation because ``log q`` is exact), ``log_evidence_se`` and ``n``.  For a Pyro model
            ``log_evidence`` estimates the log marginal likelihood ``log p(data)``.  See
            ``docs/diagnostics.md``.
        """
        self._require_trained()
        assert self.target is not None
        n = check_positive_int("num_samples", num_samples)
        _, log_q, lp = weighted_draws(self, n, self._generator_for(seed))
        result = importance_diagnostics(lp - log_q)
        warn_if_unreliable(result)
        return result

    def summary(self, num_samples: int = 1000, prob: float = 0.9, seed: int | None = None) -> None:
        """Print a table of posterior statistics like ``pyro.infer.MCMC.summary``.

        Uses Pyro's own ``print_summary`` on fresh draws (``n_eff`` of independent draws is close to
        ``num_samples``; ``r_hat`` is computed by splitting them into two halves).
        """
        from pyro.infer.mcmc.util import print_summary

        prob = check_positive_float("prob", prob, upper=1.0)
        print_summary(self.get_samples(num_samples, seed=seed), prob=prob, group_by_chain=False)

    def attrs(self) -> dict[str, Any]:
        """Method, hyper-parameters, wgfinfer version and training time (stored in ArviZ attrs)."""
        from wgfinfer import __version__

        c = self.config
        attrs: dict[str, Any] = {
            "inference_library": "wgfinfer",
            "inference_library_version": __version__,
            "method": self.method,
            "step_size": self.step_size,
            "n_steps": len(self.flow),
            "hidden": list(c.hidden),
        }
        if isinstance(c, PWGFConfig):
            attrs.update(
                map=c.map,
                n_layers=c.n_layers,
                n_samples=c.n_samples,
                substeps=c.substeps,
                solver=c.solver,
                solver_tol=c.tol,
            )
        else:
            attrs.update(
                iters_per_step=c.iters_per_step, batch_size=c.batch_size, lr=c.lr, lr_decay=c.lr_decay
            )
        if isinstance(c, ICNNSchemeConfig):
            attrs["affine_lr_scale"] = c.affine_lr_scale
        elif isinstance(c, VariationalSchemeConfig):
            attrs.update(
                map=c.map,
                dual_hidden=list(c.dual_hidden),
                dual_head=c.dual_head,
                dual_steps=c.dual_steps,
                map_steps=c.map_steps,
                dual_lr=c.dual_lr,
            )
        attrs.update(
            beta=self.beta,
            subsample_size=str(self.subsample_size) if self.subsample_size is not None else "none",
            init=self._init if isinstance(self._init, str) else type(self._init).__name__,
            init_scale=self._init_scale,
            training_time=self.training_time,
            flow_density="exact" if self.flow is None or self.flow.has_density else NO_DENSITY_NOTE,
        )
        return attrs

    def __repr__(self) -> str:
        return (
            f"WGFSampler(method={self.method!r}, dim={self.dim}, step_size={self.step_size}, "
            f"steps={len(self.flow) if self.flow else 0}/{self.n_steps}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ save files
    def save(self, path: str | os.PathLike, save_init: bool = True) -> None:
        """Write the trained sampler to a save file, atomically.

        The file holds the configuration, ``rho_0``, every map, the Laplace whitening, the dual
        network, ``history``, ``training_time``, the random generator state and the particle pool (so
        that :meth:`run` can continue after :meth:`load`), as plain tensors and values; the target
        (log-density or Pyro model) is code and is not stored.  See ``docs/reliability.md``.

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
            If the target does not match the file (kind, dimension, Pyro site shapes) or ``init``
            differs from the saved ``rho_0``.
        """
        return wgf_io.load_sampler(
            cls,
            path,
            log_density=log_density,
            model=model,
            model_args=tuple(model_args),
            model_kwargs=model_kwargs,
            init=init,
        )

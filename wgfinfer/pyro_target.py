"""Pyro models as targets: the log joint on the unconstrained space, batched over particles.

The latent sites, their supports and the bijections to ``R^k`` come from Pyro's own
:func:`pyro.infer.mcmc.util.initialize_model` (the same machinery ``HMC``/``NUTS`` use). The
flattened unconstrained vector ``z`` of all latent sites is the flow's ``R^d``.

Batching, in the first of three ways that works (:attr:`PyroTarget.batching`):

``"plate"``
    The model is run once for all ``n`` particles, inside an extra outer :class:`pyro.plate` over
    particles and conditioned on the particles' constrained values; the log joint per particle is the
    sum of every site's scaled log-probability over the non-particle dims, plus the log-Jacobian of
    each site's transform.  Models written for vectorisation (``pyro.plate`` for data, no hard-coded
    shapes) work this way.
``"vmap"``
    Models written for one particle, as Pyro's tutorials write them (``X @ beta``, ``a[group]``,
    scalar sites outside plates), are evaluated as the single-particle log joint vectorised over
    particles with :func:`torch.func.vmap` (Pyro's validation is off inside, as its data-dependent
    checks cannot run under ``vmap``; the target's own finiteness checks still apply to the result).
``"loop"``
    The last resort, one model run per particle, with a warning that says why the other two failed.

On construction each candidate is compared with Pyro's per-particle ``potential_fn`` on a few
particles; an error or a mismatch moves on to the next.

No Pyro in the inner loop: with ``"plate"`` batching the batched log joint of each input shape is
recorded once by :func:`torch.jit.trace` and replayed as a plain tensor function afterwards (the
``jit_compile`` option, :mod:`wgfinfer.traced_potential`), each recording checked against the eager
value and gradient at a fresh input first; the training, the start fit and the outputs all evaluate
through it.  ``torch.jit.trace`` cannot record ``torch.func.vmap``, so ``"vmap"`` models stay eager
(:attr:`PyroTarget.jit_reason` says so).

Random numbers: Pyro's initialisation (:func:`~pyro.infer.mcmc.util.initialize_model` runs the model
unconditioned, drawing from the prior, then draws initial values with ``init_to_uniform``) draws from
torch's global RNG.  Every model run at construction happens inside
:func:`wgfinfer._rng.forked_global_rng` seeded from ``seed``, so the target depends on ``seed`` alone
and the caller's global RNG state is unchanged.  Later runs condition every latent site and draw
nothing.

Discrete latent sites are rejected with a ``ValueError``, enumerable ones included: a transport map
cannot move discrete mass, and marginalising them per particle (as Pyro's HMC potential does) would
need the slow per-particle path; marginalise them in the model instead.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.messenger import Messenger
from torch import Tensor

from wgfinfer import bars
from wgfinfer._rng import forked_global_rng, seed_from
from wgfinfer.errors import NonFiniteLogDensityError, first_line
from wgfinfer.targets import LogDensityTarget
from wgfinfer.traced_potential import TracedPotential, check_jit_compile

_PARTICLE_PLATE = "_wgfinfer_particles"
_INIT_STREAM = 0x50594E4954  # separates the seed of Pyro's initial draws from the mini-batch stream
LOG_JOINT_CHUNK_ELEMENTS = 2**20
"""The batched log joint is evaluated on at most this many particles x observed values at once
(at least one particle), so that its per-observation intermediates (logits, log-probabilities)
stay in the CPU's caches: on one core of an AMD EPYC (2 MiB L2) the log joint of twonorm's 5920
rows for 4096 particles cost 2.8x as much at the former 2**23 (1.9x with its gradient), and a
100,000-row regression's 1.6x (1.1x); below 2**20 nothing steady was gained
(``benchmarks/potential.py --chunks``, docs/benchmarks.md, 2026-12-02)."""


def particles_per_chunk(observed_size: int, elements: int = LOG_JOINT_CHUNK_ELEMENTS) -> int:
    """Particles of one chunk of the batched log joint: at most ``elements`` particles x observed
    values, at least one particle (a model with no observed values counts as one)."""
    return max(1, elements // max(1, observed_size))


REJECTED_PARAMETERS = "to satisfy the constraint"
"""What torch.distributions' argument validation says when a distribution is given parameters
outside their support (``Expected parameter ... to satisfy the constraint ...``)."""


@contextlib.contextmanager
def rejected_parameters_as_non_finite(z: Tensor) -> Iterator[None]:
    """Turn a distribution of the model rejecting its parameters at some of the points ``z`` into a
    :class:`~wgfinfer.errors.NonFiniteLogDensityError`: the log joint is undefined there, as it is
    where it is NaN (a kernel matrix that is not numerically positive definite far out, a scale
    that reaches 0).  Inside a training step that is a diverged step, retried with smaller learning
    rates (:func:`wgfinfer.run.run_steps`); at the start it is bad input, as a NaN is.  Other
    errors pass unchanged."""
    try:
        yield
    except ValueError as exc:
        if isinstance(exc, NonFiniteLogDensityError) or REJECTED_PARAMETERS not in str(exc):
            raise
        raise NonFiniteLogDensityError(
            f"the model's log joint is undefined at some of {z.shape[0]} points: a distribution "
            f"rejected its parameters there ({type(exc).__name__}: {first_line(exc)})"
        ) from exc


class PyroTarget(LogDensityTarget):
    """The posterior of a Pyro model, on the unconstrained space of its latent sites.

    Parameters
    ----------
    model : callable
        A Pyro model.
    model_args, model_kwargs
        Passed to the model, as in ``pyro.infer.MCMC.run(*args, **kwargs)``.
    dtype, device
        Where the flow lives; model outputs are cast to this dtype.
    subsample_size : int or dict of str to int, optional
        Mini-batch sizes of the data plates (see :class:`wgfinfer.WGFSampler`).
    seed : int, default 0
        Seed of the mini-batch generator and of Pyro's initial draws (made on torch's global RNG
        inside a fork, so that the caller's global RNG state is left as it was).
    jit_compile : bool or None, default None
        Replay the batched log joint from :func:`torch.jit.trace` recordings, one per input shape,
        instead of running the model through Pyro on every evaluation
        (:class:`wgfinfer.traced_potential.TracedPotential`: each recording is checked against
        Pyro's value and gradient at a fresh input before it is used).  ``None``: do so where the
        recording verifies, else evaluate eagerly without a warning; ``True``: the same, with a
        warning when the recordings are switched off; ``False``: always run the model through Pyro.

    Attributes
    ----------
    site_names : list of str
        Latent sites, in the order of their blocks in ``z``.
    site_shapes : dict of str to torch.Size
        Constrained value shape of each latent site.
    batching : str
        How the log joint is evaluated for many particles: ``"plate"`` (one model run inside a
        particle plate), ``"vmap"`` (the single-particle log joint under :func:`torch.func.vmap`) or
        ``"loop"`` (one model run per particle).
    batched : bool
        Whether the log joint is evaluated for all particles at once (``batching != "loop"``).
    jit_compile : bool or None
        The option as given.
    jit_reason : str or None
        Why the log joint is evaluated without recordings (``None`` while they are used).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        model_args: tuple = (),
        model_kwargs: dict[str, Any] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        subsample_size: int | dict[str, int] | None = None,
        seed: int = 0,
        jit_compile: bool | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        self.jit_compile = check_jit_compile(jit_compile)
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs or {})
        self.dtype, self.device = dtype, torch.device(device)
        # Pyro draws the prior and its initial values from torch's global RNG: fork it
        self._init_seed = (int(seed) + _INIT_STREAM) % 2**64
        try:
            with forked_global_rng(self._init_seed, self.device), poutine.block():
                init_params, potential_fn, transforms, trace = initialize_model(
                    model, self.model_args, self.model_kwargs
                )
        except NotImplementedError as exc:  # Pyro's message for subsample plates
            raise ValueError(
                f"this Pyro model cannot be used as a target: {exc} Declare the plate without "
                "subsample_size, index the data with its indices (`with pyro.plate('data', N) as idx: "
                "... obs=y[idx]`) and pass WGFSampler(subsample_size=B) to train on mini-batches."
            ) from exc
        self._potential_fn = potential_fn
        self.transforms = transforms
        self._trace = trace
        self.site_names: list[str] = []
        self.site_shapes: dict[str, torch.Size] = {}
        self._unconstrained_shapes: dict[str, torch.Size] = {}
        self._batch_ndims: dict[str, int] = {}
        self._positive_sites: set[str] = set()
        for name, site in trace.iter_stochastic_nodes():
            fn = site["fn"]
            if type(fn).__name__ == "_Subsample":
                continue  # full-size plates only (initialize_model rejects subsampling)
            if fn.support.is_discrete:
                kind = "enumerable" if fn.has_enumerate_support else "non-enumerable"
                raise ValueError(
                    f"latent site {name!r} is discrete ({kind}, {type(fn).__name__}); wgfinfer samples "
                    "continuous latent sites only. Marginalise enumerable discrete sites out of the "
                    "model by hand (e.g. a MixtureSameFamily likelihood) before sampling."
                )
            value = site["value"]
            self._model_dtype = value.dtype
            self.site_names.append(name)
            self.site_shapes[name] = value.shape
            self._unconstrained_shapes[name] = transforms[name](value).shape
            self._batch_ndims[name] = len(fn.batch_shape)
            if _positive_support(fn.support):
                self._positive_sites.add(name)
        if not self.site_names:
            raise ValueError("the model has no continuous latent sites to sample")
        self._sizes = [math.prod(self._unconstrained_shapes[n]) for n in self.site_names]
        sample_sites = [
            s
            for s in trace.nodes.values()
            if s["type"] == "sample" and type(s["fn"]).__name__ != "_Subsample"
        ]
        dims = [len(s["fn"].batch_shape) for s in sample_sites]
        frames = [-f.dim for s in sample_sites for f in s["cond_indep_stack"] if f.vectorized]
        self._particle_dim = -(max(dims + frames + [0]) + 1)
        super().__init__(self._log_joint, sum(self._sizes))
        with forked_global_rng(self._init_seed, self.device):
            self.batching = self._choose_batching()
        self.initial_point = torch.cat([init_params[name].reshape(-1) for name in self.site_names]).to(
            dtype=dtype, device=self.device
        )
        """Pyro's initial unconstrained values (``init_to_uniform``), flattened: ``(d,)``."""
        observed_size = sum(v.numel() for v in self.observed_sites.values())
        self._chunk = particles_per_chunk(observed_size)
        looped = "the model is evaluated one particle at a time (batching='loop')"
        self._potential = TracedPotential(
            self._eager_batched_log_joint,
            jit_compile,
            reason=None if self.batched else looped,
            observed_size=observed_size,
            tracing_context=_validation_off,  # its data-dependent checks cannot be recorded
        )
        self._plate_sizes = self._data_plates()
        self.subsample_sizes = self._resolve_subsample(subsample_size)
        self._subsample_generator = torch.Generator().manual_seed(seed)
        self.generators = (self._subsample_generator,)
        if self.subsample_sizes:
            with forked_global_rng(self._init_seed, self.device):
                self._check_subsampling()

    # ------------------------------------------------------------------ conversions
    def unflatten(self, z: Tensor) -> dict[str, Tensor]:
        """Split ``(n, d)`` unconstrained vectors into ``{site: (n, *unconstrained_shape)}``."""
        blocks = torch.split(z, self._sizes, dim=-1)
        return {
            name: block.reshape(z.shape[:-1] + self._unconstrained_shapes[name])
            for name, block in zip(self.site_names, blocks, strict=True)
        }

    is_model = True

    @property
    def batched(self) -> bool:
        """Whether the log joint is evaluated for all particles at once (``"plate"`` or ``"vmap"``)."""
        return self.batching != "loop"

    def samples(self, z: Tensor) -> dict[str, Tensor]:
        """Draws as constrained site values ``{site: (n, *site_shape)}``."""
        return {name: v.detach() for name, v in self.constrain(z).items()}

    def reading_coordinates(self, z: Tensor) -> Tensor:
        """The coordinates a user reads the posterior in, ``(n, D)``: every latent site's constrained
        values, flattened, on the log scale where the site's support is positive (a scale, a rate,
        an ordered vector of rates), as posteriors are compared on (docs/benchmarks.md)."""
        parts = []
        for name, value in self.constrain(z).items():
            flat = value.detach().reshape(value.shape[0], -1)
            if name in self._positive_sites:
                flat = flat.log()
            parts.append(flat)
        return torch.cat(parts, dim=1)

    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        """Constrained site values ``{site: (n, *site_shape)}`` of unconstrained ``(n, d)`` vectors."""
        return {name: self.transforms[name].inv(u) for name, u in self.unflatten(z).items()}

    # ------------------------------------------------------------------ observed sites
    @property
    def observed_sites(self) -> dict[str, Tensor]:
        """Observed site values ``{site: tensor}`` of the model run used at construction (the data;
        ``pyro.deterministic`` sites, which Pyro records as observed, are not among them)."""
        return {name: site["value"] for name, site in self._trace.nodes.items() if _is_data(site)}

    @property
    def deterministic_sites(self) -> list[str]:
        """Names of the model's ``pyro.deterministic`` sites, in the order the model records them."""
        return [name for name, site in self._trace.nodes.items() if _is_deterministic(site)]

    def site_dims(self, name: str) -> list[str]:
        """ArviZ dimension names of a site's value: plate names for plate dims, else ``site_dim_i``."""
        site = self._trace.nodes[name]
        shape = site["value"].shape
        batch_ndim = len(site["fn"].batch_shape)
        plates = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}
        names = [f"{name}_dim_{i}" for i in range(len(shape))]
        for i in range(batch_ndim):  # batch dim i sits at i - batch_ndim counted from the right
            names[i] = plates.get(i - batch_ndim, names[i])
        return names

    @property
    def log_likelihood_shapes(self) -> dict[str, torch.Size]:
        """Shape of each observed site's pointwise log-likelihood at one particle: its batch shape
        (one entry per observation inside plates)."""
        return {name: self._trace.nodes[name]["fn"].batch_shape for name in self.observed_sites}

    @torch.no_grad()
    def pointwise_log_likelihood(self, z: Tensor) -> dict[str, Tensor]:
        """Log-likelihood of every observed value at each particle: ``{site: (n, *obs_shape)}``.

        The shape is the site's batch shape (one entry per observation inside plates), in the model's
        dtype; all ``n`` particles go through one model run (callers bound ``n``, see
        :func:`wgfinfer.outputs.log_likelihood_group`).
        """
        n = z.shape[0]
        obs_shapes = self.log_likelihood_shapes
        if self.batching == "vmap":

            def one(u: Tensor) -> dict[str, Tensor]:
                trace = self._single_trace(self._single_values(u)[0])
                logs = _site_log_probs(trace, obs_shapes)
                return {name: lp.expand(obs_shapes[name]) for name, lp in logs.items()}

            with _vmap_safe():
                return torch.func.vmap(one)(z.to(self._model_dtype))
        if self.batched:
            values = self._padded_values(z.to(self._model_dtype))[0]
            trace = self._run_conditioned(values, n)
            return {
                name: _particle_first(lp, self._particle_dim, n).reshape((n,) + obs_shapes[name])
                for name, lp in _site_log_probs(trace, obs_shapes).items()
            }
        per_particle: dict[str, list[Tensor]] = {name: [] for name in obs_shapes}
        constrained = self.constrain(z.to(self._model_dtype))
        for i in range(n):
            value = {k: v[i] for k, v in constrained.items()}
            with poutine.block():
                trace = poutine.trace(poutine.condition(self.model, data=value)).get_trace(
                    *self.model_args, **self.model_kwargs
                )
            for name, lp in _site_log_probs(trace, obs_shapes).items():
                per_particle[name].append(lp.expand(obs_shapes[name]))
        return {name: torch.stack(v) for name, v in per_particle.items()}

    # ------------------------------------------------------------------ site values per draw
    @torch.no_grad()
    def site_values(
        self,
        z: Tensor,
        names: Sequence[str],
        model_args: Sequence[Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        predictive: bool = False,
        generator: torch.Generator | None = None,
        progress_bar: bool = False,
    ) -> dict[str, Tensor]:
        """Values of the named sites in the model run conditioned on each draw.

        Parameters
        ----------
        z : Tensor
            ``(n, d)`` unconstrained draws of the latent sites.
        names : sequence of str
            Sites to return (``pyro.deterministic`` sites, observed sites); a name the model does not
            record at these arguments is left out.
        model_args, model_kwargs : optional
            The model's arguments; by default the target's own (the data it was built with).
        predictive : bool, default False
            Draw the observed (data) sites from the model given each draw, as
            ``pyro.infer.Predictive`` does for a model called without data: the posterior
            predictive.  ``pyro.deterministic`` sites stay computed (from the drawn data where they
            depend on it).  Otherwise the data is kept as given.
        generator : torch.Generator, optional
            Source of the model's random numbers: torch's global generator is seeded from it inside
            :func:`torch.random.fork_rng`, so its state is the same after the call.
        progress_bar : bool, default False
            Show a tqdm bar ("pyro: sites") over the chunks of draws of the particle-plate run when
            there is more than one (``pyro.infer.Predictive``'s per-draw path has no bar).

        Returns
        -------
        dict of str to Tensor
            ``{site: (n, *shape)}``, ``shape`` the site's value shape in one model run.

        Notes
        -----
        With ``batching == "plate"`` the model runs once for all draws in the particle plate (in
        chunks), and the sites that do not depend on random draws are compared with single model
        runs at two draws; with ``"vmap"`` and no ``predictive``, under :func:`torch.func.vmap`.
        Otherwise, or when the batched run fails or disagrees (with a warning saying why), the sites
        come from ``pyro.infer.Predictive`` itself, one model run per draw.
        """
        if not names:
            return {}
        args = self.model_args if model_args is None else tuple(model_args)
        kwargs = self.model_kwargs if model_kwargs is None else dict(model_kwargs)
        model = _SampleData()(self.model) if predictive else self.model
        z = z.to(self._model_dtype)
        with _global_rng_from(generator, self.device):
            first = {name: v[0] for name, v in self.constrain(z[:1]).items()}
            reference = _conditioned_trace(model, first, args, kwargs)
            shapes = {name: reference.nodes[name]["value"].shape for name in names if name in reference.nodes}
            if not shapes:
                return {}
            reason = None
            try:
                if self.batching == "plate":
                    values = self._plate_site_values(model, z, shapes, args, kwargs, progress_bar)
                    self._check_site_values(model, z, values, args, kwargs)
                    return values
                if self.batching == "vmap" and not predictive:
                    return self._vmapped_site_values(model, z, shapes, args, kwargs)
            except Exception as exc:  # noqa: BLE001 - reported, then the per-draw path
                reason = f"{type(exc).__name__}: {first_line(exc)}"
            if reason is not None:
                warnings.warn(
                    f"the sites {sorted(shapes)} could not be computed for all draws at once ({reason}); "
                    "computing them with pyro.infer.Predictive, one model run per draw. Where a "
                    "site's computation reduces over every dim (w.mean(), w.sum()), reduce over the "
                    "event dims only (w.mean(-1)) so that a leading batch of draws stays apart.",
                    UserWarning,
                    stacklevel=3,
                )
            return self._predictive_site_values(model, z, shapes, args, kwargs)

    def _plate_site_values(
        self,
        model: Callable,
        z: Tensor,
        shapes: dict[str, torch.Size],
        args: tuple,
        kwargs: dict,
        progress_bar: bool = False,
    ) -> dict[str, Tensor]:
        chunks: dict[str, list[Tensor]] = {name: [] for name in shapes}
        with bars.chunk_bar(progress_bar, z.shape[0], self._chunk, "pyro: sites") as progress:
            for block in torch.split(z, self._chunk):
                values = self._padded_values(block)[0]
                with pyro.plate(_PARTICLE_PLATE, block.shape[0], dim=self._particle_dim):
                    trace = _conditioned_trace(model, values, args, kwargs)
                for name, shape in shapes.items():
                    chunks[name].append(_per_draw(trace.nodes[name]["value"], shape, block.shape[0], name))
                progress.update(block.shape[0])
        return {name: torch.cat(parts) for name, parts in chunks.items()}

    def _check_site_values(
        self, model: Callable, z: Tensor, values: dict[str, Tensor], args: tuple, kwargs: dict
    ) -> None:
        """Compare batched site values with two single model runs at each of the first two draws (a
        site whose two runs differ depends on random draws and is not compared)."""
        constrained = self.constrain(z[:2])
        for i in range(min(2, z.shape[0])):
            draw = {name: v[i] for name, v in constrained.items()}
            one, two = (_conditioned_trace(model, draw, args, kwargs) for _ in range(2))
            for name, batched in values.items():
                single = one.nodes[name]["value"]
                if not torch.equal(single, two.nodes[name]["value"]):
                    continue
                if not torch.allclose(batched[i], single.to(batched.dtype), rtol=1e-4, atol=1e-5):
                    raise ValueError(
                        f"site {name!r} at draw {i} is {batched[i].tolist()} in the particle plate "
                        f"but {single.tolist()} in a single model run"
                    )

    def _vmapped_site_values(
        self, model: Callable, z: Tensor, shapes: dict[str, torch.Size], args: tuple, kwargs: dict
    ) -> dict[str, Tensor]:
        def one(u: Tensor) -> dict[str, Tensor]:
            trace = _conditioned_trace(model, self._single_values(u)[0], args, kwargs)
            return {name: trace.nodes[name]["value"].expand(shape) for name, shape in shapes.items()}

        with _vmap_safe():
            return torch.func.vmap(one)(z)

    def _predictive_site_values(
        self, model: Callable, z: Tensor, shapes: dict[str, torch.Size], args: tuple, kwargs: dict
    ) -> dict[str, Tensor]:
        from pyro.infer import Predictive

        n = z.shape[0]
        predictive = Predictive(model, posterior_samples=self.constrain(z), return_sites=list(shapes))
        with poutine.block():
            out = predictive(*args, **kwargs)
        return {name: out[name].reshape((n,) + shape) for name, shape in shapes.items()}

    # ------------------------------------------------------------------ mini-batches
    def _data_plates(self) -> dict[str, int]:
        """Full sizes of the vectorised plates that hold observed sites."""
        plates: dict[str, int] = {}
        for site in self._trace.nodes.values():
            if _is_data(site):
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        plates[frame.name] = frame.size
        return plates

    def _resolve_subsample(self, subsample_size: int | dict[str, int] | None) -> dict[str, int]:
        """``{plate: mini-batch size}`` from the ``subsample_size`` option (checked)."""
        if subsample_size is None:
            return {}
        plates = self._plate_sizes
        if isinstance(subsample_size, bool) or not isinstance(subsample_size, (int, dict)):
            raise TypeError(
                "subsample_size must be an int or a dict {plate name: int}, got "
                f"{type(subsample_size).__name__}"
            )
        if isinstance(subsample_size, int):
            if len(plates) != 1:
                raise ValueError(
                    "subsample_size=int needs exactly one plate around the observed sites, found "
                    f"{sorted(plates) or 'none'}; pass a dict {{plate name: size}} instead"
                )
            subsample_size = {next(iter(plates)): subsample_size}
        for name, size in subsample_size.items():
            if name not in plates:
                raise ValueError(
                    f"subsample_size names plate {name!r}; the model's data plates are {sorted(plates)}"
                )
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= plates[name]:
                raise ValueError(
                    f"subsample_size for plate {name!r} must be an int in [1, {plates[name]}], got {size!r}"
                )
        return {name: size for name, size in subsample_size.items() if size < plates[name]}

    def _draw_indices(self) -> dict[str, Tensor]:
        """Fresh mini-batch indices (without replacement) for every subsampled plate."""
        gen = self._subsample_generator
        return {
            name: torch.randperm(self._plate_sizes[name], generator=gen)[:size].to(self.device)
            for name, size in self.subsample_sizes.items()
        }

    def _check_subsampling(self) -> None:
        """The model must index its data with the plate's indices, or mini-batches cannot work."""
        z = self.initial_point.to(self._model_dtype).unsqueeze(0)
        try:
            with torch.no_grad():
                self._eager_batched_log_joint(z, self._draw_indices())
        except Exception as exc:  # noqa: BLE001 - reported with the recipe
            raise ValueError(
                f"subsample_size={self.subsample_sizes}: the model failed on a mini-batch "
                f"({type(exc).__name__}: {exc}). Index every data tensor with the plate's indices, e.g. "
                "`with pyro.plate('data', N) as idx: pyro.sample('y', dist.Bernoulli(logits=x[idx] @ w), "
                "obs=y[idx])`."
            ) from exc
        if not self.batched:
            raise ValueError("subsample_size needs a model that can be evaluated for all particles at once")

    def training_log_density(self, z: Tensor) -> Tensor:
        """The potential the JKO steps train on: the log joint, or with ``subsample_size`` its
        unbiased mini-batch estimate (each data plate's log-likelihood scaled by ``N / B`` by Pyro
        itself, Mokrov 2022 sec. 4.4), with fresh indices on every call."""
        if not self.subsample_sizes:
            return self.log_density(z)
        with rejected_parameters_as_non_finite(z):
            log_joint = self._batched_log_joint(z, self._draw_indices())
        return self._checked(z, log_joint.to(z.dtype))

    # ------------------------------------------------------------------ log joint
    def _evaluate(self, z: Tensor, progress_bar: bool) -> Tensor:
        with rejected_parameters_as_non_finite(z):
            return self._log_joint(z, progress_bar)

    def _log_joint(self, z: Tensor, progress_bar: bool = False) -> Tensor:
        if not self.batched:
            return self._looped_log_joint(z, progress_bar)
        # bound the (particles x observations) intermediates of large data sets
        parts = []
        with bars.chunk_bar(progress_bar, z.shape[0], self._chunk, "pyro: log joint") as progress:
            for chunk in torch.split(z, self._chunk):
                parts.append(self._batched_log_joint(chunk))
                progress.update(chunk.shape[0])
        return torch.cat(parts)

    def _single_values(self, u_flat: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained site values of one particle's ``(d,)`` unconstrained vector, and the
        log-Jacobian."""
        values, log_jacobian = {}, u_flat.new_zeros(())
        for name, block in zip(self.site_names, torch.split(u_flat, self._sizes), strict=True):
            u = block.reshape(self._unconstrained_shapes[name])
            transform = self.transforms[name]
            c = transform.inv(u)
            log_jacobian = log_jacobian - transform.log_abs_det_jacobian(c, u).sum()
            values[name] = c
        return values, log_jacobian

    def _single_trace(self, values: dict[str, Tensor], indices: dict[str, Tensor] | None = None) -> Any:
        data = {**values, **(indices or {})}
        with poutine.block():
            return poutine.trace(poutine.condition(self.model, data=data)).get_trace(
                *self.model_args, **self.model_kwargs
            )

    def _single_log_joint(self, u_flat: Tensor, indices: dict[str, Tensor] | None = None) -> Tensor:
        """The log joint (log-Jacobian included) of one particle, written for :func:`torch.func.vmap`."""
        values, total = self._single_values(u_flat)
        trace = self._single_trace(values, indices)
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and type(site["fn"]).__name__ != "_Subsample":
                total = total + site["log_prob_sum"]
        return total

    def _vmapped_log_joint(self, z: Tensor, indices: dict[str, Tensor] | None = None) -> Tensor:
        with _vmap_safe():
            out = torch.func.vmap(lambda u: self._single_log_joint(u, indices))(z.to(self._model_dtype))
        return out.to(z.dtype)

    def _looped_log_joint(self, z: Tensor, progress_bar: bool = False) -> Tensor:
        params = self.unflatten(z.to(self._model_dtype))
        out = []
        with bars.chunk_bar(progress_bar, z.shape[0], 1, "pyro: log joint") as progress:
            for i in range(z.shape[0]):
                out.append(-self._potential_fn({name: v[i] for name, v in params.items()}))
                progress.update(1)
        return torch.stack(out).to(z.dtype)

    def _padded_values(self, z: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained values shaped for the particle plate, and the log-Jacobian per particle."""
        n = z.shape[0]
        values, log_jacobian = {}, torch.zeros(n, dtype=z.dtype, device=z.device)
        for name, u in self.unflatten(z).items():
            transform = self.transforms[name]
            c = transform.inv(u)
            # log |d c / d u| = - log |d u / d c|
            log_jacobian = log_jacobian - transform.log_abs_det_jacobian(c, u).reshape(n, -1).sum(-1)
            pad = -self._particle_dim - 1 - self._batch_ndims[name]
            values[name] = c.reshape((n,) + (1,) * pad + self.site_shapes[name])
        return values, log_jacobian

    def _run_conditioned(
        self, values: dict[str, Tensor], n: int, indices: dict[str, Tensor] | None = None
    ) -> Any:
        # conditioning a plate's name sets its subsample indices; Pyro then scales by N / B
        data = {**values, **(indices or {})}
        with poutine.block(), pyro.plate(_PARTICLE_PLATE, n, dim=self._particle_dim):
            return poutine.trace(poutine.condition(self.model, data=data)).get_trace(
                *self.model_args, **self.model_kwargs
            )

    @property
    def jit_reason(self) -> str | None:
        """Why the log joint is evaluated without :func:`torch.jit.trace` recordings (``None`` while
        they are used: see :class:`wgfinfer.traced_potential.TracedPotential`)."""
        return self._potential.reason

    def _batched_log_joint(self, z: Tensor, indices: dict[str, Tensor] | None = None) -> Tensor:
        """The log joint of ``(n, d)`` particles, replayed from a recording where there is one."""
        return self._potential(z, indices)

    def _eager_batched_log_joint(self, z: Tensor, indices: dict[str, Tensor] | None = None) -> Tensor:
        """The log joint of ``(n, d)`` particles, the model run through Pyro."""
        if self.batching == "vmap":
            return self._vmapped_log_joint(z, indices)
        return self._plate_log_joint(z, indices)

    def _plate_log_joint(self, z: Tensor, indices: dict[str, Tensor] | None = None) -> Tensor:
        n = z.shape[0]
        values, log_jacobian = self._padded_values(z.to(self._model_dtype))
        trace = self._run_conditioned(values, n, indices)
        trace.compute_log_prob()
        total = log_jacobian
        for site in trace.nodes.values():
            if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
                continue
            total = total + _particle_first(site["log_prob"], self._particle_dim, n).reshape(n, -1).sum(-1)
        return total.to(z.dtype)

    def _choose_batching(self) -> str:
        """The first of ``"plate"``, ``"vmap"`` that agrees with Pyro's potential on a few particles,
        else ``"loop"`` with a warning naming both failures."""
        gen = torch.Generator().manual_seed(0)
        z = 0.5 * torch.randn(3, self.dim, generator=gen, dtype=torch.float64).to(self._model_dtype)
        looped = self._looped_log_joint(z).detach()
        reasons = []
        for name, candidate in (("plate", self._plate_log_joint), ("vmap", self._vmapped_log_joint)):
            try:
                with torch.no_grad():
                    batched = candidate(z)
            except Exception as exc:  # noqa: BLE001 - any failure means this way does not work
                reasons.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
                continue
            if batched.shape == looped.shape and torch.allclose(batched, looped, rtol=1e-4, atol=1e-3):
                return name
            reasons.append(f"{name}: log joint {batched.tolist()} differs from Pyro's {looped.tolist()}")
        warnings.warn(
            "the model could not be evaluated for all particles at once, neither in a particle plate "
            "nor under torch.func.vmap (" + "; ".join(reasons) + "); falling back to a slow "
            "per-particle loop. Avoid Python control flow on sampled values, .item() and in-place "
            "changes of sampled values in the model, or write it with pyro.plate for data dimensions "
            "and without hard-coded batch shapes.",
            UserWarning,
            stacklevel=3,
        )
        return "loop"


def _validation_off() -> contextlib.AbstractContextManager[None]:
    """Pyro's argument validation off, while the log joint is traced (as Pyro's ``jit_compile=True``
    does: its data-dependent checks cannot be recorded)."""
    return pyro.validation_enabled(False)


@contextlib.contextmanager
def _vmap_safe() -> Iterator[None]:
    """Pyro's and torch's argument validation off: their data-dependent checks (``if not
    valid.all()``) cannot run under :func:`torch.func.vmap`."""
    with pyro.validation_enabled(False):
        yield


class _SampleData(Messenger):
    """Draw the observed (data) sites from their distributions instead of keeping the data, as a
    posterior predictive needs; ``pyro.deterministic`` sites keep their computed values.

    Placed inside ``poutine.condition`` (which sets the latent sites afterwards), it sees the data
    sites as the model declares them, observed, and the latent sites not yet conditioned.
    """

    def _pyro_sample(self, msg: Any) -> None:
        if msg["is_observed"] and not (msg.get("infer") or {}).get("_deterministic", False):
            msg["is_observed"] = False
            msg["value"] = None


def _conditioned_trace(model: Callable, values: dict[str, Tensor], args: tuple, kwargs: dict) -> Any:
    """The trace of ``model(*args, **kwargs)`` with its latent sites set to ``values``."""
    with poutine.block():
        return poutine.trace(poutine.condition(model, data=values)).get_trace(*args, **kwargs)


def _per_draw(value: Tensor, shape: torch.Size, n: int, name: str) -> Tensor:
    """A site's value from the particle-plate run as ``(n, *shape)``: ``shape`` (the value in one run)
    must be its trailing dims and the particles its first, any others of size 1."""
    k = len(shape)
    lead, tail = value.shape[: value.ndim - k], value.shape[value.ndim - k :]
    if value.ndim < k or tail != shape or any(d != 1 for d in lead[1:]) or (lead and lead[0] not in (1, n)):
        raise ValueError(
            f"site {name!r} has shape {tuple(value.shape)} in the particle plate of {n} draws, which is "
            f"not {n} draws of its shape {tuple(shape)} in one model run"
        )
    return value.reshape((lead[0] if lead else 1,) + shape).expand((n,) + shape)


@contextlib.contextmanager
def _global_rng_from(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Run with torch's global generator (the one Pyro's distributions draw from) seeded from
    ``generator`` (:func:`wgfinfer._rng.forked_global_rng`); without a generator, run as is."""
    if generator is None:
        yield
        return
    with forked_global_rng(seed_from(generator), device):
        yield


def _is_deterministic(site: dict[str, Any]) -> bool:
    """A ``pyro.deterministic`` site (Pyro records it as an observed, masked ``Delta`` sample site)."""
    return site["type"] == "sample" and bool((site.get("infer") or {}).get("_deterministic", False))


def _is_data(site: dict[str, Any]) -> bool:
    """An observed sample site that is data, not a ``pyro.deterministic`` value."""
    return site["type"] == "sample" and site["is_observed"] and not _is_deterministic(site)


def _particle_first(lp: Tensor, particle_dim: int, n: int) -> Tensor:
    """A site's log-prob with the particle dim moved first and broadcast to ``n``.

    A site whose log-prob does not reach the particle dim does not depend on the particles; it gets a
    leading axis of size ``n``.
    """
    lp = lp.movedim(particle_dim, 0) if lp.ndim >= -particle_dim else lp.unsqueeze(0)
    return lp.expand((n,) + lp.shape[1:])


def _site_log_probs(trace: Any, names: Any) -> dict[str, Tensor]:
    """Scaled log-probabilities of the named sites of a trace (the model's observed sites)."""
    trace.compute_log_prob(site_filter=lambda name, site: name in names)
    return {name: trace.nodes[name]["log_prob"] for name in names}


def print_summary(samples: dict[str, Tensor], prob: float) -> None:
    """Print Pyro's MCMC-style table of ``samples`` (draws in the first dimension, no chains)."""
    from pyro.infer.mcmc.util import print_summary as pyro_print_summary

    pyro_print_summary(samples, prob=prob, group_by_chain=False)


def _positive_support(constraint: Any) -> bool:
    """Whether a site's support lies in the positive orthant (positive, positive ordered, or a
    positive lower bound)."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    positive_ordered = type(constraints.positive_ordered_vector)
    if constraint is constraints.positive or isinstance(constraint, positive_ordered):
        return True
    lower = getattr(constraint, "lower_bound", None)
    return isinstance(lower, (int, float)) and lower >= 0 and not hasattr(constraint, "upper_bound")

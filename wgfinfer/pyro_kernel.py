"""``WGFKernel``: a trained flow as a Pyro ``MCMCKernel`` (independence Metropolis-Hastings).

With this kernel ``pyro.infer.MCMC`` runs an independence Metropolis-Hastings (IMH) chain whose
proposals are fresh draws of the flow of a :class:`~wgfinfer.WGFSampler`.  The flow gives every
draw ``z'`` its exact log-density ``log q(z')``, so the Metropolis-Hastings ratio

    ``p(z') q(z) / (p(z) q(z')) = w(z') / w(z)``,  ``w = exp(lp - log q)``,

is exact, with ``lp`` the model's log joint on the unconstrained space (log-Jacobians included).
The chain therefore leaves the posterior invariant whatever the quality of the flow, and converges to
it as long as the flow puts mass wherever the posterior does; a poor flow only lowers the acceptance
rate.  Everything ``MCMC`` offers then works unchanged: ``get_samples``, ``summary``,
``diagnostics`` and ``arviz.from_pyro`` (ArviZ 0.x).  :func:`from_mcmc` converts such a run to ArviZ
data through wgfinfer's own converter instead, which works on ArviZ 0.x and 1.x (whose
``arviz_base`` has no ``from_pyro``) and adds what ``from_pyro`` lacks for these models.
"""

from __future__ import annotations

import math
import multiprocessing
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor

from wgfinfer._validation import check_positive_int
from wgfinfer.outputs import inference_data, weighted_draws
from wgfinfer.sampler import WGFSampler

_STREAM = 0x57474B  # separates the kernel's random stream from the sampler's own (same seed)


class WGFKernel(MCMCKernel):
    """Independence Metropolis-Hastings with a Wasserstein-gradient-flow proposal, for ``pyro.infer.MCMC``.

    Parameters
    ----------
    model : callable, optional
        A Pyro model; a new :class:`~wgfinfer.WGFSampler` is built from it and ``sampler_kwargs``.
    sampler : WGFSampler, optional
        Instead of ``model``: a sampler built with ``model=`` (trained or not).  A trained sampler is
        reused as it is, which also saves the training time on every later ``MCMC.run``.
    block_size : int, default 1024
        Proposals are drawn from the flow, and their log joint evaluated, this many at a time.
    **sampler_kwargs
        Any other :class:`~wgfinfer.WGFSampler` keyword (``scheme``, ``n_steps``, ``init``,
        ``seed``, ...), when ``model`` is given.

    Notes
    -----
    *Training replaces warm-up.*  :meth:`setup` (called by ``MCMC.run(*args, **kwargs)``) runs
    ``sampler.run(*args, **kwargs)``: it trains the JKO steps not done yet (all of them on a new
    sampler, none on a trained one) and points the target at the data of this run.  No adaptation
    happens during ``warmup_steps``, so ``MCMC(kernel, num_samples, warmup_steps=0)`` is the natural
    call; warm-up steps, if asked for, are ordinary IMH steps whose states are discarded.

    *Initial state.*  Unless ``MCMC`` is given ``initial_params``, every chain starts from one draw
    picked with probability proportional to its weight ``w`` among ``block_size`` fresh flow draws
    (sampling-importance-resampling), which is close to a posterior draw already.  Given
    ``initial_params`` (unconstrained values), their ``log q`` is computed by inverting the flow.

    *Target.*  The chain targets the model's posterior itself: ``lp`` is the untempered log joint on
    the full data; ``beta`` and ``subsample_size`` of the sampler only shape the proposal.

    *Random numbers* come from a ``torch.Generator`` seeded from the sampler's ``seed`` and a counter
    of chains run by this kernel object; global RNG state is never drawn from, so a new kernel with
    the same settings reproduces its chains.  Parallel chains (``num_chains > 1`` with enough CPUs)
    run in worker processes, each on a copy of the kernel; there the stream also mixes in
    ``torch.initial_seed()``, which Pyro sets differently for each worker, so that parallel chains
    differ, and ``torch.set_num_threads(1)`` is called (forked OpenMP thread pools can deadlock, and
    one thread per chain process avoids oversubscription anyway).  Pass a trained ``sampler=`` for
    parallel chains: otherwise every worker trains its own copy of the flow, and so does the main
    process to learn the transforms.

    ``MCMC`` constrains the chain's unconstrained site values with :attr:`transforms` (Pyro's own
    bijections of the model's sites); ``diagnostics()`` reports ``divergences`` (always empty, IMH
    integrates nothing) and ``acceptance rate``; ``arviz.from_pyro`` reads :attr:`model`.  Its
    ``log_likelihood`` group comes from ``pyro.infer.Predictive``'s vectorized trace, exactly as with
    ``NUTS``: for a latent site with event dims (``.to_event(1)``) Pyro does not pad the draws to the
    model's plate dims, ArviZ warns and omits the group (``from_pyro(mcmc, log_likelihood=False)``
    silences it; :meth:`WGFSampler.to_inference_data` computes it in its own way).

    Examples
    --------
    >>> from pyro.infer import MCMC
    >>> kernel = WGFKernel(model, n_steps=10, progress_bar=False)  # doctest: +SKIP
    >>> mcmc = MCMC(kernel, num_samples=1000, warmup_steps=0)  # doctest: +SKIP
    >>> mcmc.run(x, y)  # doctest: +SKIP
    >>> mcmc.summary()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any = None,
        *,
        sampler: WGFSampler | None = None,
        block_size: int = 1024,
        **sampler_kwargs: Any,
    ) -> None:
        if sampler is None:
            if model is None:
                raise TypeError(
                    "WGFKernel needs a Pyro model (with WGFSampler keywords) or sampler=WGFSampler"
                )
            if "log_density" in sampler_kwargs:
                raise TypeError("WGFKernel samples a Pyro model; it takes no log_density")
            sampler = WGFSampler(model=model, **sampler_kwargs)
        else:
            if model is not None or sampler_kwargs:
                given = ["model"] * (model is not None) + sorted(sampler_kwargs)
                raise TypeError(
                    f"pass either a model with WGFSampler keywords or sampler=, not both (got sampler= "
                    f"and {', '.join(given)}); configure the sampler when building it"
                )
            if not isinstance(sampler, WGFSampler):
                raise TypeError(f"sampler must be a wgfinfer.WGFSampler, got {type(sampler).__name__}")
            if sampler.model is None:
                raise ValueError(
                    "sampler was built from a log_density; WGFKernel needs a sampler built with "
                    "model=<Pyro model>, since MCMC works with the model's latent sites"
                )
        self.sampler = sampler
        self.block_size = check_positive_int("block_size", block_size)
        self._chains_started = 0
        self._initial_params: dict[str, Tensor] | None = None
        self._generator: torch.Generator | None = None
        self._reset_counters(0)
        self._clear_chain()

    # ------------------------------------------------------------------ what MCMC reads
    @property
    def model(self) -> Any:
        """The Pyro model (read by ``arviz.from_pyro``)."""
        return self.sampler.model

    @property
    def transforms(self) -> dict[str, Any] | None:
        """Pyro's constrained-to-unconstrained bijection of every latent site (``None`` before the
        model has been traced, i.e. before the first :meth:`setup` of an untrained sampler)."""
        target = self.sampler.target
        return None if target is None else target.transforms

    @property
    def initial_params(self) -> dict[str, Tensor] | None:
        """Unconstrained site values the chain starts from (set by :meth:`setup`, or by ``MCMC``'s
        ``initial_params`` before it)."""
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor] | None) -> None:
        self._initial_params = params

    # ------------------------------------------------------------------ MCMCKernel interface
    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        """Train the flow if needed and pick the chain's initial state.

        Parameters
        ----------
        warmup_steps : int
            Steps ``MCMC`` will discard; they need no adaptation here (training replaces warm-up).
        *args, **kwargs
            The model's arguments, as given to ``MCMC.run``.
        """
        if multiprocessing.parent_process() is not None:
            # a worker of MCMC's parallel chains: forked OpenMP thread pools can deadlock, and one
            # thread per chain process avoids oversubscribing the CPUs anyway
            torch.set_num_threads(1)
        self.sampler.run(*args, **kwargs)
        self._reset_counters(warmup_steps)
        self._clear_chain()
        self._generator = torch.Generator().manual_seed(self._stream_seed())
        self._chains_started += 1
        if self._initial_params is not None:
            z = self._flatten(self._initial_params)
            self._set_state(z, self._log_weight_at(z))
        else:  # sampling-importance-resampling from a block of draws not used as proposals later
            z, log_q, lp = self._draw()
            lw = (lp - log_q).double()
            pick = int(torch.multinomial((lw - lw.max()).exp(), 1, generator=self._generator))
            self._set_state(z[pick], float(lw[pick]))
        self._initial_params = self._params

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One IMH step: propose a flow draw ``z'``, accept it with probability ``min(1, w(z') / w(z))``.

        Parameters
        ----------
        params : dict of str to Tensor
            The current unconstrained site values (those this kernel returned last, or any others).

        Returns
        -------
        dict of str to Tensor
            The next state, unconstrained, one entry per latent site.
        """
        if self._generator is None:
            raise RuntimeError("WGFKernel.sample() needs setup() first (MCMC.run calls it)")
        if not self._is_current(params):
            z = self._flatten(params)
            self._set_state(z, self._log_weight_at(z))
        if self._next >= len(self._block_lw):
            self._refill()
        i = self._next
        self._next += 1
        # accept iff log u < lw' - lw; a NaN difference (both weights zero) rejects
        accepted = self._block_log_u[i] < self._block_lw[i] - self._lw
        if accepted:
            self._set_state(self._block_z[i], self._block_lw[i])
            self._accepted_all += 1
        self._t += 1
        if accepted and self._t > self._warmup_steps:
            self._accepted += 1
        return dict(self._params)

    def logging(self) -> OrderedDict:
        """Acceptance rate so far (warm-up included), for the progress bar."""
        return OrderedDict([("acc. rate", f"{self._accepted_all / max(1, self._t):.3f}")])

    def diagnostics(self) -> dict[str, Any]:
        """``divergences`` (an empty list: IMH has no trajectories to diverge) and ``acceptance rate``
        (fraction of post-warm-up proposals accepted)."""
        n = self._t - self._warmup_steps
        return {"divergences": [], "acceptance rate": self._accepted / n if n > 0 else float("nan")}

    def cleanup(self) -> None:
        """Forget the chain's state and proposal block (counters stay for :meth:`diagnostics`)."""
        self._clear_chain()
        self._initial_params = None

    def __repr__(self) -> str:
        return f"WGFKernel({self.sampler!r}, block_size={self.block_size})"

    # ------------------------------------------------------------------ internals
    def _reset_counters(self, warmup_steps: int) -> None:
        self._warmup_steps = int(warmup_steps)
        self._t = 0
        self._accepted = 0  # after warm-up
        self._accepted_all = 0

    def _clear_chain(self) -> None:
        self._params: dict[str, Tensor] = {}
        self._lw = -math.inf
        self._block_z: Tensor | None = None
        self._block_lw: list[float] = []
        self._block_log_u: list[float] = []
        self._next = 0

    def _stream_seed(self) -> int:
        key = [self.sampler.seed % 2**63, _STREAM, self._chains_started]
        if multiprocessing.parent_process() is not None:  # a worker of MCMC's parallel chains
            key.append(torch.initial_seed())
        return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))

    def _draw(self) -> tuple[Tensor, Tensor, Tensor]:
        """A block of flow draws, their exact ``log q`` and the untempered full-data log joint."""
        assert self._generator is not None
        return weighted_draws(self.sampler.flow, self.sampler.target, 1.0, self.block_size, self._generator)

    def _refill(self) -> None:
        assert self._generator is not None
        z, log_q, lp = self._draw()
        log_u = torch.rand(self.block_size, generator=self._generator, dtype=torch.float64).log()
        self._block_z = z
        self._block_lw = (lp - log_q).double().tolist()
        self._block_log_u = log_u.tolist()
        self._next = 0

    def _set_state(self, z: Tensor, lw: float) -> None:
        target = self.sampler.target
        assert target is not None
        dtype = getattr(target, "_model_dtype", z.dtype)  # return sites in the model's dtype, like HMC
        blocks = target.unflatten(z.detach().unsqueeze(0))
        self._params = {name: v[0].to(dtype).clone() for name, v in blocks.items()}
        self._lw = lw

    def _is_current(self, params: dict[str, Tensor]) -> bool:
        if params.keys() != self._params.keys():
            return False
        return all(
            params[k] is v
            or (isinstance(params[k], Tensor) and params[k].dtype == v.dtype and torch.equal(params[k], v))
            for k, v in self._params.items()
        )

    def _flatten(self, params: dict[str, Tensor]) -> Tensor:
        target = self.sampler.target
        assert target is not None
        missing = sorted(set(target.site_names) - set(params))
        if missing:
            raise ValueError(f"params lack the latent site(s) {missing}; expected {target.site_names}")
        z = torch.cat([torch.as_tensor(params[name]).reshape(-1) for name in target.site_names])
        if z.shape != (target.dim,):
            raise ValueError(
                f"params hold {z.numel()} unconstrained values in all, the model's latent sites "
                f"{target.site_names} have {target.dim}"
            )
        return z.to(dtype=self.sampler.dtype, device=self.sampler.device)

    def _log_weight_at(self, z: Tensor) -> float:
        """``lp - log q`` at a point not drawn from the flow (its ``log q`` by inverting the flow)."""
        target = self.sampler.target
        assert target is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # reported below
            log_q = float(self.sampler.log_prob(z.unsqueeze(0))[0])
        with torch.no_grad():
            lp = float(target.log_density(z.unsqueeze(0))[0])
        if math.isnan(log_q):
            warnings.warn(
                "inverting the flow at the given state did not converge; its weight is set to 0, so the "
                "chain leaves it at the first proposal",
                RuntimeWarning,
                stacklevel=3,
            )
            return -math.inf
        return lp - log_q


def from_mcmc(
    mcmc: Any,
    *,
    log_likelihood: bool = True,
    posterior_predictive: bool = False,
    predictions_args: Sequence[Any] | None = None,
    predictions_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Any:
    """ArviZ data of a ``pyro.infer.MCMC`` run of :class:`WGFKernel`, on ArviZ 0.x and 1.x alike.

    The groups are those of :meth:`WGFSampler.to_inference_data`, built from the chains' states
    instead of fresh flow draws: ``posterior`` (the latent sites, and the ``pyro.deterministic``
    sites at each state), ``sample_stats`` (``lp``, the model's log joint on the unconstrained space,
    and an all-False ``diverging``), ``log_likelihood`` (observed sites only, also for latent sites
    with event dims, where ``az.from_pyro`` omits the group), ``observed_data``, and on request
    ``posterior_predictive`` and ``predictions``.  The attrs hold the sampler's and the chains'
    acceptance rates.

    Parameters
    ----------
    mcmc : pyro.infer.MCMC
        A run (``mcmc.run(...)`` done) whose kernel is a :class:`WGFKernel`.
    log_likelihood : bool, default True
        Include the pointwise ``log_likelihood`` group.
    posterior_predictive : bool, default False
        Add the ``posterior_predictive`` group (observed sites drawn given each state).
    predictions_args, predictions_kwargs : optional
        Add the ``predictions`` group: the model called with these arguments given each state.
    seed : int, optional
        Seed of the model's random numbers (posterior predictive, predictions); by default the
        sampler's generator advances.  Torch's global random state is not changed.

    Returns
    -------
    arviz.InferenceData (ArviZ 0.x) or xarray.DataTree (ArviZ >= 1.0)

    Raises
    ------
    TypeError
        If ``mcmc``'s kernel is not a :class:`WGFKernel`.
    RuntimeError
        If ``mcmc`` has not been run.
    """
    if isinstance(mcmc, WGFSampler):
        raise TypeError(
            "from_mcmc converts a pyro.infer.MCMC run of WGFKernel; for a WGFSampler itself use "
            "sampler.to_inference_data(num_samples, num_chains, ...)"
        )
    kernel = getattr(mcmc, "kernel", None)
    if not isinstance(kernel, WGFKernel):
        raise TypeError(
            f"from_mcmc converts a pyro.infer.MCMC run of WGFKernel, got a kernel of type "
            f"{type(kernel).__name__}; for other kernels use az.from_pyro(mcmc) (ArviZ 0.x)"
        )
    sampler, target = kernel.sampler, kernel.sampler.target
    try:
        samples = mcmc.get_samples(group_by_chain=True)
    except AttributeError:  # MCMC keeps no samples attribute before run()
        samples = {}
    if target is None or not samples:
        raise RuntimeError("the MCMC has no samples yet: call mcmc.run(...) first")
    num_chains, num_samples = samples[target.site_names[0]].shape[:2]
    n = num_chains * num_samples
    blocks = []
    for name in target.site_names:
        value = samples[name].reshape((n, *target.site_shapes[name]))
        blocks.append(target.transforms[name](value).reshape(n, -1))
    z = torch.cat(blocks, dim=-1).to(dtype=sampler.dtype, device=sampler.device)
    with torch.no_grad():
        lp = target.log_density(z)
    rates = mcmc.diagnostics().get("acceptance rate", {})
    attrs = {
        **sampler.attrs(),
        "kernel": "WGFKernel (independence Metropolis-Hastings)",
        "acceptance_rate": [float(rates[f"chain {i}"]) for i in range(len(rates))],
    }
    predictions = None
    if predictions_args is not None or predictions_kwargs is not None:
        predictions = (tuple(predictions_args or ()), dict(predictions_kwargs or {}))
    generator = sampler.generator if seed is None else torch.Generator().manual_seed(int(seed))
    return inference_data(
        None, target, 1.0, num_samples, num_chains, generator, log_likelihood, attrs=attrs,
        posterior_predictive=bool(posterior_predictive), predictions=predictions, draws=(z, lp),
    )  # fmt: skip

"""Posterior suite: wgfinfer with its defaults against Pyro NUTS (and NumPyro NUTS) on known posteriors.

The problems are those of :mod:`wgfinfer.problems.suite`: the thirteen posteriordb posteriors (packaged
reference moments, or those of ``--posteriordb DIR``'s reference draws), Neal's funnel in 10-D, a
0.7 / 0.3 Gaussian mixture and a Student-t (df 3) with exact references, eight schools centred and
non-centred and Bayesian logistic regression on five data sets with references from a long Pyro NUTS
run (non-centred for both eight-schools parameterisations), made once and cached as JSON in
``--reference-cache`` (default ``OUT/reference_cache``).

Per problem, in one process:

- ``wgf``: ``WGFSampler(model=...)`` (or ``WGFSampler(log_density, dim=d)``) with no settings but
  ``progress_bar=False`` and ``seed`` (``--scheme NAME``: that scheme with its own defaults), then
  4096 draws with their log-densities where the flow has them;
- ``nuts``: Pyro NUTS, ``jit_compile=True``, 1000 warmup + 1000 draws, one chain (a log density is
  given as a traced ``potential_fn``);
- ``numpyro``: NumPyro NUTS with the same counts, where NumPyro is installed (the optional ``bench``
  extra) and the script has a NumPyro version of the problem (:data:`NUMPYRO_PROBLEMS`; the
  package itself never imports JAX).

Metrics on the comparison coordinates (unconstrained scale, log of positive parameters): max |mean
error| in reference sds, the range of sd / reference sd, the PSIS k-hat of the draws' importance
weights (wgf with densities), the largest marginal KS distance to the exact CDFs (exact problems),
the mode-weight error (mixture), ESS (NUTS: min bulk ESS; wgf: importance-sampling ESS), the
warnings raised, and process CPU seconds beside wall seconds of ``run()`` + draws (NUTS: the whole
``MCMC.run``).  *NUTS quality* passes when max |mean err| <= 0.1, every sd ratio is in [0.9, 1.1]
and (where there is one) k-hat < 0.7.

    python benchmarks/posteriors.py --json /tmp/suite.json --out /tmp/suite   # everything
    python benchmarks/posteriors.py --problems funnel-10d sblri-blr --methods wgf nuts
    python benchmarks/posteriors.py --scheme pwgf --problems eight_schools-centered
    python benchmarks/posteriors.py --posteriordb ../shared/posteriordb   # DIR's data and draws
    python benchmarks/posteriors.py --from-json /tmp/suite.json --docs docs/benchmarks.md

Rows are printed and saved (``--json``) as they finish and the section ``posteriors-<scheme>``
(``posteriors-default`` without ``--scheme``) is rewritten into ``--out`` after each, so a run that
is cut off keeps what it measured; ``--stop-after MINUTES`` starts no new problem after that time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    add_output_arguments,
    load_run,
    machine,
    markdown_table,
    publish,
    record_row,
    timed,
)

import wgfinfer  # noqa: E402
from wgfinfer.errors import first_line  # noqa: E402
from wgfinfer.importance import importance_diagnostics  # noqa: E402
from wgfinfer.problems import posteriordb, suite  # noqa: E402

NUM_DRAWS = 4096
NUTS_WARMUP = 1000
NUTS_DRAWS = 1000
MEAN_TOL = 0.1
SD_RANGE = (0.9, 1.1)
KHAT_TOL = 0.7
METHODS = ("wgf", "nuts", "numpyro")
SCHEMES = ("icnn", "variational", "pwgf")


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[dict[str, str]]]:
    """Record every warning of a block as ``{"category", "message"}`` (first line of the message)."""
    found: list[dict[str, str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    seen = set()
    for w in caught:
        text = str(w.message).strip()
        entry = {"category": w.category.__name__, "message": text.splitlines()[0] if text else ""}
        if (entry["category"], entry["message"]) not in seen:
            seen.add((entry["category"], entry["message"]))
            found.append(entry)


# ---------------------------------------------------------------------------------- metrics
def ks_distance(u: np.ndarray) -> np.ndarray:
    """Kolmogorov-Smirnov distance of each column of CDF values ``(n, d)`` from uniform."""
    u = np.sort(np.asarray(u, dtype=np.float64), axis=0)
    n = u.shape[0]
    i = np.arange(1, n + 1)[:, None]
    return np.maximum((i / n - u).max(0), (u - (i - 1) / n).max(0))


def compare(coords: np.ndarray, ref: suite.Reference, problem: suite.Problem) -> dict[str, Any]:
    """Moments of draws ``(n, d)`` against the reference, on the comparison coordinates.

    Returns
    -------
    dict
        ``max_abs_mean_err`` (in reference sds) with its coordinate, ``sd_ratio_min`` /
        ``sd_ratio_max``, the per-coordinate ``mean_err`` and ``sd_ratio``, and where the reference
        has them ``max_ks`` (marginal KS distance to the exact CDFs) and ``mode_weight`` /
        ``mode_weight_err``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    finite = np.isfinite(coords).all(axis=1)
    out: dict[str, Any] = {"n_draws": int(coords.shape[0]), "n_nonfinite": int((~finite).sum())}
    coords = coords[finite]
    mean_err = (coords.mean(0) - ref.mean) / ref.sd
    sd_ratio = coords.std(0, ddof=1) / ref.sd
    worst = int(np.argmax(np.abs(mean_err)))
    out.update(
        max_abs_mean_err=float(np.abs(mean_err).max()),
        worst_mean_coordinate=ref.names[worst],
        sd_ratio_min=float(sd_ratio.min()),
        sd_ratio_max=float(sd_ratio.max()),
        mean_err=mean_err.tolist(),
        sd_ratio=sd_ratio.tolist(),
    )
    if ref.marginal_cdf is not None:
        out["max_ks"] = float(ks_distance(ref.marginal_cdf(coords)).max())
    if problem.mode_indicator is not None and ref.mode_weight is not None:
        weight = float(problem.mode_indicator(coords).mean())
        out.update(mode_weight=weight, mode_weight_err=weight - ref.mode_weight)
    return out


def quality(row: dict[str, Any]) -> tuple[bool, list[str]]:
    """The *NUTS quality* verdict of a row and the criteria it fails."""
    failed = []
    if row["max_abs_mean_err"] > MEAN_TOL:
        failed.append(f"mean err > {MEAN_TOL}")
    if row["sd_ratio_min"] < SD_RANGE[0] or row["sd_ratio_max"] > SD_RANGE[1]:
        failed.append(f"sd ratio outside [{SD_RANGE[0]}, {SD_RANGE[1]}]")
    if row.get("khat") is not None and not row["khat"] < KHAT_TOL:
        failed.append(f"k-hat >= {KHAT_TOL}")
    if row.get("n_nonfinite"):
        failed.append("non-finite draws")
    return not failed, failed


def min_bulk_ess(coords_by_chain: np.ndarray) -> float:
    """Smallest bulk ESS (ArviZ) over the coordinates of ``(n_chains, n_draws, d)`` draws."""
    import arviz as az

    return float(
        min(az.ess(coords_by_chain[:, :, j], method="bulk") for j in range(coords_by_chain.shape[2]))
    )


# ------------------------------------------------------------------------- problem loading
@dataclasses.dataclass
class Loaded:
    """A problem with its arguments and reference."""

    problem: suite.Problem
    args: tuple[Any, ...]
    reference: suite.Reference
    dim: int


def _pyro_nuts_draws(
    model: Callable[..., Any] | None,
    args: tuple[Any, ...],
    warmup: int,
    draws: int,
    seed: int,
    log_density: Callable[[torch.Tensor], torch.Tensor] | None = None,
    dim: int | None = None,
) -> tuple[dict[str, torch.Tensor], Any]:
    """One chain of Pyro NUTS (``jit_compile=True``) on a model, or on a log density as a traced
    ``potential_fn`` started at a standard-normal draw; returns the draws by site and the MCMC."""
    from pyro.infer import MCMC, NUTS

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    if model is not None:
        kernel = NUTS(model, jit_compile=True, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, warmup_steps=warmup, num_samples=draws, disable_progbar=True)
        mcmc.run(*args)
    else:
        assert log_density is not None and dim is not None
        x0 = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the harness's own trace: its deprecation is not NUTS's
            traced = torch.jit.trace(lambda x: -log_density(x), (x0,))
        kernel = NUTS(potential_fn=lambda params: traced(params["x"]))
        mcmc = MCMC(
            kernel, warmup_steps=warmup, num_samples=draws, initial_params={"x": x0}, disable_progbar=True
        )
        mcmc.run()
    return {k: v.detach() for k, v in mcmc.get_samples().items()}, mcmc


def make_reference(problem: suite.Problem, args: argparse.Namespace) -> suite.Reference:
    """The NUTS reference of a problem: read from the cache, or made by ``--reference-chains``
    chains of Pyro NUTS on :attr:`Problem.nuts_reference`'s model and cached."""
    spec = problem.nuts_reference
    assert spec is not None
    by_numpyro = args.reference_sampler == "numpyro"
    if by_numpyro and (problem.name not in NUMPYRO_PROBLEMS or spec.derive is not None):
        raise SystemExit(f"{problem.name}: no NumPyro reference in this script; use --reference-sampler pyro")
    key = spec.key + ("-numpyro" if by_numpyro else "") + ("-quick" if args.quick else "")
    path = args.reference_cache / f"{key}.json"
    names = problem.coordinate_names()
    if path.exists():
        saved = json.loads(path.read_text())
        ref = suite.Reference.from_json(saved["reference"])
        if list(ref.names) == names:
            print(f"{problem.name}: reference from {path}", flush=True)
            return ref
    chains, warmup, draws = args.reference_chains, args.reference_warmup, args.reference_draws
    if args.quick:
        chains, warmup, draws = 1, 10, 20
    sampler = "NumPyro" if by_numpyro else "Pyro"
    print(f"{problem.name}: reference by {sampler} NUTS, {chains} x ({warmup} + {draws}) ...", flush=True)
    model_args = spec.model_args()
    coords = []
    with timed() as clock:
        for chain in range(chains):
            if by_numpyro:
                samples = _numpyro_nuts_draws(problem.name, model_args, warmup, draws, seed=10_000 + chain)
            else:
                samples, _ = _pyro_nuts_draws(spec.model, model_args, warmup, draws, seed=10_000 + chain)
                if spec.derive is not None:
                    samples = spec.derive(dict(samples))
            coords.append(problem.coordinates(samples))
    model_name = f"{problem.name}'s NumPyro model" if by_numpyro else spec.model.__name__
    source = (
        f"{sampler} NUTS on {model_name}, {chains} chain{'s' if chains > 1 else ''} x "
        f"({warmup} warmup + {draws} draws), "
        f"{'' if by_numpyro else 'jit, '}seeds 10000+; {clock.wall:.0f} s"
    )
    ref = suite.reference_from_chains(names, np.stack(coords), source)
    if args.write_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "key": spec.key,
            "reference": ref.to_json(),
            "ess_bulk_min": min_bulk_ess(np.stack(coords)),
            "torch": torch.__version__,
            "pyro": pyro.__version__,
        }
        path.write_text(json.dumps(document, indent=1) + "\n")
        print(f"{problem.name}: reference cached in {path}", flush=True)
    return ref


def load(problem: suite.Problem, args: argparse.Namespace) -> Loaded:
    """Arguments and reference of a problem (making a NUTS reference if needed)."""
    model_args = () if problem.model_args is None else problem.model_args(args.posteriordb)
    reference = problem.reference(args.posteriordb)
    if reference is None:
        reference = make_reference(problem, args)
    return Loaded(problem, model_args, reference, len(reference.names))


# --------------------------------------------------------------------------------- methods
def _quick_scheme(name: str) -> Any:
    if name == "pwgf":
        return wgfinfer.PWGF(n_layers=2, n_samples=64, n_monitor=64, max_iter=20)
    if name == "variational":
        return wgfinfer.Variational(iters_per_step=5, hidden=(8,))
    return wgfinfer.ICNN(iters_per_step=5, hidden=(8,))


def run_wgf(loaded: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    """``WGFSampler`` with its defaults (or ``--scheme``), ``run()`` and 4096 draws."""
    problem = loaded.problem
    options: dict[str, Any] = {"progress_bar": False, "seed": args.seed}
    if args.scheme is not None:
        options["scheme"] = args.scheme
    if args.quick:
        options.update(scheme=_quick_scheme(args.scheme or "icnn"), n_steps=1)
    if problem.model is not None:
        sampler = wgfinfer.WGFSampler(model=problem.model, **options)
    else:
        sampler = wgfinfer.WGFSampler(problem.log_density, dim=problem.dim, **options)
    with recorded_warnings() as found, timed() as clock:
        sampler.run(*loaded.args)
        has_density = sampler.flow.has_density
        drawn = sampler.sample(NUM_DRAWS, return_log_prob=has_density, seed=args.seed + 1)
    z, log_q = drawn if has_density else (drawn, None)
    target = sampler.target
    row: dict[str, Any] = {
        "settings": f"{sampler.method} ("
        + ("--quick" if args.quick else "WGFSampler defaults" if args.scheme is None else "scheme defaults")
        + ")",
        "warnings": found,
        "cpu_s": clock.cpu,
        "wall_s": clock.wall,
        "khat": None,
        "ess": None,
        "ess_kind": "importance",
        # the checks after run(): which ran and which failed (None: could not run)
        "checks": {r["check"]: r["ok"] for r in sampler.checks},
        "steps": len(sampler.history),
        "stop_reason": sampler.stop_reason,
    }
    row.update(compare(loaded.problem.coordinates(target.samples(z)), loaded.reference, problem))
    if log_q is not None:
        with torch.no_grad():
            lp = target.log_density(z)
        try:
            diag = importance_diagnostics((lp.double() - log_q.double()).cpu())
        except ValueError as exc:  # NaN or +inf weights
            row["khat_error"] = first_line(exc)
        else:
            row.update(khat=float(diag["khat"]), ess=float(diag["ess_is"]))
    return row


def run_nuts(loaded: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    """Pyro NUTS, ``jit_compile=True``, ``--nuts-warmup`` + ``--nuts-draws`` (1000 + 1000), one chain."""
    problem = loaded.problem
    warmup, draws = (10, 20) if args.quick else (args.nuts_warmup, args.nuts_draws)
    with recorded_warnings() as found, timed() as clock:
        samples, mcmc = _pyro_nuts_draws(
            problem.model, loaded.args, warmup, draws, args.seed, problem.log_density, problem.dim
        )
    coords = problem.coordinates(samples)
    divergences = mcmc.diagnostics().get("divergences", {})
    row: dict[str, Any] = {
        "settings": f"Pyro NUTS jit, {warmup} + {draws}, 1 chain",
        "warnings": found,
        "cpu_s": clock.cpu,
        "wall_s": clock.wall,
        "khat": None,
        "ess": min_bulk_ess(coords[None]),
        "ess_kind": "min bulk",
        "divergences": int(sum(len(v) for v in divergences.values())),
    }
    row.update(compare(coords, loaded.reference, problem))
    return row


# ---------------------------------------------------------------------------------- NumPyro
def _numpyro_available() -> str | None:
    """``None`` when NumPyro and JAX import, else why not."""
    if os.environ.get("OMP_NUM_THREADS") == "1":  # one XLA thread too, as for torch
        os.environ.setdefault(
            "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    try:
        import jax  # noqa: F401
        import numpyro
    except ImportError as exc:
        return f"not installed ({exc})"
    numpyro.set_platform("cpu")
    numpyro.enable_x64()
    return None


def _numpyro_regression(kind: str) -> Callable[..., Any]:
    """NumPyro versions of the posteriordb regressions (``linear_regression_flat``,
    ``kidscore_interaction``, ``blr``), same site names and supports."""
    import numpyro
    import numpyro.distributions as nd

    def model(X: Any, y: Any) -> None:
        k = X.shape[1]
        if kind == "blr":
            beta = numpyro.sample("beta", nd.Normal(0.0, 10.0).expand([k]).to_event(1))
            sigma = numpyro.sample("sigma", nd.HalfNormal(10.0))
        else:
            beta = numpyro.sample("beta", nd.ImproperUniform(nd.constraints.real, (), (k,)))
            if kind == "flat":
                sigma = numpyro.sample("sigma", nd.ImproperUniform(nd.constraints.positive, (), ()))
            else:
                sigma = numpyro.sample("sigma", nd.HalfCauchy(2.5))
        numpyro.sample("y", nd.Normal(X @ beta, sigma), obs=y)

    return model


def _numpyro_models() -> dict[str, Callable[[], Any]]:
    """Problem name -> ``() -> (model or None, potential_fn or None)``; imports JAX when called."""

    def regression(kind: str) -> Callable[[], Any]:
        return lambda: (_numpyro_regression(kind), None)

    def potential(name: str) -> Callable[[], Any]:
        def build() -> tuple[None, Callable[[Any], Any]]:
            import jax.numpy as jnp
            from jax.scipy.special import gammaln, logsumexp

            if name == "funnel-10d":

                def log_p(x: Any) -> Any:
                    v, rest = x[0], x[1:]
                    s = suite.FUNNEL_SCALE
                    return (
                        -0.5 * (v / s) ** 2 - 0.5 * jnp.sum(rest**2) * jnp.exp(-v) - 0.5 * rest.shape[0] * v
                    )
            elif name == "student_t-df3-4d":
                nu = suite.STUDENT_DF
                const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * jnp.log(nu * jnp.pi)

                def log_p(x: Any) -> Any:
                    return jnp.sum(const - 0.5 * (nu + 1) * jnp.log1p(x**2 / nu))
            else:
                weights = jnp.log(jnp.asarray(suite.MIXTURE_WEIGHTS))
                centres = jnp.asarray([1.0, -1.0])[:, None] * suite.MIXTURE_OFFSET

                def log_p(x: Any) -> Any:
                    return logsumexp(weights - 0.5 * jnp.sum((x[None] - centres) ** 2, axis=-1))

            return None, lambda x: -log_p(x)

        return build

    def eight_schools(centred: bool) -> Callable[[], Any]:
        def build() -> tuple[Callable[..., Any], None]:
            import numpyro
            import numpyro.distributions as nd

            def model(sigma: Any, y: Any) -> None:
                mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
                tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
                with numpyro.plate("school", sigma.shape[0]):
                    if centred:
                        theta = numpyro.sample("theta", nd.Normal(mu, tau))
                    else:
                        theta = mu + tau * numpyro.sample("theta_trans", nd.Normal(0.0, 1.0))
                    numpyro.sample("y", nd.Normal(theta, sigma), obs=y)

            return model, None

        return build

    def logistic() -> tuple[Callable[..., Any], None]:
        import numpyro
        import numpyro.distributions as nd

        from wgfinfer.problems.logistic import PRIOR_RATE, PRIOR_SHAPE

        def model(x: Any, y: Any) -> None:
            alpha = numpyro.sample("alpha", nd.Gamma(PRIOR_SHAPE, PRIOR_RATE))
            w = numpyro.sample("w", nd.Normal(0.0, alpha**-0.5).expand([x.shape[1]]).to_event(1))
            numpyro.sample("y", nd.Bernoulli(logits=x @ w), obs=y)

        return model, None

    def kilpisjarvi() -> tuple[Callable[..., Any], None]:
        import numpyro
        import numpyro.distributions as nd

        def model(x: Any, y: Any, pmualpha: Any, psalpha: Any, pmubeta: Any, psbeta: Any) -> None:
            alpha = numpyro.sample("alpha", nd.Normal(pmualpha, psalpha))
            beta = numpyro.sample("beta", nd.Normal(pmubeta, psbeta))
            sigma = numpyro.sample("sigma", nd.ImproperUniform(nd.constraints.positive, (), ()))
            numpyro.sample("y", nd.Normal(alpha + beta * x, sigma), obs=y)

        return model, None

    def gp_regr() -> tuple[Callable[..., Any], None]:
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as nd

        def model(x: Any, y: Any) -> None:
            rho = numpyro.sample("rho", nd.Gamma(25.0, 4.0))
            alpha = numpyro.sample("alpha", nd.HalfNormal(2.0))
            sigma = numpyro.sample("sigma", nd.HalfNormal(1.0))
            sq = (x[:, None] - x[None, :]) ** 2
            cov = alpha**2 * jnp.exp(-0.5 * sq / rho**2) + sigma * jnp.eye(x.shape[0])
            numpyro.sample("y", nd.MultivariateNormal(jnp.zeros(x.shape[0]), cov), obs=y)

        return model, None

    def diamonds() -> tuple[Callable[..., Any], None]:
        import numpyro
        import numpyro.distributions as nd

        def model(Xc: Any, y: Any) -> None:
            b = numpyro.sample("b", nd.Normal(0.0, 1.0).expand([Xc.shape[1]]).to_event(1))
            intercept = numpyro.sample("Intercept", nd.StudentT(3.0, 8.0, 10.0))
            sigma = numpyro.sample("sigma", nd.TruncatedDistribution(nd.StudentT(3.0, 0.0, 10.0), low=0.0))
            numpyro.sample("y", nd.Normal(intercept + Xc @ b, sigma), obs=y)

        return model, None

    def arma11() -> tuple[Callable[..., Any], None]:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as nd

        def model(y: Any) -> None:
            mu = numpyro.sample("mu", nd.Normal(0.0, 10.0))
            phi = numpyro.sample("phi", nd.Normal(0.0, 2.0))
            theta = numpyro.sample("theta", nd.Normal(0.0, 2.0))
            sigma = numpyro.sample("sigma", nd.HalfCauchy(2.5))
            previous = jnp.concatenate([mu[None], y[:-1]])

            def step(err: Any, inputs: Any) -> tuple[Any, Any]:
                y_t, y_prev = inputs
                new = y_t - (mu + phi * y_prev + theta * err)
                return new, new

            _, errors = jax.lax.scan(step, jnp.zeros(()), (y, previous))
            numpyro.sample("err", nd.Normal(0.0, sigma).expand([y.shape[0]]).to_event(1), obs=errors)

        return model, None

    table: dict[str, Callable[[], Any]] = {
        name: potential(name) for name in ("funnel-10d", "student_t-df3-4d", "mixture-0.7-0.3-4d")
    }
    table["eight_schools-centered"] = eight_schools(True)
    table["eight_schools-noncentered"] = eight_schools(False)
    for name in (
        "kidiq_with_mom_work-kidscore_mom_work",
        "earnings-earn_height",
        "earnings-logearn_height_male",
        "mesquite-logmesquite",
        "nes1996-nes",
    ):
        table[name] = regression("flat")
    table["kidiq-kidscore_interaction"] = regression("half_cauchy")
    table["sblri-blr"] = regression("blr")
    table["kilpisjarvi_mod-kilpisjarvi"] = kilpisjarvi
    table["gp_pois_regr-gp_regr"] = gp_regr
    table["diamonds-diamonds"] = diamonds
    table["arma-arma11"] = arma11
    for dataset in suite.BLR_DATASETS:
        table[f"blr-{dataset}"] = logistic
    return table


NUMPYRO_PROBLEMS = (
    "funnel-10d",
    "student_t-df3-4d",
    "mixture-0.7-0.3-4d",
    "eight_schools-centered",
    "eight_schools-noncentered",
    "kidiq-kidscore_interaction",
    "kidiq_with_mom_work-kidscore_mom_work",
    "earnings-earn_height",
    "earnings-logearn_height_male",
    "mesquite-logmesquite",
    "nes1996-nes",
    "sblri-blr",
    "kilpisjarvi_mod-kilpisjarvi",
    "gp_pois_regr-gp_regr",
    "diamonds-diamonds",
    "arma-arma11",
    *(f"blr-{d}" for d in suite.BLR_DATASETS),
)
"""Problems with a NumPyro version in this script (not the two HMMs)."""


def _numpyro_model_mcmc(
    model: Callable[..., Any], args: tuple[Any, ...], warmup: int, draws: int, seed: int
) -> Any:
    """One chain of NumPyro NUTS on a NumPyro model and its (torch) data, divergences recorded."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    data = [jnp.asarray(a.detach().cpu().numpy()) for a in args]
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *data, extra_fields=("diverging",))
    return mcmc


def _numpyro_nuts_draws(
    name: str, args: tuple[Any, ...], warmup: int, draws: int, seed: int
) -> dict[str, np.ndarray]:
    """One chain of NumPyro NUTS on the NumPyro version of a problem's model (a reference chain)."""
    model, _ = _numpyro_models()[name]()
    if model is None:
        raise SystemExit(f"{name}: a log-density problem has an exact reference")
    mcmc = _numpyro_model_mcmc(model, args, warmup, draws, seed)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


def run_numpyro(loaded: Loaded, args: argparse.Namespace) -> dict[str, Any]:
    """NumPyro NUTS with the counts of :func:`run_nuts`, one chain; compilation is timed with it."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    problem = loaded.problem
    warmup, draws = (10, 20) if args.quick else (args.nuts_warmup, args.nuts_draws)
    model, potential_fn = _numpyro_models()[problem.name]()
    with recorded_warnings() as found, timed() as clock:
        if model is not None:
            mcmc = _numpyro_model_mcmc(model, loaded.args, warmup, draws, args.seed)
            samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        else:
            x0 = np.random.default_rng(args.seed).standard_normal(problem.dim)
            mcmc = MCMC(
                NUTS(potential_fn=potential_fn), num_warmup=warmup, num_samples=draws, progress_bar=False
            )
            mcmc.run(jax.random.PRNGKey(args.seed), init_params=jnp.asarray(x0), extra_fields=("diverging",))
            samples = {"x": np.asarray(mcmc.get_samples())}
        diverging = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    import numpyro

    coords = problem.coordinates(samples)
    row: dict[str, Any] = {
        "settings": f"NumPyro {numpyro.__version__} NUTS, {warmup} + {draws}, 1 chain",
        "warnings": found,
        "cpu_s": clock.cpu,
        "wall_s": clock.wall,
        "khat": None,
        "ess": min_bulk_ess(coords[None]),
        "ess_kind": "min bulk",
        "divergences": diverging,
    }
    row.update(compare(coords, loaded.reference, problem))
    return row


RUNNERS = {"wgf": run_wgf, "nuts": run_nuts, "numpyro": run_numpyro}


# -------------------------------------------------------------------------------- rendering
def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def _warnings_cell(found: list[dict[str, str]]) -> str:
    """Count and the first message, deprecation warnings (of the libraries, not of the run) last."""
    if not found:
        return "—"
    ordered = sorted(found, key=lambda w: w["category"] in ("DeprecationWarning", "FutureWarning"))
    first = ordered[0]["message"][:70].replace("|", "\\|")
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return f"{ordered[0]['category']}: {first}…{more}"


HEADER = [
    "problem",
    "d",
    "method",
    "max \\|mean err\\| (sd)",
    "sd ratio",
    "k-hat",
    "max KS / mode w err",
    "ESS (NUTS: divergences)",
    "CPU s",
    "wall s",
    "warnings",
    "NUTS quality",
]


def table_rows(rows: list[dict[str, Any]]) -> list[list[object]]:
    """One markdown row per (problem, method)."""
    out = []
    for r in rows:
        method = r["method"]
        if r.get("stop_reason") is not None:  # wgf rows since the start verdict: steps and why they stopped
            method += f", {r['steps']} step{'' if r['steps'] == 1 else 's'} ({r['stop_reason']})"
        head = [r["problem"], r.get("dim", "—"), method]
        if "error" in r or "skipped" in r:
            text = (r.get("error") or r["skipped"]).replace("|", "\\|")
            text = text if len(text) <= 100 else text[:99] + "…"
            out.append(head + [text] + ["—"] * (len(HEADER) - 4))
            continue
        extra = "—"
        if r.get("max_ks") is not None:
            extra = f"{r['max_ks']:.3f}"
        if r.get("mode_weight_err") is not None:
            extra += f" / {r['mode_weight_err']:+.3f}"
        verdict = "pass" if r["pass"] else "fail (" + "; ".join(r["failed"]) + ")"
        ess = _fmt(r.get("ess"), ".0f") + (
            " (IS)" if r.get("ess_kind") == "importance" and r.get("ess") else ""
        )
        if r.get("divergences"):
            ess += f", {r['divergences']} div."
        out.append(
            head
            + [
                f"{r['max_abs_mean_err']:.3f} ({r['worst_mean_coordinate']})",
                f"{r['sd_ratio_min']:.2f}–{r['sd_ratio_max']:.2f}",
                _fmt(r.get("khat"), ".2f"),
                extra,
                ess,
                f"{r['cpu_s']:.1f}",
                f"{r['wall_s']:.1f}",
                _warnings_cell(r["warnings"]),
                verdict,
            ]
        )
    return out


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown section: set-up, machine, command, table, reference notes."""
    refs = {}
    for r in rows:
        if "reference_source" in r:
            refs.setdefault(
                r["problem"], (r["reference_source"], r.get("ref_se_mean_max"), r.get("ref_se_sd_max"))
            )
    ref_lines = [
        f"- {name}: {source}; largest reference se: mean {_fmt(se_m, '.3f')} sd, sd {_fmt(se_s, '.3f')} sd"
        for name, (source, se_m, se_s) in refs.items()
    ]
    scheme = meta["scheme"] or "default"
    return (
        f"### Posterior suite, wgfinfer {scheme} (`benchmarks/posteriors.py`)\n\n"
        f"Run started {meta['started']}.  Machine: {meta['machine']}; {meta['versions']}.\n\n"
        f"Command:\n\n```\n{meta['command']}\n```\n\n"
        "Metrics on the unconstrained scale (log of positive parameters), against the reference: "
        "max |mean error| in reference sds (with its coordinate), the range of sd / reference sd, "
        "PSIS k-hat of the flow's 4096 draws (where it has densities), the largest marginal KS "
        "distance to the exact CDFs and the error of the first mode's weight (exact problems), ESS "
        "(NUTS: min bulk ESS over the coordinates, and the divergent transitions; wgf: importance-sampling "
        "ESS), process CPU and "
        "wall seconds of `run()` + 4096 draws (NUTS: `MCMC.run`, JIT compilation included), the "
        f"warnings raised.  *NUTS quality*: max |mean err| <= {MEAN_TOL}, sd ratios in "
        f"[{SD_RANGE[0]}, {SD_RANGE[1]}], k-hat < {KHAT_TOL} where there is one.\n\n"
        + markdown_table(HEADER, table_rows(rows))
        + "\n\nReferences:\n\n"
        + "\n".join(ref_lines)
        + "".join(f"\n- {note}" for note in meta.get("notes", []))
        + "\n"
    )


# -------------------------------------------------------------------------------------- main
def _problem_names(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    known = list(suite.SUITE)
    if args.problems is None:
        names = known
        if args.posteriordb is not None:  # only the posteriordb posteriors that DIR has draws of
            names = [
                n
                for n in known
                if suite.SUITE[n].group != "posteriordb"
                or (args.posteriordb / "reference_draws" / f"{n}.json.zip").exists()
            ]
        return names
    unknown = [n for n in args.problems if n not in suite.SUITE and n not in posteriordb.POSTERIORS]
    if unknown:
        parser.error(f"unknown problems {unknown}; known: {known}")
    return list(args.problems)


def _untranslated(root: Path) -> list[str]:
    """Posteriors of a posteriordb directory with reference draws but no Pyro translation."""
    draws = sorted(p.name.removesuffix(".json.zip") for p in (root / "reference_draws").glob("*.json.zip"))
    return [n for n in draws if n not in posteriordb.POSTERIORS]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", nargs="+", default=None, metavar="NAME", help="default: all")
    parser.add_argument("--posteriordb", type=Path, default=None, metavar="DIR", help="posteriordb directory")
    parser.add_argument("--scheme", choices=SCHEMES, default=None, help="default: WGFSampler's default")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nuts-warmup", type=int, default=NUTS_WARMUP)
    parser.add_argument("--nuts-draws", type=int, default=NUTS_DRAWS)
    parser.add_argument(
        "--reference-cache", type=Path, default=None, metavar="DIR", help="default: OUT/reference_cache"
    )
    parser.add_argument(
        "--reference-sampler",
        choices=("pyro", "numpyro"),
        default="pyro",
        help="NUTS of the references that are made (cached apart; numpyro: needs the bench extra)",
    )
    parser.add_argument("--reference-chains", type=int, default=4)
    parser.add_argument("--reference-warmup", type=int, default=1000)
    parser.add_argument("--reference-draws", type=int, default=2500)
    parser.add_argument(
        "--stop-after", type=float, default=None, metavar="MINUTES", help="start no new problem after"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="save the rows and the run's description here"
    )
    parser.add_argument("--from-json", type=Path, default=None, help="run nothing: render the rows of FILE")
    add_output_arguments(parser)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # smoke test
    args = parser.parse_args(argv)
    section = f"posteriors-{args.scheme or 'default'}"

    if args.from_json is not None:
        rows, meta = load_run(args.from_json)
        body = render(rows, meta)
        if not args.no_write:
            publish(f"posteriors-{meta['scheme'] or 'default'}", body, args.out, args.docs)
        print(body)
        return 0

    names = _problem_names(args, parser)
    args.write_cache = not args.no_write or args.reference_cache is not None
    if args.reference_cache is None:
        args.reference_cache = args.out / "reference_cache"
    methods = list(args.methods)
    notes = []
    numpyro_missing = _numpyro_available() if "numpyro" in methods else None
    if numpyro_missing:
        notes.append(f"NumPyro {numpyro_missing}: no NumPyro rows")
        methods.remove("numpyro")
    if args.posteriordb is not None:
        missing = _untranslated(args.posteriordb)
        notes.append(
            f"{len(missing)} posteriors of {args.posteriordb} have no Pyro translation and were not run"
        )
    versions = f"torch {torch.__version__}, Pyro {pyro.__version__}"
    if "numpyro" in methods:
        import jax
        import numpyro

        versions += f", NumPyro {numpyro.__version__}, JAX {jax.__version__}"
    meta = {
        "command": "python benchmarks/posteriors.py "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine("cpu"),
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "scheme": args.scheme,
        "seed": args.seed,
        "num_draws": NUM_DRAWS,
        "notes": notes,
    }
    rows: list[dict[str, Any]] = []
    begin = time.perf_counter()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)

    def emit(row: dict[str, Any]) -> None:
        record_row(rows, row, meta, args.json)
        if not args.no_write:
            publish(section, render(rows, meta), args.out, args.docs)

    for name in names:
        problem = suite.get(name)
        if args.stop_after is not None and time.perf_counter() - begin > 60 * args.stop_after:
            for method in methods:
                emit(
                    {
                        "problem": name,
                        "method": method,
                        "skipped": f"not run: past --stop-after {args.stop_after:g} min",
                    }
                )
            continue
        try:
            loaded = load(problem, args)
        except Exception as exc:  # a missing optional data package, a failed reference
            for method in methods:
                emit({"problem": name, "method": method, "error": f"{type(exc).__name__}: {first_line(exc)}"})
            continue
        ref = loaded.reference
        for method in methods:
            row: dict[str, Any] = {
                "problem": name,
                "method": method,
                "dim": loaded.dim,
                "reference_source": ref.source,
                "ref_se_mean_max": None if ref.se_mean is None else float((ref.se_mean / ref.sd).max()),
                "ref_se_sd_max": None if ref.se_sd is None else float((ref.se_sd / ref.sd).max()),
            }
            if method == "numpyro" and name not in NUMPYRO_PROBLEMS:
                row["skipped"] = "no NumPyro version"
                emit(row)
                continue
            try:
                row.update(RUNNERS[method](loaded, args))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {first_line(exc)}"[:300]
            else:
                row["pass"], row["failed"] = quality(row)
            emit(row)
    print(render(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())

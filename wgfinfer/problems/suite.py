"""The posterior suite of ``benchmarks/posteriors.py``: problems with references on the unconstrained
scale.

Each :class:`Problem` is a Pyro model with its arguments, or a log-density callable with its
dimension, together with the coordinates it is compared on (:attr:`Problem.params`: sites with their
supports, compared on the scale of ``biject_to(support)``, i.e. log for positive parameters) and its
reference there (:class:`Reference`: per-coordinate mean and sd and, where known, their standard
errors).  The registry :data:`SUITE` holds

* the thirteen posteriordb posteriors of :mod:`wgfinfer.problems.posteriordb`, with their packaged
  reference moments (or, with ``root``, those of a posteriordb directory's reference draws);
* Neal's funnel in ten dimensions (Neal 2003), a two-component Gaussian mixture with known weights
  and a Student-t with 3 degrees of freedom: exact references (moments and marginal CDFs);
* eight schools, centred and non-centred, and Bayesian logistic regression on the five data sets of
  ``benchmarks/blr.py``: references from a long NUTS run (:attr:`Problem.nuts_reference`), made and
  cached by the benchmark (:func:`reference_from_chains` turns its draws into a :class:`Reference`).

Nothing here imports JAX; ArviZ is imported only when moments are computed from draws.

References
----------
Neal, R. M. (2003). Slice sampling. *The Annals of Statistics* 31(3), 705-767 (the funnel, sec. 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro.distributions import constraints
from torch import Tensor

from wgfinfer.problems import eight_schools, posteriordb
from wgfinfer.problems.posteriordb import Param

Root = str | Path | None


# ------------------------------------------------------------------------------- references
@dataclass(frozen=True, eq=False)
class Reference:
    """Reference moments of a problem on its comparison coordinates (unconstrained scale).

    Attributes
    ----------
    names : tuple of str
        Coordinate names (:meth:`Problem.coordinate_names`).
    mean, sd : ndarray
        ``(d,)`` reference means and standard deviations.
    se_mean, se_sd : ndarray or None
        ``(d,)`` Monte-Carlo standard errors of ``mean`` and ``sd`` (zero for exact references,
        ``None`` where unknown).
    source : str
        Where the reference comes from (one line).
    marginal_cdf : callable or None
        Exact marginal CDFs, ``(n, d) -> (n, d)`` (exact references only).
    mode_weight : float or None
        Exact probability of :attr:`Problem.mode_indicator` (the mixture only).
    """

    names: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray
    se_mean: np.ndarray | None = None
    se_sd: np.ndarray | None = None
    source: str = ""
    marginal_cdf: Callable[[np.ndarray], np.ndarray] | None = None
    mode_weight: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The moments as JSON-ready lists (without :attr:`marginal_cdf`)."""
        out: dict[str, Any] = {"names": list(self.names), "source": self.source}
        for key in ("mean", "sd", "se_mean", "se_sd"):
            value = getattr(self, key)
            out[key] = None if value is None else np.asarray(value, dtype=np.float64).tolist()
        out["mode_weight"] = self.mode_weight
        return out

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> Reference:
        """The inverse of :meth:`to_json`."""

        def array(key: str) -> np.ndarray | None:
            return None if saved.get(key) is None else np.asarray(saved[key], dtype=np.float64)

        return cls(
            names=tuple(saved["names"]),
            mean=array("mean"),
            sd=array("sd"),
            se_mean=array("se_mean"),
            se_sd=array("se_sd"),
            source=saved.get("source", ""),
            mode_weight=saved.get("mode_weight"),
        )


def reference_from_chains(names: list[str] | tuple[str, ...], chains: np.ndarray, source: str) -> Reference:
    """A :class:`Reference` from draws ``(n_chains, n_draws, d)`` on the comparison coordinates, with
    ArviZ's ESS-based standard errors (:func:`wgfinfer.problems.posteriordb.chain_moments`).

    Parameters
    ----------
    names : sequence of str
        Coordinate names.
    chains : ndarray
        ``(n_chains, n_draws, d)`` draws.
    source : str
        Description of the run.

    Returns
    -------
    Reference
    """
    moments = posteriordb.chain_moments(np.asarray(chains, dtype=np.float64))
    return Reference(
        tuple(names), moments["mean"], moments["sd"], moments["se_mean"], moments["se_sd"], source
    )


# --------------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class NutsReference:
    """How to make a reference by a long NUTS run: the model to run (an easy parameterisation of the
    same posterior), its arguments and the map from its sites to the problem's comparison sites.

    Attributes
    ----------
    key : str
        Cache key: problems that share a posterior share it (both eight-schools parameterisations).
    model : callable
        Pyro model.
    model_args : callable
        ``() -> args`` (float64 tensors).
    derive : callable or None
        ``{site: values} -> {site: values}`` adding the comparison sites the model lacks.
    """

    key: str
    model: Callable[..., Any]
    model_args: Callable[[], tuple[Tensor, ...]]
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Problem:
    """One problem of the suite.

    Attributes
    ----------
    name : str
        Registry name.
    group : str
        ``"posteriordb"``, ``"exact"``, ``"eight_schools"`` or ``"blr"``.
    description : str
        One line.
    params : tuple of Param
        The comparison sites, in order, with their supports: the coordinates are
        ``biject_to(support).inv(value)``, flattened.
    model : callable, optional
        Pyro model, called as ``model(*model_args(root))``.
    model_args : callable, optional
        ``root -> args``; ``root`` is a posteriordb directory or ``None`` (only posteriordb problems
        use it).
    log_density : callable, optional
        ``(..., d) -> (...)`` unnormalised log density, for problems without a model; its draws are
        the site ``"x"``.
    dim : int, optional
        Dimension of ``log_density``.
    derive : callable, optional
        ``{site: values} -> {site: values}`` adding comparison sites that are not latent sites of the
        model (the non-centred ``theta``).
    exact_reference : callable, optional
        ``root -> Reference``: a known reference (exact, or packaged / from a posteriordb directory).
    nuts_reference : NutsReference, optional
        How to make the reference by NUTS when there is no ``exact_reference``.
    mode_indicator : callable, optional
        ``(n, d) coordinates -> (n,) bool``: membership of the first mode (the mixture).
    posteriordb_name : str, optional
        The posteriordb name of a posteriordb problem.
    """

    name: str
    group: str
    description: str
    params: tuple[Param, ...]
    model: Callable[..., Any] | None = None
    model_args: Callable[[Root], tuple[Tensor, ...]] | None = None
    log_density: Callable[[Tensor], Tensor] | None = None
    dim: int | None = None
    derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    exact_reference: Callable[[Root], Reference] | None = None
    nuts_reference: NutsReference | None = None
    mode_indicator: Callable[[np.ndarray], np.ndarray] | None = None
    posteriordb_name: str | None = None

    def coordinate_names(self) -> list[str]:
        """Names of the comparison coordinates: ``site`` or ``site[i]`` (1-based, unconstrained shape)."""
        names = []
        for param in self.params:
            shape = param.unconstrained_shape
            if not shape:
                names.append(param.name)
                continue
            names += [f"{param.name}[{','.join(str(i + 1) for i in ix)}]" for ix in np.ndindex(*shape)]
        return names

    def coordinates(self, samples: Mapping[str, Any]) -> np.ndarray:
        """Draws by site (constrained, numpy or torch, ``(n, *shape)``) as ``(n, d)`` comparison
        coordinates (float64)."""
        values = {k: torch.as_tensor(_numpy(v)) for k, v in samples.items()}
        if self.derive is not None:
            values = self.derive(values)
        blocks = []
        for param in self.params:
            free = param.transform.inv(values[param.name])
            ndim = len(param.unconstrained_shape)
            blocks.append(free.reshape(free.shape[: free.dim() - ndim] + (-1,)).numpy())
        return np.concatenate(blocks, axis=-1)

    def reference(self, root: Root = None) -> Reference | None:
        """The known reference (``None`` for problems whose reference is made by NUTS)."""
        return None if self.exact_reference is None else self.exact_reference(root)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.array(value, dtype=np.float64)  # a copy: JAX arrays are read-only


# ------------------------------------------------------------------------- exact problems
FUNNEL_DIM = 10
FUNNEL_SCALE = 3.0
"""Neal's funnel: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)`` (variance ``e^v``), ``i = 1..9``."""
FUNNEL_X_SD = math.exp(FUNNEL_SCALE**2 / 4.0)
"""sd of each ``x_i``: ``sqrt(E[e^v]) = sqrt(exp(sigma^2 / 2)) = exp(9 / 4)`` for ``sigma = 3``."""

STUDENT_DIM = 4
STUDENT_DF = 3.0
STUDENT_SD = math.sqrt(STUDENT_DF / (STUDENT_DF - 2.0))
"""sd of a standard t with 3 degrees of freedom: ``sqrt(df / (df - 2)) = sqrt(3)``."""

MIXTURE_DIM = 4
MIXTURE_WEIGHTS = (0.7, 0.3)
MIXTURE_OFFSET = 1.5
"""Mixture ``0.7 N(1.5 * 1, I) + 0.3 N(-1.5 * 1, I)`` in four dimensions: the centres are
``2 * 1.5 * sqrt(4) = 6`` component sds apart."""


def funnel_log_density(x: Tensor) -> Tensor:
    """Neal's (2003) funnel: ``v = x[..., 0] ~ N(0, 3^2)``, ``x[..., i] | v ~ N(0, e^v)``.

    Parameters
    ----------
    x : Tensor
        ``(..., 10)`` points ``(v, x_1, ..., x_9)``.

    Returns
    -------
    Tensor
        ``(...)`` normalised log densities.
    """
    v, rest = x[..., 0], x[..., 1:]
    k = rest.shape[-1]
    log_2pi = math.log(2.0 * math.pi)
    log_v = -0.5 * (v / FUNNEL_SCALE) ** 2 - math.log(FUNNEL_SCALE) - 0.5 * log_2pi
    log_x = -0.5 * rest.square().sum(-1) * torch.exp(-v) - 0.5 * k * v - 0.5 * k * log_2pi
    return log_v + log_x


def funnel_marginal_cdf(x: np.ndarray, nodes: int = 1601, chunk: int = 256) -> np.ndarray:
    """Exact marginal CDFs of the funnel: ``Phi(v / 3)`` for ``v`` and ``E_v[Phi(x e^{-v/2})]`` for
    each ``x_i``, the expectation by the trapezoid rule on ``v = 3 t``, ``t`` in ``[-8, 8]``
    (spectrally accurate for this smooth integrand; ``1e-15`` of the mass lies outside).

    Parameters
    ----------
    x : ndarray
        ``(n, 10)`` points.
    nodes : int
        Grid points in ``t``.
    chunk : int
        Rows evaluated at once (memory ``chunk * 9 * nodes`` floats).

    Returns
    -------
    ndarray
        ``(n, 10)`` CDF values.
    """
    from scipy.special import ndtr

    t = np.linspace(-8.0, 8.0, nodes)
    w = np.exp(-0.5 * t**2)
    w = w / w.sum()
    scale = np.exp(-FUNNEL_SCALE * t / 2.0)  # e^{-v/2} at v = 3 t
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    out[:, 0] = ndtr(x[:, 0] / FUNNEL_SCALE)
    for start in range(0, x.shape[0], chunk):
        rest = x[start : start + chunk, 1:]
        out[start : start + chunk, 1:] = ndtr(rest[..., None] * scale) @ w
    return out


def student_t_log_density(x: Tensor) -> Tensor:
    """Independent standard Student-t coordinates with 3 degrees of freedom.

    Parameters
    ----------
    x : Tensor
        ``(..., d)`` points.

    Returns
    -------
    Tensor
        ``(...)`` normalised log densities.
    """
    nu = STUDENT_DF
    const = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
    return (const - 0.5 * (nu + 1) * torch.log1p(x.square() / nu)).sum(-1)


def mixture_log_density(x: Tensor) -> Tensor:
    """``0.7 N(1.5 * 1, I) + 0.3 N(-1.5 * 1, I)`` (:data:`MIXTURE_WEIGHTS`, :data:`MIXTURE_OFFSET`).

    Parameters
    ----------
    x : Tensor
        ``(..., d)`` points.

    Returns
    -------
    Tensor
        ``(...)`` normalised log densities.
    """
    d = x.shape[-1]
    const = -0.5 * d * math.log(2.0 * math.pi)
    terms = [
        math.log(weight) + const - 0.5 * (x - sign * MIXTURE_OFFSET).square().sum(-1)
        for weight, sign in zip(MIXTURE_WEIGHTS, (1.0, -1.0), strict=True)
    ]
    return torch.logsumexp(torch.stack(terms, dim=-1), dim=-1)


def mixture_mode_indicator(x: np.ndarray) -> np.ndarray:
    """Draws on the first component's side of the bisecting hyperplane (``sum(x) > 0``)."""
    return np.asarray(x).sum(-1) > 0.0


def mixture_mode_weight(dim: int = MIXTURE_DIM) -> float:
    """Exact probability of ``sum(x) > 0`` under the mixture: ``0.7 Phi(1.5 sqrt(d)) + 0.3 Phi(-1.5
    sqrt(d))`` (``sum(x)`` is ``N(+-1.5 d, d)`` under each component); 0.7 up to ``Phi(-3)``."""
    from scipy.special import ndtr

    z = MIXTURE_OFFSET * math.sqrt(dim)
    return float(MIXTURE_WEIGHTS[0] * ndtr(z) + MIXTURE_WEIGHTS[1] * ndtr(-z))


def _funnel_reference(root: Root = None) -> Reference:
    names = ("v", *(f"x[{i}]" for i in range(1, FUNNEL_DIM)))
    sd = np.full(FUNNEL_DIM, FUNNEL_X_SD)
    sd[0] = FUNNEL_SCALE
    zeros = np.zeros(FUNNEL_DIM)
    source = "exact: v ~ N(0, 9), x_i | v ~ N(0, e^v), sd(x_i) = exp(9/4) (Neal 2003)"
    return Reference(names, zeros, sd, zeros, zeros, source, funnel_marginal_cdf)


def _student_reference(root: Root = None) -> Reference:
    from scipy.stats import t

    zeros = np.zeros(STUDENT_DIM)
    return Reference(
        tuple(f"x[{i}]" for i in range(1, STUDENT_DIM + 1)),
        zeros,
        np.full(STUDENT_DIM, STUDENT_SD),
        zeros,
        zeros,
        "exact: independent t_3, sd sqrt(3)",
        lambda x: t.cdf(x, STUDENT_DF),
    )


def _mixture_reference(root: Root = None) -> Reference:
    from scipy.special import ndtr

    w1, w2 = MIXTURE_WEIGHTS
    mean = (w1 - w2) * MIXTURE_OFFSET
    var = 1.0 + w1 * w2 * (2.0 * MIXTURE_OFFSET) ** 2
    zeros = np.zeros(MIXTURE_DIM)

    def cdf(x: np.ndarray) -> np.ndarray:
        return w1 * ndtr(x - MIXTURE_OFFSET) + w2 * ndtr(x + MIXTURE_OFFSET)

    return Reference(
        tuple(f"x[{i}]" for i in range(1, MIXTURE_DIM + 1)),
        np.full(MIXTURE_DIM, mean),
        np.full(MIXTURE_DIM, math.sqrt(var)),
        zeros,
        zeros,
        "exact: 0.7 N(1.5, I) + 0.3 N(-1.5, I); mean 0.6, sd 1.7 per coordinate",
        cdf,
        mixture_mode_weight(),
    )


def _vector_param(dim: int) -> tuple[Param, ...]:
    return (Param("x", (dim,), constraints.real),)


# ---------------------------------------------------------------------------- posteriordb
def _posteriordb_reference(name: str) -> Callable[[Root], Reference]:
    def reference(root: Root = None) -> Reference:
        moments = posteriordb.reference_moments(name, root)
        flat = {
            key: posteriordb.flatten(name, {site: m[key] for site, m in moments.items()})
            for key in ("mean", "sd", "se_mean", "se_sd")
        }
        where = "packaged reference_moments.json" if root is None else f"reference draws of {root}"
        return Reference(
            tuple(posteriordb.coordinate_names(name)),
            flat["mean"],
            flat["sd"],
            flat["se_mean"],
            flat["se_sd"],
            f"posteriordb ({where})",
        )

    return reference


def posteriordb_problem(name: str) -> Problem:
    """The suite problem of a registered posteriordb posterior.

    Parameters
    ----------
    name : str
        posteriordb name (a key of :data:`wgfinfer.problems.posteriordb.POSTERIORS`).

    Returns
    -------
    Problem
    """
    post = posteriordb.get(name)
    return Problem(
        name=name,
        group="posteriordb",
        description=f"posteriordb {post.model_name}.stan on {post.data_name}",
        params=post.params,
        model=post.model,
        model_args=lambda root: posteriordb.model_args(name, root),
        exact_reference=_posteriordb_reference(name),
        posteriordb_name=name,
    )


# -------------------------------------------------------------------------- eight schools
EIGHT_SCHOOLS_PARAMS = (
    Param("mu", (), constraints.real),
    Param("tau", (), constraints.positive),
    Param("theta", (8,), constraints.real),
)
"""The comparison sites of both parameterisations: ``(mu, log tau, theta)``."""


def eight_schools_theta(values: dict[str, Any]) -> dict[str, Any]:
    """Add ``theta = mu + tau * theta_trans`` to non-centred draws (``(n,)``, ``(n,)``, ``(n, 8)``)."""
    if "theta" in values and "theta_trans" not in values:
        return values
    mu, tau = values["mu"], values["tau"]
    return {**values, "theta": mu[..., None] + tau[..., None] * values["theta_trans"]}


def _eight_schools_args(root: Root = None) -> tuple[Tensor, ...]:
    return eight_schools.model_args(torch.float64)


_EIGHT_SCHOOLS_NUTS = NutsReference(
    "eight_schools",
    eight_schools.noncentered,
    lambda: eight_schools.model_args(torch.float64),
    eight_schools_theta,
)


# ------------------------------------------------------------------------------------ BLR
BLR_DATASETS = ("breast_cancer", "pima", "waveform", "twonorm", "ringnorm")
"""The five data sets of ``benchmarks/blr.py``."""


def blr_args(dataset: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Training split of a BLR data set (``datasets.load(dataset, seed=seed)``), float64.

    Parameters
    ----------
    dataset : str
        A name of :data:`BLR_DATASETS`.
    seed : int
        Split seed (the benchmarks use 0).

    Returns
    -------
    tuple of Tensor
        ``(x_train, y_train)``.
    """
    from wgfinfer.problems import datasets

    data = datasets.load(dataset, seed=seed, dtype=torch.float64)
    return data.x_train, data.y_train


BLR_FEATURES = {"breast_cancer": 31, "pima": 8, "waveform": 22, "twonorm": 21, "ringnorm": 21}
"""Columns of each data set's design matrix (intercept included): the size of ``w``."""


def _blr_problem(dataset: str) -> Problem:
    from wgfinfer.problems import logistic

    name = f"blr-{dataset}"
    return Problem(
        name=name,
        group="blr",
        description=f"Bayesian logistic regression on {dataset} (train split, seed 0)",
        params=(
            Param("alpha", (), constraints.positive),
            Param("w", (BLR_FEATURES[dataset],), constraints.real),
        ),
        model=logistic.model,
        model_args=lambda root: blr_args(dataset),
        nuts_reference=NutsReference(name, logistic.model, lambda: blr_args(dataset)),
    )


# ------------------------------------------------------------------------------- registry
def _build() -> dict[str, Problem]:
    problems = [
        Problem(
            name="funnel-10d",
            group="exact",
            description="Neal's funnel (2003), v ~ N(0, 3^2), nine x_i | v ~ N(0, e^v)",
            params=_vector_param(FUNNEL_DIM),
            log_density=funnel_log_density,
            dim=FUNNEL_DIM,
            exact_reference=_funnel_reference,
        ),
        Problem(
            name="student_t-df3-4d",
            group="exact",
            description="four independent standard Student-t coordinates, 3 degrees of freedom",
            params=_vector_param(STUDENT_DIM),
            log_density=student_t_log_density,
            dim=STUDENT_DIM,
            exact_reference=_student_reference,
        ),
        Problem(
            name="mixture-0.7-0.3-4d",
            group="exact",
            description="0.7 N(1.5 * 1, I) + 0.3 N(-1.5 * 1, I) in 4-D (centres 6 sds apart)",
            params=_vector_param(MIXTURE_DIM),
            log_density=mixture_log_density,
            dim=MIXTURE_DIM,
            exact_reference=_mixture_reference,
            mode_indicator=mixture_mode_indicator,
        ),
        Problem(
            name="eight_schools-centered",
            group="eight_schools",
            description="eight schools, centred (theta sampled)",
            params=EIGHT_SCHOOLS_PARAMS,
            model=eight_schools.centered,
            model_args=_eight_schools_args,
            nuts_reference=_EIGHT_SCHOOLS_NUTS,
        ),
        Problem(
            name="eight_schools-noncentered",
            group="eight_schools",
            description="eight schools, non-centred (theta = mu + tau * theta_trans)",
            params=EIGHT_SCHOOLS_PARAMS,
            model=eight_schools.noncentered,
            model_args=_eight_schools_args,
            derive=eight_schools_theta,
            nuts_reference=_EIGHT_SCHOOLS_NUTS,
        ),
    ]
    cheap_first = (
        "kidiq-kidscore_interaction",
        "kidiq_with_mom_work-kidscore_mom_work",
        "earnings-earn_height",
        "earnings-logearn_height_male",
        "mesquite-logmesquite",
        "nes1996-nes",
        "sblri-blr",
    )
    rest = sorted(set(posteriordb.POSTERIORS) - set(cheap_first) - {"diamonds-diamonds"})
    problems += [posteriordb_problem(n) for n in (*cheap_first, *rest, "diamonds-diamonds")]
    problems += [_blr_problem(d) for d in BLR_DATASETS]
    return {p.name: p for p in problems}


SUITE: dict[str, Problem] = _build()
"""The suite's problems by name, cheap ones first."""


def get(name: str) -> Problem:
    """A problem of the suite by name (every registered posteriordb posterior is one).

    Parameters
    ----------
    name : str
        Suite name.

    Returns
    -------
    Problem
    """
    if name in SUITE:
        return SUITE[name]
    if name in posteriordb.POSTERIORS:
        return posteriordb_problem(name)
    raise KeyError(f"no suite problem {name!r}; known: {sorted(SUITE)}")

"""Initial measures ``rho_0``: ``"normal"``, ``"laplace"``, ``"gaussian"``, ``"auto"`` or a torch
distribution.

``"laplace"``, ``"gaussian"`` and ``"auto"`` also give the affine whitening the flow runs in (see
:mod:`wgfinfer.laplace`): the flow then starts in whitened coordinates at independent Student-t
coordinates with :data:`WHITENED_BASE_DF` degrees of freedom and variance ``scale^2`` (heavier tails
than the Gaussian approximation they whiten, so that the flow's importance weights stay bounded where
the posterior's tails are heavier than Gaussian), or at ``N(0, scale^2 I)`` with ``df=math.inf``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal, StudentT

from wgfinfer._validation import check_positive_float
from wgfinfer.errors import WGFWarning, first_line
from wgfinfer.importance import importance_kl
from wgfinfer.laplace import AffineWhitening, LaplaceStartError, fit_gaussian, laplace_whitening

KINDS = ("laplace", "gaussian", "auto", "normal")
WHITENED_KINDS = ("laplace", "gaussian", "auto")
"""The kinds that whiten the target by a Gaussian approximation before the flow starts."""
WHITENED_BASE_DF = 16.0
"""Degrees of freedom of the Student-t coordinates the flow starts from in whitened coordinates
(``Init(df=None)`` with a whitened kind).  A Gaussian start (``df=inf``) gives a flow whose tails are
as light as the Gaussian approximation's, and PSIS k-hat of its 4096 draws hovered about 0.7 on
posteriors with slightly heavier tails than Gaussian (posteriordb earnings, kilpisjarvi, arma11,
mesquite: over eight batches of 4096 draws of one trained flow, k-hat 0.36-0.93), so that one
posterior passed or missed the suite's bar by the draw; heavier-tailed importance proposals keep
the weights bounded (Geweke 1989, multivariate-t importance functions).  Measured on the posterior
suite (docs/benchmarks.md, 2026-12-01): with 16 degrees of freedom those four had k-hat 0.15-0.39
and the suite's other posteriors kept their accuracy; with 8 the flow came out too narrow on
hmm_example (an sd ratio of 0.84).  Only for flows with densities: the variational scheme (no
``log q``, no importance weights) starts Gaussian, since with 16 its sds came out 2-2.5x too wide on
kilpisjarvi."""

AUTO_REFINE_KL = 1.0
"""``init="auto"`` refines the Laplace approximation by the Gaussian fit when the importance estimate
of its KL divergence to the target exceeds this many nats.  Measured after the first step of the
default flow (2026-12-01): 0.01-0.18 nats on the posteriordb regressions, where the Laplace start
is right and the fit only costs time (kidiq 6 -> 9 s, nes 12 -> 19 s of CPU); 6.1 nats on
breast-cancer BLR, whose hierarchical prior puts the mass away from the joint mode, where the fit
brought the largest mean error from 0.65-0.85 to 0.15 reference sds."""
AUTO_CHECK_DRAWS = 1024
"""Draws of the Laplace approximation whose importance weights decide ``"auto"``."""


@dataclass(frozen=True)
class Init:
    """A named initial measure with a scale.

    Parameters
    ----------
    kind : {"normal", "laplace", "gaussian", "auto"}
        ``"normal"``: ``N(0, scale^2 I)``.  ``"laplace"``: the Laplace approximation at the mode,
        ``N(mode, scale^2 H^{-1})``; the flow runs in the coordinates that whiten it.
        ``"gaussian"``: the Laplace approximation refined by a full-rank Gaussian fit minimising
        ``KL(q || p)`` (:func:`wgfinfer.laplace.fit_gaussian`), for posteriors whose mass sits far
        from the joint mode, as in hierarchical models.  ``"auto"``: ``"laplace"``, refined as
        ``"gaussian"`` only when the importance estimate of the Laplace approximation's KL to the
        target exceeds :data:`AUTO_REFINE_KL` nats (:func:`laplace_kl`).
    scale : float, default 1.0
        Scale (the sd of each coordinate) of the measure the flow starts from: on the unconstrained
        space for ``"normal"``, in whitened coordinates for the others.  It should cover the target's
        mass: a Fokker-Planck flow of finite time cannot find modes far outside ``rho_0``.
    df : float, optional
        Degrees of freedom of the independent Student-t coordinates of that measure (above 2, so
        that its variance ``scale^2`` exists), ``math.inf`` for a Gaussian.  Default: the Gaussian
        for ``"normal"``, :data:`WHITENED_BASE_DF` for the whitened kinds.
    """

    kind: str = "normal"
    scale: float = 1.0
    df: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ValueError(f"init must be one of {KINDS} or a torch Distribution, got {self.kind!r}")
        object.__setattr__(self, "scale", check_positive_float("init scale", self.scale))
        if self.df is not None:
            if isinstance(self.df, bool) or not isinstance(self.df, numbers.Real):
                raise TypeError(f"init df must be a real number or None, got {type(self.df).__name__}")
            if not float(self.df) > 2.0:  # NaN too
                raise ValueError(
                    f"init df must exceed 2 (a Student-t with a variance) or be math.inf (a Gaussian), "
                    f"got {self.df}"
                )
            object.__setattr__(self, "df", float(self.df))

    def base_df(self, densities: bool = True) -> float:
        """The degrees of freedom of the start measure's coordinates (``math.inf``: Gaussian).

        Parameters
        ----------
        densities : bool, default True
            Whether the flow will have exact densities (the ICNN and PWGF schemes): only then do
            the whitened kinds default to Student-t coordinates, which keep its importance weights
            bounded; a flow without densities (the variational scheme) has no weights to keep
            bounded and starts Gaussian.
        """
        if self.df is not None:
            return self.df
        return WHITENED_BASE_DF if densities and self.kind in WHITENED_KINDS else math.inf


def as_init(init: Init | Distribution | str | None, default: str) -> Init | Distribution:
    """``init`` as an :class:`Init` or a distribution (``None`` means ``default``)."""
    if init is None:
        return Init(default)
    if isinstance(init, str):
        return Init(init)
    if isinstance(init, (Init, Distribution)):
        return init
    raise TypeError(
        f"init must be one of {KINDS}, a wgfinfer.Init or a torch Distribution, got {type(init).__name__}"
    )


def check_scale(init: Init, dtype: torch.dtype) -> None:
    """The scale must be representable (its square too) in ``dtype``."""
    finfo = torch.finfo(dtype)
    if not finfo.tiny**0.5 < init.scale < finfo.max**0.5:
        raise ValueError(
            f"init_scale={init.scale} is not representable in {dtype}: its square must lie between "
            f"{finfo.tiny:.3g} and {finfo.max:.3g}"
        )


def standard_normal(dim: int, scale: float, dtype: torch.dtype, device: torch.device) -> Distribution:
    """``N(0, scale^2 I_dim)`` as ``Independent(Normal)``."""
    loc = torch.zeros(dim, dtype=dtype, device=device)
    return Independent(Normal(loc, torch.full((dim,), scale, dtype=dtype, device=device)), 1)


def base_measure(
    init: Init | Distribution,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    densities: bool = True,
) -> Distribution:
    """``rho_0`` in the flow's working coordinates: a given distribution as it is, else independent
    coordinates of variance ``scale^2``, Student-t with ``init.base_df(densities)`` degrees of freedom or
    Gaussian (whitened coordinates for ``"laplace"``, ``"gaussian"`` and ``"auto"``)."""
    if isinstance(init, Distribution):
        return init
    df = init.base_df(densities)
    if math.isinf(df):
        return standard_normal(dim, init.scale, dtype, device)
    return standard_student_t(dim, init.scale, df, dtype, device)


def standard_student_t(
    dim: int, scale: float, df: float, dtype: torch.dtype, device: torch.device
) -> Distribution:
    """Independent Student-t coordinates with ``df`` (> 2) degrees of freedom, centred, each with
    variance ``scale^2`` (t scale ``scale * sqrt((df - 2) / df)``), as ``Independent(StudentT)``."""
    t_scale = scale * math.sqrt((df - 2.0) / df)
    return Independent(
        StudentT(
            torch.tensor(df, dtype=dtype, device=device),
            torch.zeros(dim, dtype=dtype, device=device),
            torch.full((dim,), t_scale, dtype=dtype, device=device),
        ),
        1,
    )


def whitening(
    init: Init | Distribution,
    log_density: Callable[[Tensor], Tensor],
    training_log_density: Callable[[Tensor], Tensor],
    start: Tensor,
    generator: torch.Generator,
    progress_bar: bool = False,
) -> AffineWhitening | None:
    """The whitening map of ``"laplace"`` / ``"gaussian"`` (``None`` for other initial measures).

    Where the Laplace approximation does not exist (:class:`~wgfinfer.laplace.LaplaceStartError`:
    no mode, as in a funnel or along a flat or unbounded direction; a Hessian that is not positive
    definite), the start falls back by itself, with a warning that says why: to a full-rank Gaussian
    fit (:func:`~wgfinfer.laplace.fit_gaussian`) from ``N(start, I)``, and if that diverges too, to no
    whitening (``init="normal"``).

    Parameters
    ----------
    init : Init or torch.distributions.Distribution
        The initial measure; only ``Init("laplace")`` and ``Init("gaussian")`` have a whitening.
    log_density : callable
        The (tempered) target on the full data, ``(n, d) -> (n,)``: what the mode search and the
        Hessian evaluate.
    training_log_density : callable
        What the Gaussian fit of ``"gaussian"`` (and of the fallback) evaluates: a mini-batch
        estimate with subsampling, else the same as ``log_density``.
    start : Tensor
        ``(d,)`` start of the mode search (the centre of the fallback's ``N(start, I)``).
    generator : torch.Generator
        Source of the Gaussian fit's draws.
    progress_bar : bool, default False
        Show tqdm bars over the phases of the fit: "start: mode search" (L-BFGS iterations),
        "start: Hessian" (its rows) and "start: Gaussian fit" (Adam iterations).

    Returns
    -------
    AffineWhitening or None
        The whitening map, or ``None`` for ``"normal"``, a distribution, or a start that fell back
        to ``init="normal"``.
    """
    if not isinstance(init, Init) or init.kind == "normal":
        return None
    try:
        result = laplace_whitening(log_density, start, strict=True, progress_bar=progress_bar)
    except LaplaceStartError as exc:
        return _fallback(exc, training_log_density, start, generator, progress_bar)
    if init.kind == "gaussian" or (
        init.kind == "auto" and laplace_kl(log_density, result, generator) > AUTO_REFINE_KL
    ):
        result = fit_gaussian(training_log_density, result, generator, progress_bar=progress_bar)
    return result


@torch.no_grad()
def laplace_kl(
    log_density: Callable[[Tensor], Tensor],
    approximation: AffineWhitening,
    generator: torch.Generator,
    n_draws: int = AUTO_CHECK_DRAWS,
) -> float:
    """Importance estimate of ``KL(N || p)`` for a Gaussian approximation ``N`` of the target.

    Parameters
    ----------
    log_density : callable
        The (unnormalised) target, ``(n, d) -> (n,)``.
    approximation : AffineWhitening
        The Gaussian, as the affine map of ``N(0, I)`` onto it.
    generator : torch.Generator
        Source of the draws: a copy of it draws them, so that ``generator`` itself is not advanced
        (``"auto"`` then runs exactly as ``"laplace"`` where it does not refine).
    n_draws : int
        Draws of the Gaussian.

    Returns
    -------
    float
        :func:`wgfinfer.importance.importance_kl` of the draws; ``inf`` where the target is not
        finite at one of them.
    """
    loc = approximation.loc
    copy = torch.Generator()
    copy.set_state(generator.get_state())  # the caller's stream is not advanced
    z = torch.randn(n_draws, loc.shape[0], generator=copy, dtype=loc.dtype).to(loc.device)
    x = approximation.forward(z)
    log_q = standard_normal(loc.shape[0], 1.0, loc.dtype, loc.device).log_prob(z) - approximation.log_abs_det
    log_p = log_density(x)
    if not bool(torch.isfinite(log_p).all()):
        return float("inf")
    return importance_kl(log_q - log_p)[0]


def _fallback(
    reason: LaplaceStartError,
    training_log_density: Callable[[Tensor], Tensor],
    start: Tensor,
    generator: torch.Generator,
    progress_bar: bool = False,
) -> AffineWhitening | None:
    why = first_line(reason) or type(reason).__name__
    if start.dtype != torch.float64:
        why += (
            f" (in {str(start.dtype).removeprefix('torch.')}: posteriors in the units of their data "
            "often need float64; give float64 data or dtype=torch.float64)"
        )
    unit = AffineWhitening(
        start.detach().clone(), torch.eye(start.shape[0], dtype=start.dtype, device=start.device)
    )
    try:
        fitted = fit_gaussian(training_log_density, unit, generator, progress_bar=progress_bar)
    except ValueError as exc:
        warnings.warn(
            f"{why}; the Gaussian fit that replaces it diverged too "
            f"({first_line(exc) or type(exc).__name__}): the flow "
            "starts from init='normal' instead (N(0, I) on the unconstrained space). Check that the "
            "posterior is proper, or pass an init distribution that covers it.",
            StartFallbackWarning,
            stacklevel=5,
        )
        return None
    warnings.warn(
        f"{why}; the flow starts from a full-rank Gaussian fit (init='gaussian' from N(start, I)) "
        "instead. Funnel-shaped posteriors (hierarchical scales) are often sampled better in a "
        "non-centred parameterisation.",
        StartFallbackWarning,
        stacklevel=5,
    )
    return fitted


class StartFallbackWarning(WGFWarning):
    """The requested start (``init="laplace"``) does not exist for this target; another was used."""

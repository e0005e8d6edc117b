"""The filtering problem: a Langevin diffusion observed with noise at discrete times.

``dX = -grad Phi(X) dt + sqrt(2 / beta) dW``, ``X_0 ~ initial``; observations ``Y_k`` at times
``t_1 < ... < t_K`` with likelihood ``p(Y_k | X_{t_k} = x)`` (Mokrov 2022 §3.4; Mokrov et al. 2021 for the
constants of the benchmark problem).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from wgfinfer._validation import check_positive_float
from wgfinfer.flow import sample_distribution

PotentialFn = Callable[[Tensor], Tensor]


def _as_vector_distribution(initial: Distribution) -> Distribution:
    if not isinstance(initial, Distribution):
        raise TypeError(f"initial must be a torch.distributions.Distribution, got {type(initial).__name__}")
    if initial.batch_shape != torch.Size():
        raise ValueError(f"initial must have no batch shape, got {tuple(initial.batch_shape)}")
    if len(initial.event_shape) == 0:  # a scalar law: the 1-D process
        return Independent(initial.expand(torch.Size([1])), 1)
    if len(initial.event_shape) != 1:
        raise ValueError(f"initial must have event shape (d,) or (), got {tuple(initial.event_shape)}")
    return initial


class LangevinDiffusion:
    """``dX = -grad Phi(X) dt + sqrt(2 / beta) dW`` from ``X_0 ~ initial``, in any dimension.

    Its law follows the Fokker-Planck equation, the Wasserstein gradient flow of
    ``E[Phi] - beta^{-1} H``; the JKO filter's maps are the JKO steps of that flow.

    Parameters
    ----------
    potential : callable
        ``Phi``: ``(n, d)`` points to ``(n,)`` values, differentiable torch code.
    beta : float
        Inverse temperature.
    initial : torch.distributions.Distribution
        Law of ``X_0``; event shape ``(d,)``, or a scalar distribution for ``d = 1``.
    """

    def __init__(
        self, potential: PotentialFn, beta: float = 1.0, initial: Distribution | None = None
    ) -> None:
        if not callable(potential):
            raise TypeError(f"potential must be callable, got {type(potential).__name__}")
        if initial is None:
            raise TypeError("initial (a torch distribution of X_0) is required")
        self.potential = potential
        self.beta = check_positive_float("beta", beta)
        self.initial = _as_vector_distribution(initial)
        self.dim = int(self.initial.event_shape[0])

    def log_density(self, x: Tensor) -> Tensor:
        """``-Phi(x)``: the stationary law is ``prop. to exp(beta * log_density)``."""
        return -self.potential(x)

    def drift(self, x: Tensor) -> Tensor:
        """``-grad Phi(x)`` by autograd, shape ``(n, d)``."""
        return self._value_and_drift(x)[1]

    def _value_and_drift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = self.potential(x)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), -grad

    def checked_drift(self, x: Tensor, where: str, points: str = "particles") -> Tensor:
        """``-grad Phi(x)``, after checking that ``Phi`` and its gradient are finite at every point.

        A filter only moves points along the gradient, so a potential that is NaN on a region where
        its gradient is finite (a ``torch.where`` branch) would go unnoticed without this check.

        Parameters
        ----------
        x : Tensor
            ``(n, d)`` points.
        where : str
            Where the points are, for the message (``"at time 0.25"``; may be empty).
        points : str
            What the points are, for the message.

        Returns
        -------
        Tensor
            ``(n, d)``.

        Raises
        ------
        ValueError
            If ``Phi`` or its gradient is NaN or infinite at some points: how many, where, and the
            first such point.
        """
        value, drift = self._value_and_drift(x)
        bad_value = ~torch.isfinite(value)
        bad_grad = ~torch.isfinite(drift).all(-1)
        if bool((bad_value | bad_grad).any()):
            if bool(bad_value.any()):
                bad, what = bad_value, "potential"
            else:
                bad, what = bad_grad, "potential's gradient"
            first = x[bad.nonzero()[0, 0]].tolist()
            raise ValueError(
                f"the {what} is NaN or infinite at {int(bad.sum())} of {x.shape[0]} {points}"
                f"{' ' + where if where else ''} "
                f"(the first at x = {first}): the diffusion is undefined there; the potential must be "
                "finite and differentiable wherever the process can go (all of R^d)"
            )
        return drift

    def simulate(
        self,
        x0: Tensor,
        duration: float,
        dt: float,
        generator: torch.Generator,
        start_time: float = 0.0,
    ) -> Tensor:
        """Euler-Maruyama from ``x0`` over ``duration`` with steps of at most ``dt``.

        Parameters
        ----------
        x0 : Tensor
            ``(n, d)`` starting points.
        duration : float
            Time span.
        dt : float
            Largest step.
        generator : torch.Generator
            Source of the Gaussian increments (drawn on the CPU).
        start_time : float
            Time of ``x0``, for the messages of the checks.

        Returns
        -------
        Tensor
            ``(n, d)`` end points.

        Raises
        ------
        ValueError
            If the potential or its gradient is NaN or infinite at a point before a step (see
            :meth:`checked_drift`); the message names the time.
        """
        n_steps = max(1, math.ceil(duration / dt - 1e-9))
        step = duration / n_steps
        scale = math.sqrt(2.0 * step / self.beta)
        x = x0
        for i in range(n_steps):
            drift = self.checked_drift(x, f"at time {start_time + i * step:.6g}")
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = x + step * drift + scale * noise
        return x.detach()


def _check_times(times: Tensor) -> Tensor:
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if times.numel() == 0:
        raise ValueError("observations need at least one observation time")
    bad = ~torch.isfinite(times) | (times <= 0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"observation time {k} is {float(times[k])}: observation times must be finite and > 0 (the "
            f"process starts at 0), got {times.tolist()}"
        )
    if bool((times[1:] <= times[:-1]).any()):
        raise ValueError(f"observation times must be strictly increasing, got {times.tolist()}")
    return times


def _check_values(times: Tensor, values: Tensor) -> None:
    """Every observation finite (floating or complex values; integer values always are)."""
    if values.shape[0] != times.numel():
        raise ValueError(
            f"values must hold one observation per time: {times.numel()} times, {values.shape[0]} values"
        )
    if not (values.is_floating_point() or values.is_complex()):
        return
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(-1)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        others = int(bad.sum()) - 1
        raise ValueError(
            f"observation {k} (time {float(times[k])}) is not finite: {values[k].tolist()}"
            + (f" ({others} more observations are not finite either)" if others else "")
            + "; drop it or replace it before filtering"
        )


class Observations:
    """Observations ``Y_k`` at times ``t_k`` with a user-given likelihood ``log p(Y_k | x)``.

    Parameters
    ----------
    times : sequence of float
        Strictly increasing observation times, all > 0.
    values : Tensor
        ``(K, ...)``: one observation per time (any shape the likelihood understands), finite.
    log_likelihood : callable
        ``log_likelihood(y_k, x)`` with ``x`` of shape ``(n, d)`` returns ``(n,)`` log-likelihoods.

    Raises
    ------
    ValueError
        If a time is not finite and positive, the times are not increasing, or an observation is NaN
        or infinite (the message names the first such index, its time and value).
    """

    def __init__(
        self,
        times: Sequence[float] | Tensor,
        values: Tensor,
        log_likelihood: Callable[[Tensor, Tensor], Tensor],
    ) -> None:
        self.times = _check_times(times)
        values = torch.as_tensor(values)
        _check_values(self.times, values)
        if not callable(log_likelihood):
            raise TypeError(f"log_likelihood must be callable, got {type(log_likelihood).__name__}")
        self.values = values
        self._log_likelihood = log_likelihood

    def __len__(self) -> int:
        return int(self.times.numel())

    def log_likelihood(self, k: int, x: Tensor) -> Tensor:
        """``log p(Y_k | X_{t_k} = x)`` for ``(n, d)`` points, checked to be ``(n,)`` and not NaN."""
        out = self._log_likelihood(self.values[k].to(x.device), x)
        if not isinstance(out, Tensor) or out.shape != (x.shape[0],):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"log_likelihood must return shape ({x.shape[0]},) for {x.shape[0]} points, got {shape}"
            )
        if bool(torch.isnan(out).any()):
            raise ValueError(f"log_likelihood returned NaN for observation {k} (time {float(self.times[k])})")
        return out.to(x.dtype)


class GaussianObservations(Observations):
    """``Y_k = X_{t_k} + v_k``, ``v_k ~ N(0, noise_std^2 I)``.

    Parameters
    ----------
    times : sequence of float
        Strictly increasing observation times, all > 0.
    values : Tensor
        ``(K, d)`` observations, or ``(K,)`` for ``d = 1``.
    noise_std : float
        Standard deviation of the observation noise.
    """

    def __init__(self, times: Sequence[float] | Tensor, values: Tensor, noise_std: float = 1.0) -> None:
        self.noise_std = check_positive_float("noise_std", noise_std)
        values = torch.as_tensor(values, dtype=torch.float64)
        if values.ndim == 1:
            values = values.unsqueeze(-1)
        if values.ndim != 2:
            raise ValueError(f"values must have shape (K, d) or (K,), got {tuple(values.shape)}")
        super().__init__(times, values, self._gaussian)

    def _gaussian(self, y: Tensor, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != y.shape[-1]:
            raise ValueError(f"points must have shape (n, {y.shape[-1]}), got {tuple(x.shape)}")
        s = self.noise_std
        sq = (x - y.to(x.dtype)).square().sum(-1)
        return -0.5 * sq / s**2 - x.shape[1] * (math.log(s) + 0.5 * math.log(2 * math.pi))

    @property
    def dim(self) -> int:
        """Dimension ``d`` of each observation."""
        return int(self.values.shape[1])

    def coordinate(self, i: int) -> GaussianObservations:
        """The observations of coordinate ``i`` alone, a 1-D :class:`GaussianObservations`.

        The noise is isotropic, so ``p(Y_k | x) = prod_i N(Y_k[i]; x_i, noise_std^2)``: for a diffusion
        whose coordinates are independent (a separable potential and a product initial law) the
        filter factorises into the 1-D filters of the coordinates.

        Raises
        ------
        TypeError, ValueError
            If ``i`` is not an integer index of a coordinate.
        """
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"coordinate index must be an int, got {type(i).__name__}")
        if not 0 <= i < self.dim:
            raise ValueError(f"coordinate {i} out of range: the observations have {self.dim} coordinates")
        return GaussianObservations(self.times, self.values[:, i], self.noise_std)

    @classmethod
    def of_path(
        cls,
        diffusion: LangevinDiffusion,
        times: Sequence[float],
        noise_std: float,
        generator: torch.Generator,
        dt: float = 1e-3,
    ) -> tuple[GaussianObservations, Tensor]:
        """Simulate one path of ``diffusion`` (Euler-Maruyama, step ``dt``) and observe it with noise.

        Returns the observations and the path's states at the observation times, ``(K, d)``.
        """
        times_t = _check_times(torch.as_tensor(times, dtype=torch.float64))
        x = sample_distribution(diffusion.initial, 1, generator, "cpu").double()
        states, t = [], 0.0
        for t_k in times_t.tolist():
            x = diffusion.simulate(x, t_k - t, dt, generator, start_time=t)
            states.append(x[0])
            t = t_k
        states_t = torch.stack(states)
        noise = noise_std * torch.randn(states_t.shape, generator=generator, dtype=torch.float64)
        return cls(times_t, states_t + noise, noise_std), states_t


def separable_diffusion(
    potential_1d: PotentialFn, beta: float, mean0: Sequence[float], std0: Sequence[float]
) -> tuple[LangevinDiffusion, list[LangevinDiffusion]]:
    """A diffusion whose coordinates are independent 1-D diffusions, and those 1-D diffusions.

    ``Phi(x) = sum_i phi(x_i)`` and ``X_0 ~ N(mean0, diag(std0^2))``: the coordinates never interact,
    so with observations of each coordinate separately (:meth:`GaussianObservations.coordinate`)
    the filtering law is the product of the coordinates' 1-D filtering laws
    (:class:`~wgfinfer.filtering.grid.FactorisedGridFilter`).

    Parameters
    ----------
    potential_1d : callable
        ``phi``: ``(n, 1)`` points to ``(n,)`` values (a potential of the 1-D process that sums over
        its last axis, like :func:`wgfinfer.problems.filtering.sine_well_potential`, also works).
    beta : float
        Inverse temperature.
    mean0, std0 : sequence of float
        Means and standard deviations (positive) of the coordinates of ``X_0``; their length is ``d``.

    Returns
    -------
    diffusion : LangevinDiffusion
        The ``d``-dimensional process.
    coordinates : list of LangevinDiffusion
        Its ``d`` coordinates, each 1-D.
    """
    if not callable(potential_1d):
        raise TypeError(f"potential_1d must be callable, got {type(potential_1d).__name__}")
    mean = torch.as_tensor(mean0, dtype=torch.float64).reshape(-1)
    std = torch.as_tensor(std0, dtype=torch.float64).reshape(-1)
    if mean.numel() == 0 or mean.shape != std.shape:
        raise ValueError(
            f"mean0 and std0 must be non-empty and of equal length, got {mean.numel()} and {std.numel()}"
        )
    if not bool(torch.isfinite(mean).all()) or not bool((torch.isfinite(std) & (std > 0)).all()):
        raise ValueError("mean0 must be finite and std0 finite and positive")

    def potential(x: Tensor) -> Tensor:
        return potential_1d(x.reshape(-1, 1)).reshape(x.shape).sum(-1)

    diffusion = LangevinDiffusion(potential, beta, Independent(Normal(mean, std), 1))
    coordinates = [
        LangevinDiffusion(potential_1d, beta, Normal(m, s)) for m, s in zip(mean, std, strict=True)
    ]
    return diffusion, coordinates


def check_t_final(observations: Observations, t_final: float) -> float:
    """``t_final`` as a float, checked against the observations every filter is run on.

    The observations' times and values are checked again (finite, times positive and increasing):
    they are tensors, which may have been changed in place since the observations were built.

    Raises
    ------
    TypeError
        If ``observations`` is not an :class:`Observations`.
    ValueError
        If ``t_final`` is not a finite positive number, an observation comes after it, or an
        observation time or value is not finite (naming the first such index).
    """
    if not isinstance(observations, Observations):
        raise TypeError(
            "observations must be an Observations (e.g. GaussianObservations), got "
            f"{type(observations).__name__}"
        )
    _check_values(_check_times(observations.times), torch.as_tensor(observations.values))
    t_final = check_positive_float("t_final", t_final)
    last = float(observations.times[-1])
    if last > t_final:
        raise ValueError(f"observations after t_final: the last observation is at t = {last} > {t_final}")
    return t_final


def time_index(times: Sequence[float], time: float | None) -> int:
    """Index of ``time`` among a filter result's stored ``times`` (``None``: the last, ``t_final``)."""
    if time is None:
        return len(times) - 1
    for i, t in enumerate(times):
        if abs(t - float(time)) <= 1e-9 * max(1.0, abs(t)):
            return i
    raise ValueError(
        f"time {time} is not one of the stored times {list(times)} (None means t_final); valid times are "
        "the observation times and t_final"
    )

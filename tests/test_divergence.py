"""Divergence handling: failed JKO steps are retried with smaller learning rates, recorded in the
history, and reported with every attempt when the retries run out; the sampler keeps its completed
steps either way."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import wgfinfer
import wgfinfer.schemes.icnn as icnn_scheme
import wgfinfer.schemes.variational as variational_scheme
from wgfinfer.errors import TrainingDivergedError
from wgfinfer.run import ENERGY_RISE, RETRY_LR_FACTOR, RunState, energy_rise, run_steps
from wgfinfer.schemes.base import Info, check_explosion

SCHEMES = {"icnn": wgfinfer.ICNN, "variational": wgfinfer.Variational}


def small(method: str = "icnn", **kwargs) -> wgfinfer.WGFSampler:
    scheme = SCHEMES[method](iters_per_step=20, batch_size=64, hidden=(8,))
    options = dict(dim=2, scheme=scheme, n_steps=3, progress_bar=False)
    options.update(kwargs)
    return wgfinfer.WGFSampler(lambda x: -0.5 * (x - 1.0).square().sum(-1), **options)


@pytest.mark.parametrize("method", ["icnn", "variational"])
def test_a_diverged_step_is_retried_with_a_smaller_learning_rate(method, monkeypatch) -> None:
    module, fit_fn = (
        (icnn_scheme, "fit_potential") if method == "icnn" else (variational_scheme, "variational_fit")
    )
    real = getattr(module, fit_fn)
    seen: list[float] = []

    def fails_once_at_step_two(*args, **kwargs):
        config = args[4] if method == "icnn" else args[5]  # positional config of each fit function
        seen.append(config.lr)
        if kwargs["step_index"] == 1 and len(seen) == 2:
            raise TrainingDivergedError("JKO step 1, iteration 3: non-finite loss (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, fit_fn, fails_once_at_step_two)
    s = small(method=method).run()
    assert len(s.flow) == 3 and [h["step"] for h in s.history] == [1, 2, 3]
    assert s.history[1]["retries"] == [
        {"lr_scale": 1.0, "error": "JKO step 1, iteration 3: non-finite loss (injected)"}
    ]
    assert s.history[0]["retries"] == [] and s.history[2]["retries"] == []
    lr = s.scheme.lr
    assert seen == [lr, lr, lr * RETRY_LR_FACTOR, lr]  # only the retry ran at the lower rate


def test_exhausted_retries_name_the_step_and_keep_completed_steps() -> None:
    s = small(n_steps=2).run()
    s.n_steps = 3
    s.scheme = dataclasses.replace(s.scheme, lr=1e8, lr_decay=1.0)
    with pytest.raises(TrainingDivergedError, match="JKO step 2 diverged 4 times") as info:
        s.run()
    assert [a["lr_scale"] for a in info.value.attempts] == [1.0, 0.25, 0.0625, 0.015625]
    assert s.scheme.lr == 1e8  # the retries' smaller rates never replace the sampler's options
    assert len(s.flow) == 2 and len(s.history) == 2
    assert bool(torch.isfinite(s.sample(20, return_log_prob=True)[1]).all())


def test_exploding_transport_is_detected() -> None:
    before = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    check_explosion(before, before + 10.0, "JKO step 0")  # a large but sane move
    with pytest.raises(TrainingDivergedError, match="JKO step 0: the transport distance exploded"):
        check_explosion(before, before * 1e4, "JKO step 0")


def test_target_non_finite_where_a_step_moved_particles_is_a_diverged_step() -> None:
    """Finite where rho_0 lives, -inf beyond radius 20: the pool validates, then a blown-up step
    moves particles out there.  That is a diverged step (retried), not bad input."""

    def walled(x: torch.Tensor) -> torch.Tensor:
        inside = x.square().sum(-1) < 400.0
        return torch.where(inside, -0.5 * x.square().sum(-1), torch.full_like(x[:, 0], -float("inf")))

    s = wgfinfer.WGFSampler(
        walled,
        dim=2,
        n_steps=1,
        scheme=wgfinfer.Variational(iters_per_step=20, batch_size=64, hidden=(8,), lr=1e2, lr_decay=1.0),
        progress_bar=False,
        max_retries=1,
    )
    with pytest.raises(TrainingDivergedError, match="diverged 2 times") as info:
        s.run()
    assert any("non-finite value" in a["error"] for a in info.value.attempts)
    assert isinstance(wgfinfer.NonFiniteLogDensityError("x"), ValueError)  # bad input elsewhere
    with pytest.raises(wgfinfer.NonFiniteLogDensityError, match="non-finite"):
        wgfinfer.WGFSampler(lambda x: torch.full_like(x[:, 0], float("nan")), dim=2, progress_bar=False).run()


def test_a_rise_of_the_monitored_free_energy_beyond_its_noise_is_a_divergence() -> None:
    def info(energy, se=0.01):
        return Info(loss=0.0, energy=energy, energy_se=se)

    assert energy_rise(None, info(5.0)) is None  # the first step has nothing to compare with
    assert energy_rise((5.0, 0.01), Info(loss=0.0)) is None  # no monitor
    assert energy_rise((5.0, 0.01), info(3.0)) is None  # it fell
    assert energy_rise((5.0, 0.01), info(5.0 + 0.9 * ENERGY_RISE)) is None  # many SEs, under a nat
    assert energy_rise((5.0, 1.0), info(5.0 + 2.0 * ENERGY_RISE, 1.0)) is None  # within 3 SEs
    assert "rose from 5 to 7" in energy_rise((5.0, 0.01), info(7.0))
    # a few particles thrown far: the rise inflates its own standard error, the jump still counts
    assert "rose from 5 to 1e+06" in energy_rise((5.0, 0.01), info(1e6, 5e5))
    assert "is inf" in energy_rise((5.0, 0.01), info(float("inf")))


class _EnergyScheme:
    """A stand-in scheme whose second step raises the monitored free energy at full scale."""

    name = "energy"

    def __init__(self) -> None:
        self.scales: list[tuple[int, float]] = []

    def step(self, state, functional, step_size, generator, *, lr_scale, monitor, callback):
        k = state.step
        self.scales.append((k, lr_scale))
        energy = 50.0 if (k == 1 and lr_scale == 1.0) else 10.0 - k
        return dataclasses.replace(state, step=k + 1), Info(loss=energy, energy=energy, energy_se=0.1)


@dataclasses.dataclass(frozen=True)
class _Counter:
    step: int = 0


def test_run_steps_retries_a_step_that_raised_the_free_energy() -> None:
    scheme = _EnergyScheme()
    state = run_steps(scheme, RunState(_Counter()), None, 1.0, 3, torch.Generator(), monitor=object())
    assert scheme.scales == [(0, 1.0), (1, 1.0), (1, RETRY_LR_FACTOR), (2, 1.0)]
    assert [len(h["retries"]) for h in state.history] == [0, 1, 0]
    assert "free energy rose from 10 to 50" in state.history[1]["retries"][0]["error"]
    assert state.last_energy == (8.0, 0.1)
    # the particles changed outside a step (the filter's Bayes update): nothing to compare with
    fresh = run_steps(
        _EnergyScheme(), dataclasses.replace(state, last_energy=None), None, 1.0, 1, torch.Generator()
    )
    assert fresh.history[-1]["retries"] == []

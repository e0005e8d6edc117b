"""Bad input gets a clear ValueError/TypeError naming the problem."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

import wgfinfer


def good(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x.square().sum(-1)


def quick(log_density, **kwargs) -> wgfinfer.WGFSampler:
    kwargs.setdefault("dim", 2)
    return wgfinfer.WGFSampler(
        log_density,
        n_steps=1,
        scheme=wgfinfer.ICNN(iters_per_step=2, batch_size=8, n_particles=64, hidden=(4,)),
        progress_bar=False,
        **kwargs,
    )


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda x: -0.5 * x.square(), r"shape \(64,\), got shape \(64, 2\)"),
        (lambda x: (-0.5 * x.square().sum(-1)).unsqueeze(-1), r"got shape \(64, 1\)"),
        (lambda x: torch.full((x.shape[0],), float("nan")), "64 non-finite"),
        (
            lambda x: torch.where(x[:, 0] > 0, -x.square().sum(-1), torch.full_like(x[:, 0], -float("inf"))),
            "non-finite",
        ),
    ],
)
def test_malformed_log_density_raises_value_error(fn, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        quick(fn).run()


def test_non_tensor_output_raises_type_error() -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        quick(lambda x: np.zeros(x.shape[0])).run()


def test_non_differentiable_output_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not differentiable"):
        quick(lambda x: torch.from_numpy(-0.5 * (x.detach().numpy() ** 2).sum(-1))).run()


def test_output_independent_of_input_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not differentiable|does not depend"):
        quick(lambda x: torch.zeros(x.shape[0])).run()


def test_non_finite_gradient_raises_value_error() -> None:
    with pytest.raises(ValueError, match="gradient of log_density is not finite"):
        quick(lambda x: -(x * 0).sqrt().sum(-1) - 0.5 * x.square().sum(-1)).run()


def test_not_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        quick("not a function")


def test_dim_missing_without_init() -> None:
    with pytest.raises(ValueError, match="dim is required"):
        wgfinfer.WGFSampler(good)


def test_dim_inferred_from_init() -> None:
    init = MultivariateNormal(torch.zeros(3), torch.eye(3))
    assert wgfinfer.WGFSampler(good, init=init).dim == 3


def test_dim_inconsistent_with_init() -> None:
    init = MultivariateNormal(torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="inconsistent"):
        wgfinfer.WGFSampler(good, dim=2, init=init)


def test_init_must_be_a_distribution_with_vector_events() -> None:
    with pytest.raises(TypeError, match="Distribution"):
        wgfinfer.WGFSampler(good, dim=2, init=torch.zeros(2))
    with pytest.raises(ValueError, match="event shape"):
        wgfinfer.WGFSampler(good, init=torch.distributions.Normal(0.0, 1.0))


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_step_size(bad: float) -> None:
    with pytest.raises(ValueError, match="step_size"):
        quick(good, step_size=bad)


SCHEME_OPTIONS = {f.name for f in dataclasses.fields(wgfinfer.ICNN)}


def build(name: str, value) -> wgfinfer.WGFSampler:
    """A sampler with one option set: the scheme's options go into the scheme object, the initial
    measure's scale into ``Init``, the rest are the sampler's own arguments."""
    if name in SCHEME_OPTIONS:
        return wgfinfer.WGFSampler(good, dim=2, scheme=wgfinfer.ICNN(**{name: value}))
    if name == "init_scale":
        return wgfinfer.WGFSampler(good, dim=2, init=wgfinfer.Init("normal", scale=value))
    return wgfinfer.WGFSampler(good, **{"dim": 2, name: value})


@pytest.mark.parametrize(
    "name, value, error, match",
    [
        ("n_steps", 0, ValueError, "n_steps"),
        ("n_steps", 2.5, TypeError, "n_steps"),
        ("iters_per_step", -1, ValueError, "iters_per_step"),
        ("batch_size", 0, ValueError, "batch_size"),
        ("lr", 0.0, ValueError, "lr"),
        ("lr_decay", 1.5, ValueError, "lr_decay"),
        ("lr_decay", 0.0, ValueError, "lr_decay"),
        ("beta", -1.0, ValueError, "beta"),
        ("init_scale", 0.0, ValueError, "init.scale"),
        ("init_scale", 1e30, ValueError, "init_scale"),  # its square overflows float32
        ("strong_convexity", 1.5, ValueError, "strong_convexity"),
        ("scheme", "nuts", ValueError, "scheme"),
        ("dtype", torch.int64, TypeError, "dtype"),
        ("dim", 0, ValueError, "dim"),
        ("dim", True, ValueError, "dim"),
    ],
)
def test_invalid_hyper_parameters(name: str, value, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build(name, value)


def test_sample_before_run_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="run"):
        quick(good).sample(3)


def test_log_prob_checks_its_input() -> None:
    s = quick(good).run()
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        s.log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        s.log_prob(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="n must be a positive"):
        s.sample(0)


def test_summary_checks_its_probability() -> None:
    s = quick(good).run()
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="prob"):
            s.summary(num_samples=10, prob=bad)


@pytest.mark.parametrize(
    "build",
    [
        lambda: wgfinfer.ICNN(hidden="64"),
        lambda: wgfinfer.Variational(hidden="64"),
        lambda: wgfinfer.Variational(dual_hidden="64"),
        lambda: wgfinfer.PWGF(hidden="64"),
        lambda: wgfinfer.ICNN(hidden=b"64"),
    ],
)
def test_a_string_is_not_a_sequence_of_widths(build):
    # "64" would otherwise be read as the widths (6, 4)
    with pytest.raises(TypeError, match=r"hidden must be a sequence of .*ints, got str|got bytes"):
        build()


def test_a_target_with_zero_gradient_everywhere_is_told_about():
    def plateau(x):  # differentiable, finite, and flat: the flow would not move
        return torch.clamp(x.sum(-1), max=-50.0) * 0 + torch.zeros_like(x[:, 0])

    with pytest.warns(wgfinfer.FlatTargetWarning, match="exactly zero at all 64 probe points"):
        quick(plateau).run()
    with warnings.catch_warnings():
        warnings.simplefilter("error", wgfinfer.WGFWarning)
        quick(good).run()  # a real gradient: silent

"""The traced log joint of a Pyro model (``jit_compile``): equal to Pyro's, verified, with fallbacks."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_pyro import linear_regression, regression_data
from test_subsample import indexed_regression

import wgfinfer
from wgfinfer import traced_potential
from wgfinfer.laplace import hessian_of_negative_log_density
from wgfinfer.pyro_target import PyroTarget
from wgfinfer.traced_potential import TRACE_ON_CALL

F64_EPS = torch.finfo(torch.float64).eps


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to a few rounding errors of float64 relative to the largest magnitude (the recording
    computes the same operations, so it agrees to the last bits in practice)."""
    scale = 1.0 + float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=16 * F64_EPS * scale)


def value_and_grad(target: PyroTarget, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = z.detach().clone().requires_grad_(True)
    value = target.log_density(x)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def fresh_points(target: PyroTarget, count: int, n: int = 5, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        target.initial_point + 0.5 * torch.randn(n, target.dim, generator=gen, dtype=torch.float64)
        for _ in range(count)
    ]


def compare_with_eager(model, args, count: int = 6, jit_compile: bool | None = None) -> PyroTarget:
    """Value and gradient of the target with ``jit_compile`` equal those of ``jit_compile=False`` at
    ``count`` fresh inputs of one shape (the shape is traced and verified on the way)."""
    traced = PyroTarget(model, args, dtype=torch.float64, jit_compile=jit_compile)
    eager = PyroTarget(model, args, dtype=torch.float64, jit_compile=False)
    for z in fresh_points(traced, count):
        value, grad = value_and_grad(traced, z)
        expected_value, expected_grad = value_and_grad(eager, z)
        assert_same(value, expected_value)
        assert_same(grad, expected_grad)
    assert eager.jit_reason == "jit_compile=False" and not eager._potential.traced_keys
    return traced


def test_traced_plated_model_equals_eager_value_and_gradient() -> None:
    x, y = regression_data(30)
    target = compare_with_eager(linear_regression, (x, y))
    assert target.batching == "plate" and target.jit_reason is None
    assert [key[0] for key in target._potential.traced_keys] == [(5, 3)]  # replayed after the check


def grouped_regression(x: torch.Tensor, group: torch.Tensor, y: torch.Tensor) -> None:
    """Varying intercepts written for batches (``a[..., group]``) with a positive scale."""
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    with pyro.plate("groups", 4):
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 2.0))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        mean = pyro.deterministic("mean", a[..., group] + (x * beta).sum(-1))
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def tutorial_regression(x: torch.Tensor, group: torch.Tensor, y: torch.Tensor) -> None:
    """The same model as a tutorial writes it: ``x @ beta``, ``a[group]``, scalar sites."""
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    a = pyro.sample("a", dist.Normal(torch.zeros(4, dtype=x.dtype), 2.0).to_event(1))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(a[group] + x @ beta, sigma), obs=y)


def grouped_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = regression_data(24)
    return x, torch.arange(24) % 4, y


def test_traced_model_with_a_deterministic_site_equals_eager() -> None:
    target = compare_with_eager(grouped_regression, grouped_data())
    assert target.deterministic_sites == ["mean"] and target._potential.traced_keys


def test_tutorial_style_model_is_evaluated_eagerly_under_vmap_with_the_reason() -> None:
    # torch.jit.trace cannot record torch.func.vmap: the values stay Pyro's, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        target = compare_with_eager(tutorial_regression, grouped_data())
    assert target.batching == "vmap"
    assert target.jit_reason is not None and "torch.jit.trace failed" in target.jit_reason
    with pytest.warns(UserWarning, match="jit_compile=True: .*torch.jit.trace failed"):
        compare_with_eager(tutorial_regression, grouped_data(), count=TRACE_ON_CALL, jit_compile=True)


def test_traced_mini_batch_potential_takes_the_indices_as_inputs() -> None:
    x, y = regression_data(200)
    traced = PyroTarget(indexed_regression, (x, y), dtype=torch.float64, subsample_size=20, seed=3)
    eager = PyroTarget(
        indexed_regression, (x, y), dtype=torch.float64, subsample_size=20, seed=3, jit_compile=False
    )
    for z in fresh_points(traced, 6, n=4):
        for target in (traced, eager):
            x_ = z.clone().requires_grad_(True)
            value = target.training_log_density(x_)
            (grad,) = torch.autograd.grad(value.sum(), x_)
            target.result = (value.detach(), grad)
        assert_same(traced.result[0], eager.result[0])  # same seed: the same mini-batches
        assert_same(traced.result[1], eager.result[1])
    (key,) = traced._potential.traced_keys
    assert key[-1] == (("data", (20,), torch.int64),)  # the indices are an input, not a constant
    assert traced.jit_reason is None


def branching(y: torch.Tensor) -> None:
    """Python control flow on a sampled value: a recording keeps the branch of its tracing input."""
    theta = pyro.sample("theta", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 5.0))
    loc = theta if bool((theta < 3.0).all()) else 2.0 * theta
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(loc, 1.0), obs=y)


@pytest.mark.parametrize("jit_compile", [None, True])
def test_wrong_trace_is_caught_at_a_fresh_input_and_falls_back_to_eager(jit_compile) -> None:
    y = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    target = PyroTarget(branching, (y,), dtype=torch.float64, jit_compile=jit_compile)
    eager = PyroTarget(branching, (y,), dtype=torch.float64, jit_compile=False)
    assert target.batching == "plate"
    inside = torch.tensor([[0.1], [-0.2]], dtype=torch.float64)  # theta < 3: the first branch
    outside = torch.tensor([[0.1], [4.0]], dtype=torch.float64)  # one theta > 3: the other branch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for z in (inside, inside + 0.1):  # calls 1 and 2: eager, then traced at the second input
            assert_same(value_and_grad(target, z)[0], value_and_grad(eager, z)[0])
    assert target.jit_reason is None
    warned = pytest.warns(UserWarning, match="jit_compile=True")
    with warned if jit_compile else warnings.catch_warnings():
        if not jit_compile:
            warnings.simplefilter("error")
        value, grad = value_and_grad(target, outside)  # call 3: the check sees the other branch
    expected_value, expected_grad = value_and_grad(eager, outside)
    assert_same(value, expected_value)
    assert_same(grad, expected_grad)
    assert "differs from Pyro's at a fresh input" in target.jit_reason
    assert "value: max |difference|" in target.jit_reason
    assert not target._potential.traced_keys and not target._potential.active
    for z in (inside, outside):  # eager from then on
        assert_same(value_and_grad(target, z)[0], value_and_grad(eager, z)[0])


def test_hessian_through_the_recording_equals_eager() -> None:
    # the Laplace start differentiates the gradient of the log joint of one particle
    x, y = regression_data(30)
    traced = PyroTarget(linear_regression, (x, y), dtype=torch.float64)
    eager = PyroTarget(linear_regression, (x, y), dtype=torch.float64, jit_compile=False)
    for z in fresh_points(traced, 3, n=1):
        value_and_grad(traced, z)
    assert traced._potential.traced_keys
    point = fresh_points(traced, 1, n=1, seed=5)[0][0]
    hessian = hessian_of_negative_log_density(traced.log_density, point)
    expected = hessian_of_negative_log_density(eager.log_density, point)
    assert_same(hessian, expected)
    # the model is conjugate: -grad^2 log p = I + x^T x / NOISE^2, the same everywhere
    assert_same(expected, torch.eye(3, dtype=torch.float64) + x.T @ x)


def test_values_without_gradient_use_their_own_recording() -> None:
    x, y = regression_data(30)
    target = PyroTarget(linear_regression, (x, y), dtype=torch.float64)
    eager = PyroTarget(linear_regression, (x, y), dtype=torch.float64, jit_compile=False)
    with torch.no_grad():
        for z in fresh_points(target, 4):
            assert_same(target.log_density(z), eager.log_density(z))
    ((shape, _, _, grad, indices),) = target._potential.traced_keys
    assert shape == (5, 3) and grad is False and indices == ()


@pytest.mark.parametrize("bad", [1, 0, "auto", 1.0])
def test_jit_compile_must_be_none_or_a_bool(bad) -> None:
    x, y = regression_data(10)
    with pytest.raises(TypeError, match="jit_compile must be None .*True or False"):
        PyroTarget(linear_regression, (x, y), jit_compile=bad)
    with pytest.raises(TypeError, match="jit_compile must be None"):
        wgfinfer.WGFSampler(model=linear_regression, jit_compile=bad)
    with pytest.raises(TypeError, match="jit_compile applies to a Pyro model"):
        wgfinfer.WGFSampler(lambda v: -v.square().sum(-1), dim=2, jit_compile=True)


def test_sampler_passes_jit_compile_and_its_start_fit_and_training_use_the_recordings() -> None:
    x, y = regression_data(30)
    options = dict(scheme=wgfinfer.ICNN(iters_per_step=5, hidden=(8,)), n_steps=1, progress_bar=False)
    off = wgfinfer.WGFSampler(model=linear_regression, jit_compile=False, check=False, **options).run(x, y)
    assert off.target.jit_reason == "jit_compile=False" and off.options()["jit_compile"] is False
    on = wgfinfer.WGFSampler(model=linear_regression, check=False, **options).run(x, y)
    assert on.options()["jit_compile"] is None and on.target.jit_reason is None
    keys = {(key[0][0], key[3]) for key in on.target._potential.traced_keys}
    assert (1, True) in keys  # the Laplace start's mode search: one particle, with its gradient
    assert any(n > 1 and grad for n, grad in keys), keys  # the training batches
    torch.testing.assert_close(on.sample(64, seed=1), off.sample(64, seed=1), rtol=0.0, atol=1e-12)


def test_default_leaves_large_gradient_batches_eager_and_true_traces_them(monkeypatch) -> None:
    # 5 particles x 30 observations = 150 elements, above the bound: eager by default with gradient
    monkeypatch.setattr(traced_potential, "AUTO_GRADIENT_ELEMENTS", 100)
    x, y = regression_data(30)
    for jit_compile, traced_with_grad in ((None, False), (True, True)):
        target = PyroTarget(linear_regression, (x, y), dtype=torch.float64, jit_compile=jit_compile)
        points = fresh_points(target, 4)
        for z in points:
            value_and_grad(target, z)
        with torch.no_grad():
            for z in points:
                target.log_density(z)
        grads = sorted(key[3] for key in target._potential.traced_keys)
        assert grads == ([False, True] if traced_with_grad else [False]), jit_compile
        assert target.jit_reason is None

"""Property-based tests (hypothesis): every malformed log-density output and every out-of-range
hyper-parameter gives a ValueError/TypeError naming the problem; every valid one is accepted."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import wgfinfer
from wgfinfer.targets import LogDensityTarget

FLOATS = [torch.float32, torch.float64]
FLOAT32_SQRT_MAX = math.sqrt(torch.finfo(torch.float32).max)
FLOAT32_SQRT_TINY = math.sqrt(torch.finfo(torch.float32).tiny)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 17),
    d=st.integers(1, 5),
    dtype=st.sampled_from(FLOATS),
    shape_kind=st.sampled_from(["ok", "column", "matrix", "scalar", "extra_row", "flat"]),
)
def test_log_density_output_shapes(n: int, d: int, dtype: torch.dtype, shape_kind: str) -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        value = -0.5 * x.square().sum(-1)
        return {
            "ok": value,
            "column": value.unsqueeze(-1),
            "matrix": -0.5 * x.square(),
            "scalar": value.sum(),
            "extra_row": torch.cat([value, value[:1]]),
            "flat": (-0.5 * x.square()).reshape(-1),
        }[shape_kind]

    target = LogDensityTarget(f, d)
    probe = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=dtype)
    expected_shape = {"ok": (n,), "column": (n, 1), "matrix": (n, d), "scalar": (), "extra_row": (n + 1,)}
    expected_shape["flat"] = (n * d,)
    if expected_shape[shape_kind] == (n,):
        target.validate(probe)
        assert target.log_density(probe).shape == (n,)
    else:
        with pytest.raises(ValueError, match=rf"to shape \({n},\), got shape"):
            target.validate(probe)


@settings(max_examples=40, deadline=None)
@given(
    in_dtype=st.sampled_from(FLOATS),
    out_dtype=st.sampled_from([*FLOATS, torch.int64, torch.bool]),
    n_bad=st.integers(0, 3),
)
def test_log_density_output_dtypes_and_values(in_dtype, out_dtype, n_bad: int) -> None:
    n = 8

    def f(x: torch.Tensor) -> torch.Tensor:
        value = -0.5 * x.square().sum(-1)
        if n_bad:
            value = torch.cat([torch.full((n_bad,), float("nan"), dtype=x.dtype), value[n_bad:]])
        return value.to(out_dtype)

    probe = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=in_dtype)
    target = LogDensityTarget(f, 2)
    if out_dtype in (torch.int64, torch.bool):
        with pytest.raises((TypeError, ValueError)):
            target.validate(probe)
    elif n_bad:
        with pytest.raises(ValueError, match=rf"{n_bad} non-finite value"):
            target.validate(probe)
    elif out_dtype != in_dtype:
        with pytest.raises(TypeError, match="returned dtype"):
            target.validate(probe)
    else:
        target.validate(probe)


# name -> (strategy of values, predicate "is valid"); the ICNN scheme's options go into wgfinfer.ICNN,
# init_scale is the scale of wgfinfer.Init, the rest are WGFSampler's own arguments
POSITIVE_REAL = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3))
POSITIVE_INT = st.one_of(st.integers(-3, 50), st.floats(-2, 5), st.booleans())
HYPER_PARAMETERS = {
    "step_size": (POSITIVE_REAL, lambda v: _real(v) and math.isfinite(v) and v > 0),
    "beta": (POSITIVE_REAL, lambda v: _real(v) and math.isfinite(v) and v > 0),
    "lr": (POSITIVE_REAL, lambda v: _real(v) and math.isfinite(v) and v > 0),
    # the initial variance init_scale**2 must be a normal number of the default float32
    "init_scale": (POSITIVE_REAL, lambda v: _real(v) and FLOAT32_SQRT_TINY < v < FLOAT32_SQRT_MAX),
    "lr_decay": (POSITIVE_REAL, lambda v: _real(v) and math.isfinite(v) and 0 < v <= 1),
    "strong_convexity": (POSITIVE_REAL, lambda v: _real(v) and math.isfinite(v) and 0 < v < 1),
    "n_steps": (POSITIVE_INT, lambda v: _int(v) and v >= 1),
    "iters_per_step": (POSITIVE_INT, lambda v: _int(v) and v >= 1),
    "batch_size": (POSITIVE_INT, lambda v: _int(v) and v >= 1),
    # 0 switches the free-energy monitor off
    "n_monitor": (POSITIVE_INT, lambda v: _int(v) and v >= 0),
    "rank": (POSITIVE_INT, lambda v: _int(v) and v >= 0),
}


SCHEME_OPTIONS = {f.name for f in dataclasses.fields(wgfinfer.ICNN)}
# the message names the option: "init scale" (Init's own check) or "init_scale=" (its dtype's range)
MESSAGE = {"init_scale": "init.scale"}


def build(name: str, value) -> wgfinfer.WGFSampler:
    f = lambda x: -x.square().sum(-1)  # noqa: E731
    if name in SCHEME_OPTIONS:
        return wgfinfer.WGFSampler(f, dim=2, scheme=wgfinfer.ICNN(**{name: value}))
    if name == "init_scale":
        return wgfinfer.WGFSampler(f, dim=2, init=wgfinfer.Init("normal", scale=value))
    return wgfinfer.WGFSampler(f, dim=2, **{name: value})


def _real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@pytest.mark.parametrize("name", sorted(HYPER_PARAMETERS))
def test_hyper_parameter_ranges(name: str) -> None:
    strategy, valid = HYPER_PARAMETERS[name]

    @settings(max_examples=40, deadline=None)
    @given(value=strategy)
    def check(value) -> None:
        if valid(value):
            build(name, value)
        else:
            with pytest.raises((ValueError, TypeError), match=MESSAGE.get(name, name)):
                build(name, value)

    check()

"""Argument checks shared by the public entry points (messages say what was expected)."""

from __future__ import annotations

import math
import numbers

import torch
from torch.distributions import Distribution


def check_positive_int(name: str, value: object, allow_zero: bool = False) -> int:
    """Return ``value`` as an int, or raise if it is not a positive (or non-negative) integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    low = 0 if allow_zero else 1
    if value < low:
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {bound} integer, got {value}")
    return int(value)


def check_positive_float(
    name: str, value: object, upper: float | None = None, inclusive_upper: bool = False
) -> float:
    """Return ``value`` as a float, or raise if it is not finite and positive (and below ``upper``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    if upper is not None and (value > upper if inclusive_upper else value >= upper):
        relation = "at most" if inclusive_upper else "smaller than"
        raise ValueError(f"{name} must be {relation} {upper}, got {value}")
    return value


def resolve_dim(dim: int | None, init: Distribution | None) -> int:
    """The dimension ``d`` from ``dim`` and/or ``init``'s event shape, checked for consistency."""
    init_dim = None
    if init is not None:
        if not isinstance(init, Distribution):
            raise TypeError(f"init must be a torch.distributions.Distribution, got {type(init).__name__}")
        if len(init.event_shape) != 1 or init.batch_shape != torch.Size():
            raise ValueError(
                f"init must have event shape (d,) and no batch shape, got event shape "
                f"{tuple(init.event_shape)} and batch shape {tuple(init.batch_shape)}"
            )
        init_dim = int(init.event_shape[0])
    if dim is None:
        if init_dim is None:
            raise ValueError("dim is required when no init distribution is given")
        return init_dim
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if init_dim is not None and init_dim != dim:
        raise ValueError(f"dim={dim} is inconsistent with init's event shape ({init_dim},)")
    return dim


SEED_RANGE = (-(2**63), 2**64 - 1)
"""The seeds ``torch.Generator.manual_seed`` accepts."""
DTYPES = (torch.float32, torch.float64)
"""The dtypes the schemes train in (half precision has no Cholesky or solves on the CPU)."""


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is an int that ``torch.Generator.manual_seed`` accepts."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    low, high = SEED_RANGE
    if not low <= seed <= high:
        raise ValueError(f"seed must be an int in [-2**63, 2**64 - 1], got {seed}")
    return int(seed)


def check_dtype(dtype: object) -> torch.dtype:
    """Return ``dtype`` if it is ``torch.float32`` or ``torch.float64``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating torch.dtype (torch.float32 or torch.float64), got {dtype!r}"
        )
    if dtype not in DTYPES:
        raise ValueError(
            f"dtype must be torch.float32 or torch.float64, got {dtype} (the schemes' Cholesky "
            "factorisations and linear solves need single or double precision)"
        )
    return dtype


def check_jit_compile(jit_compile: object) -> bool | None:
    """The ``jit_compile`` option, checked: ``None``, ``True`` or ``False``.

    Raises
    ------
    TypeError
        If it is anything else (``1``, ``"auto"``, a NumPy bool).
    """
    if jit_compile is not None and not isinstance(jit_compile, bool):
        raise TypeError(
            f"jit_compile must be None (trace where it verifies), True or False, got {jit_compile!r} "
            f"({type(jit_compile).__name__})"
        )
    return jit_compile

"""The JKO schemes, one module each, and the one function that builds a scheme's options."""

from __future__ import annotations

from typing import Any

from wgfinfer.nn.mlp import DUAL_HEADS
from wgfinfer.schemes.icnn import ICNNSchemeConfig
from wgfinfer.schemes.variational import MAPS, VariationalSchemeConfig

METHODS = ("icnn", "variational")


def scheme_config(method: str, **options: Any) -> ICNNSchemeConfig | VariationalSchemeConfig:
    """Build-time options of ``method`` from the sampler's (already type-checked) arguments.

    An option of the other scheme set to a non-default value is an error: it would otherwise be
    silently ignored.

    Raises
    ------
    ValueError
        For an unknown method, map or dual head, empty or non-positive widths, or a foreign option.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name in ("hidden", "dual_hidden"):
        if not options[name] or any(h < 1 for h in options[name]):
            raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {options[name]}")
    icnn_only = {"affine_lr_scale": 1.0}
    variational_only = dict(
        map=None,
        dual_hidden=(64, 64, 64),
        dual_head="softplus",
        dual_steps=3,
        map_steps=1,
        dual_lr=options["lr"],
    )
    foreign = variational_only if method == "icnn" else icnn_only
    for name, default in foreign.items():
        if options[name] != default:
            raise ValueError(f"{name} is an option of the other scheme; method={method!r} does not use it")
        del options[name]
    if method == "icnn":
        return ICNNSchemeConfig(**options)
    options["map"] = "resnet" if options["map"] is None else options["map"]
    if options["map"] not in MAPS:
        raise ValueError(f"map must be one of {MAPS}, got {options['map']!r}")
    if options["dual_head"] not in DUAL_HEADS:
        raise ValueError(f"dual_head must be one of {DUAL_HEADS}, got {options['dual_head']!r}")
    return VariationalSchemeConfig(**options)

"""The JKO schemes, one module each, and the one function that builds a scheme's options."""

from __future__ import annotations

from typing import Any

from wgfinfer.nn.mlp import DUAL_HEADS
from wgfinfer.schemes.icnn import ICNNSchemeConfig
from wgfinfer.schemes.pwgf import PWGF_MAPS, PWGFConfig
from wgfinfer.schemes.variational import MAPS, VariationalSchemeConfig

METHODS = ("icnn", "variational", "pwgf")

# sampler options that only one scheme uses, with their defaults (a non-default value given to another
# scheme is an error); batch_size and map are shared but mean different things per scheme
_ICNN_ONLY = {"affine_lr_scale": 1.0}
_JKO_ONLY = {"iters_per_step": 200, "lr_decay": 0.1, "rank": 1, "strong_convexity": 1e-3}
_PWGF_ONLY = {"n_layers": None, "substeps": 1, "solver": "minres", "solver_tol": 3e-4}


def scheme_config(method: str, **options: Any) -> ICNNSchemeConfig | VariationalSchemeConfig | PWGFConfig:
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
    variational_only = dict(
        dual_hidden=(64, 64, 64),
        dual_head="softplus",
        dual_steps=3,
        map_steps=1,
        dual_lr=options["lr"],
    )
    foreign = {
        "icnn": {**variational_only, "map": None, **_PWGF_ONLY},
        "variational": {**_ICNN_ONLY, **_PWGF_ONLY},
        "pwgf": {**_ICNN_ONLY, **variational_only, **_JKO_ONLY, "lr": 5e-3},
    }[method]
    for name, default in foreign.items():
        if options[name] != default:
            raise ValueError(f"{name} is an option of another scheme; method={method!r} does not use it")
        del options[name]
    batch_size = options.pop("batch_size")
    if method == "pwgf":
        kind = "planar" if options["map"] is None else options["map"]
        if kind not in PWGF_MAPS:
            raise ValueError(f"map must be one of {PWGF_MAPS} for method='pwgf', got {kind!r}")
        return PWGFConfig(
            map=kind,
            hidden=options["hidden"],
            n_layers=options["n_layers"],
            substeps=options["substeps"],
            solver=options["solver"],
            tol=options["solver_tol"],
            n_samples=4096 if batch_size is None else batch_size,
        )
    options["batch_size"] = 256 if batch_size is None else batch_size
    if method == "icnn":
        return ICNNSchemeConfig(**options)
    options["map"] = "resnet" if options["map"] is None else options["map"]
    if options["map"] not in MAPS:
        raise ValueError(f"map must be one of {MAPS}, got {options['map']!r}")
    if options["dual_head"] not in DUAL_HEADS:
        raise ValueError(f"dual_head must be one of {DUAL_HEADS}, got {options['dual_head']!r}")
    return VariationalSchemeConfig(**options)

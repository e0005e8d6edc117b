"""The components of a save file: ``rho_0``, networks and the whitening map, as plain data.

A ``rho_0`` is stored as ``{"kind": "diag_normal" | "mvn", ...}`` (or, where it cannot be saved, as
``{"kind": "external", "type", "event_shape"}``), a JKO map or dual network as ``{"kind", "args",
"state"}`` and the affine whitening as its ``loc`` and ``scale_tril``; the ``describe_*`` functions
write these descriptions and the ``build_*`` functions rebuild the objects, raising
:class:`~wgfinfer.errors.SaveFileError` for a damaged description.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, StudentT

from wgfinfer.errors import SaveFileError
from wgfinfer.io.files import PathLike, get_entry
from wgfinfer.laplace import AffineWhitening
from wgfinfer.nn.coupling import AffineCouplingFlow
from wgfinfer.nn.icnn import DenseICNN
from wgfinfer.nn.mlp import DualNetwork, ResidualMap
from wgfinfer.nn.pushforward import AffineMap, PlanarFlow, ResidualPushforward

SAVABLE_DISTRIBUTIONS = (
    "Independent(Normal) (kind 'diag_normal'), Independent(StudentT) (kind 'diag_student_t') and "
    "MultivariateNormal (kind 'mvn')"
)


# ---------------------------------------------------------------------------------------- distributions
DIAGONAL_KINDS: dict[str, tuple[type[Distribution], tuple[str, ...]]] = {
    "diag_normal": (Normal, ("loc", "scale")),
    "diag_student_t": (StudentT, ("df", "loc", "scale")),
}
"""The ``Independent(family, 1)`` distributions a save file holds: kind -> (family, its parameters in
the order of its constructor)."""


def describe_distribution(dist: Distribution) -> dict[str, Any]:
    """A plain description of ``rho_0``.

    Returns
    -------
    dict
        ``{"kind": "diag_normal", "loc", "scale"}`` for ``Independent(Normal, 1)``,
        ``{"kind": "diag_student_t", "df", "loc", "scale"}`` for ``Independent(StudentT, 1)`` or
        ``{"kind": "mvn", "loc", "scale_tril"}`` for ``MultivariateNormal``, with event shape ``(d,)``.

    Raises
    ------
    TypeError
        For any other distribution.
    """
    if isinstance(dist, Independent) and dist.reinterpreted_batch_ndims == 1:
        base = dist.base_dist
        for kind, (family, parameters) in DIAGONAL_KINDS.items():
            if isinstance(base, family) and base.loc.ndim == 1:
                return {"kind": kind, **{name: getattr(base, name).detach().clone() for name in parameters}}
    if isinstance(dist, MultivariateNormal) and dist.loc.ndim == 1:
        return {
            "kind": "mvn",
            "loc": dist.loc.detach().clone(),
            "scale_tril": dist.scale_tril.detach().clone(),
        }
    raise TypeError(
        f"rho_0 is a {distribution_name(dist)}, which cannot be written to a save file: the kinds that "
        f"can be saved are {SAVABLE_DISTRIBUTIONS}, with event shape (d,)"
    )


def distribution_name(dist: Distribution) -> str:
    """``"Independent(StudentT)"``-style name of a distribution, for messages."""
    if isinstance(dist, Independent):
        return f"Independent({type(dist.base_dist).__name__})"
    return type(dist).__name__


def build_distribution(desc: Mapping[str, Any], path: PathLike, dtype: torch.dtype, device: torch.device):
    """The distribution described by :func:`describe_distribution`."""
    kind = desc.get("kind")
    try:
        if kind in DIAGONAL_KINDS:
            family, parameters = DIAGONAL_KINDS[kind]
            values = (get_entry(desc, k, path, Tensor).to(dtype=dtype, device=device) for k in parameters)
            return Independent(family(*values), 1)
        if kind == "mvn":
            loc = get_entry(desc, "loc", path, Tensor).to(dtype=dtype, device=device)
            tril = get_entry(desc, "scale_tril", path, Tensor).to(dtype=dtype, device=device)
            return MultivariateNormal(loc, scale_tril=tril)
    except ValueError as exc:
        if isinstance(exc, SaveFileError):
            raise
        raise SaveFileError(f"{str(path)!r} is damaged: rho_0 is not a valid {kind}: {exc}") from exc
    raise SaveFileError(f"{str(path)!r} is damaged: unknown rho_0 kind {kind!r}")


def same_description(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.get("kind") != b.get("kind") or set(a) != set(b):
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, Tensor):
            if not (isinstance(other, Tensor) and value.shape == other.shape and torch.equal(value, other)):
                return False
        elif value != other:
            return False
    return True


def rho_0_entry(base: Distribution, allow_external: bool, hint: str) -> dict[str, Any]:
    try:
        return describe_distribution(base)
    except TypeError as exc:
        if not allow_external:
            raise TypeError(f"{exc}. {hint}") from None
        return {"kind": "external", "type": distribution_name(base), "event_shape": list(base.event_shape)}


def rho_0_text(desc: Mapping[str, Any]) -> str:
    if desc.get("kind") == "external":
        return f"{desc.get('type')} with event shape {desc.get('event_shape')}"
    loc = desc.get("loc")
    shape = tuple(loc.shape) if isinstance(loc, Tensor) else "?"
    return f"{desc.get('kind')} with loc of shape {shape}"


# ---------------------------------------------------------------------------------------- networks
def _activation_of(layers: nn.Sequential) -> str | None:
    names = {nn.PReLU: "prelu", nn.CELU: "celu", nn.Tanh: "tanh"}
    found = {names[type(m)] for m in layers if type(m) in names}
    if len(found) > 1:
        raise TypeError(f"mixed activations {sorted(found)} cannot be saved")
    return found.pop() if found else None


def _hidden_of(layers: nn.Sequential) -> list[int]:
    return [m.out_features for m in layers if isinstance(m, nn.Linear)][:-1]


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def describe_module(module: nn.Module) -> dict[str, Any]:
    """``{"kind", "args", "state"}`` of a JKO map or dual network.

    Kinds: ``"icnn"`` (:class:`DenseICNN`), ``"residual"`` (:class:`ResidualMap`), ``"dual"``
    (:class:`DualNetwork`) and the PWGF maps ``"planar"``, ``"affine"``, ``"residual_pushforward"``,
    ``"coupling"``.

    Raises
    ------
    TypeError
        For any other module.
    """
    if isinstance(module, DenseICNN):
        args = {
            "dim": module.dim,
            "hidden": list(module.hidden),
            "rank": module.rank,
            "strong_convexity": module.strong_convexity,
        }
        return {"kind": "icnn", "args": args, "state": _state(module)}
    if isinstance(module, ResidualMap):
        args = {
            "dim": module.dim,
            "hidden": _hidden_of(module.residual),
            "activation": _activation_of(module.residual),
        }
        return {"kind": "residual", "args": args, "state": _state(module)}
    if isinstance(module, DualNetwork):
        args = {
            "dim": module.dim,
            "hidden": _hidden_of(module.body),
            "head": module.head,
            "bound": module.bound,
            "activation": _activation_of(module.body),
        }
        return {"kind": "dual", "args": args, "state": _state(module)}
    if isinstance(module, PlanarFlow):
        return {
            "kind": "planar",
            "args": {"dim": module.dim, "n_layers": module.n_layers},
            "state": _state(module),
        }
    if isinstance(module, AffineMap):
        return {"kind": "affine", "args": {"dim": module.dim}, "state": _state(module)}
    if isinstance(module, ResidualPushforward):
        layers = module.residual
        args = {
            "dim": module.dim,
            "hidden": _hidden_of(layers),
            "activation": _activation_of(layers),
            "output_bias": layers[-1].bias is not None,
        }
        return {"kind": "residual_pushforward", "args": args, "state": _state(module)}
    if isinstance(module, AffineCouplingFlow):
        args = {
            "dim": module.dim,
            "n_layers": module.n_layers,
            "hidden": list(module.hidden),
            "scale_bound": module.scale_bound,
        }
        return {"kind": "coupling", "args": args, "state": _state(module)}
    raise TypeError(
        f"a {type(module).__name__} cannot be saved: save files hold DenseICNN, ResidualMap, "
        "DualNetwork and the PWGF maps (PlanarFlow, AffineMap, ResidualPushforward, AffineCouplingFlow)"
    )


_MODULES: dict[str, Callable[..., nn.Module]] = {
    "icnn": DenseICNN,
    "residual": ResidualMap,
    "dual": DualNetwork,
    "planar": PlanarFlow,
    "affine": AffineMap,
    "residual_pushforward": ResidualPushforward,
    "coupling": AffineCouplingFlow,
}


def build_module(
    desc: Any, path: PathLike, where: str, dtype: torch.dtype, device: torch.device, dim: int
) -> nn.Module:
    """Rebuild a module described by :func:`describe_module`; its parameters are frozen."""
    if not isinstance(desc, Mapping):
        raise SaveFileError(f"{str(path)!r} is damaged: {where} is a {type(desc).__name__}, not a dict")
    kind = desc.get("kind")
    if kind not in _MODULES:
        raise SaveFileError(f"{str(path)!r} is damaged: {where} has unknown kind {kind!r}")
    args = dict(get_entry(desc, "args", path, dict))
    state = get_entry(desc, "state", path, dict)
    if args.get("dim") != dim:
        raise SaveFileError(
            f"{str(path)!r} is damaged: {where} has dimension {args.get('dim')!r}, the file's dim is {dim}"
        )
    try:
        module = _MODULES[kind](
            **args, generator=torch.Generator().manual_seed(0), dtype=dtype, device=device
        )
        module.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise SaveFileError(f"{str(path)!r} is damaged: cannot rebuild {where} ({kind}): {exc}") from exc
    for name, value in module.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise SaveFileError(
                f"{str(path)!r} is damaged: {where} ({kind}) has non-finite values in {name!r}"
            )
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def describe_kind(module: nn.Module) -> str:
    """The save-file kind of a map or dual network."""
    for kind, cls in _MODULES.items():
        if isinstance(module, cls):
            return kind
    return type(module).__name__


# ---------------------------------------------------------------------------------------- whitening
def whitening_entry(whitening: AffineWhitening | None) -> dict[str, Tensor] | None:
    if whitening is None:
        return None
    return {"loc": whitening.loc.detach().clone(), "scale_tril": whitening.scale_tril.detach().clone()}


def build_whitening(
    entry: Any, path: PathLike, dtype: torch.dtype, device: torch.device, dim: int
) -> AffineWhitening | None:
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise SaveFileError(f"{str(path)!r} is damaged: 'whitening' is a {type(entry).__name__}")
    loc = get_entry(entry, "loc", path, Tensor)
    tril = get_entry(entry, "scale_tril", path, Tensor)
    if loc.shape != (dim,) or tril.shape != (dim, dim):
        raise SaveFileError(
            f"{str(path)!r} is damaged: whitening of shapes {tuple(loc.shape)}, {tuple(tril.shape)} "
            f"for dim {dim}"
        )
    if not bool(torch.isfinite(loc).all() and torch.isfinite(tril).all()):
        raise SaveFileError(f"{str(path)!r} is damaged: the whitening has non-finite values")
    return AffineWhitening(loc.to(dtype=dtype, device=device), tril.to(dtype=dtype, device=device))

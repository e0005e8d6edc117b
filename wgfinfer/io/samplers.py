"""A sampler's save file: its content, writing it, rebuilding a sampler and restoring its training state.

:func:`sampler_state` collects a :class:`~wgfinfer.sampler.WGFSampler`'s configuration, scheme options,
target description, ``rho_0``, maps, whitening, dual network, history, particle pool and generator
states as plain data; :func:`save_sampler` writes it and :func:`load_sampler` rebuilds the sampler
(the target is code and is passed again), with :func:`restore_training_state` installing the trained
state, which checkpoints share.  The file layout is described in the package docstring of
:mod:`wgfinfer.io`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from wgfinfer.errors import SaveFileError
from wgfinfer.io.components import (
    _build_whitening,
    _rho_0_entry,
    _same_description,
    _whitening_entry,
    build_distribution,
    build_module,
    describe_distribution,
    describe_kind,
    describe_module,
    distribution_name,
)
from wgfinfer.io.files import (
    SAMPLER_FORMAT,
    PathLike,
    _dtype_name,
    _get,
    _header,
    _parse_device,
    _parse_dtype,
    _version,
    plain,
    read_save_file,
    write_save_file,
)
from wgfinfer.nn.mlp import DualNetwork

if TYPE_CHECKING:
    from wgfinfer.sampler import WGFSampler

# constructor arguments of WGFSampler stored under "config" (besides init, given by "rho_0"), and
# those that may differ between a checkpoint and the sampler that resumes it
_CONFIG_KEYS = (
    "dim", "method", "step_size", "n_steps", "n_particles", "n_monitor", "init", "init_scale", "beta", "seed",
    "device", "dtype", "progress_bar", "subsample_size", "max_retries",
)  # fmt: skip
_RESUME_FREE = ("n_steps", "progress_bar", "max_retries")
# scheme-config fields that are WGFSampler constructor arguments, per method
_SCHEME_ARGS = {
    "icnn": (
        "hidden", "iters_per_step", "batch_size", "lr", "lr_decay", "rank", "strong_convexity",
        "affine_lr_scale",
    ),
    "variational": (
        "map", "hidden", "dual_hidden", "dual_head", "iters_per_step", "dual_steps", "map_steps",
        "batch_size", "lr", "dual_lr", "lr_decay", "rank", "strong_convexity",
    ),
    "pwgf": ("map", "hidden", "n_layers", "substeps", "solver"),
}  # fmt: skip


# ---------------------------------------------------------------------------------------- samplers
def _sampler_config(sampler: WGFSampler) -> dict[str, Any]:
    subsample = sampler.subsample_size
    return {
        "dim": sampler.dim,
        "method": sampler.method,
        "step_size": sampler.step_size,
        "n_steps": sampler.n_steps,
        "n_particles": sampler.n_particles,
        "n_monitor": sampler.n_monitor,
        "init": sampler._init if isinstance(sampler._init, str) else "distribution",
        "init_scale": sampler._init_scale,
        "beta": sampler.beta,
        "seed": sampler.seed,
        "device": str(sampler.device),
        "dtype": _dtype_name(sampler.dtype),
        "progress_bar": sampler.progress_bar,
        "subsample_size": dict(subsample) if isinstance(subsample, Mapping) else subsample,
        "max_retries": sampler.max_retries,
    }


def _scheme_entry(config: Any) -> dict[str, Any]:
    return plain(dataclasses.asdict(config), "the scheme configuration")


def _target_entry(sampler: WGFSampler) -> dict[str, Any]:
    if sampler.model is None:
        return {"kind": "log_density"}
    shapes = getattr(sampler.target, "site_shapes", {})
    return {
        "kind": "pyro_model",
        "model_name": getattr(sampler.model, "__qualname__", type(sampler.model).__name__),
        "site_shapes": {name: list(shape) for name, shape in shapes.items()},
    }


def _subsample_generator(sampler: WGFSampler) -> torch.Generator | None:
    return getattr(sampler.target, "_subsample_generator", None)


def sampler_state(sampler: WGFSampler, save_init: bool = True, checkpoint: bool = False) -> dict[str, Any]:
    """The content of a sampler's save file (see the module docstring).

    Parameters
    ----------
    sampler : WGFSampler
        A sampler whose target is set (trained, or at least run once).
    save_init : bool
        Describe ``rho_0`` in the file; if it is not a savable kind, a :class:`TypeError` is raised.
        With ``False`` (and for checkpoints) an unsavable ``rho_0`` is recorded by its type name only
        and must be passed again as ``init=`` when loading.
    checkpoint : bool
        Written by ``run(checkpoint_dir=...)``.
    """
    if sampler.flow is None or sampler.target is None:
        raise RuntimeError(
            "the sampler has no target yet (a Pyro-model sampler gets it in run()): nothing to save"
        )
    hint = (
        "Call save(path, save_init=False) to save without rho_0 and pass the same distribution again "
        "as WGFSampler.load(path, ..., init=...)."
    )
    sub = _subsample_generator(sampler)
    content = _header(SAMPLER_FORMAT)
    content.update(
        checkpoint=bool(checkpoint),
        config=plain(_sampler_config(sampler), "the sampler configuration"),
        scheme=_scheme_entry(sampler.config),
        target=_target_entry(sampler),
        rho_0=_rho_0_entry(sampler.flow.base, allow_external=checkpoint or not save_init, hint=hint),
        maps=[describe_module(m) for m in sampler.flow.maps],
        whitening=_whitening_entry(sampler.flow.whitening),
        dual=None if sampler._dual is None else describe_module(sampler._dual),
        history=plain(sampler.history, "history"),
        training_time=float(sampler.training_time),
        generator_state=sampler._generator.get_state(),
        subsample_generator_state=None if sub is None else sub.get_state(),
        particles=_copy(sampler._particles),
        particles_log_q=_copy(sampler._particles_log_q),
    )
    return content


def _copy(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach().clone()


def save_sampler(sampler: WGFSampler, path: PathLike, save_init: bool = True) -> Path:
    """Write ``sampler`` to ``path`` atomically (see :meth:`WGFSampler.save`)."""
    return write_save_file(sampler_state(sampler, save_init=save_init), path)


def _scheme_config(method: str, entry: Any, path: PathLike) -> Any:
    from wgfinfer.schemes.icnn import ICNNSchemeConfig
    from wgfinfer.schemes.pwgf import PWGFConfig
    from wgfinfer.schemes.variational import VariationalSchemeConfig

    cls = {"icnn": ICNNSchemeConfig, "variational": VariationalSchemeConfig, "pwgf": PWGFConfig}.get(method)
    if cls is None:
        raise SaveFileError(f"{str(path)!r} is damaged: unknown method {method!r}")
    if not isinstance(entry, Mapping):
        raise SaveFileError(f"{str(path)!r} is damaged: 'scheme' is a {type(entry).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(entry) - names)
    if unknown:
        raise SaveFileError(
            f"{str(path)!r} has scheme options {unknown} that this wgfinfer ({_version()}) does not know "
            "(written by a newer version?)"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise SaveFileError(f"{str(path)!r} is damaged: scheme options {dict(entry)}: {exc}") from exc


def load_sampler(
    cls: type[WGFSampler],
    path: PathLike,
    log_density: Callable[[Tensor], Tensor] | None = None,
    model: Callable[..., Any] | None = None,
    model_args: tuple = (),
    model_kwargs: dict[str, Any] | None = None,
    init: Distribution | None = None,
) -> WGFSampler:
    """Rebuild a sampler from its save file (see :meth:`WGFSampler.load`)."""
    content = read_save_file(path, SAMPLER_FORMAT)
    config = dict(_get(content, "config", path, dict))
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        raise SaveFileError(f"{str(path)!r} is damaged: configuration entries {missing} are missing")
    target = _get(content, "target", path, dict)
    kind = target.get("kind")
    if kind not in ("log_density", "pyro_model"):
        raise SaveFileError(f"{str(path)!r} is damaged: unknown target kind {kind!r}")
    if (log_density is None) == (model is None):
        raise TypeError("WGFSampler.load needs exactly one of log_density (a callable) or model (Pyro)")
    if kind == "pyro_model" and model is None:
        raise ValueError(
            f"{str(path)!r} was saved from a sampler of a Pyro model ({target.get('model_name', '?')}, "
            f"sites {target.get('site_shapes')}): pass model= (and its model_args) to load it"
        )
    if kind == "log_density" and log_density is None:
        raise ValueError(f"{str(path)!r} was saved from a log-density sampler: pass log_density= to load it")
    for name, fn in (("log_density", log_density), ("model", model)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    dtype = _parse_dtype(config["dtype"], path)
    device = _parse_device(config["device"], path)
    dim = config["dim"]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise SaveFileError(f"{str(path)!r} is damaged: dim {dim!r}")
    rho_0 = _get(content, "rho_0", path, dict)
    init_arg = _init_for_load(rho_0, config["init"], init, path, dtype, device, dim)
    method = config["method"]
    scheme = _scheme_config(method, content.get("scheme"), path)
    scheme_args = {
        name: getattr(scheme, name)
        for name in _SCHEME_ARGS.get(method, ())
        if name in {f.name for f in dataclasses.fields(scheme)}
    }
    try:
        sampler = cls(
            log_density=log_density,
            model=model,
            dim=dim if model is None else None,
            method=method,
            step_size=config["step_size"],
            n_steps=config["n_steps"],
            n_particles=config["n_particles"],
            n_monitor=config["n_monitor"],
            init=init_arg,
            init_scale=config["init_scale"],
            beta=config["beta"],
            seed=config["seed"],
            device=device,
            dtype=dtype,
            progress_bar=config["progress_bar"],
            subsample_size=config["subsample_size"],
            max_retries=config["max_retries"],
            **scheme_args,
        )
    except (TypeError, ValueError) as exc:
        raise SaveFileError(
            f"{str(path)!r} holds a configuration this wgfinfer does not accept: {exc}"
        ) from exc
    if model is not None:
        sampler._prepare_model(tuple(model_args), dict(model_kwargs or {}))
        _check_target(sampler, target, dim, path, "the file")
    if rho_0.get("kind") != "external":  # exactly the saved tensors, whichever init built the base
        sampler.flow.base = build_distribution(rho_0, path, dtype, device)
    sampler.config = scheme
    restore_training_state(sampler, content, path)
    return sampler


def _init_for_load(
    rho_0: Mapping[str, Any],
    init_name: Any,
    init: Distribution | None,
    path: PathLike,
    dtype: torch.dtype,
    device: torch.device,
    dim: int,
) -> Distribution | str:
    """The ``init`` argument that rebuilds the saved ``rho_0`` (checking a user-given ``init``)."""
    kind = rho_0.get("kind")
    if init is not None:
        if not isinstance(init, Distribution):
            raise TypeError(f"init must be a torch Distribution, got {type(init).__name__}")
        if tuple(init.event_shape) != (dim,):
            raise ValueError(f"init has event shape {tuple(init.event_shape)}; {str(path)!r} has dim {dim}")
    if kind == "external":
        if init is None:
            raise ValueError(
                f"{str(path)!r} was saved without rho_0 (a {rho_0.get('type')}, which save files cannot "
                "hold): pass the same distribution again as init="
            )
        if distribution_name(init) != rho_0.get("type"):
            raise ValueError(
                f"init is a {distribution_name(init)}, but {str(path)!r} was trained from a "
                f"{rho_0.get('type')}"
            )
        return init
    saved = build_distribution(rho_0, path, dtype, device)
    if init is not None:
        try:
            given = describe_distribution(init)
        except TypeError:
            given = None
        if given is None or not _same_description(given, describe_distribution(saved)):
            raise ValueError(
                f"init differs from the rho_0 saved in {str(path)!r} ({rho_0.get('kind')}); init= is needed "
                "only for files saved with save_init=False"
            )
    if init_name in ("normal", "laplace", "gaussian"):
        return init_name  # the sampler rebuilds the same N(0, init_scale^2 I)
    if init_name != "distribution":
        raise SaveFileError(f"{str(path)!r} is damaged: init {init_name!r}")
    if tuple(saved.event_shape) != (dim,):
        raise SaveFileError(f"{str(path)!r} is damaged: rho_0 has event shape {tuple(saved.event_shape)}")
    return saved


def _check_target(
    sampler: WGFSampler, target: Mapping[str, Any], dim: int, path: PathLike, what: str
) -> None:
    """The rebuilt target must have the saved dimension and (Pyro) latent site shapes."""
    kind = "log_density" if sampler.model is None else "pyro_model"
    if target.get("kind") != kind:
        raise ValueError(
            f"{what} {str(path)!r} was written for a {target.get('kind')} target, this sampler has a {kind}"
        )
    if kind == "pyro_model":
        saved = {k: list(v) for k, v in dict(target.get("site_shapes", {})).items()}
        now = {k: list(v) for k, v in sampler.target.site_shapes.items()}
        if saved != now:
            raise ValueError(
                f"the model's latent sites {now} do not match those of {what} {str(path)!r}: {saved}"
            )
    if sampler.dim != dim:
        raise ValueError(f"{what} {str(path)!r} has dim {dim}, the sampler's target has dim {sampler.dim}")


def restore_training_state(sampler: WGFSampler, content: Mapping[str, Any], path: PathLike) -> None:
    """Install the maps, whitening, dual, history, particle pool and generator states of a file."""
    assert sampler.flow is not None and sampler.dim is not None
    dtype, device, dim = sampler.dtype, sampler.device, sampler.dim
    maps = [
        build_module(m, path, f"map {i + 1}", dtype, device, dim)
        for i, m in enumerate(_get(content, "maps", path, list))
    ]
    kinds = {
        "icnn": ("icnn",),
        "variational": ("icnn", "residual"),
        "pwgf": ("planar", "affine", "residual_pushforward", "coupling"),
    }[sampler.method]
    for i, m in enumerate(maps):
        if describe_kind(m) not in kinds:
            raise SaveFileError(f"{str(path)!r} is damaged: map {i + 1} is a {type(m).__name__}")
    whitening = _build_whitening(content.get("whitening"), path, dtype, device, dim)
    dual_entry = content.get("dual")
    dual = (
        None if dual_entry is None else build_module(dual_entry, path, "the dual network", dtype, device, dim)
    )
    if dual is not None and not isinstance(dual, DualNetwork):
        raise SaveFileError(f"{str(path)!r} is damaged: the dual network is a {type(dual).__name__}")
    history = _get(content, "history", path, list)
    if len(history) < len(maps):
        raise SaveFileError(f"{str(path)!r} is damaged: {len(maps)} maps but {len(history)} history entries")
    training_time = _get(content, "training_time", path, (int, float))
    state = _get(content, "generator_state", path, Tensor)
    sub_state = content.get("subsample_generator_state")
    particles = _get(content, "particles", path, (Tensor, type(None)))
    log_q = _get(content, "particles_log_q", path, (Tensor, type(None)))
    if particles is not None and tuple(particles.shape) != (sampler.n_particles, dim):
        raise SaveFileError(
            f"{str(path)!r} is damaged: particle pool of shape {tuple(particles.shape)}, expected "
            f"({sampler.n_particles}, {dim})"
        )
    generator = torch.Generator()
    try:
        generator.set_state(state)
    except (RuntimeError, TypeError) as exc:
        raise SaveFileError(f"{str(path)!r} is damaged: generator state: {exc}") from exc
    sub = _subsample_generator(sampler)
    if sub is not None and isinstance(sub_state, Tensor):
        try:
            sub.set_state(sub_state)
        except (RuntimeError, TypeError) as exc:
            raise SaveFileError(f"{str(path)!r} is damaged: subsample generator state: {exc}") from exc
    sampler.flow.maps = maps
    sampler.flow.whitening = whitening
    sampler._dual = dual
    sampler.history = [dict(entry) for entry in history]
    sampler.training_time = float(training_time)
    sampler._generator.set_state(generator.get_state())
    sampler._particles = None if particles is None else particles.to(dtype=dtype, device=device)
    sampler._particles_log_q = None if log_q is None else log_q.to(dtype=dtype, device=device)

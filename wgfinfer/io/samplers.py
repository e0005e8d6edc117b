"""A sampler's save file: its content, and the parts a sampler is rebuilt from.

A save file is ``{"options", "scheme", "target", "rho_0", "whitening", "state", "history",
"start_checks", "training_time", "last_energy", "generator_states"}`` besides the header: the run options of
:class:`~wgfinfer.WGFSampler`, the scheme's options (``{"name": ..., **options}``), a description of
the target (code is never stored), ``rho_0``, the whitening, the scheme's state (its pool, maps,
duals and step index, tensors and network descriptions), the run's history (and the check records
of a start that needed no step, the free energy after the last step) and the states of every
random generator the run advances.  :func:`sampler_content` writes it from a sampler's public
attributes; :func:`read_sampler` checks a file and :func:`scheme_from_entry`,
:func:`run_state_from_content` and :func:`generator_states` rebuild its parts.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from wgfinfer.errors import SaveFileError
from wgfinfer.flow import sample_distribution
from wgfinfer.io.components import (
    build_distribution,
    build_module,
    describe_distribution,
    describe_kind,
    describe_module,
    distribution_name,
    rho_0_entry,
    same_description,
    whitening_entry,
)
from wgfinfer.io.files import (
    SAMPLER_FORMAT,
    PathLike,
    get_entry,
    header,
    plain,
    read_save_file,
    write_save_file,
)
from wgfinfer.nn.mlp import DualNetwork
from wgfinfer.run import RunState
from wgfinfer.schemes import SCHEMES, Scheme
from wgfinfer.schemes.icnn import ICNNState
from wgfinfer.schemes.pwgf import PWGFState
from wgfinfer.schemes.variational import VariationalState
from wgfinfer.stopping import DEFAULT_MAX_STEPS

if TYPE_CHECKING:
    from wgfinfer.sampler import WGFSampler

OPTION_KEYS = (
    "dim", "step_size", "n_steps", "init", "beta", "seed", "device", "dtype", "progress_bar",
    "subsample_size", "max_retries", "max_steps", "time_budget",
)  # fmt: skip
"""The run options stored under ``"options"``."""
OPTION_DEFAULTS: dict[str, Any] = {
    "max_steps": DEFAULT_MAX_STEPS,
    "time_budget": None,
    "check": True,
    "jit_compile": None,
}
"""Run options added after the first files of this format: a file without them (older) is read with
these values."""
RESUME_FREE = ("n_steps", "max_steps", "time_budget", "progress_bar", "max_retries")
"""Run options that may differ between a checkpoint and the sampler that resumes it."""
STATE_TYPES = {"icnn": ICNNState, "variational": VariationalState, "pwgf": PWGFState}
MAP_KINDS = {
    "icnn": ("icnn",),
    "variational": ("icnn", "residual"),
    "pwgf": ("planar", "affine", "residual_pushforward", "coupling"),
}
_MODULE_FIELDS = ("maps", "duals")


# ------------------------------------------------------------------------------------ writing
PROBE_POINTS = 4
"""Points at which a save file records the target's log-density (its fingerprint)."""
PROBE_TOLERANCE = 1000
"""A stored log-density value ``y`` matches a recomputed one within ``PROBE_TOLERANCE * eps * (1 + |y|)``
(``eps`` of the sampler's dtype): summation order and thread counts change the last bits, a
different target or data set changes far more."""


def target_entry(sampler: WGFSampler) -> dict[str, Any]:
    """The target's description and fingerprint.

    ``{"kind": "log_density"}`` or the Pyro model's name and latent sites (names in order, shapes),
    plus ``probe_points`` (a few points of the particle pool, or of ``rho_0`` before the first step,
    in the target's coordinates) and ``probe_log_density``, the full-data log-density there.
    """
    entry: dict[str, Any] = {"kind": "log_density"}
    if sampler.model is not None:
        shapes = getattr(sampler.target, "site_shapes", {})
        entry = {
            "kind": "pyro_model",
            "model_name": getattr(sampler.model, "__qualname__", type(sampler.model).__name__),
            "site_names": list(shapes),
            "site_shapes": {name: list(shape) for name, shape in shapes.items()},
        }
    points = probe_points(sampler)
    assert sampler.target is not None
    with torch.no_grad():
        values = sampler.target.log_density(points)
    entry["probe_points"] = points.detach().cpu().clone()
    entry["probe_log_density"] = values.detach().cpu().clone()
    return entry


def probe_points(sampler: WGFSampler) -> Tensor:
    """The first :data:`PROBE_POINTS` pool particles (draws of ``rho_0`` before the first step, from
    a fixed seed), in the target's coordinates."""
    run = sampler.run_state
    if run is not None:
        z = run.scheme_state.particles[:PROBE_POINTS].detach()
    else:
        flow = sampler.flow
        assert flow is not None
        z = sample_distribution(flow.base, PROBE_POINTS, torch.Generator().manual_seed(0), sampler.device)
    white = sampler.whitening
    return z if white is None else white.forward(z).detach()


def target_difference(sampler: WGFSampler, target: Mapping[str, Any], path: PathLike) -> str | None:
    """How the sampler's log-density differs from the fingerprint in a file's ``target`` entry, or
    ``None`` if it matches (or the entry has no fingerprint)."""
    points, stored = target.get("probe_points"), target.get("probe_log_density")
    if points is None and stored is None:
        return None
    dim = sampler.dim
    if (
        not isinstance(points, Tensor)
        or not isinstance(stored, Tensor)
        or points.ndim != 2
        or points.shape[1] != dim
        or stored.shape != (points.shape[0],)
        or not bool(torch.isfinite(points).all())
    ):
        raise SaveFileError(f"{str(path)!r} is damaged: its target fingerprint (probe points) is malformed")
    assert sampler.target is not None
    dtype = sampler.dtype
    x = points.to(dtype=dtype, device=sampler.device)
    with torch.no_grad():
        try:
            now = sampler.target.log_density(x).detach().cpu().to(torch.float64)
        except (ValueError, TypeError) as exc:
            return f"at the stored points the target fails: {exc}"
    saved = stored.to(torch.float64)
    tolerance = PROBE_TOLERANCE * torch.finfo(dtype).eps * (1 + saved.abs())
    gap = (now - saved).abs()
    off = ~(gap <= tolerance)
    if not bool(off.any()):
        return None
    i = int(torch.where(off, gap.nan_to_num(float("inf")), torch.zeros_like(gap)).argmax())
    return (
        f"its log-density differs at {int(off.sum())} of {points.shape[0]} stored points (at point {i} "
        f"the file holds {float(saved[i]):.8g}, this target gives {float(now[i]):.8g})"
    )


def scheme_entry(scheme: Scheme) -> dict[str, Any]:
    """The scheme's name and options as plain data."""
    return plain({"name": scheme.name, **scheme.options()}, "the scheme options")


def state_entry(state: Any) -> dict[str, Any]:
    """A scheme state as plain data: tensors cloned, networks described, ``base`` left out (it is
    the file's ``rho_0``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if f.name == "base":
            continue
        if f.name in _MODULE_FIELDS:
            out[f.name] = [describe_module(m) for m in value]
        elif isinstance(value, Tensor):
            out[f.name] = value.detach().clone()
        else:
            out[f.name] = value
    return out


def sampler_content(sampler: WGFSampler, save_init: bool = True, checkpoint: bool = False) -> dict[str, Any]:
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
    flow = sampler.flow
    if flow is None or sampler.target is None:
        raise RuntimeError(
            "the sampler has no target yet (a Pyro-model sampler gets it in run()): nothing to save"
        )
    hint = (
        "Call save(path, save_init=False) to save without rho_0 and pass the same distribution again "
        "as WGFSampler.load(path, ..., init=...)."
    )
    run = sampler.run_state
    content = header(SAMPLER_FORMAT)
    content.update(
        checkpoint=bool(checkpoint),
        options=plain(sampler.options(), "the sampler options"),
        scheme=scheme_entry(sampler.scheme),
        target=target_entry(sampler),
        rho_0=rho_0_entry(flow.base, allow_external=checkpoint or not save_init, hint=hint),
        whitening=whitening_entry(sampler.whitening),
        state=None if run is None else state_entry(run.scheme_state),
        history=plain([] if run is None else list(run.history), "history"),
        start_checks=plain([] if run is None else list(run.start_checks), "start checks"),
        training_time=0.0 if run is None else float(run.training_time),
        last_energy=None if run is None or run.last_energy is None else [float(v) for v in run.last_energy],
        generator_states=[g.get_state() for g in sampler.generators],
    )
    return content


def save_sampler(sampler: WGFSampler, path: PathLike, save_init: bool = True) -> Path:
    """Write ``sampler`` to ``path`` atomically (see :meth:`WGFSampler.save`)."""
    return write_save_file(sampler_content(sampler, save_init=save_init), path)


# ------------------------------------------------------------------------------------ reading
def read_sampler(path: PathLike) -> dict[str, Any]:
    """Read a sampler save file and check that its entries are there.

    Raises
    ------
    SaveFileError
        If the file is not a readable sampler file of this format version, or entries are missing
        (a file of the format before schemes were options objects says so).
    """
    content = read_save_file(path, SAMPLER_FORMAT)
    options = get_entry(content, "options", path, dict)
    missing = [k for k in OPTION_KEYS if k not in options and k not in OPTION_DEFAULTS]
    if missing:
        raise SaveFileError(f"{str(path)!r} is damaged: option entries {missing} are missing")
    target = get_entry(content, "target", path, dict)
    if target.get("kind") not in ("log_density", "pyro_model"):
        raise SaveFileError(f"{str(path)!r} is damaged: unknown target kind {target.get('kind')!r}")
    get_entry(content, "rho_0", path, dict)
    get_entry(content, "scheme", path, dict)
    return content


def scheme_from_entry(entry: Mapping[str, Any], path: PathLike) -> Scheme:
    """Rebuild a scheme's options object from its file entry."""
    entry = dict(entry)
    name = entry.pop("name", None)
    cls = SCHEMES.get(name) if isinstance(name, str) else None
    if cls is None or name not in STATE_TYPES:
        raise SaveFileError(f"{str(path)!r} is damaged: unknown scheme {name!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(entry) - names)
    if unknown:
        raise SaveFileError(
            f"{str(path)!r} has {name} options {unknown} that this wgfinfer does not know (written by a "
            "newer version?)"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SaveFileError(f"{str(path)!r} is damaged: {name} options {entry}: {exc}") from exc


def init_for_load(
    rho_0: Mapping[str, Any],
    init_entry: Any,
    init: Distribution | None,
    path: PathLike,
    dtype: torch.dtype,
    device: torch.device,
    dim: int,
) -> Any:
    """The ``init`` argument that rebuilds the saved ``rho_0`` (checking a user-given ``init``); the
    loaded sampler's ``rho_0`` is then the file's own tensors
    (:func:`~wgfinfer.io.checkpoints.restore_from_content`)."""
    from wgfinfer.init import Init

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
    if tuple(saved.event_shape) != (dim,):
        raise SaveFileError(f"{str(path)!r} is damaged: rho_0 has event shape {tuple(saved.event_shape)}")
    if init is not None:
        try:
            given = describe_distribution(init)
        except TypeError:
            given = None
        if given is None or not same_description(given, describe_distribution(saved)):
            raise ValueError(
                f"init differs from the rho_0 saved in {str(path)!r} ({rho_0.get('kind')}); init= is needed "
                "only for files saved with save_init=False"
            )
    if isinstance(init_entry, Mapping):
        try:
            return Init(init_entry.get("kind"), init_entry.get("scale"), init_entry.get("df"))
        except (TypeError, ValueError) as exc:
            raise SaveFileError(f"{str(path)!r} is damaged: init {dict(init_entry)}: {exc}") from exc
    if init_entry != "distribution":
        raise SaveFileError(f"{str(path)!r} is damaged: init {init_entry!r}")
    return saved


def run_state_from_content(
    content: Mapping[str, Any],
    scheme: Scheme,
    base: Distribution,
    path: PathLike,
    dtype: torch.dtype,
    device: torch.device,
    dim: int,
) -> RunState | None:
    """The run state of a file (``None`` for a sampler saved before its first run)."""
    entry = content.get("state")
    history = get_entry(content, "history", path, list)
    training_time = get_entry(content, "training_time", path, (int, float))
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise SaveFileError(f"{str(path)!r} is damaged: 'state' is a {type(entry).__name__}")
    cls = STATE_TYPES[scheme.name]
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "base":
            values["base"] = base
            continue
        if f.name not in entry:
            if f.default is None:  # a field newer than the file (PWGFState.velocity)
                values[f.name] = None
                continue
            raise SaveFileError(f"{str(path)!r} is damaged: the state has no {f.name!r}")
        value = entry[f.name]
        if f.name in _MODULE_FIELDS:
            if not isinstance(value, list):
                raise SaveFileError(f"{str(path)!r} is damaged: state {f.name!r} is a {type(value).__name__}")
            value = tuple(
                build_module(m, path, f"{f.name[:-1]} {i + 1}", dtype, device, dim)
                for i, m in enumerate(value)
            )
        elif isinstance(value, Tensor):
            if not bool(torch.isfinite(value).all()):
                raise SaveFileError(f"{str(path)!r} is damaged: the state's {f.name!r} has non-finite values")
            value = value.to(dtype=dtype, device=device)
        elif f.name == "step":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SaveFileError(f"{str(path)!r} is damaged: state step {value!r}")
        elif value is not None:
            raise SaveFileError(f"{str(path)!r} is damaged: state {f.name!r} is a {type(value).__name__}")
        values[f.name] = value
    state = cls(**values)
    _check_state(state, scheme, path, dim)
    if len(history) < state.step:
        raise SaveFileError(
            f"{str(path)!r} is damaged: {state.step} steps but {len(history)} history entries"
        )
    start_checks = content.get("start_checks", [])  # files written before zero-step flows lack it
    if not isinstance(start_checks, list) or not all(isinstance(r, Mapping) for r in start_checks):
        raise SaveFileError(f"{str(path)!r} is damaged: 'start_checks' is not a list of records")
    return RunState(
        state,
        tuple(dict(e) for e in history[: state.step]),
        float(training_time),
        tuple(dict(r) for r in start_checks) if state.step == 0 else (),
        last_energy=_last_energy(content, path),
    )


def _last_energy(content: Mapping[str, Any], path: PathLike) -> tuple[float, float] | None:
    """The free energy and its standard error after the last saved step, which the first step
    after loading compares with (:func:`wgfinfer.run.energy_rise`), as it would have unsaved;
    ``None`` in files written before it was saved."""
    value = content.get("last_energy")
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, float) and math.isfinite(v) for v in value)
    ):
        raise SaveFileError(f"{str(path)!r} is damaged: 'last_energy' is not two finite numbers")
    return value[0], value[1]


def _check_state(state: Any, scheme: Scheme, path: PathLike, dim: int) -> None:
    kinds = MAP_KINDS[scheme.name]
    for i, m in enumerate(state.maps):
        if describe_kind(m) not in kinds:
            raise SaveFileError(f"{str(path)!r} is damaged: map {i + 1} is a {type(m).__name__}")
    if len(state.maps) != state.step:
        raise SaveFileError(f"{str(path)!r} is damaged: {len(state.maps)} maps after {state.step} steps")
    for h in getattr(state, "duals", ()):
        if not isinstance(h, DualNetwork):
            raise SaveFileError(f"{str(path)!r} is damaged: a dual network is a {type(h).__name__}")
    n = scheme.n_monitor if scheme.name == "pwgf" else scheme.pool_size  # type: ignore[attr-defined]
    if tuple(state.particles.shape) != (n, dim):
        raise SaveFileError(
            f"{str(path)!r} is damaged: particle pool of shape {tuple(state.particles.shape)}, expected "
            f"({n}, {dim})"
        )
    log_q = getattr(state, "log_q", None)
    if log_q is not None and (log_q.ndim != 1 or log_q.shape[0] > n):
        raise SaveFileError(f"{str(path)!r} is damaged: log-densities of shape {tuple(log_q.shape)}")


def generator_states(content: Mapping[str, Any], path: PathLike, count: int) -> list[Tensor]:
    """The file's generator states, each checked by loading it into a fresh generator."""
    states = get_entry(content, "generator_states", path, list)
    if not states or len(states) > count:
        raise SaveFileError(
            f"{str(path)!r} is damaged: {len(states)} generator states for a sampler with {count} generators"
        )
    for i, s in enumerate(states):
        try:
            torch.Generator().set_state(s)
        except (RuntimeError, TypeError) as exc:
            raise SaveFileError(f"{str(path)!r} is damaged: generator state {i}: {exc}") from exc
    return list(states)


def check_target(
    sampler: WGFSampler,
    target: Mapping[str, Any],
    dim: Any,
    path: PathLike,
    what: str,
    strict: bool = True,
) -> None:
    """The sampler's target must be the one ``target`` (a file's entry) describes.

    Its kind, dimension and (Pyro) latent site names, order and shapes must match; so must its
    log-density at the stored probe points (:func:`target_difference`).  A different log-density
    raises ``ValueError``, or with ``strict=False`` warns.
    """
    kind = "log_density" if sampler.model is None else "pyro_model"
    if target.get("kind") != kind:
        raise ValueError(
            f"{what} {str(path)!r} was written for a {target.get('kind')} target, this sampler has a {kind}"
        )
    if kind == "pyro_model":
        saved = {k: list(v) for k, v in dict(target.get("site_shapes", {})).items()}
        now = {k: list(v) for k, v in sampler.target.site_shapes.items()}  # type: ignore[union-attr]
        if saved != now:
            raise ValueError(
                f"the model's latent sites {now} do not match those of {what} {str(path)!r}: {saved}"
            )
        order = target.get("site_names")
        if order is not None and list(order) != list(now):
            raise ValueError(
                f"the model's latent sites come in the order {list(now)}, those of {what} "
                f"{str(path)!r} in the order {list(order)}: the flow's coordinates would be mixed up"
            )
    if sampler.dim != dim:
        raise ValueError(f"{what} {str(path)!r} has dim {dim}, the sampler's target has dim {sampler.dim}")
    difference = target_difference(sampler, target, path)
    if difference is None:
        return
    message = (
        f"the target is not the one {what} {str(path)!r} was written for: {difference}; pass the same "
        + ("log_density" if kind == "log_density" else "model and data")
        + " again"
    )
    if strict:
        raise ValueError(
            message
            + (
                " (or WGFSampler.load(..., check_target=False) to use the saved flow with this target)"
                if what == "the file"
                else ""
            )
        )
    warnings.warn(message + "; loaded anyway (check_target=False)", UserWarning, stacklevel=3)

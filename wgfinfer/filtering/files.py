"""A filter result's save file: its content, writing it and rebuilding the result.

:func:`filter_result_state` collects a :class:`~wgfinfer.filtering.result.FilterResult`'s maps, initial
law, observations, times, draws, acceptance rates, history, evidence estimate and MCMC settings as
plain data; :func:`save_filter_result` writes it and :func:`load_filter_result` rebuilds the result,
checking that the diffusion and observations passed again (they are code and are not stored) match
the saved ones.

It lives in the filtering package, on top of :mod:`wgfinfer.io.files` and
:mod:`wgfinfer.io.components`, so that :mod:`wgfinfer.io` never imports :mod:`wgfinfer.filtering`.
:meth:`FilterResult.save <wgfinfer.filtering.result.FilterResult.save>` and ``load`` import this
module when called; it returns plain parts, so it never imports :mod:`~wgfinfer.filtering.result`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from wgfinfer.errors import SaveFileError
from wgfinfer.filtering.mcmc import FlowTrajectories, MCMCSettings
from wgfinfer.filtering.models import LangevinDiffusion, Observations
from wgfinfer.io.components import (
    build_module,
    describe_distribution,
    describe_module,
    distribution_name,
    rho_0_entry,
    rho_0_text,
    same_description,
)
from wgfinfer.io.files import (
    FILTER_RESULT_FORMAT,
    PathLike,
    dtype_name,
    get_entry,
    header,
    parse_device,
    parse_dtype,
    plain,
    read_save_file,
    write_save_file,
)
from wgfinfer.nn.icnn import DenseICNN

if TYPE_CHECKING:
    from wgfinfer.filtering.result import FilterResult


# ---------------------------------------------------------------------------------------- filter results
def filter_result_state(result: FilterResult) -> dict[str, Any]:
    """The content of a filter result's save file."""
    paths = result.paths
    content = header(FILTER_RESULT_FORMAT)
    content.update(
        maps=[describe_module(m) for m in paths.maps],
        base=rho_0_entry(paths.base, allow_external=True, hint=""),
        dim=int(paths.base.event_shape[0]),
        dtype=dtype_name(next(paths.maps[0].parameters()).dtype) if paths.maps else None,
        device=str(next(paths.maps[0].parameters()).device) if paths.maps else "cpu",
        obs_after_map=[int(i) for i in paths.obs_after_map],
        observation_times=paths.observations.times.detach().clone(),
        observation_values=torch.as_tensor(paths.observations.values).detach().clone(),
        times=[float(t) for t in result.times],
        maps_at=[int(i) for i in result.maps_at],
        t_final=float(result.t_final),
        draws=[{"time": float(t), "x": x.detach().clone()} for t, x in result.draws.items()],
        acceptance_rate=[[float(t), float(a)] for t, a in result.acceptance_rate.items()],
        history=plain(result.history, "history"),
        log_evidence=float(result.log_evidence),
        log_evidence_se=float(result.log_evidence_se),
        mcmc=plain(dataclasses.asdict(result.mcmc), "the MCMC settings"),
        seed=int(result.seed),
        wall_time=float(result.wall_time),
    )
    return content


def save_filter_result(result: FilterResult, path: PathLike) -> Path:
    """Write ``result`` to ``path`` atomically (see :meth:`FilterResult.save`)."""
    return write_save_file(filter_result_state(result), path)


def load_filter_result(
    path: PathLike, diffusion: LangevinDiffusion, observations: Observations
) -> dict[str, Any]:
    """The constructor arguments of a filter result from its save file (see
    :meth:`FilterResult.load`)."""
    if not isinstance(diffusion, LangevinDiffusion):
        raise TypeError(f"diffusion must be a LangevinDiffusion, got {type(diffusion).__name__}")
    if not isinstance(observations, Observations):
        raise TypeError(f"observations must be an Observations, got {type(observations).__name__}")
    content = read_save_file(path, FILTER_RESULT_FORMAT)
    dim = get_entry(content, "dim", path, int)
    if diffusion.dim != dim:
        raise ValueError(
            f"{str(path)!r} holds a filter of dimension {dim}, the diffusion has {diffusion.dim}"
        )
    base = content.get("base")
    if isinstance(base, Mapping) and base.get("kind") != "external":
        try:
            given = describe_distribution(diffusion.initial)
        except TypeError:
            given = None
        if given is None or not same_description(given, base):
            raise ValueError(
                f"the diffusion's initial law ({distribution_name(diffusion.initial)}) differs from the one "
                f"saved in {str(path)!r} ({rho_0_text(base)})"
            )
    times = get_entry(content, "observation_times", path, Tensor)
    values = get_entry(content, "observation_values", path, Tensor)
    now_values = torch.as_tensor(observations.values)
    if not (
        times.shape == observations.times.shape
        and torch.equal(times, observations.times.cpu())
        and values.shape == now_values.shape
        and torch.equal(values, now_values.cpu().to(values.dtype))
    ):
        raise ValueError(
            f"the observations differ from those saved in {str(path)!r} (times {times.tolist()}, values of "
            f"shape {tuple(values.shape)})"
        )
    map_entries = get_entry(content, "maps", path, list)
    dtype = parse_dtype(content.get("dtype"), path) if map_entries else torch.float64
    device = parse_device(content.get("device", "cpu"), path)
    maps = [build_module(m, path, f"map {i + 1}", dtype, device, dim) for i, m in enumerate(map_entries)]
    if not all(isinstance(m, DenseICNN) for m in maps):
        raise SaveFileError(f"{str(path)!r} is damaged: a filter's maps are DenseICNN potentials")
    mcmc_entry = get_entry(content, "mcmc", path, dict)
    try:
        mcmc = MCMCSettings(**mcmc_entry)
    except TypeError as exc:
        raise SaveFileError(f"{str(path)!r} is damaged: MCMC settings {mcmc_entry}: {exc}") from exc
    draws: dict[float, Tensor] = {}
    for entry in get_entry(content, "draws", path, list):
        draws[float(get_entry(entry, "time", path, float))] = get_entry(entry, "x", path, Tensor).to(device)
    acceptance = {float(t): float(a) for t, a in get_entry(content, "acceptance_rate", path, list)}
    paths = FlowTrajectories(
        diffusion.initial,
        maps,
        observations,
        [int(i) for i in get_entry(content, "obs_after_map", path, list)],
        dtype=next(maps[0].parameters()).dtype if maps else None,
    )
    return dict(
        paths=paths,
        times=[float(t) for t in get_entry(content, "times", path, list)],
        maps_at=[int(i) for i in get_entry(content, "maps_at", path, list)],
        t_final=float(get_entry(content, "t_final", path, float)),
        draws=draws,
        acceptance_rate=acceptance,
        history=[dict(e) for e in get_entry(content, "history", path, list)],
        log_evidence=float(get_entry(content, "log_evidence", path, float)),
        log_evidence_se=float(get_entry(content, "log_evidence_se", path, float)),
        mcmc=mcmc,
        seed=int(get_entry(content, "seed", path, int)),
        wall_time=float(get_entry(content, "wall_time", path, float)),
    )

"""Checkpoints of a running sampler and rollback snapshots of a training step.

``run(checkpoint_dir=...)`` writes the sampler's full state (a sampler save file with the particle
pool and generator states) to ``checkpoint_dir / "checkpoint.pt"`` after every step
(:func:`write_checkpoint`); :func:`prepare_checkpoint` resumes from it, after
:func:`check_compatible` has compared its configuration with the sampler's, or warns before
overwriting it.  :func:`training_snapshot` and :func:`restore_training_snapshot` roll a partly done
step back in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgfinfer.io.components import _rho_0_entry, _rho_0_text, _same_description
from wgfinfer.io.files import SAMPLER_FORMAT, PathLike, _get, plain, read_save_file, write_save_file
from wgfinfer.io.samplers import (
    _CONFIG_KEYS,
    _RESUME_FREE,
    _check_target,
    _sampler_config,
    _scheme_entry,
    _subsample_generator,
    restore_training_state,
    sampler_state,
)

if TYPE_CHECKING:
    from wgfinfer.sampler import WGFSampler

CHECKPOINT_NAME = "checkpoint.pt"


# ---------------------------------------------------------------------------------------- checkpoints
def checkpoint_path(checkpoint_dir: PathLike | None, resume: bool) -> Path | None:
    """``checkpoint_dir / "checkpoint.pt"`` (the directory is created), or ``None``."""
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir (the directory run() wrote its checkpoint to)")
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path, got {type(checkpoint_dir).__name__}")
    directory = Path(os.fspath(checkpoint_dir))
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"checkpoint_dir {str(directory)!r} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / CHECKPOINT_NAME


def write_checkpoint(sampler: WGFSampler, path: Path) -> None:
    """Write the sampler's full state (pool and generators included) to ``path`` atomically."""
    write_save_file(sampler_state(sampler, checkpoint=True), path)


def prepare_checkpoint(sampler: WGFSampler, path: Path, resume: bool) -> None:
    """Before a run with ``checkpoint_dir``: resume from ``path`` or warn about overwriting it.

    With ``resume=True`` and a checkpoint at ``path``, the checkpoint's configuration and dimension
    are checked against ``sampler`` and its state replaces the sampler's; stale temporary files of
    killed writers are removed.  Without a checkpoint the run starts fresh.
    """
    if resume:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        if path.exists():
            content = read_save_file(path, SAMPLER_FORMAT)
            check_compatible(sampler, content, path)
            restore_training_state(sampler, content, path)
    elif path.exists() and sampler.flow is not None and not sampler.flow.maps:
        warnings.warn(
            f"{str(path)!r} already holds a checkpoint; this run starts fresh and overwrites it after "
            "its first step (pass resume=True to continue it)",
            UserWarning,
            stacklevel=3,
        )


def check_compatible(sampler: WGFSampler, content: Mapping[str, Any], path: PathLike) -> None:
    """Raise ``ValueError`` naming every difference between a checkpoint's configuration and ``sampler``'s.

    ``n_steps`` and ``progress_bar`` may differ (a resumed run may train longer).
    """
    saved = _get(content, "config", path, dict)
    now = plain(_sampler_config(sampler), "the sampler configuration")
    diffs = [
        f"{key}: checkpoint {saved.get(key)!r}, sampler {now[key]!r}"
        for key in _CONFIG_KEYS
        if key not in _RESUME_FREE and saved.get(key) != now[key]
    ]
    saved_scheme = content.get("scheme") if isinstance(content.get("scheme"), Mapping) else {}
    now_scheme = _scheme_entry(sampler.config)
    for key in sorted(set(saved_scheme) | set(now_scheme)):
        if saved_scheme.get(key) != now_scheme.get(key):
            diffs.append(f"{key}: checkpoint {saved_scheme.get(key)!r}, sampler {now_scheme.get(key)!r}")
    assert sampler.flow is not None
    rho_0 = _get(content, "rho_0", path, dict)
    mine = _rho_0_entry(sampler.flow.base, allow_external=True, hint="")
    same = (
        mine.get("type") == rho_0.get("type") and mine.get("event_shape") == rho_0.get("event_shape")
        if mine["kind"] == "external" or rho_0.get("kind") == "external"
        else _same_description(mine, rho_0)
    )
    if not same:
        diffs.append(f"rho_0: checkpoint {_rho_0_text(rho_0)}, sampler {_rho_0_text(mine)}")
    if diffs:
        raise ValueError(
            f"the checkpoint {str(path)!r} was written by a differently configured sampler; differences: "
            + "; ".join(diffs)
        )
    _check_target(sampler, _get(content, "target", path, dict), saved.get("dim"), path, "the checkpoint")


def training_snapshot(sampler: WGFSampler) -> dict[str, Any]:
    """What a JKO step changes, cheaply (references and generator states): for rolling it back."""
    sub = _subsample_generator(sampler)
    assert sampler.flow is not None
    return {
        "n_maps": len(sampler.flow.maps),
        "n_history": len(sampler.history),
        "whitening": sampler.flow.whitening,
        "particles": sampler._particles,
        "particles_log_q": sampler._particles_log_q,
        "dual": sampler._dual,
        "config": sampler.config,
        "training_time": sampler.training_time,
        "generator": sampler._generator.get_state(),
        "subsample_generator": None if sub is None else sub.get_state(),
    }


def restore_training_snapshot(sampler: WGFSampler, snapshot: Mapping[str, Any]) -> None:
    """Undo a partly done step (after ``KeyboardInterrupt``): the sampler holds the completed steps only."""
    assert sampler.flow is not None
    del sampler.flow.maps[snapshot["n_maps"] :]
    del sampler.history[snapshot["n_history"] :]
    sampler.flow.whitening = snapshot["whitening"]
    sampler._particles = snapshot["particles"]
    sampler._particles_log_q = snapshot["particles_log_q"]
    sampler._dual = snapshot["dual"]
    sampler.config = snapshot["config"]
    sampler.training_time = snapshot["training_time"]
    sampler._generator.set_state(snapshot["generator"])
    sub = _subsample_generator(sampler)
    if sub is not None and snapshot["subsample_generator"] is not None:
        sub.set_state(snapshot["subsample_generator"])

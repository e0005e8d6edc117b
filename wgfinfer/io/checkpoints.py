"""Checkpoints of a running sampler.

``run(checkpoint_dir=...)`` writes the sampler's full state (a sampler save file with the run state
and generator states) to ``checkpoint_dir / "checkpoint.pt"`` after every step
(:func:`write_checkpoint`); :func:`prepare_checkpoint` resumes from it, after
:func:`check_compatible` has compared its options with the sampler's, or warns before overwriting it.
Rolling a step back needs no snapshot: the run loop keeps the previous state (:mod:`wgfinfer.run`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgfinfer.io.components import (
    build_distribution,
    build_whitening,
    rho_0_entry,
    rho_0_text,
    same_description,
)
from wgfinfer.io.files import CHECKPOINT_NAME, PathLike, get_entry, plain, write_save_file
from wgfinfer.io.samplers import (
    OPTION_KEYS,
    RESUME_FREE,
    check_target,
    generator_states,
    read_sampler,
    run_state_from_content,
    sampler_content,
    scheme_entry,
)

if TYPE_CHECKING:
    from wgfinfer.sampler import WGFSampler


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
    """Write the sampler's full state (run state and generators included) to ``path`` atomically."""
    write_save_file(sampler_content(sampler, checkpoint=True), path)


def prepare_checkpoint(sampler: WGFSampler, path: Path, resume: bool) -> None:
    """Before a run with ``checkpoint_dir``: resume from ``path`` or warn about overwriting it.

    With ``resume=True`` and a checkpoint at ``path``, the checkpoint's options and dimension are
    checked against ``sampler`` and its state replaces the sampler's; stale temporary files of
    killed writers are removed.  Without a checkpoint the run starts fresh.
    """
    if resume:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        if path.exists():
            content = read_sampler(path)
            check_compatible(sampler, content, path)
            restore_from_content(sampler, content, path)
    elif path.exists() and sampler.run_state is None:
        warnings.warn(
            f"{str(path)!r} already holds a checkpoint; this run starts fresh and overwrites it after "
            "its first step (pass resume=True to continue it)",
            UserWarning,
            stacklevel=3,
        )


def restore_from_content(sampler: WGFSampler, content: Mapping[str, Any], path: PathLike) -> None:
    """Install a file's ``rho_0`` (unless saved without it), whitening, run state and generator
    states into ``sampler``."""
    flow = sampler.flow
    assert flow is not None and sampler.dim is not None
    dtype, device, dim = sampler.dtype, sampler.device, sampler.dim
    rho_0 = get_entry(content, "rho_0", path, dict)
    base = flow.base if rho_0.get("kind") == "external" else build_distribution(rho_0, path, dtype, device)
    white = build_whitening(content.get("whitening"), path, dtype, device, dim)
    run_state = run_state_from_content(content, sampler.scheme, base, path, dtype, device, dim)
    states = generator_states(content, path, len(sampler.generators))
    sampler.restore(run_state, base, white, states)


def check_compatible(sampler: WGFSampler, content: Mapping[str, Any], path: PathLike) -> None:
    """Raise ``ValueError`` naming every difference between a checkpoint's options and ``sampler``'s.

    ``n_steps``, ``progress_bar`` and ``max_retries`` may differ (a resumed run may train longer).
    """
    saved = get_entry(content, "options", path, dict)
    now = plain(sampler.options(), "the sampler options")
    diffs = [
        f"{key}: checkpoint {saved.get(key)!r}, sampler {now[key]!r}"
        for key in OPTION_KEYS
        if key not in RESUME_FREE and saved.get(key) != now[key]
    ]
    saved_scheme = content.get("scheme") if isinstance(content.get("scheme"), Mapping) else {}
    now_scheme = scheme_entry(sampler.scheme)
    for key in sorted(set(saved_scheme) | set(now_scheme)):
        if saved_scheme.get(key) != now_scheme.get(key):
            diffs.append(f"{key}: checkpoint {saved_scheme.get(key)!r}, sampler {now_scheme.get(key)!r}")
    flow = sampler.flow
    assert flow is not None
    rho_0 = get_entry(content, "rho_0", path, dict)
    mine = rho_0_entry(flow.base, allow_external=True, hint="")
    same = (
        mine.get("type") == rho_0.get("type") and mine.get("event_shape") == rho_0.get("event_shape")
        if mine["kind"] == "external" or rho_0.get("kind") == "external"
        else same_description(mine, rho_0)
    )
    if not same:
        diffs.append(f"rho_0: checkpoint {rho_0_text(rho_0)}, sampler {rho_0_text(mine)}")
    if diffs:
        raise ValueError(
            f"the checkpoint {str(path)!r} was written by a differently configured sampler; differences: "
            + "; ".join(diffs)
        )
    check_target(sampler, get_entry(content, "target", path, dict), saved.get("dim"), path, "the checkpoint")

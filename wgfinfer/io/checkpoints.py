"""Checkpoints of a running sampler.

``run(checkpoint_dir=...)`` holds the directory's lock for the whole run (:class:`CheckpointDirectory`)
and writes the sampler's full state (a sampler save file with the run state and generator states) to
``checkpoint_dir / "checkpoint.pt"`` after every step, keeping the one before as
``checkpoint.previous.pt``; with ``resume=True`` it continues from the last readable one, after
:func:`check_compatible` has compared its options and target with the sampler's.  Rolling a step back
needs no snapshot: the run loop keeps the previous state (:mod:`wgfinfer.run`).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgfinfer.errors import CheckpointInUseError, SaveFileError
from wgfinfer.io.components import (
    build_distribution,
    build_whitening,
    rho_0_entry,
    rho_0_text,
    same_description,
)
from wgfinfer.io.files import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    PREVIOUS_CHECKPOINT_NAME,
    PathLike,
    get_entry,
    plain,
    temporaries,
    write_save_file,
)
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


class CheckpointDirectory:
    """A checkpoint directory, held by one run: its lock, its last two checkpoints, resuming.

    Used as a context manager around a run: entering takes the directory's lock (a second run, in
    this process or another, gets :class:`~wgfinfer.CheckpointInUseError` instead of silently
    resuming and overwriting the first one's steps) and removes the temporary files of killed
    writers; leaving releases the lock.  The lock is an advisory ``flock`` on ``.lock`` in the
    directory (``msvcrt.locking`` on Windows), which the operating system drops when the process
    dies, so a killed run never leaves the directory locked.

    After every step :meth:`write` stores the sampler at ``checkpoint.pt`` and moves the one it
    replaces to ``checkpoint.previous.pt``, so a damaged last checkpoint costs one step: resuming
    (:meth:`prepare`) falls back to the previous one with a warning.

    Parameters
    ----------
    directory : pathlib.Path
        An existing directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.latest = directory / CHECKPOINT_NAME
        self.previous = directory / PREVIOUS_CHECKPOINT_NAME
        self._lock_file: Any = None
        self._own_lineage = False  # do the files here hold earlier steps of this run?

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> CheckpointDirectory:
        path = self.directory / LOCK_NAME
        handle = open(path, "a+")  # noqa: SIM115 - held until __exit__
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CheckpointInUseError(
                f"checkpoint_dir {str(self.directory)!r} is in use by another run ({holder}); two runs "
                "writing one directory would resume and overwrite each other's steps: wait for it to "
                "finish or give this run its own checkpoint_dir"
            )
        handle.seek(0)
        handle.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n")
        handle.flush()
        self._lock_file = handle
        for name in (self.latest, self.previous):  # the lock is ours: every temporary file is stale
            for tmp in temporaries(name):
                try:
                    tmp.unlink()
                except OSError:
                    pass
        return self

    def __exit__(self, *exc_info: Any) -> None:
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            _unlock(handle)
            handle.close()

    # ------------------------------------------------------------------ resume / write
    def prepare(self, sampler: WGFSampler, resume: bool) -> None:
        """Before the run: resume from the last readable checkpoint, or warn about overwriting.

        With ``resume=True`` the last checkpoint (or, if it is damaged, the previous one, with a
        warning) is checked against ``sampler`` (:func:`check_compatible`) and its state replaces
        the sampler's; without a checkpoint the run starts fresh.
        """
        if resume:
            found = self._read_last()
            if found is not None:
                content, path = found
                check_compatible(sampler, content, path)
                restore_from_content(sampler, content, path)
                self._own_lineage = True
        elif sampler.run_state is None and (self.latest.exists() or self.previous.exists()):
            warnings.warn(
                f"{str(self.directory)!r} already holds a checkpoint; this run starts fresh and "
                "overwrites it after its first step (pass resume=True to continue it)",
                UserWarning,
                stacklevel=4,
            )

    def _read_last(self) -> tuple[dict[str, Any], Path] | None:
        damaged: list[SaveFileError] = []
        for path in (self.latest, self.previous):
            if not path.exists():
                continue
            try:
                content = read_sampler(path)
            except SaveFileError as exc:
                damaged.append(exc)
                continue
            if damaged:
                warnings.warn(
                    f"the last checkpoint is damaged ({damaged[0]}); resuming from the one before it, "
                    f"{str(path)!r}: one more step is redone",
                    UserWarning,
                    stacklevel=5,
                )
            return content, path
        if damaged:
            raise SaveFileError(
                "no readable checkpoint to resume from: " + "; ".join(str(e) for e in damaged)
            ) from damaged[0]
        return None

    def write(self, sampler: WGFSampler) -> None:
        """Write the sampler's full state (run state and generators included) atomically, keeping the
        checkpoint it replaces as the previous one when both belong to this run."""
        content = sampler_content(sampler, checkpoint=True)
        if self._own_lineage:
            write_save_file(content, self.latest, keep_previous=self.previous)
            return
        # the files here were written by another run: none of them is this run's previous step
        write_save_file(content, self.latest)
        try:
            self.previous.unlink()
        except FileNotFoundError:
            pass
        self._own_lineage = True

    def rewrite(self, sampler: WGFSampler) -> None:
        """Replace the last checkpoint by the sampler's state at the same step (the records of the
        checks after a run added to its history), atomically, leaving the previous one as it is."""
        write_save_file(sampler_content(sampler, checkpoint=True), self.latest)


def checkpoint_directory(checkpoint_dir: PathLike | None, resume: bool) -> CheckpointDirectory | None:
    """The run's :class:`CheckpointDirectory` (the directory is created), or ``None``."""
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
    return CheckpointDirectory(directory)


def _try_lock(handle: Any) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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

    ``n_steps``, ``max_steps``, ``time_budget``, ``progress_bar`` and ``max_retries`` may differ (a
    resumed run may train longer).
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

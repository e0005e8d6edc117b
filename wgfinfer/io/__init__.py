"""Save files of samplers (and the file level of filter results); checkpoints of a running sampler.

A save file is a plain dict written with :func:`torch.save` and read back with
``torch.load(path, weights_only=True)``: it holds only tensors, numbers, strings, lists, dicts and
``None`` (no pickled classes), so reading a file never runs code from it.  Every file starts with

* ``"format"``: ``"wgfinfer-sampler"`` or ``"wgfinfer-filter-result"``,
* ``"format_version"``: :data:`FORMAT_VERSION`,
* ``"wgfinfer_version"``: the version that wrote it,

and describes every network as ``{"kind": ..., "args": {...}, "state": state_dict}``: the kind and
constructor arguments rebuild the module, the state dict fills its parameters.  The target (a
log-density callable or a Pyro model) and the filter's diffusion and observation model are code, which
is never stored: the caller passes them again when loading.

Files are written atomically (:func:`write_save_file`): to a temporary file in the same directory,
flushed and ``fsync``-ed, then renamed over the destination, so a reader (or a run killed while
writing) never sees a half-written file.  See ``docs/design.md`` ("Save files") and
``docs/reliability.md``.

The package has one module per concept: :mod:`~wgfinfer.io.files` (the file level: atomic writes,
reads, checksum, header), :mod:`~wgfinfer.io.components` (``rho_0``, networks, whitening),
:mod:`~wgfinfer.io.samplers` (sampler save files), :mod:`~wgfinfer.io.checkpoints` (checkpoints); the
names below are re-exported so that ``wgfinfer.io.<name>`` keeps working.
A filter result's save file is written and read by :mod:`wgfinfer.filtering.files`, on top of
:mod:`~wgfinfer.io.files` and :mod:`~wgfinfer.io.components`: this package never imports
:mod:`wgfinfer.filtering`.
"""

from wgfinfer.errors import SaveFileError
from wgfinfer.io.checkpoints import (
    CheckpointDirectory,
    check_compatible,
    checkpoint_directory,
    restore_from_content,
)
from wgfinfer.io.components import (
    SAVABLE_DISTRIBUTIONS,
    build_distribution,
    build_module,
    describe_distribution,
    describe_kind,
    describe_module,
    distribution_name,
)
from wgfinfer.io.files import (
    CHECKPOINT_NAME,
    DTYPES,
    FILTER_RESULT_FORMAT,
    FORMAT_VERSION,
    SAMPLER_FORMAT,
    PathLike,
    content_checksum,
    parse_device,
    parse_dtype,
    plain,
    read_save_file,
    write_save_file,
)
from wgfinfer.io.samplers import (
    OPTION_DEFAULTS,
    check_target,
    init_for_load,
    read_sampler,
    run_state_from_content,
    sampler_content,
    save_sampler,
    scheme_from_entry,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DTYPES",
    "FILTER_RESULT_FORMAT",
    "FORMAT_VERSION",
    "OPTION_DEFAULTS",
    "SAMPLER_FORMAT",
    "SAVABLE_DISTRIBUTIONS",
    "PathLike",
    "SaveFileError",
    "build_distribution",
    "build_module",
    "CheckpointDirectory",
    "check_compatible",
    "check_target",
    "checkpoint_directory",
    "content_checksum",
    "describe_distribution",
    "describe_kind",
    "describe_module",
    "distribution_name",
    "init_for_load",
    "parse_device",
    "parse_dtype",
    "plain",
    "read_sampler",
    "read_save_file",
    "restore_from_content",
    "run_state_from_content",
    "sampler_content",
    "save_sampler",
    "scheme_from_entry",
    "write_save_file",
]

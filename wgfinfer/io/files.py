"""The file level of wgfinfer save files: atomic writes, ``weights_only`` reads and their checks.

:func:`write_save_file` writes a plain dict atomically (temporary file, ``fsync``, rename) with a
SHA-256 checksum of its content; :func:`read_save_file` reads it back with ``weights_only=True`` and
checks the header (format, format version) and the checksum.  The helpers here build the header,
fetch typed entries (:func:`get_entry`), turn values into plain data (:func:`plain`) and parse the stored
dtype and device.  See the package docstring of :mod:`wgfinfer.io` for the file layout.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import socket
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wgfinfer._version import __version__
from wgfinfer.errors import SaveFileError, first_line

SAMPLER_FORMAT = "wgfinfer-sampler"
FILTER_RESULT_FORMAT = "wgfinfer-filter-result"
FORMAT_VERSION = 2
"""2: scheme options objects and an explicit run state; 1: the flat sampler options of wgfinfer 0.1."""
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_CHECKPOINT_NAME = "checkpoint.previous.pt"
"""The checkpoint of the step before the last: what a resume falls back to if the last is damaged."""
LOCK_NAME = ".lock"
DTYPES = ("float16", "bfloat16", "float32", "float64")

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------- file level
def write_save_file(content: dict[str, Any], path: PathLike, keep_previous: PathLike | None = None) -> Path:
    """Write ``content`` with :func:`torch.save`, atomically.

    The data go to a temporary file in the destination's directory, which is flushed, ``fsync``-ed and
    renamed over ``path`` with :func:`os.replace`; the directory entry is then synced where the
    platform allows it.  A crash at any moment leaves either the previous file or the new one.
    Temporary files that killed writers on this host left beside ``path`` are removed first
    (:func:`remove_stale_temporaries`).

    Parameters
    ----------
    content : dict
        Plain data (tensors, numbers, strings, lists, dicts, ``None``).
    path : str or os.PathLike
        Destination; its directory must exist.
    keep_previous : str or os.PathLike, optional
        Rename an existing file at ``path`` to this name (replacing what is there) just before the new
        file takes its place, so that the last two versions are kept.

    Returns
    -------
    pathlib.Path
        The destination.
    """
    path = Path(os.fspath(path))
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: directory {str(directory)!r} does not exist")
    content = {**content, "checksum": content_checksum(content)}
    remove_stale_temporaries(path)
    prefix = f"{_temporary_prefix(path)}{_HOST}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(content, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, os.fspath(keep_previous))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _sync_directory(directory)
    return path


_HOST = socket.gethostname().replace(os.sep, "_") or "host"


def _temporary_prefix(path: Path) -> str:
    """Temporary files of ``path`` are named ``.NAME.HOST.PID.RANDOM.tmp``."""
    return f".{path.name}."


def temporaries(path: PathLike) -> list[Path]:
    """The temporary files of writers of ``path`` (finished or not) in its directory."""
    path = Path(os.fspath(path))
    directory = path.parent if str(path.parent) else Path(".")
    prefix = _temporary_prefix(path)
    return sorted(p for p in directory.glob(f"{glob_escape(prefix)}*.tmp") if p.name.startswith(prefix))


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporary files that writers of ``path`` killed on this host left behind.

    A temporary file's name holds the host and process id of its writer; it is removed when that
    process no longer exists on this host.  Files of live processes, of other hosts (a shared file
    system) and of unknown names are left alone.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    removed = []
    prefix = _temporary_prefix(Path(os.fspath(path)))
    for tmp in temporaries(path):
        parts = tmp.name[len(prefix) : -len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
            continue
        if _process_alive(int(parts[1])):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but belongs to someone else, or cannot be asked
        return True
    return True


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); silently skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_save_file(path: PathLike, expected_format: str) -> dict[str, Any]:
    """Read a save file with ``weights_only=True`` and check its header.

    Parameters
    ----------
    path : str or os.PathLike
    expected_format : str
        :data:`SAMPLER_FORMAT` or :data:`FILTER_RESULT_FORMAT`.

    Returns
    -------
    dict
        The file's content, tensors on the CPU.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    SaveFileError
        If the file is not a torch file, is truncated or corrupted, holds objects that
        ``weights_only`` loading refuses, is not a wgfinfer file of ``expected_format``, or has
        another format version.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"no wgfinfer save file at {str(path)!r}: the file does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory, not a wgfinfer save file")
    if not path.is_file():  # a FIFO, socket or device would block or stream forever in open()/read()
        raise SaveFileError(f"{str(path)!r} is not a regular file (a FIFO, socket or device?): not opened")
    with open(path, "rb") as f:  # errors of the file system itself (permissions) propagate as they are
        _check_container(f, path)
        try:
            content = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip, EOF and read errors of a damaged or foreign file
            _raise_unreadable(path, exc)
    if not isinstance(content, dict) or "format" not in content:
        raise SaveFileError(f"{str(path)!r} is a torch file but not a wgfinfer save file (no 'format' entry)")
    found = content["format"]
    if found != expected_format:
        raise SaveFileError(
            f"{str(path)!r} holds format {found!r}, expected {expected_format!r}"
            + (
                " (load it with the class that saved it)"
                if found in (SAMPLER_FORMAT, FILTER_RESULT_FORMAT)
                else ""
            )
        )
    version = content.get("format_version")
    if version == 1 and FORMAT_VERSION == 2:
        raise SaveFileError(
            f"{str(path)!r} is a save file of the old format (version 1: the flat sampler options of "
            f"wgfinfer {content.get('wgfinfer_version', 'unknown')}); this wgfinfer ({_version()}) reads "
            "format version 2 only (scheme objects and an explicit run state): train and save it again"
        )
    if version != FORMAT_VERSION:
        raise SaveFileError(
            f"{str(path)!r} has format version {version!r}; this wgfinfer ({_version()}) reads version "
            f"{FORMAT_VERSION} only (written by wgfinfer {content.get('wgfinfer_version', 'unknown')})"
        )
    _check_tensor_sizes(content, path)
    stored = content.pop("checksum", None)
    if stored != content_checksum(content):
        raise SaveFileError(
            f"{str(path)!r} is corrupted: its content does not match the checksum written with it"
            if stored is not None
            else f"{str(path)!r} is damaged or incomplete: it has no checksum"
        )
    return content


def _check_container(f: Any, path: Path) -> None:
    """Bound what loading can allocate by the file's size, before :func:`torch.load` reads it.

    :func:`torch.save` writes a zip archive of uncompressed records.  A file whose records are
    compressed, or add up to more than the file holds, could make the loader allocate far more memory
    than the file's size (a few kilobytes deflating to gigabytes); it is rejected unread.
    """
    size = os.fstat(f.fileno()).st_size
    try:
        with zipfile.ZipFile(f) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise SaveFileError(
            f"{str(path)!r} is not a readable wgfinfer save file (not a torch zip archive, truncated or "
            f"corrupted): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        f.seek(0)
    compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise SaveFileError(
            f"{str(path)!r} is damaged or foreign: record {compressed[0]!r} is compressed (torch.save "
            "writes uncompressed records); not loaded"
        )
    declared = sum(r.file_size for r in records)
    if declared > size:
        raise SaveFileError(
            f"{str(path)!r} is damaged: its records declare {declared} bytes, more than the file's {size}"
        )


def _check_tensor_sizes(content: Any, path: Path) -> None:
    """Every tensor must own the bytes it spans: a file written by :func:`write_save_file` holds only
    dense tensors, and the checksum copies each one, so an expanded tensor (stride 0, a few bytes of
    storage seen as gigabytes) is rejected before anything is allocated for it."""
    if isinstance(content, Tensor):
        need = content.numel() * content.element_size()
        have = content.untyped_storage().nbytes()
        if need > have:
            raise SaveFileError(
                f"{str(path)!r} is damaged: a tensor of shape {tuple(content.shape)} spans {need} bytes "
                f"but its storage holds {have} (an expanded or overlapping view); not loaded"
            )
    elif isinstance(content, Mapping):
        for value in content.values():
            _check_tensor_sizes(value, path)
    elif isinstance(content, (list, tuple)):
        for value in content:
            _check_tensor_sizes(value, path)


def content_checksum(content: Mapping[str, Any]) -> str:
    """SHA-256 of a save file's content (every key, value and tensor byte, in a fixed order).

    Torch's zip container does not check its records, so a flipped byte in a tensor would otherwise
    load silently as a different weight.
    """
    digest = hashlib.sha256()
    _feed(digest, content)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        flat = value.detach().cpu().reshape(-1)
        dense = torch.empty(flat.shape, dtype=flat.dtype).copy_(flat)  # unit stride, also for expanded
        digest.update(f"T{str(dense.dtype)}{tuple(value.shape)}:".encode())
        digest.update(dense.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            digest.update(f"K{key!r}:".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{type(value).__name__}:{value!r};".encode())


def _raise_unreadable(path: Path, exc: Exception) -> None:
    line = first_line(exc) or type(exc).__name__
    raise SaveFileError(
        f"{str(path)!r} is not a readable wgfinfer save file (not a torch file, truncated or "
        f"corrupted, or it holds objects that weights_only loading refuses): {type(exc).__name__}: "
        f"{line}"
    ) from exc


def _version() -> str:
    return __version__


def header(fmt: str) -> dict[str, Any]:
    return {"format": fmt, "format_version": FORMAT_VERSION, "wgfinfer_version": _version()}


def get_entry(content: Mapping[str, Any], key: str, path: PathLike, types: type | tuple[type, ...]) -> Any:
    """``content[key]``, checked to be of ``types``; a damaged file otherwise."""
    if key not in content:
        raise SaveFileError(f"{str(path)!r} is damaged or incomplete: entry {key!r} is missing")
    value = content[key]
    if not isinstance(value, types):
        raise SaveFileError(
            f"{str(path)!r} is damaged: entry {key!r} is a {type(value).__name__}, expected "
            f"{_type_names(types)}"
        )
    return value


def _type_names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def plain(value: Any, where: str) -> Any:
    """``value`` as plain data (bool, int, float, str, None, lists and dicts of them, tensors).

    NumPy scalars and 0-d tensors become Python numbers, tuples become lists.

    Raises
    ------
    TypeError
        For anything else (it could not be read back with ``weights_only=True``).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        return plain(value.item(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float)):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} cannot be saved")
            out[k] = plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} holds a {type(value).__name__}, which a save file cannot hold")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: Any, path: PathLike) -> torch.dtype:
    if name not in DTYPES:
        raise SaveFileError(f"{str(path)!r} is damaged: dtype {name!r} is not one of {DTYPES}")
    return getattr(torch, name)


def parse_device(name: Any, path: PathLike) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise SaveFileError(f"{str(path)!r} is damaged: device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{str(path)!r} was saved on {device}, which is not available on this machine")
    return device

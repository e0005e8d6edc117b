"""Shared benchmark helpers: machine description, markdown tables, writing the rendered sections.

A benchmark writes its section as ``<name>.md`` into ``--out`` (default: the current directory); it
replaces the section in the repository's documentation only when asked to, by
``--docs docs/benchmarks.md`` (see :func:`publish`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch


def machine(device: str) -> str:
    """One line naming the hardware the numbers come from."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"
    )


@dataclasses.dataclass
class Clock:
    """Process CPU seconds and wall seconds of a block (:func:`timed`)."""

    cpu: float = 0.0
    wall: float = 0.0


@contextlib.contextmanager
def timed(sync: Callable[[], object] | None = None) -> Iterator[Clock]:
    """Time a block in process CPU seconds (all threads) and wall seconds.

    Parameters
    ----------
    sync : callable, optional
        Called before the clocks start and before they are read, e.g. ``torch.cuda.synchronize``, so
        that work queued on an accelerator is counted in the block that queued it.
    """
    clock = Clock()
    if sync is not None:
        sync()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield clock
    finally:
        if sync is not None:
            sync()
        clock.cpu, clock.wall = time.process_time() - cpu, time.perf_counter() - wall


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: Path) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    path.write_text(text)


def publish(name: str, body: str, out: Path | None, docs: list[Path] | None = None) -> list[Path]:
    """Write the rendered section ``name``: as ``out/<name>.md`` (unless ``out`` is ``None``) and, only
    where ``docs`` names markdown files (``--docs docs/benchmarks.md``), replaced in each of them.

    Returns the paths written."""
    written = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(body.rstrip() + "\n")
        written.append(out / f"{name}.md")
    for path in docs or []:
        write_section(name, body, path)
        written.append(path)
    return written


def add_output_arguments(parser: argparse.ArgumentParser, figures: bool = False) -> None:
    """``--out DIR`` (default: the current directory), ``--docs FILE...`` (opt-in) and ``--no-write``."""
    where = "the section as <name>.md" + (" and the figures" if figures else "")
    parser.add_argument(
        "--out", type=Path, default=Path("."), help=f"folder of {where} (default: the current directory)"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="also replace the section in these markdown files, e.g. docs/benchmarks.md"
        + (" (the figures then go into the first file's folder, where its links point)" if figures else "")
        + "; the repository's docs change only with this option",
    )
    parser.add_argument("--no-write", action="store_true", help="print only: write no file at all")


def load_run(path: str | Path, note: str = "") -> tuple[list[dict], dict]:
    """Rows and meta of a run saved by :func:`record_row`; a non-empty ``note`` replaces the saved one."""
    saved = json.loads(Path(path).read_text())
    rows, meta = saved["rows"], saved["meta"]
    meta["note"] = note or meta.get("note", "")
    return rows, meta


def record_row(rows: list[dict], row: dict, meta: dict, path: str | Path | None) -> None:
    """Append ``row``, print it as JSON and, with ``path``, save every row so far with ``meta``
    (after each row, so a long run that is cut off keeps what it measured)."""
    rows.append(row)
    print(json.dumps(row), flush=True)
    if path:
        Path(path).write_text(json.dumps({"rows": rows, "meta": meta}, indent=1))

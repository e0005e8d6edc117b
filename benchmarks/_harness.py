"""Shared benchmark helpers: machine description, markdown tables, writing sections of docs."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


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


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    path.write_text(text)


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

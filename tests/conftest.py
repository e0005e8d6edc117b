"""Shared test options: ``--runslow`` enables tests marked ``slow``; CUDA tests skip without a GPU.
The ``writes_only_in_cwd`` fixture runs a test in an empty current directory and checks that it
changes no file of the checkout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_NOT_WATCHED = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv", "build", "dist"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long statistical run, enabled with --runslow")
    config.addinivalue_line("markers", "cuda: needs a CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_cuda = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


def _checkout_files(outside: Path) -> dict[str, tuple[int, int]]:
    """``{path: (mtime_ns, size)}`` of every file of the checkout, ignored ones included (``results/``,
    ``docs/``); caches, ``.git`` and the folder ``outside`` (a ``--basetemp`` in the checkout) left out."""
    files = {}
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [
            d
            for d in subfolders
            if d not in _NOT_WATCHED and not d.endswith(".egg-info") and Path(folder, d) != outside
        ]
        for name in names:
            path = Path(folder, name)
            stat = path.lstat()
            files[str(path.relative_to(ROOT))] = (stat.st_mtime_ns, stat.st_size)
    return files


@pytest.fixture
def writes_only_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test in the empty folder ``tmp_path`` as the current directory (yielded) and fail it if
    it created, changed or removed any file of the checkout: examples and benchmarks write into the
    current directory or ``--out`` by default, never into ``docs/`` or other tracked files."""
    monkeypatch.chdir(tmp_path)
    before = _checkout_files(tmp_path)
    yield tmp_path
    after = _checkout_files(tmp_path)
    touched = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not touched, f"the test wrote into the checkout: {touched}"

"""The package's layers, checked on the imports in its source (no module is run).

* The core never imports ``wgfinfer.problems`` (the test, example and benchmark problems); only the
  demo application ``wgfinfer/cli.py`` may.
* ``wgfinfer.io`` never imports ``wgfinfer.filtering`` (filter-result files live in
  ``wgfinfer/filtering/files.py``, on top of ``wgfinfer.io``).
* Only ``wgfinfer/convert.py`` imports ArviZ (``arviz``, ``arviz_stats``, ...).
* Submodules take the version from ``wgfinfer._version``, not from ``wgfinfer`` itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "wgfinfer"
SOURCES = sorted(PACKAGE.rglob("*.py"))

# Files that still take ``__version__`` from ``wgfinfer`` and are being rewritten elsewhere; remove an
# entry once its import reads ``from wgfinfer._version import __version__``.
VERSION_IMPORT_PENDING = {"wgfinfer/sampler.py"}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every import statement, also inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import may load: ``from a import b`` may load ``a.b``."""
    return [module] + [f"{module}.{name}" for name in names]


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_sources_were_found() -> None:
    assert len(SOURCES) > 20
    assert (PACKAGE / "problems" / "__init__.py") in SOURCES


def test_the_core_never_imports_the_problems() -> None:
    allowed = {"wgfinfer/cli.py"}
    bad = [
        f"{_rel(path)}:{line}: {module}"
        for path in SOURCES
        if not _under(_rel(path).removesuffix(".py").replace("/", "."), "wgfinfer.problems")
        and _rel(path) not in allowed
        for module, names, line in _imports(path)
        if any(_under(t, "wgfinfer.problems") for t in _targets(module, names))
    ]
    assert not bad, "core modules import wgfinfer.problems:\n" + "\n".join(bad)


def test_io_never_imports_filtering() -> None:
    bad = [
        f"{_rel(path)}:{line}: {module}"
        for path in sorted((PACKAGE / "io").rglob("*.py"))
        for module, names, line in _imports(path)
        if any(_under(t, "wgfinfer.filtering") for t in _targets(module, names))
    ]
    assert not bad, "wgfinfer.io imports wgfinfer.filtering:\n" + "\n".join(bad)


def test_only_convert_imports_arviz() -> None:
    bad = [
        f"{_rel(path)}:{line}: {module}"
        for path in SOURCES
        if _rel(path) != "wgfinfer/convert.py"
        for module, _, line in _imports(path)
        if module.split(".")[0].startswith("arviz")
    ]
    assert not bad, "ArviZ imported outside wgfinfer/convert.py:\n" + "\n".join(bad)


def test_submodules_take_the_version_from_version_module() -> None:
    bad = [
        f"{_rel(path)}:{line}"
        for path in SOURCES
        if _rel(path) not in VERSION_IMPORT_PENDING
        for module, names, line in _imports(path)
        if module == "wgfinfer" and "__version__" in names
    ]
    assert not bad, "import __version__ from wgfinfer._version instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("modules", [["wgfinfer", "wgfinfer.io", "wgfinfer.filtering"]])
def test_importing_the_core_loads_no_problem_module(modules: list[str]) -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "bad = sorted(m for m in sys.modules if m.startswith('wgfinfer.problems'))\n"
        + "assert not bad, bad\n"
        + "import wgfinfer, wgfinfer._version\n"
        + "assert wgfinfer.__version__ == wgfinfer._version.__version__\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

"""The package's layering, read from its own imports (so that it stays true).

- no import cycle between wgfinfer's modules (imports inside functions count; ``TYPE_CHECKING``
  blocks do not);
- Pyro is imported only by the Pyro target and the MCMC-kernel adapter, ArviZ only by ``convert.py``
  (the test problems in ``wgfinfer/problems/`` are no part of the core and may import both);
- no submodule imports a name from the package face ``wgfinfer/__init__.py`` other than a submodule;
- the core never imports ``wgfinfer.problems``;
- no module imports another module's private (underscored) names;
- ``wgfinfer.io`` never imports ``wgfinfer.filtering`` (filter-result files live in
  ``wgfinfer/filtering/files.py``, on top of ``wgfinfer.io``);
- importing the core loads no problem module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wgfinfer"
PYRO_MODULES = {"wgfinfer.pyro_target", "wgfinfer.pyro_kernel"}
ARVIZ_MODULES = {"wgfinfer.convert"}
OUTSIDE_CORE = ("wgfinfer.problems", "wgfinfer.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` for every import statement of module ``name`` outside
    ``TYPE_CHECKING`` blocks; relative imports are resolved."""
    tree = ast.parse(MODULES[name].read_text())
    found: list[tuple[str, list[str]]] = []
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _internal_edges(name: str) -> set[str]:
    edges = set()
    for module, names in _imports(name):
        if not module.startswith("wgfinfer"):
            continue
        submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        if submodules:
            edges.update(submodules)
            if len(submodules) < len(names):
                edges.add(module)
        else:
            edges.add(module)
    edges.discard(name)
    return {e for e in edges if e in MODULES}


def test_every_module_parses_and_is_found():
    assert "wgfinfer.sampler" in MODULES and "wgfinfer.run" in MODULES and len(MODULES) > 30


def test_no_import_cycle():
    graph = {name: _internal_edges(name) for name in MODULES}
    # the package faces are re-export points: imports *through* them are the submodules' business
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name)


@pytest.mark.parametrize(("library", "allowed"), [("pyro", PYRO_MODULES), ("arviz", ARVIZ_MODULES)])
def test_adapters_are_imported_in_their_module_only(library, allowed):
    offenders = sorted(
        name
        for name in MODULES
        if name not in allowed
        and not name.startswith("wgfinfer.problems")
        and any(m == library or m.startswith(library + ".") for m, _ in _imports(name))
    )
    assert offenders == [], f"{library} imported outside {sorted(allowed)}: {offenders}"


def test_no_submodule_imports_the_package_face():
    offenders = []
    for name in MODULES:
        if name == "wgfinfer":
            continue
        for module, names in _imports(name):
            if module == "wgfinfer":
                offenders += [f"{name}: {n}" for n in names if f"wgfinfer.{n}" not in MODULES]
            elif module == "wgfinfer" and not names:
                offenders.append(f"{name}: import wgfinfer")
    assert offenders == [], offenders


def test_the_core_never_imports_the_problems():
    offenders = sorted(
        name
        for name in MODULES
        if not name.startswith(OUTSIDE_CORE)
        and any(m.startswith("wgfinfer.problems") for m, _ in _imports(name))
    )
    assert offenders == [], offenders


def test_no_private_names_are_imported_across_modules():
    offenders = []
    for name in MODULES:
        for module, names in _imports(name):
            if module.startswith("wgfinfer"):
                offenders += [
                    f"{name}: {module}.{n}" for n in names if n.startswith("_") and n != "__version__"
                ]
    assert offenders == [], offenders


def test_io_never_imports_filtering():
    offenders = sorted(
        f"{name}: {module}"
        for name in MODULES
        if name.startswith("wgfinfer.io")
        for module, _ in _imports(name)
        if module.startswith("wgfinfer.filtering")
    )
    assert offenders == [], offenders


def test_importing_the_core_loads_no_problem_module():
    code = (
        "import sys\nimport wgfinfer, wgfinfer.io, wgfinfer.filtering\n"
        "bad = sorted(m for m in sys.modules if m.startswith('wgfinfer.problems'))\n"
        "assert not bad, bad\n"
        "import wgfinfer._version\nassert wgfinfer.__version__ == wgfinfer._version.__version__\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

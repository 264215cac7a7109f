"""The import graph of blogctl/ and services/: no cycle, not even through an import made inside a
function, and no arrow from blogctl/ into a service's internals (blogctl reads a service only
through its package's public names: its declaration, and what its `__init__` exports)."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("blogctl", "services")
SERVICE_PACKAGES = tuple(path.name for path in (ROOT / "services").iterdir()
                         if (path / "__init__.py").exists() and path.name != "shared")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
           if path.name != "__main__.py"}  # a __main__ runs its service: imported by nothing


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level or inside a function, except under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(module: str) -> set[str]:
    """The project modules `module` imports (`from pkg import name` names pkg.name when that is a module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        found |= {target for target in targets if target in MODULES and target != module}
    return found


def cycle() -> list[str] | None:
    """One import cycle among the modules, or None. A package importing its own modules (to
    re-export them) is left out: Python imports a package before any module in it anyway."""
    graph = {module: {target for target in imports(module) if not target.startswith(module + ".")}
             for module in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target] if target in path else [module, target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    found = cycle()
    assert found is None, "import cycle: " + " -> ".join(found)


def test_the_cycle_check_finds_a_cycle_made_inside_a_function(tmp_path, monkeypatch):
    """The check itself fails when it should: a lazy import back into a module that imports it."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    import a\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n")
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {name: tmp_path / f"{name}.py" for name in "abc"})
    assert cycle() == ["a", "b", "a"]
    (tmp_path / "b.py").write_text("import c\n")
    assert cycle() is None  # under TYPE_CHECKING: no import at run time


def test_blogctl_uses_only_the_services_public_names():
    """blogctl may import `services.table`, `services.shared.*` and a service's package itself
    (its declaration and what its `__init__` exports), never a module inside a service."""
    internal = {module for module in MODULES if module.startswith("services.")
                and module.split(".")[1] in SERVICE_PACKAGES and module.count(".") >= 2}
    reaching = {(module, target) for module in MODULES if module.startswith("blogctl")
                for target in imports(module) if target in internal}
    assert not reaching, reaching
    assert internal >= {"services.query.view", "services.posts.app"}  # what blogctl once imported is internal


SHARDS = 2  # interpreters importing in parallel (the machine has two cores)
IMPORT_ALONE = """
import importlib, sys
for module in sys.argv[1:]:
    for loaded in [name for name in sys.modules if name.split(".")[0] in ("blogctl", "services")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(module)
    except Exception as exc:
        print(f"{module}: {type(exc).__name__}: {exc}")
"""


def test_every_module_imports_alone():
    """Each module imported first, with no other module of the project loaded: a cycle shows as an
    ImportError whichever module a process starts from. (Libraries stay loaded between modules.)"""
    modules = sorted(MODULES)
    runs = [subprocess.Popen([sys.executable, "-c", IMPORT_ALONE, *modules[i::SHARDS]], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(SHARDS)]
    failures = "".join(run.communicate()[0] for run in runs)
    assert failures == ""
    assert all(run.returncode == 0 for run in runs)

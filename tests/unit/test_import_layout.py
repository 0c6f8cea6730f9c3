"""The layout's import rules, read from the source: the client package stands alone, and the
project's packages import each other in one direction with no cycle."""

import ast
import subprocess
import sys
from pathlib import Path

from tools import paths

# package -> its folder; the direction: a package imports only those after it in this list
PACKAGES = {
    "benchmarks": paths.ROOT / "benchmarks",
    "tools": paths.ROOT / "tools",
    "synctalk_webrtc": paths.ROOT / "webrtc" / "synctalk_webrtc",
    "synctalk_preprocessing": paths.ROOT / "preprocessing" / "synctalk_preprocessing",
    "synctalk_client": paths.ROOT / "client" / "synctalk_client",
}
ORDER = list(PACKAGES)
# the one import against the direction: the page's server mounts the WebRTC service's routes (made
# where the page is built, and optional: the page serves its WebSocket path without aiortc)
MOUNTS = {("synctalk_client.web.app", "synctalk_webrtc.service")}


def module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join((package, *parts)).removesuffix(".__init__")


def imports_of(path: Path, modules) -> set:
    """The project modules a file imports, at module level or inside functions: ``from p import
    m`` is module ``p.m`` where that is a module, else ``p``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def module_graph() -> dict:
    modules = {
        module_name(package, path): path for package, folder in PACKAGES.items() for path in folder.rglob("*.py")
    }
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_the_packages_import_in_one_direction():
    for module, imported in module_graph().items():
        for target in imported:
            source, dest = module.split(".")[0], target.split(".")[0]
            assert ORDER.index(dest) >= ORDER.index(source) or (module, target) in MOUNTS, f"{module} imports {target}"


def test_no_import_cycle():
    graph = module_graph()
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join([*path, node, nxt][path.index(nxt) if nxt in path else 0 :])
                )
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_every_client_module_imports_without_the_server_packages(tmp_path):
    """A caller installs the client alone: with synctalk_preprocessing (and tools) made
    unimportable, every module of synctalk_client still imports."""
    modules = sorted(module_name("synctalk_client", p) for p in PACKAGES["synctalk_client"].rglob("*.py"))
    code = f"""
import importlib, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("synctalk_preprocessing", "tools", "benchmarks"):
            raise ImportError(f"{{name}} is not importable here")
        return None

sys.meta_path.insert(0, Refuse())
for name in {modules!r}:
    importlib.import_module(name)
print("imported", len({modules!r}))
import synctalk_preprocessing  # the guard itself works
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert f"imported {len(modules)}" in result.stdout, result.stderr
    assert result.stderr.rstrip().endswith("ImportError: synctalk_preprocessing is not importable here"), result.stderr

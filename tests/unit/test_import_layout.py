"""The layout's import rules, read from the source (docs/layout.md): each package imports only the
packages below it, with no exception and no cycle; the server's code never imports the SDK; the
SDK installs and imports alone."""

import ast
import subprocess
import sys
from pathlib import Path

from synctalk_build import paths

# package -> its folder
PACKAGES = {
    "synctalk_common": paths.ROOT / "common" / "synctalk_common",
    "synctalk_client": paths.ROOT / "client" / "synctalk_client",
    "synctalk_preprocessing": paths.ROOT / "preprocessing" / "synctalk_preprocessing",
    "synctalk_webrtc": paths.ROOT / "services" / "synctalk_webrtc",
    "synctalk_web": paths.ROOT / "services" / "synctalk_web",
    "synctalk_pipecat": paths.ROOT / "services" / "synctalk_pipecat",
    "synctalk_build": paths.ROOT / "ops" / "synctalk_build",
    "synctalk_ops": paths.ROOT / "ops" / "synctalk_ops",
    "devtools": paths.ROOT / "devtools",
    "benchmarks": paths.ROOT / "benchmarks",
}
# what each may import of the project (besides itself): the direction, whole
SERVER = {"synctalk_common", "synctalk_preprocessing"}
BELOW = {
    "synctalk_common": set(),
    "synctalk_client": {"synctalk_common"},
    "synctalk_preprocessing": {"synctalk_common"},
    "synctalk_webrtc": {"synctalk_common", "synctalk_client", "synctalk_preprocessing"},
    "synctalk_web": {"synctalk_common", "synctalk_client", "synctalk_webrtc"},
    "synctalk_pipecat": {"synctalk_common", "synctalk_client", "synctalk_webrtc"},
    "synctalk_build": {"synctalk_common", "synctalk_client", "synctalk_preprocessing"},
    "synctalk_ops": {"synctalk_common", "synctalk_client", "synctalk_preprocessing", "synctalk_build"},
    "devtools": set(PACKAGES) - {"devtools", "benchmarks"},
    "benchmarks": set(PACKAGES) - {"benchmarks"},
}
# the server's own code outside packages: Python models, Python-based backends, the avatar template
SERVER_FOLDERS = [paths.ROOT / "model_repository", paths.ROOT / "backends", paths.ROOT / "avatar_template"]


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
    return {name for name in found if name in modules or name.split(".")[0] in PACKAGES}


def all_modules() -> dict:
    return {module_name(package, path): path for package, folder in PACKAGES.items() for path in folder.rglob("*.py")}


def module_graph() -> dict:
    modules = all_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_every_package_of_the_project_is_ruled():
    top = {p.parent.name for p in paths.ROOT.glob("*/*/__init__.py") if "tests" not in p.parts}
    top |= {p.parent.name for p in paths.ROOT.glob("*/__init__.py")} - {"tests"}
    assert top <= set(PACKAGES), f"packages with no rule: {top - set(PACKAGES)}"
    assert not (paths.ROOT / "tools" / "__init__.py").exists(), "no top-level tools package"


def test_the_packages_import_in_one_direction_with_no_exception():
    for module, imported in module_graph().items():
        source = module.split(".")[0]
        for target in imported:
            dest = target.split(".")[0]
            assert dest == source or dest in BELOW[source], f"{module} imports {target}"


def test_the_servers_code_never_imports_the_sdk_or_the_tools():
    modules = all_modules()
    files = [f for folder in SERVER_FOLDERS for f in folder.rglob("*.py")]
    files += list(PACKAGES["synctalk_preprocessing"].rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for target in imports_of(path, modules):
            assert target.split(".")[0] in SERVER, f"{path.relative_to(paths.ROOT)} imports {target}"


def test_no_import_cycle():
    graph = module_graph()
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt not in graph:
                continue
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


def test_every_sdk_module_imports_without_the_server_the_services_or_the_tools(tmp_path):
    """A caller installs the SDK alone: with every other package of the project made unimportable
    (the shared contract aside), every module of synctalk_client still imports."""
    modules = sorted(module_name("synctalk_client", p) for p in PACKAGES["synctalk_client"].rglob("*.py"))
    refused = sorted(set(PACKAGES) - {"synctalk_client", "synctalk_common"})
    code = f"""
import importlib, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {refused!r}:
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

"""The shape of ``lab/``, checked so it stays true: imports point down the layers
lab/__init__.py lists (``LAYERS``), no import cycle between its
modules, no package folder with more than 10 modules of its own, no module over
500 lines, and the nginx renderer (what nginx/Dockerfile copies into the nginx
image) importing nothing but the standard library, itself and the server
registry (gateway/servers/registry.py, standard library only, copied beside it)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "lab"
MAX_MODULES = 10
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lab_imports(path: Path) -> set[str]:
    """The lab modules ``path`` imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in found if n in MODULES}


def all_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _imported_names(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


FILES = {module_name(p): p for p in sorted(LAB.rglob("*.py"))}
MODULES = set(FILES)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle (as found by a depth-first search), empty when there is none."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


# lab/__init__.py's map, top first: a module imports only from layers below its own
# (and from its own package). Peers in one layer stay independent of each other.
LAYERS = (
    ("lab.__main__",),
    ("lab.cli",),
    ("lab.workshop", "lab.control"),
    ("lab.targets",),
    ("lab.servers",),
    ("lab.system", "lab.nginx"),
    ("lab.settings",),
    ("lab.routing", "lab.errors"),
)


def unit(module: str) -> str:
    """The layer unit of a module: ``lab.targets.docker.swarm`` -> ``lab.targets``."""
    return ".".join(module.split(".")[:2])


def layer_of(module: str) -> int | None:
    return next((i for i, units in enumerate(LAYERS) if unit(module) in units), None)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that do not point down the layers."""
    found = []
    for name, imported in sorted(graph.items()):
        for other in sorted(imported):
            if other == "lab" or unit(other) == unit(name):
                continue  # the package itself (no imports), or its own package
            here, there = layer_of(name), layer_of(other)
            if here is None or there is None or there <= here:
                found.append((name, other))
    return found


def test_the_layer_check_finds_an_upward_import() -> None:
    assert upward_imports({"lab.settings": {"lab.nginx.routing"}}) == [
        ("lab.settings", "lab.nginx.routing")
    ]
    assert upward_imports({"lab.targets.native": {"lab.control"}}) == [
        ("lab.targets.native", "lab.control")
    ]
    assert upward_imports({"lab.system.http": {"lab.nginx.render"}}) != []  # peers
    assert upward_imports({"lab.cli": {"lab.targets.native", "lab.errors"}}) == []


def test_imports_point_down_the_layers() -> None:
    graph = {name: lab_imports(path) for name, path in FILES.items()}
    assert upward_imports(graph) == []


def test_every_lab_module_is_on_the_map() -> None:
    doc = (LAB / "__init__.py").read_text(encoding="utf-8")
    for name in FILES:
        if name != "lab":
            assert layer_of(name) is not None, f"{name} is in no layer of LAYERS"
            assert f"``{unit(name).removeprefix('lab.')}" in doc, f"lab/__init__.py omits {name}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_lab() -> None:
    # A package's __init__ importing its own submodule is not a cycle of its own making:
    # importing a submodule always runs the package first.
    graph = {
        name: {m for m in lab_imports(path) if m != name and not name.startswith(m + ".")}
        for name, path in FILES.items()
    }
    assert cycles(graph) == []


def test_no_package_has_more_than_ten_modules() -> None:
    for folder in [LAB, *(p for p in LAB.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        modules = list(folder.glob("*.py"))
        assert len(modules) <= MAX_MODULES, f"{folder}: {len(modules)} modules"


def test_the_gateway_and_app_packages_stay_small_too() -> None:
    for top in (ROOT / "gateway", ROOT / "apps"):
        for folder in [top, *(p for p in top.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            modules = [m for m in folder.glob("*.py") if m.name != "__init__.py"]
            assert len(modules) <= MAX_MODULES, f"{folder}: {len(modules)} modules"


def test_no_module_is_over_500_lines() -> None:
    apps_and_gateway = [*(ROOT / "gateway").rglob("*.py"), *(ROOT / "apps").rglob("*.py")]
    for path in [*FILES.values(), *apps_and_gateway]:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines"


def image_files() -> list[Path]:
    """What nginx/Dockerfile copies of lab/ (and of gateway/) into the nginx image."""
    dockerfile = (ROOT / "nginx" / "Dockerfile").read_text(encoding="utf-8")
    files: list[Path] = []
    for line in dockerfile.splitlines():
        if match := re.match(r"COPY (.+) /opt/lab/(?:lab|gateway)/", line):
            for src in match.group(1).split():
                path = ROOT / src
                files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    return files


def test_the_nginx_image_gets_the_renderer_and_all_it_imports() -> None:
    shipped = {module_name(p) for p in image_files()}
    assert {"lab.nginx.render", "lab.routing", "lab.nginx.__main__"} <= shipped
    assert "gateway.servers.registry" in shipped
    for path in image_files():
        missing = lab_imports(path) - shipped - {"lab"}
        assert not missing, f"{path.relative_to(ROOT)} imports {missing}, not in the image"
        gateway = {n for n in _imported_names(path) if n.split(".")[0] == "gateway"}
        assert gateway <= shipped, f"{path.relative_to(ROOT)} imports {gateway - shipped}"


def test_the_nginx_renderer_is_standard_library_only() -> None:
    for path in image_files():
        own = {"lab", "gateway", "__future__"}  # gateway: the registry alone, checked above
        outside = all_imports(path) - set(sys.stdlib_module_names) - own
        assert not outside, f"{path.relative_to(ROOT)} imports {outside}: not in the nginx image"


def test_procfs_runs_in_the_nginx_image() -> None:
    """lab/system/procfs.py runs as source in the nginx container (``python3 -c SOURCE
    rows``): it imports the standard library and gateway modules the image ships."""
    path = LAB / "system" / "procfs.py"
    shipped = {module_name(p) for p in image_files()}
    gateway = {n for n in _imported_names(path) if n.split(".")[0] == "gateway"}
    assert gateway, "procfs reads with gateway.system.procstat, the one stat parser"
    assert gateway <= shipped, f"procfs imports {gateway - shipped}, not in the nginx image"
    assert not lab_imports(path), "the lab package is not in the nginx image"
    outside = all_imports(path) - set(sys.stdlib_module_names) - {"gateway", "__future__"}
    assert not outside, f"procfs imports {outside}: not in the nginx image"


TRACE_HEADER = re.compile(r"(?i)x-(gateway-[a-z-]+|request-id)")


def test_trace_header_names_come_from_gateway_trace() -> None:
    """gateway/trace.py names them once; lab/ imports them (no string of its own)."""
    for name, path in FILES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found = [line for line in node.value.split('"') if TRACE_HEADER.fullmatch(line)]
                assert not found, f"{name} spells {found}: import it from gateway.trace"


def proc_paths(source: str) -> list[str]:
    """String constants in ``source`` that name a /proc path."""
    tree = ast.parse(source)
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("/proc")
    ]


def test_only_procfs_reads_proc() -> None:
    """lab/system/procfs.py is the one /proc reader of lab/ and benchmarks/ (it parses
    with gateway/system/, which the gateway, never importing lab, reads with too)."""
    readers = [*FILES.values(), *sorted((ROOT / "benchmarks").glob("*.py"))]
    for path in readers:
        if path != LAB / "system" / "procfs.py":
            found = proc_paths(path.read_text(encoding="utf-8"))
            assert not found, f"{path.relative_to(ROOT)} reads {found}: use lab.system.procfs"

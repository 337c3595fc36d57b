"""The import graph of the project has no circles.

Two rules, read from the source with the standard library's ``ast`` (nothing is imported, so a
module with heavy or optional dependencies is read like any other):

1. **No import circle between files** of the project's packages (calmcue, companion, models,
   firmware/tools, firmware/pi, firmware/host, and the device code: the portable core
   firmware/core and the headset app firmware/headset): module A importing B importing ... A
   fails, whatever the length of the circle.
2. **No two packages importing each other.** The packages are calmcue, companion, models,
   firmware/tools, firmware/pi, firmware/host, firmware/core and firmware/headset; an import
   from one to another is an edge, and any circle between packages fails (for example
   firmware/tools importing companion while companion imports firmware/tools, or the core
   importing the headset app that imports it).

What counts as an import: every ``import`` and ``from ... import`` anywhere in a file, at module
level or inside a function, under ``if TYPE_CHECKING:`` or in ``try/except ImportError``. A lazy
import inside a function breaks no circle: it only moves the failure from import time to call
time, and the two modules still cannot be understood, tested or moved apart. ``from pkg import
name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``. Imports by
a string (``importlib.import_module(name)``: how calmcue/cli.py reaches each package's commands;
``__import__(name)``: how the headset's boot imports its modules in order) are not read; only
the top package, calmcue, and the headset's boot do that.

Run ``python tests/test_import_graph.py`` to print the graph's circles, if any.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The packages whose files must not import each other in a circle: all of them.
FILES = (
    "calmcue.shared", "calmcue", "companion", "models",
    "firmware.tools", "firmware.pi", "firmware.host", "firmware.core", "firmware.headset",
)  # fmt: skip
# Every package of the project, most specific first (a module belongs to the first that holds it).
# calmcue.shared is the bottom (version, MicroPython and Mosquitto runners, broker access rules);
# calmcue itself is the top (the `calmcue` command, the demo, the benchmarks). firmware/core is
# the bottom of the device side: the headset app, the Pi agent, the host runners, the IT tools
# and the companion read it; it reads none of them.
PACKAGES = (
    "calmcue.shared", "firmware.tools", "firmware.pi", "firmware.host", "firmware.core",
    "firmware.headset", "calmcue", "companion", "models", "firmware",
)  # fmt: skip
# Imports known to cross the layers the wrong way, each with its reason. The test fails if one
# of them disappears (then delete it here), so this list cannot go stale.
KNOWN: dict[tuple[str, str], str] = {}


def _modules(root: Path) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for top in ("calmcue", "companion", "models", "firmware"):
        for f in sorted((root / top).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module ``name`` names: itself, or the nearest enclosing package module."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line number}, self-imports left out."""
    mods = _modules(root)
    graph: dict[str, dict[str, int]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        out: dict[str, int] = {}

        def add(target: str | None, line: int) -> None:
            if target is not None and target != mod:  # noqa: B023 - used within the loop
                out.setdefault(target, line)  # noqa: B023

        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(_resolve(alias.name, mods), node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    add(sub if sub in mods else _resolve(source, mods), node.lineno)
        graph[mod] = out
    return graph


def package_of(mod: str) -> str:
    for pkg in PACKAGES:
        if mod == pkg or mod.startswith(pkg + "."):
            return pkg
    raise AssertionError(f"{mod} is in no known package")


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _describe(comp: list[str], edges: dict[str, set[str]], lines: dict[tuple[str, str], str]) -> str:
    inside = set(comp)
    hops = [
        f"    {a} -> {b}{lines.get((a, b), '')}" for a in comp for b in sorted(edges[a] & inside)
    ]
    return "circle of " + ", ".join(comp) + ":\n" + "\n".join(hops)


def file_circles(graph: dict[str, dict[str, int]] | None = None) -> list[str]:
    graph = import_graph() if graph is None else graph
    in_scope = {m for m in graph if package_of(m) in FILES}
    edges = {m: set(graph[m]) & in_scope for m in in_scope}
    lines = {(a, b): f"  (line {graph[a][b]})" for a in in_scope for b in edges[a]}
    return [_describe(c, edges, lines) for c in circles(edges)]


def package_circles(graph: dict[str, dict[str, int]] | None = None) -> list[str]:
    graph = import_graph() if graph is None else graph
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    where: dict[tuple[str, str], str] = {}
    for mod, targets in graph.items():
        for target, line in targets.items():
            if (mod, target) in KNOWN:
                continue
            a, b = package_of(mod), package_of(target)
            if a != b:
                edges[a].add(b)
                where.setdefault((a, b), f"  (first: {mod} line {line} imports {target})")
    return [_describe(c, edges, where) for c in circles(edges)]


def test_the_graph_reader_sees_known_imports():
    """The reader is not blind: module-level and in-function imports of the real tree."""
    graph = import_graph()
    assert "companion.config" in graph["companion.server"]
    assert "companion.db" in graph["companion.store"]
    assert "firmware.core.events" in graph["firmware.tools.provision"]  # module level
    assert "firmware.pi.config" in graph["firmware.tools.provision"]  # inside a function
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_circles_are_found_in_a_made_up_tree(tmp_path):
    """A three-file circle closed by a lazy relative import, and two packages importing each
    other through `from package import module` inside a function, both fail."""
    files = {
        "companion/__init__.py": "",
        "companion/a.py": "from companion import b\n",
        "companion/b.py": "import companion.c as c\n",
        "companion/c.py": "def f():\n    from .a import x\n    return x\n",
        "companion/d.py": "from companion.b import thing\n",
        "models/__init__.py": "",
        "models/m.py": "def g():\n    from companion import d\n",
        "companion/e.py": "from models.m import g\n",
        "calmcue/__init__.py": "",
        "firmware/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["companion.c"] == {"companion.a": 2}
    assert graph["companion.d"] == {"companion.b": 1}
    (found,) = file_circles(graph)
    assert found.startswith("circle of companion.a, companion.b, companion.c:")
    (found,) = package_circles(graph)
    assert found.startswith("circle of companion, models:")


def test_circles_in_the_device_code_are_found_in_a_made_up_tree(tmp_path):
    """Two core files importing each other fail as a file circle; the core importing the
    headset app, which imports the core, fails as a package circle."""
    files = {
        "calmcue/__init__.py": "",
        "companion/__init__.py": "",
        "models/__init__.py": "",
        "firmware/__init__.py": "",
        "firmware/core/__init__.py": "",
        "firmware/core/policy.py": "from firmware.core import settings\n",
        "firmware/core/settings.py": "def f():\n    from firmware.core.policy import Policy\n",
        "firmware/core/events.py": "def g():\n    from firmware.headset import app\n",
        "firmware/headset/__init__.py": "",
        "firmware/core/cue_table.py": "",
        "firmware/headset/app.py": "from firmware.core import cue_table\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    (found,) = file_circles(graph)
    assert found.startswith("circle of firmware.core.policy, firmware.core.settings:")
    (found,) = package_circles(graph)
    assert found.startswith("circle of firmware.core, firmware.headset:")


def test_no_import_circle_between_files():
    found = file_circles()
    assert not found, "import circles between files:\n" + "\n".join(found)


def test_the_known_exceptions_still_exist():
    graph = import_graph()
    gone = [f"{a} -> {b}" for a, b in KNOWN if b not in graph.get(a, {})]
    assert not gone, "no longer imported, delete from KNOWN: " + ", ".join(gone)


def test_no_two_packages_import_each_other():
    found = package_circles()
    assert not found, "packages that import each other:\n" + "\n".join(found)


if __name__ == "__main__":
    for text in file_circles() + package_circles():
        print(text)

"""Package layout: dependencies point down (DESIGN.md) and no module imports itself back through others.

Imports are read from the source with ``ast`` (module level AND inside functions: a lazy import that dodges a
cycle is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("multidnn_sched", "compression_tools")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _violations(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for name, path in ((_module_name(p), p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")):
        if name == prefix or name.startswith(prefix + "."):
            for imported in _imports(path):
                if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                    bad.append(f"{name} imports {imported}")
    return sorted(set(bad))


def test_runtime_imports_neither_ros_nor_compression_tools_nor_drivers() -> None:
    forbidden = ("rclpy", "compression_tools", "multidnn_sched.ros", "multidnn_sched.bench",
                 "multidnn_sched.evaluation", "multidnn_sched.models", "multidnn_sched.scenes")
    assert _violations("multidnn_sched.runtime", forbidden) == []


def test_models_and_scenes_do_not_import_ros() -> None:
    forbidden = ("rclpy", "multidnn_sched.ros", "multidnn_sched.bench", "multidnn_sched.evaluation",
                 "compression_tools")
    assert _violations("multidnn_sched.models", forbidden) == []
    assert _violations("multidnn_sched.scenes", ("multidnn_sched.ros", "multidnn_sched.bench",
                                                 "multidnn_sched.evaluation", "compression_tools")) == []


def test_compression_tools_is_not_imported_by_models() -> None:
    assert _violations("multidnn_sched.models", ("compression_tools",)) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_graph() -> dict[str, set[str]]:
    # `import a.b.c` also runs a/__init__ and a/b/__init__: those child -> parent edges are Python's, not ours
    return {k: {m for m in v if not k.startswith(m + ".")} for k, v in _graph().items()}


def test_no_import_cycles_outside_ros() -> None:
    cycles = [c for c in _cycles(_package_graph()) if not all(m.startswith("multidnn_sched.ros.") for m in c)]
    assert cycles == []


def test_no_import_cycles_in_ros() -> None:
    assert _cycles(_package_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

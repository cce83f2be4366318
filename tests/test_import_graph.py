"""The package has no import circles: every import of a sopo_ray module, at the top of a file or inside a function,
read from the source (nothing is imported). `from pkg import name` depends on pkg's __init__ (and on pkg.name
when that is a module); `import pkg.mod` on pkg.mod."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_files() -> dict[str, Path]:
    files = {}
    for path in (ROOT / "sopo_ray").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The sopo_ray modules `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def owner(target: str) -> str:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names if a.name.startswith("sopo_ray")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.startswith("sopo_ray"):
                found.add(owner(base))
                found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    return found - {name, ""}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_sees_a_circle_through_a_package_init():
    graph = {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p"}, "q": set()}
    assert cycles(graph) == [["p", "p.a", "p.b"]] and cycles({"a": {"b"}, "b": set()}) == []


def test_sopo_ray_imports_form_no_circle():
    files = module_files()
    graph = {name: imports(name, path, set(files)) for name, path in files.items()}
    assert "sopo_ray.data.dataset" in graph["sopo_ray.data"] and "sopo_ray.config" in graph["sopo_ray.data.dataset"]
    assert cycles(graph) == []

"""The package's modules form layers: no import cycle, and the file layer never calls up into the network layer.

The graph is read from the source (every import statement, inside functions too), so an upward import hidden in
a function body counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import submask

PACKAGE = Path(submask.__file__).parent
#: modules that must not depend on these higher layers (prefix match on module names)
FORBIDDEN = {
    "submask.format": ("submask.hub", "submask.io", "submask.compare", "submask.build", "submask.apply"),
    "submask.codecs": ("submask.format", "submask.hub", "submask.io", "submask.mask"),
    "submask.mask": ("submask.format", "submask.hub", "submask.io", "submask.algebra"),
    "submask.metadata": ("submask.format", "submask.hub", "submask.io", "submask.mask"),
    "submask.align": ("submask.format", "submask.hub", "submask.io", "submask.mask"),
    "submask.checkpoints": ("submask.build", "submask.apply", "submask.io"),
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (resolved to modules, not names inside them)."""
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # "from pkg import mod" depends on pkg.mod; "from pkg import name" on pkg itself
                targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("submask") and target != name and target in modules:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_modules() -> None:
    graph = import_graph()
    assert "submask.mask" in graph and graph["submask.mask"]  # the graph was read
    assert cycles(graph) == []


def test_a_cycle_would_be_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_never_import_higher_ones() -> None:
    graph = import_graph()
    wrong = [(module, target) for module, targets in graph.items() for target in targets
             for lower, higher in FORBIDDEN.items() if module.startswith(lower) and target.startswith(higher)]
    assert wrong == []


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n")
    names = sorted(name for name in module_names() if name != "submask.__main__"
                   and not name.startswith(("submask.integrations.transformers", "submask.integrations.trl_sync")))
    for name in names:
        subprocess.run([sys.executable, "-c", code, name], check=True, capture_output=True, timeout=120)


def test_the_readme_map_matches_the_tree() -> None:
    """README's "Where things are" names every top-level module and package of submask, and only those."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    named = {name.split("/")[0] for row in rows for name in re.findall(r"`([\w/]+)`", row)}
    on_disk = {path.stem for path in PACKAGE.glob("*.py") if not path.stem.startswith("_")}
    on_disk |= {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    functions = {"open_mask", "open", "load", "save", "MaskMetadata", "TensorMask", "Mask", "hf"}
    assert {name for name in named if not name.startswith("_")} - functions == on_disk

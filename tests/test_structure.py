"""The package's shape: the import graph has no cycle, and the model, lowering and quantization layers never
reach up into the export flow, the benchmarks, the CLI or the artifact inspection."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevit"
LOWER_LAYERS = ("models", "lowering", "quant")
UPPER_LAYERS = ("export", "bench", "cli", "inspection")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _under_type_checking(parents: list[ast.AST]) -> bool:
    return any(isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test) for p in parents)


def _known(name: str) -> str | None:
    """The edgevit module an import names (``from pkg import submodule`` names the submodule)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every edgevit module ``module`` imports, lazily or not (imports only for type checking aside)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    stack: list[tuple[ast.AST, list[ast.AST]]] = [(ast.parse(path.read_text()), [])]
    while stack:
        node, parents = stack.pop()
        stack.extend((child, [*parents, node]) for child in ast.iter_child_nodes(node))
        if isinstance(node, ast.Import) and not _under_type_checking(parents):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not _under_type_checking(parents):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.update(f"{source}.{a.name}" for a in node.names)
            found.add(source)
    targets = {_known(name) for name in found if name.startswith("edgevit")}
    # a module importing its own package runs that package's __init__ first: not an edge of a cycle
    return {t for t in targets if t and t != module and not module.startswith(t + ".")}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycle_from(start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in GRAPH.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_import_graph_has_no_cycle():
    cycles = [c for c in (_cycle_from(m) for m in sorted(GRAPH)) if c]
    assert not cycles, "import cycle: " + " -> ".join(cycles[0])


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_do_not_import_the_flow_above_them(layer):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[1:2] == [layer]
        for target in targets
        if target.split(".")[1] in UPPER_LAYERS
    )
    assert not wrong, wrong


def test_the_checks_see_the_whole_package():
    """The graph is read from the files, so a check that found nothing must have read something."""
    assert {"edgevit.export", "edgevit.lowering", "edgevit.targets.registry"} <= set(GRAPH)
    assert "edgevit.targets.registry" in GRAPH["edgevit.recipe"]

"""The package's layers, as ``ls`` shows them: each imports only from the layers below it, and nothing cycles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qarep_onnx"
# Lower layers first; a module may import from its own layer or below.
LAYERS = [
    {"errors", "progress", "numbers"},
    {"graph"},
    {"io", "save", "paths"},
    {"fold"},
    {"runtime", "stats", "adapters"},
    {"api"},
    {"int8"},
    {"cli", "console", "__main__", "__init__"},
]


def _unit(path: Path) -> str:
    """The top-level unit of the package a module belongs to: its folder, or its own name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, as dotted names relative to the package."""
    package = _module(path).split(".") if path.name == "__init__.py" else _module(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{a.name}" if target else a.name for a in node.names)
    return {name for name in found if name}


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}


def _layer(unit: str) -> int:
    return next(k for k, layer in enumerate(LAYERS) if unit in layer)


def test_every_module_is_in_a_layer():
    assert all(any(_unit(p) in layer for layer in LAYERS) for p in PACKAGE.rglob("*.py"))


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for name, imported in _graph().items():
        here = _layer(name.split(".")[0] or "__init__")
        upward += [f"{name} -> {i}" for i in imported if _layer(i.split(".")[0]) > here]
    assert not upward


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in graph[name]:
            assert state.get(other) != 1, " -> ".join(path + [other])
            if other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])

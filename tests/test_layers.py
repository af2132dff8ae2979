"""The package's layers import downwards only, without circles, and the pure core imports no Lightning.

The layer order is the README's ("What is in the box"). Every ``import`` counts, also one inside a
function: a lazy import that runs back up the layers is still an arrow the wrong way.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "seal_pl"

LAYERS = {
    "records": 0, "errors": 0, "rundir": 0, "reporting": 0, "stats": 0, "inputs": 0,
    "models": 1, "inner": 1, "generation": 1, "knowledge": 1, "arc": 1,
    "pipelines": 2,
    "lightning": 3,
    "stage_cli": 4,
    "restem": 5,
    "cli": 6,
    "__main__": 7,
}  # fmt: skip
PURE_CORE_TOP = LAYERS["pipelines"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else max(LAYERS.values()) + 1


def test_every_top_level_module_has_a_layer():
    assert {name.split(".")[1] for name in MODULES if "." in name} == set(LAYERS)


def test_imports_run_downwards_only():
    upward = [f"{m} -> {d}" for m, deps in sorted(GRAPH.items()) for d in sorted(deps) if layer(d) > layer(m)]
    assert upward == []


def test_no_import_circle():
    circles, state = [], collections.defaultdict(int)  # 0 unseen, 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state[target] == 1:
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif state[target] == 0:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(MODULES):
        if state[module] == 0:
            visit(module, [module])
    assert circles == []


def test_the_pure_core_imports_no_lightning():
    core = [name for name in MODULES if "." in name and layer(name) <= PURE_CORE_TOP]
    offenders = [name for name in core if any(m.split(".")[0] == "lightning" for m in imports_of(MODULES[name]))]
    assert core and offenders == []


def test_the_checks_see_a_real_arrow():
    """The graph is not empty by mistake: the shell imports the pipelines, the CLI the outer loop."""
    assert "seal_pl.pipelines.knowledge" in GRAPH["seal_pl.lightning.knowledge"]
    assert any(m.startswith("seal_pl.restem") for m in GRAPH["seal_pl.cli"])

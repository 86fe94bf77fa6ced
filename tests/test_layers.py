"""The package layout is the architecture: each layer of ``harness/`` imports only the layers below it, no
modules import each other in a loop, and only the registry imports a learner's module.

Checked on the source (every ``import`` statement, function-local ones included), so a loop hidden behind a
local import counts too; imports under ``if TYPE_CHECKING:`` are annotations only and never run, so they do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import algorithms.registry
import harness

ROOT = Path(harness.__file__).parent
ALGORITHMS = Path(algorithms.registry.__file__).parent

#: Layers, lowest first: a module may import its own layer and those before it.
LAYERS = ("seeding", "tasks", "references", "spec", "run", "analysis", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts  # algorithms/ sits beside harness/
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, by full dotted name (``from harness import seeding`` → ``harness.seeding``)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # drop the annotation-only blocks
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in root.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "cli"
    return LAYERS.index("cli" if top in ("cli", "__main__") else top)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    upward = [f"{module} imports {target}" for module, targets in _graph().items() if module != "harness"
              for target in targets if target != "harness" and _layer(target) > _layer(module)]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("root", [ROOT, ALGORITHMS], ids=["harness", "algorithms"])
def test_no_import_loops(root: Path) -> None:
    graph = _graph(root)
    for package in [m for m in graph if (root.parent / m.replace(".", "/") / "__init__.py").exists()]:
        for module in graph:  # a package's modules may import their package, which may list them
            if module.startswith(package + "."):
                graph[package].discard(module)
    loops, state = [], dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state[target] == 1:
                loops.append(" → ".join([*path[path.index(target):], target]))
            elif state[target] == 0:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if state[module] == 0:
            visit(module, [module])
    assert not loops, "\n".join(loops)


#: What ``harness/`` may import of ``algorithms/``: the contract, the registry and the device helpers.
ALGORITHMS_API = {"algorithms", "algorithms.base", "algorithms.registry", "algorithms.device"}


def test_only_the_registry_imports_a_learner() -> None:
    """``harness/`` reaches a learner through ``algorithms.registry`` only (which names each learner's module)."""
    learners = {spec.partition(":")[0] for spec in algorithms.registry.BUILTIN_LEARNERS.values()}
    assert learners and not learners & ALGORITHMS_API
    direct = [f"{path.relative_to(ROOT.parent)} imports {name}" for path in ROOT.rglob("*.py")
              for name in _imports(path) if name.startswith("algorithms") and name.rpartition(".")[0] not in
              ALGORITHMS_API | {""} and name not in ALGORITHMS_API]
    assert not direct, "\n".join(direct)

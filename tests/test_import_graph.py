"""The import graph of the engine and the code location, counting imports inside functions:
no cycle anywhere; stages import only earlier stages (data -> plan -> train -> evaluate);
`tracking/` and the root modules import no stage; no Dagster in the engine (Pipes aside)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ["data", "plan", "train", "evaluate"]  # each may import the ones before it


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages=("finegpt_pipeline", "assets")) -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its source (`from pkg import mod`
    counts as importing `pkg.mod` when that is a module)."""
    files = {module_name(p): p for pkg in packages for p in (REPO / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[:len(here) - node.level + 1]
                    base = ".".join(here + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in files}
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", ["finegpt_pipeline", "assets"])
def test_no_import_cycle(package):
    graph = import_graph((package,))
    assert len(graph) > 10
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES + ["tracking"] else None


def test_stages_import_only_earlier_stages_and_shared_modules_none():
    bad = []
    for module, deps in import_graph(("finegpt_pipeline",)).items():
        mine = _stage(module)
        for dep in deps:
            theirs = _stage(dep)
            if theirs is None or theirs == mine or theirs == "tracking":
                continue  # the root and tracking are shared by every stage
            if mine in (None, "tracking") or STAGES.index(theirs) > STAGES.index(mine):
                bad.append(f"{module} -> {dep}")
    assert not bad, "imports against the stage order: " + ", ".join(sorted(bad))


def test_tracking_imports_no_stage_and_the_root_no_package():
    graph = import_graph(("finegpt_pipeline",))
    for module, deps in graph.items():
        if _stage(module) == "tracking" or module.count(".") == 1:
            assert not [d for d in deps if _stage(d) not in (None, _stage(module))], module


def test_the_engine_root_stays_small():
    root = sorted(p.name for p in (REPO / "finegpt_pipeline").glob("*.py"))
    assert len(root) <= 11, root
    assert {p.name for p in (REPO / "finegpt_pipeline").iterdir() if p.is_dir()
            and (p / "__init__.py").exists()} == {*STAGES, "tracking"}


def test_no_dagster_in_the_engine_but_pipes():
    """The engine runs where Dagster is not installed (a notebook, torchrun on a GPU box); only
    the trainer's reporter opens Dagster Pipes, lazily, when launched through Pipes."""
    hits = []
    for path in (REPO / "finegpt_pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            hits += [f"{module_name(path)}: {n}" for n in names if n.split(".")[0] in
                     ("dagster", "dagster_pipes")]
    assert hits == ["finegpt_pipeline.train.reporter: dagster_pipes"]


def test_the_planning_modules_import_alone_in_any_order():
    """Each planning module imports first in a fresh interpreter (a cycle shows as a partly
    initialised module), and the trainer's contract modules stay free of torch."""
    names = ["plan.calibrate", "plan.planner", "plan.report", "plan.costs", "plan.claims",
             "config", "train.run_dir"]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m.startswith('finegpt_pipeline')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module('finegpt_pipeline.' + name)\n"
            "for m in [m for m in sys.modules if m.startswith('finegpt_pipeline')]:\n"
            "    del sys.modules[m]\n"
            "sys.modules.pop('torch', None)\n"
            "import finegpt_pipeline.plan.costs, finegpt_pipeline.config, "
            "finegpt_pipeline.train.run_dir\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    importlib.import_module("finegpt_pipeline.plan.planner")

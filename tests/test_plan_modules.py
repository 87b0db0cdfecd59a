"""The engine's module graph: no import cycles (the planner had calibrate -> plan ->
plan_report -> calibrate), counting imports inside functions too."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "finegpt_pipeline"


def import_graph() -> dict[str, set[str]]:
    """module -> the finegpt_pipeline modules it imports, anywhere in its source."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in modules:
        deps = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from .x import y / from . import x
                    base = f"finegpt_pipeline.{base}" if base else "finegpt_pipeline"
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] == "finegpt_pipeline" and len(parts) > 1 and parts[1] in modules:
                    deps.add(parts[1])
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
    assert find_cycle({"calibrate": {"plan"}, "plan": {"plan_report"}, "plan_report": {"calibrate"}}) == [
        "calibrate", "plan", "plan_report", "calibrate"]
    assert find_cycle({"plan": {"costs", "calibrate"}, "calibrate": {"costs"}, "costs": set()}) is None


def test_no_module_of_the_engine_imports_itself_back():
    graph = import_graph()
    assert {"plan", "calibrate", "costs", "plan_report", "config"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_planning_modules_import_alone_in_any_order():
    """Each planning module imports first in a fresh interpreter (a cycle shows as a partly
    initialised module), and the trainer's contract modules stay free of torch."""
    names = ["calibrate", "plan", "plan_report", "costs", "claims", "config", "run_dir"]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m.startswith('finegpt_pipeline')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module('finegpt_pipeline.' + name)\n"
            "for m in [m for m in sys.modules if m.startswith('finegpt_pipeline')]:\n"
            "    del sys.modules[m]\n"
            "sys.modules.pop('torch', None)\n"
            "import finegpt_pipeline.costs, finegpt_pipeline.config, finegpt_pipeline.run_dir\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    importlib.import_module("finegpt_pipeline.plan")

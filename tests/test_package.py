"""Package hygiene: every module imports, no import cycles, the package __init__ stays light, lint clean."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import grouptune

ROOT = Path(__file__).resolve().parents[1]


def all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(grouptune.__path__, "grouptune.")]


@pytest.mark.parametrize("name", all_modules())
def test_every_module_imports(name):
    importlib.import_module(name)


def module_files() -> dict[str, tuple[Path, bool]]:
    """Every grouptune module: its source file and whether it is a package (``__init__.py``)."""
    root = Path(grouptune.__file__).resolve().parent
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def grouptune_imports(name: str, path: Path, is_package: bool, modules: set[str]) -> set[str]:
    """The grouptune modules ``name`` imports, in a function too: deferring an import hides a
    cycle from the interpreter, not from the design. ``from a import b`` is module ``a.b`` if
    there is one, else a name from package ``a``'s ``__init__``."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names} & modules
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return (out & modules) - {name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: grouptune_imports(name, path, is_pkg, set(files)) for name, (path, is_pkg) in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` if there is none (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        path.append(module)
        for nxt in sorted(graph[module]):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        done.add(path.pop())
        return []

    for module in sorted(graph):
        if module not in done and (cycle := visit(module)):
            return cycle
    return []


def test_find_cycle_finds_one():
    """The checker itself: the cycle this test was written for (report -> commands -> report) is found."""
    graph = {"paths": set(), "report": {"commands", "paths"}, "commands": {"paths", "report"}}
    assert find_cycle(graph) == ["commands", "report", "commands"]
    assert find_cycle({**graph, "report": {"paths"}}) == []


def test_no_import_cycles_among_grouptune_modules():
    graph = import_graph()
    assert {"grouptune.data.loader", "grouptune.data.problems"} <= graph["grouptune.data"]  # edges are read
    assert graph["grouptune.testbed.commands"] >= {"grouptune.testbed.report", "grouptune.config"}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_testbed_report_does_not_import_commands():
    """In a fresh interpreter: writing a report needs the shipped paths, not the CLI commands."""
    code = "import sys, grouptune.testbed.report; print('grouptune.testbed.commands' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_package_init_does_not_import_torch_or_transformers():
    code = "import sys, grouptune; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60  # lines of code: docstrings, comments and blank lines not counted


def code_lines(source: list[str], node: ast.AST) -> int:
    body = getattr(node, "body", [])
    doc = body[0] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else None
    skip = set(range(doc.lineno, doc.end_lineno + 1)) if doc else set()
    return sum(
        1
        for i in range(node.lineno, node.end_lineno + 1)
        if i not in skip and source[i - 1].strip() and not source[i - 1].strip().startswith("#")
    )


def test_no_file_or_function_is_too_long():
    """Files stay readable: none over 500 lines, no function over 60 lines of code."""
    too_long = []
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        text = path.read_text(encoding="utf-8")
        source = text.splitlines()
        if len(source) > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(source)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(source, node) > MAX_FUNCTION_LINES:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {code_lines(source, node)} lines")
    assert not too_long, "\n".join(too_long)


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks", "examples"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path):
    """The example run configs use only settings that exist, with values of the right type."""
    from grouptune.config import load_config
    from grouptune.methods import check_method_config

    cfg = load_config(path)
    check_method_config(cfg.method)
    assert cfg.model.name_or_path and cfg.data.train

"""Rules of the code's shape that a newcomer relies on: short functions, and ferlib modules that import one way."""

import ast
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80
SOURCES = sorted((REPO_ROOT / "ferlib").glob("*.py")) + [REPO_ROOT / "video_application.py"]


def function_lengths(path: Path) -> dict[str, int]:
    """Lines from each function's ``def`` (decorators excluded) to its last line, by qualified name."""
    lengths = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return lengths


def ferlib_imports(path: Path) -> set[str]:
    """The ferlib modules a module imports, at the top or inside functions."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ferlib."):
            imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "ferlib":
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ferlib."))
    return imported - {path.stem}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_function_is_longer_than_80_lines(path):
    long = {name: n for name, n in function_lengths(path).items() if n > MAX_FUNCTION_LINES}
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_length_rule_sees_nested_and_method_functions(tmp_path):
    source = tmp_path / "sample.py"
    body = "\n".join(f"        x{i} = {i}" for i in range(85))
    source.write_text(f"class A:\n    def method(self):\n        pass\n\ndef outer():\n    def inner():\n{body}\n")
    lengths = function_lengths(source)
    assert lengths["A.method"] == 2 and lengths["outer.inner"] == 86 and lengths["outer"] == 87


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles in a module -> imported modules graph (depth-first search; each cycle reported once per back edge)."""
    cycles, done = [], set()

    def visit(name, path):
        for nxt in sorted(graph.get(name, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(name)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return cycles


def test_ferlib_modules_import_one_way():
    modules = {p.stem: p for p in (REPO_ROOT / "ferlib").glob("*.py") if p.stem != "__init__"}
    graph = {name: ferlib_imports(path) & set(modules) for name, path in modules.items()}
    assert graph["train"] and graph["evaluate"], "the import reader sees ferlib imports"
    cycles = import_cycles(graph)
    assert not cycles, f"import cycles between ferlib modules: {[' -> '.join(c) for c in cycles]}"


def test_the_cycle_check_finds_a_planted_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from ferlib.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from ferlib.a import y\n")
    graph = {name: ferlib_imports(tmp_path / f"{name}.py") for name in "ab"}
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert import_cycles(graph) == [["a", "b", "a"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("script", sorted((REPO_ROOT / "configs").glob("*.sh")), ids=lambda p: p.name)
def test_the_recipe_scripts_parse(script):
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_device_script_refuses_an_unknown_run_set_before_it_touches_anything(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(REPO_ROOT / "configs" / "device_students.sh")], capture_output=True,
                            text=True, env={**os.environ, "RUN_SET": "longer", "OUT": str(out)}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "RUN_SET=longer: expected students, long or third"
    assert not out.exists()

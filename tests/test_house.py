"""House rules that keep the code base easy to change, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
BENCH_MAX_LINES = 700


def _python_files(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py"))


def test_the_bench_stays_small():
    lines = sum(len(p.read_text().splitlines()) for p in _python_files("vcam/benchmark"))
    assert 0 < lines <= BENCH_MAX_LINES, f"vcam/benchmark has {lines} lines"


@pytest.mark.parametrize("root", ["vcam", "engine", "trainer"])
def test_no_function_longer_than_60_lines(root):
    too_long = []
    for path in _python_files(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, too_long


def _method_names() -> set[str]:
    """Names of the methods defined in the project's classes (properties excluded: they are settings)."""
    names = set()
    for path in _python_files("vcam", "engine", "trainer"):
        for cls in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)):
            for item in cls.body:
                decorators = {ast.unparse(d).split(".")[-1] for d in getattr(item, "decorator_list", [])}
                if isinstance(item, ast.FunctionDef) and not decorators & {"property", "setter"}:
                    names.add(item.name)
    return names - {"__init__"}


def _patches(tree: ast.AST, methods: set[str]) -> list[tuple[int, str]]:
    """`x.method = ...` for a method name of the project's classes (x not self/cls), and monkeypatch.setattr.
    A test double's own hook attribute (e.g. a callback slot) is not a method and is not flagged."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("monkeypatch.setattr"):
            found.append((node.lineno, ast.unparse(node)))
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if not isinstance(target, ast.Attribute) or ast.unparse(target.value) in ("self", "cls"):
                continue
            if target.attr in methods:
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_nothing_replaces_another_objects_methods():
    """No production module, script or test drives an object by assigning to its methods (monkey-patching);
    the pipeline, stages and harmonizer are driven through their public hooks and arguments."""
    methods = _method_names()
    found = [f"{path.relative_to(REPO)}:{line}: {text}"
             for path in _python_files("vcam", "engine", "trainer", "scripts", "tests")
             for line, text in _patches(ast.parse(path.read_text()), methods)]
    assert not found, found


def test_the_patch_detector_finds_a_patch():
    methods = {"process", "close"}
    tree = ast.parse("pipeline.process = keep\ndef keep(frame): pass\nstage.close = lambda: None\n"
                     "monkeypatch.setattr(x, 'y', 1)\nself.process = 1\nconfig.strength = 0.5\n"
                     "Fake.on_send = keep\n")
    assert [line for line, _ in _patches(tree, methods)] == [1, 3, 4]

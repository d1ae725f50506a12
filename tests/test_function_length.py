"""Small functions: no function or method in ``src/`` is longer than 80 lines.

A function's length is its ``def`` line to its last line, without its docstring (which the style asks to
carry the formula and a runnable example, however long): the code a reader has to hold in mind at once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[1] / "src" / "camscope"
LIMIT = 80
#: Still longer, in modules being reworked elsewhere; each entry must go when its function is split (the test
#: fails for an entry that is no longer needed, so the list only shrinks).
KNOWN: set[str] = set()


def function_lengths(source: str) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length without the docstring) of every function and method of a module."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1 if child.end_lineno else 1
                first = child.body[0]
                docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                if docstring and isinstance(first.value.value, str) and first.end_lineno is not None:
                    length -= first.end_lineno - first.lineno + 1
                found.append((prefix + child.name, child.lineno, length))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_measure_counts_code_lines_and_not_the_docstring() -> None:
    source = (
        'class A:\n    def f(self):\n        """Doc.\n\n        More.\n        """\n        x = 1\n        return x\n'
    )
    source += "\n\ndef g():\n    def h():\n        pass\n    return h\n"
    assert function_lengths(source) == [("A.f", 2, 3), ("g", 11, 4), ("g.h", 12, 2)]


def test_no_function_in_src_is_longer_than_80_lines() -> None:
    long = {}
    for path in sorted(SOURCES.rglob("*.py")):
        module = path.relative_to(SOURCES).as_posix()
        for name, line, length in function_lengths(path.read_text(encoding="utf-8")):
            if length > LIMIT:
                long[f"{module}:{name}"] = (line, length)
    unknown = {name: where for name, where in long.items() if name not in KNOWN}
    assert not unknown, "split these functions into smaller ones (name: (line, lines)): " + repr(unknown)
    stale = KNOWN - set(long)
    if stale:
        pytest.fail(f"these functions are short now: remove them from KNOWN: {sorted(stale)}")

"""The package root: its version comes from pyproject, and submodules use only its public names."""

from __future__ import annotations

import ast
import pkgutil
import tomllib
from pathlib import Path

import camscope

SOURCE = Path(camscope.__file__).parent
PUBLIC = set(camscope.__all__) | {"__version__"} | {module.name for module in pkgutil.iter_modules([str(SOURCE)])}


def _root_names(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, name)`` for every ``from camscope import name`` and ``camscope.name`` after ``import camscope``."""
    names = []
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "camscope" and node.level == 0:
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            aliases |= {alias.asname or alias.name for alias in node.names if alias.name == "camscope"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.append((node.lineno, node.attr))
    return names


def test_submodules_use_only_public_names_of_the_root():
    misuses = [
        f"{path.relative_to(SOURCE)}:{line} camscope.{name}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path != SOURCE / "__init__.py"
        for line, name in _root_names(ast.parse(path.read_text()))
        if name not in PUBLIC
    ]
    assert not misuses, "use the defining module for names outside camscope.__all__: " + ", ".join(misuses)


def test_root_scan_sees_both_import_forms():
    tree = ast.parse("import camscope as c\nfrom camscope import _private\nc._hidden(c.explain)\n")
    assert sorted(_root_names(tree)) == [(2, "_private"), (3, "_hidden"), (3, "explain")]


def test_version_comes_from_pyproject():
    pyproject = SOURCE.parents[1] / "pyproject.toml"
    if not pyproject.is_file():  # an installed wheel: no source tree to compare with
        return
    assert camscope.__version__ == tomllib.loads(pyproject.read_text())["project"]["version"]

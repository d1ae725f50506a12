"""Build hooks of the documentation site (mkdocs.yml: ``hooks``).

* ``<!-- api: PACKAGE -->`` in a page becomes the reference of the package and of each of its public
  modules (one ``::: module`` block each), so a new module is documented without editing a page.
* Sphinx roles left in docstrings (``:class:`~a.b.C```) render as plain code (``C``).
* ``<!-- cli-reference -->`` becomes the reference of every command, rendered from the CLI itself
  (``cli_reference``).
* ``docs/_tools`` is importable by the tutorials' executed code (``tutorial_support``).
"""

from __future__ import annotations

import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parents[1]
_API = re.compile(r"^<!-- api: ([\w.]+) -->$", flags=re.M)
_CLI = "<!-- cli-reference -->"
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|term):<code>~?([^<]*)</code>")


def on_config(config: Any) -> Any:
    for path in (str(TOOLS), str(ROOT / "src")):
        if path not in sys.path:
            sys.path.insert(0, path)
    return config


def _public_modules(package: str) -> list[tuple[str, bool]]:
    """``(name, is_package)`` of the package and its public submodules (recursively), the package first."""
    module = __import__(package, fromlist=["__path__"])
    found = [(package, True)]
    for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append((info.name, info.ispkg))
    return found


def _api_blocks(match: re.Match[str]) -> str:
    """A package shows its docstring (its names are documented in their modules), a module its public names."""
    blocks = []
    for index, (name, is_package) in enumerate(_public_modules(match.group(1))):
        options = [f"heading_level: {1 if index == 0 else 2}", "show_submodules: false"]
        if is_package:
            options.append("members: false")
        blocks.append(f"::: {name}\n    options:\n" + "".join(f"      {option}\n" for option in options))
    return "\n".join(blocks)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if _CLI in markdown:
        import cli_reference

        markdown = markdown.replace(_CLI, cli_reference.markdown())
    return _API.sub(_api_blocks, markdown)


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(lambda match: f"<code>{match.group(1).rsplit('.', 1)[-1]}</code>", html)

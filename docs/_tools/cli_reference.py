"""The command reference, rendered from the ``camscope`` command itself (``<!-- cli-reference -->``).

typer builds a click command from the app; each command and group gets a section with its help text, usage and
a table of its arguments and options, so the page cannot drift from the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer

from camscope.cli.app import app

_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _escape(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text)


def _paragraphs(text: str) -> str:
    """A help text as Markdown paragraphs: blank lines separate them, other line breaks are kept."""
    blocks = [block.strip() for block in text.strip().split("\n\n") if block.strip()]
    return "\n\n".join("  \n".join(_escape(line.strip()) for line in block.splitlines()) for block in blocks)


def _row(param: Any, context: Any) -> str:
    """One table row from the parameter's own help record: what ``-h`` prints for it."""
    names, text = param.get_help_record(context)
    return f"| `{names}` | {_escape(' '.join(text.split()))} |"


def _sections(command: Any, path: list[str], level: int, parent: Any = None) -> Iterator[str]:
    context = command.context_class(command, info_name=path[-1], parent=parent, **command.context_settings)
    yield f"{'#' * level} {' '.join(path)}\n"
    if command.help:
        yield _paragraphs(command.help) + "\n"
    yield f"```text\nUsage: {' '.join(path)} {' '.join(command.collect_usage_pieces(context))}\n```\n"
    params = [param for param in command.get_params(context) if not getattr(param, "hidden", False)]
    if params:
        yield "| Argument or option | Description |\n| --- | --- |"
        yield "\n".join(_row(param, context) for param in params) + "\n"
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _sections(sub, [*path, name], level + 1, context)


def markdown() -> str:
    """The reference of ``camscope`` and all its commands, as Markdown."""
    return "\n".join(_sections(typer.main.get_command(app), ["camscope"], 2))

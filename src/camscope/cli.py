"""The ``camscope`` command line."""

from __future__ import annotations

import importlib
import sys

import typer

from camscope.errors import CamscopeError

__all__ = ["app", "main"]

app = typer.Typer(
    name="camscope",
    help="Class activation maps that compare: Finer-CAM, DiffCAM, integrated feature analysis and the CAM family.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that add subcommands to `app` when imported.
_COMMAND_MODULES: tuple[str, ...] = ()


def _register() -> None:
    for module in _COMMAND_MODULES:
        importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a user mistake prints one line on stderr and exits with status 2."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except CamscopeError as error:
        print(f"camscope: error: {error}", file=sys.stderr)
        return 2
    except typer.Exit as exit_:
        return exit_.exit_code
    except typer.Abort:
        print("camscope: aborted", file=sys.stderr)
        return 1
    return 0

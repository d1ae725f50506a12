"""The ``camscope`` command line: the typer app, with every command registered here, explicitly.

Each command lives in the module of its topic and is a plain function (its options are
its parameters); :func:`build_app` adds them in the order ``camscope --help`` lists them:

* :mod:`camscope.cli.explain`: ``methods``, ``layers``, ``explain``;
* :mod:`camscope.cli.demo`: ``demo``;
* :mod:`camscope.cli.finer`: ``similarity``, ``prompts`` (Finer-CAM);
* :mod:`camscope.cli.analyze`: ``analyze`` (integrated feature analysis);
* :mod:`camscope.cli.evaluate`: ``evaluate``;
* :mod:`camscope.cli.reproduce`: ``reproduce``;
* :mod:`camscope.cli.serve`: ``serve`` (the explorer in the browser);
* :mod:`camscope.cli.bank`: the ``bank`` group (DiffCAM reference banks).

Example:
    >>> from camscope.cli.app import build_app
    >>> [command.name for command in build_app().registered_commands][:3]
    ['methods', 'layers', 'explain']
"""

from __future__ import annotations

import typer

from camscope.cli.analyze import analyze_command
from camscope.cli.bank import bank_app
from camscope.cli.common import run_cli
from camscope.cli.demo import demo
from camscope.cli.evaluate import evaluate_command
from camscope.cli.explain import explain, layers, methods
from camscope.cli.finer import prompts, similarity
from camscope.cli.reproduce import reproduce_command
from camscope.cli.serve import serve

__all__ = ["app", "build_app", "main", "run"]


def _print_version(value: bool) -> None:
    if value:
        from camscope import __version__

        typer.echo(f"camscope {__version__}")
        raise typer.Exit()


def _options(
    version: bool = typer.Option(
        False, "--version", help="Print camscope's version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Class activation maps that compare: Finer-CAM, DiffCAM, integrated feature analysis and the CAM family."""


def build_app() -> typer.Typer:
    """The ``camscope`` typer app with every command and group registered (``-h`` is ``--help`` everywhere)."""
    app = typer.Typer(
        name="camscope",
        help="Class activation maps that compare: Finer-CAM, DiffCAM, integrated feature analysis and the CAM family.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,  # plain help: wrapped at the terminal's width, never cut, no <bool> on flags
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_options)
    app.command("methods")(methods)
    app.command("layers")(layers)
    app.command("explain")(explain)
    app.command("demo")(demo)
    app.command("similarity")(similarity)
    app.command("prompts")(prompts)
    app.command("analyze")(analyze_command)
    app.command("evaluate")(evaluate_command)
    app.command("reproduce")(reproduce_command)
    app.command("serve")(serve)
    app.add_typer(bank_app, name="bank")
    return app


app = build_app()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; a user mistake prints one line on stderr and exits with status 2."""
    return run_cli(app, argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI as :func:`camscope.cli.main` does (Ctrl-C, start-up included: one line, status 130)."""
    from camscope.cli import main as cli_main

    return cli_main(argv)

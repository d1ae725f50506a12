"""The ``camscope`` command line."""

from camscope.cli.app import app, main

__all__ = ["app", "main"]

"""What the commands share: the model and weights options, loading the model, class names, and running the CLI.

A user mistake (:class:`camscope.errors.CamscopeError` or a usage error) prints one line,
``camscope: error: ...``, on stderr and exits with status 2.

Example:
    >>> import torch
    >>> from camscope.cli.common import top_predictions
    >>> top_predictions(torch.tensor([[0.0, 2.0]]), ["cat", "dog"], k=1)[0][0]["name"]
    'dog'
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
import typer

from camscope.errors import CamscopeError

__all__ = [
    "JsonOption",
    "ModelOption",
    "WeightsOption",
    "class_names_for",
    "load_cli_model",
    "resolve_class",
    "run_cli",
    "top_predictions",
]

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="efficientnet_lite0 (default, offline), torchvision:NAME or timm:NAME.")
]
WeightsOption = Annotated[
    str, typer.Option("--weights", help="'default' (pretrained; needs network except for the default model) or 'none'.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def load_cli_model(model: str, weights: str) -> torch.nn.Module:
    """The model named on the command line (``--weights none``: randomly initialised)."""
    from camscope.models import load_model

    return load_model(model, weights=None if weights.lower() == "none" else weights)


def class_names_for(model: torch.nn.Module, num_classes: int) -> list[str]:
    """ImageNet names for 1000-class models, else ``class i``."""
    from camscope.models import imagenet_classes

    return imagenet_classes() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]


def top_predictions(logits: torch.Tensor, names: list[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """Top-k classes per sample: index, name, probability."""
    probabilities = logits.softmax(dim=1)
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [
        [{"class": int(i), "name": names[int(i)], "probability": float(p)} for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(values, indices)
    ]


def resolve_class(spec: str, num_classes: int) -> int:
    """A class given by index or (ImageNet) name."""
    from camscope.models import class_index

    return class_index(spec, num_classes)


def run_cli(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run ``app``; a user mistake prints one line on stderr and returns status 2.

    Ctrl-C prints ``camscope: interrupted`` and returns 130 (files are written
    atomically, so none is left half-written); an operating-system error (a
    missing, unreadable or unwritable file) prints one line and returns 2.

    Returns:
        The exit status: 0 on success (and for the help of a bare command), 1 when aborted,
        2 for a user mistake or a file that cannot be read or written, 130 when
        interrupted, or the status a command exits with.
    """
    try:
        # Without standalone mode, typer returns the status of a command that exits early,
        # and turns Ctrl-C into status 130.
        status = app(args=argv, standalone_mode=False)
    except CamscopeError as error:
        typer.echo(f"camscope: error: {error}", err=True)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except typer.Exit as exit_:
        if isinstance(exit_.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into Exit(130)
            return _interrupted()
        return exit_.exit_code
    except typer.Abort as abort:
        if isinstance(abort.__cause__, KeyboardInterrupt):
            return _interrupted()
        typer.echo("camscope: aborted", err=True)
        return 1
    except OSError as error:
        typer.echo(f"camscope: error: {_os_error(error)}", err=True)
        return 2
    except Exception as error:
        # Usage errors of click (or of the click that typer vendors): one line, status 2.
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # the help is already printed
            return 0
        typer.echo(f"camscope: error: {error.format_message()}", err=True)
        return 2
    if isinstance(status, int) and not isinstance(status, bool) and status:
        return _interrupted() if status == 130 else status
    return 0


def _interrupted() -> int:
    typer.echo("camscope: interrupted", err=True)
    return 130


def _os_error(error: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and what to check."""
    reason = error.strerror or str(error) or type(error).__name__
    where = f": {error.filename}" if error.filename else ""
    return f"{reason}{where} (check that the path exists and can be read or written)"

"""``camscope serve``: the interactive explorer in the browser (needs ``pip install "camscope[app]"``).

Examples::

    camscope serve
    camscope serve --port 8765 --data photos/ --bank photos.bank --analysis analysis/analysis.safetensors
    camscope serve --model efficientnet_lite0 --model torchvision:resnet18=none
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

import typer

from camscope.errors import CamscopeError, needs_extra

__all__ = ["check_app_extra", "parse_model_specs", "serve"]


def check_app_extra() -> None:
    """Fail with one line (the extra to install) when FastAPI, uvicorn or python-multipart is missing."""
    with needs_extra("app", "the explorer (camscope serve)"):
        for name in ("fastapi", "uvicorn", "multipart"):
            if importlib.util.find_spec(name) is None:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def parse_model_specs(specs: list[str], weights: str) -> tuple[dict[str, str], dict[str, str | None]]:
    """``NAME`` or ``NAME=WEIGHTS`` per ``--model``: names to load and their weights (``none``: random).

    Example:
        >>> parse_model_specs(["efficientnet_lite0", "torchvision:resnet18=none"], "default")
        ({'efficientnet_lite0': 'efficientnet_lite0', 'torchvision:resnet18': 'torchvision:resnet18'}, {'efficientnet_lite0': 'default', 'torchvision:resnet18': None})
    """
    models: dict[str, str] = {}
    chosen: dict[str, str | None] = {}
    for spec in specs:
        name, separator, value = spec.partition("=")
        name = name.strip()
        if not name:
            raise CamscopeError(f"--model {spec!r}: give NAME or NAME=WEIGHTS (default, none or a checkpoint file)")
        value = value.strip() if separator else weights
        if value.lower() not in ("default", "none") and not Path(value).is_file():
            raise CamscopeError(f"--model {spec!r}: the checkpoint {value} does not exist")
        models[name] = name
        chosen[name] = None if value.lower() == "none" else value
    return models, chosen


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free port, printed with the URL).")] = 0,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model to offer, repeatable: efficientnet_lite0 (default, offline), torchvision:NAME or timm:NAME, "
            "optionally =WEIGHTS (default, none for random weights, or a checkpoint file).",
        ),
    ] = None,
    weights: Annotated[
        str, typer.Option("--weights", help="Weights of the models given without =WEIGHTS: default or none.")
    ] = "default",
    data: Annotated[
        Path | None, typer.Option("--data", help="An image folder the page may read (nothing outside it is read).")
    ] = None,
    bank: Annotated[
        Path | None, typer.Option("--bank", help="A reference bank for DiffCAM (camscope bank build).")
    ] = None,
    analysis: Annotated[
        Path | None, typer.Option("--analysis", help="An analysis file for S-CAMs (camscope analyze).")
    ] = None,
    size: Annotated[int, typer.Option(help="Input size.")] = 224,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cpu).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted, in MB.")] = 10.0,
) -> None:
    """Explore maps in the browser: pick or upload an image, switch classes, compare, download.

    Prints the URL and serves until Ctrl-C. Models run in one worker, one request at a time.
    """
    from camscope.cli.pass_options import cli_device

    device = cli_device(device)  # first: a device that is not here is one line, before anything is loaded
    check_app_extra()
    workbench = build_workbench(
        model or ["efficientnet_lite0"], weights, data, bank, analysis, size, device, max_upload_mb
    )
    from camscope.app.server import bind_socket, create_app, run_server

    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"camscope explorer: http://{shown}:{bound_port}/  (Ctrl-C stops it)")
    run_server(create_app(workbench), sock)


def build_workbench(
    specs: list[str],
    weights: str,
    data: Path | None,
    bank: Path | None,
    analysis: Path | None,
    size: int,
    device: str | None,
    max_upload_mb: float,
) -> Any:
    """The explorer's workbench from the command line's options (files are loaded and checked now)."""
    from camscope.analyses.ifa import Analysis
    from camscope.app.images import ImageStore
    from camscope.app.workbench import Workbench
    from camscope.stats.reference_bank import ReferenceBank

    if max_upload_mb <= 0:
        raise CamscopeError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    if data is not None and not data.is_dir():
        raise CamscopeError(f"--data must be a folder of images, got {data}")
    models, chosen = parse_model_specs(specs, weights)
    images = ImageStore(data, max_upload_bytes=int(max_upload_mb * 1e6))
    return Workbench(
        models,
        weights=chosen,
        images=images,
        bank=ReferenceBank.load(bank) if bank is not None else None,
        analysis=Analysis.load(analysis) if analysis is not None else None,
        size=size,
        device=device,
    )

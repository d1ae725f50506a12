"""The ``camscope`` command line."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import torch
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
_COMMAND_MODULES: tuple[str, ...] = (
    "camscope.cli.finer",
    "camscope.cli.bank",
    "camscope.cli.analyze",
    "camscope.cli.evaluate",
    "camscope.cli.reproduce",
)


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
    except Exception as error:
        # Usage errors of click (or of the click that typer vendors): one line, status 2.
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # the help is already printed
            return 0
        print(f"camscope: error: {error.format_message()}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("camscope: aborted", file=sys.stderr)
        return 1
    return 0


# --- shared helpers of the commands --------------------------------------------------------

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="efficientnet_lite0 (default, offline), torchvision:NAME or timm:NAME.")
]
WeightsOption = Annotated[
    str, typer.Option("--weights", help="'default' (pretrained; needs network except for the default model) or 'none'.")
]


def load_cli_model(model: str, weights: str) -> torch.nn.Module:
    """The model named on the command line."""
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


# --- commands ---------------------------------------------------------------------------------


@app.command()
def methods() -> None:
    """List the available methods."""
    from camscope.engine.method import available_methods

    for name, cls in available_methods().items():
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:18s} {summary}")


@app.command()
def layers(
    model: Annotated[
        str, typer.Argument(help="efficientnet_lite0, torchvision:NAME or timm:NAME.")
    ] = "efficientnet_lite0",
    weights: WeightsOption = "none",
    size: Annotated[int, typer.Option(help="Input size used to trace the output shapes.")] = 224,
) -> None:
    """List candidate layers (outputs with a spatial grid or tokens) with their output shapes."""
    from camscope.engine.capture import candidate_layers, default_layer

    network = load_cli_model(model, weights)
    x = torch.zeros(1, 3, size, size)
    default = default_layer(network, x)
    for name, shape in candidate_layers(network, x):
        marker = "  (default)" if name == default else ""
        print(f"{name:40s} {list(shape)}{marker}")


@app.command()
def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=False)],
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = "default",
    layer: Annotated[
        list[str] | None,
        typer.Option("--layer", "-l", help="Layer name (repeat for several; default: the model's default)."),
    ] = None,
    method: Annotated[list[str] | None, typer.Option("--method", help="Method (repeat for several).")] = None,
    target: Annotated[str | None, typer.Option(help="Class index or name to explain (default: predicted).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("camscope-out"),
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    save: Annotated[bool, typer.Option(help="Also save the raw maps as safetensors.")] = False,
    size: Annotated[int, typer.Option(help="Input size.")] = 224,
    versus: Annotated[
        list[str] | None,
        typer.Option("--versus", help="Finer-CAM: class (index or name) to compare with; repeat for several."),
    ] = None,
    gamma: Annotated[float | None, typer.Option(help="Finer-CAM: comparison strength (default 0.6).")] = None,
    references: Annotated[
        int | None,
        typer.Option("--references", help="Finer-CAM: how many similar classes to compare with (default 3)."),
    ] = None,
    bank: Annotated[
        Path | None, typer.Option("--bank", help="DiffCAM: reference bank file (camscope bank build).")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="DiffCAM: others, all, intra, knn:K, class:NAME or folder:PATH.")
    ] = None,
    regularization: Annotated[str | None, typer.Option(help="DiffCAM: 'oas' (default) or a number r >= 0.")] = None,
    scale: Annotated[
        Path | None,
        typer.Option("--scale", help="S-CAMs: an analysis file (camscope analyze) giving the common intensity scale."),
    ] = None,
    principal: Annotated[
        float | None,
        typer.Option(
            "--principal",
            help="FS-CAMs: keep the top FRACTION (e.g. 0.05) of the explained class's features (with --scale).",
        ),
    ] = None,
) -> None:
    """Explain images: print the top-5 predictions and write overlays (a grid for several methods).

    With a finer-* method (Finer-CAM) the figure shows the base map, the Finer map and the reference classes.
    """
    import camscope
    from camscope.models import data_config, load_image
    from camscope.viz.figures import explanation_figure, overlay, save_figure, save_image

    method_names = method or ["gradcam"]
    from camscope.cli.finer import check_finer_cli_options, finer_cli_options, finer_figure, finer_references

    check_finer_cli_options(method_names, versus, gamma, references)
    for image in images:
        if not image.is_file():
            raise CamscopeError(f"no such image file: {image}")
    network = load_cli_model(model, weights)
    config = data_config(model if model else network)
    loaded = [load_image(path, size=size, config=config) for path in images]
    batch = torch.cat([tensor for tensor, _ in loaded])
    from camscope.cli.bank import DiffCAMOptions

    diffcam = DiffCAMOptions(bank, reference, regularization, target, method_names, config, size, model)
    from camscope.cli.analyze import ScaleOptions

    ifa = ScaleOptions(scale, principal)
    target_spec = None
    if target is not None and not diffcam.owns_target:
        with torch.no_grad():
            target_spec = resolve_class(target, network(batch[:1]).shape[1])
    results: dict[str, camscope.Explanation] = {}
    for name in method_names:
        finer_options = finer_cli_options(name, versus, gamma, references, network, batch)
        explainer = camscope.Explainer(
            network, layer=layer or diffcam.layer(name), method=name, **finer_options, **diffcam.method_options(name)
        )
        name_target = diffcam.target_for(name, target_spec)
        results[name] = explainer(batch, target=name_target, **ifa.call_options(network, batch, name_target))
    first = next(iter(results.values()))
    names = class_names_for(network, first.logits.shape[1])
    predictions = top_predictions(first.logits, names)
    report = []
    for index, (path, (_, rgb)) in enumerate(zip(images, loaded)):
        stem = path.stem
        written = []
        if len(results) == 1:
            ((name, explanation),) = results.items()
            if finer_references(explanation, index, names):
                figure = finer_figure(network, batch, explanation, index, rgb, names, title=stem)
                written.append(save_figure(out / f"{stem}_{name}.png", figure))
            else:
                written.append(
                    save_image(out / f"{stem}_{name}.png", overlay(rgb, explanation.maps[index], signed=ifa.signed))
                )
        else:
            figure = explanation_figure(
                rgb,
                {name: e.maps[index] for name, e in results.items()},
                [(p["name"], p["probability"]) for p in predictions[index]],
                title=stem,
                signed=ifa.signed,
            )
            written.append(save_figure(out / f"{stem}.png", figure))
        if save:
            from camscope.io import save_tensors

            tensors = {f"{name}.raw": e.raw[index] for name, e in results.items()}
            tensors.update({f"{name}.maps": e.maps[index] for name, e in results.items()})
            meta = {"image": str(path), "model": model, "layer": str(first.layer), "methods": list(results)}
            written.append(save_tensors(out / f"{stem}.safetensors", tensors, meta, kind="maps"))
        classes = first.classes
        report.append(
            {
                "image": str(path),
                "predictions": predictions[index],
                "explained_class": None if classes is None else int(classes[index]),
                "layer": first.layer,
                "methods": list(results),
                "files": [str(p) for p in written],
                **{
                    f"{name}.references": refs
                    for name, e in results.items()
                    if (refs := finer_references(e, index, names))
                },
            }
        )
    if json_output:
        print(json.dumps(report, indent=2))
        return
    for entry in report:
        print(entry["image"])
        for p in entry["predictions"]:
            print(f"  {p['probability'] * 100:6.2f}%  {p['class']:4d}  {p['name']}")
        for file in entry["files"]:
            print(f"  wrote {file}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("camscope-out"),
) -> None:
    """Explain the bundled photos with the default model and every gradient method."""
    from camscope.cli.demo import run_demo

    written = run_demo(out)
    print(f"camscope demo: wrote {len(written)} files (figures, overview, photos/) to {out.resolve()}")
    for path in written:
        print(f"  {path}")

"""``camscope methods``, ``camscope layers`` and ``camscope explain``: what can be explained, where, and the maps.

Examples::

    camscope methods
    camscope layers torchvision:resnet50
    camscope explain cat.jpg --method gradcam --method finer-gradcam --out out/
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from camscope.cli.analyze import ScaleOptions
from camscope.cli.bank import DiffCAMOptions
from camscope.cli.common import (
    JsonOption,
    ModelOption,
    WeightsOption,
    class_names_for,
    load_cli_model,
    resolve_class,
    top_predictions,
)
from camscope.cli.finer import check_finer_cli_options, finer_cli_options, finer_figure, finer_references
from camscope.cli.outputs import NAMING_HELP, OverwriteOption, claim_outputs, input_labels, output_name
from camscope.errors import CamscopeError

__all__ = ["explain", "explain_output_stems", "layers", "methods", "plain_text"]


def methods(
    details: Annotated[
        bool, typer.Option("--details", help="Also list each method's options: type, default, allowed values.")
    ] = False,
    name: Annotated[str | None, typer.Argument(help="Show one method only.")] = None,
) -> None:
    """List the available methods (with --details, their options)."""
    from camscope.engine.method import available_methods, describe_options, method_class

    registry = available_methods()
    chosen = {method_class(name).name: method_class(name)} if name is not None else registry
    for method, cls in chosen.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        typer.echo(f"{method:18s} {plain_text(summary)}")
        if not details:
            continue
        for option in describe_options(cls):
            typer.echo(
                f"    {option.name:14s} {plain_text(option.allowed)}; default {option.default!r}. {plain_text(option.doc)}"
            )


_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")
_PATH = re.compile(r",?\s*(?:see )?(?:src|docs|tests|scripts)/[\w./-]*\w")


def plain_text(text: str) -> str:
    """Docstring text for a terminal: no reStructuredText markup, no source paths.

    Example:
        >>> plain_text("Eigen-CAM of ``G * A`` (:class:`~camscope.methods.EigenCAM`, see src/camscope/methods/eigen.py)")
        'Eigen-CAM of G * A (EigenCAM)'
    """
    text = _ROLE.sub(lambda match: match.group(1).rsplit(".", 1)[-1], str(text))
    text = _PATH.sub("", text).replace("``", "").replace(" ()", "")
    return re.sub(r"\s+", " ", text).strip()


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
        typer.echo(f"{name:40s} {list(shape)}{marker}")


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
    out: Annotated[Path, typer.Option(help="Output folder. " + NAMING_HELP)] = Path("camscope-out"),
    json_output: JsonOption = False,
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
    overwrite: OverwriteOption = False,
) -> None:
    """Explain images: print the top-5 predictions and write one figure per image (a grid for several methods).

    With a finer-* method (Finer-CAM) the figure shows the base map, the Finer map and the reference classes.
    Outputs go to --out as INPUT__METHOD[__OPTION-VALUE]....png (and .safetensors with --save), e.g.
    chelsea.png__finer-gradcam__vs-tabby__gamma-1.png.
    """
    import camscope
    from camscope.engine.method import method_class
    from camscope.models import data_config, load_image

    method_names = method or ["gradcam"]
    for name in method_names:
        method_class(name)  # an unknown method fails before anything is loaded or written
    check_finer_cli_options(method_names, versus, gamma, references)
    for image in images:
        if not image.is_file():
            raise CamscopeError(f"no such image file: {image}")
    network = load_cli_model(model, weights)
    config = data_config(model if model else network)
    loaded = [load_image(path, size=size, config=config) for path in images]
    batch = torch.cat([tensor for tensor, _ in loaded])
    diffcam = DiffCAMOptions(bank, reference, regularization, target, method_names, config, size, model)
    ifa = ScaleOptions(scale, principal)
    stems = explain_output_stems(
        images,
        method_names,
        model=model,
        weights=weights,
        layer=layer,
        size=size,
        target=target,
        versus=versus,
        gamma=gamma,
        references=references,
        bank=bank,
        reference=reference,
        regularization=regularization,
        scale=scale,
        principal=principal,
    )
    suffixes = [".png", ".safetensors"] if save else [".png"]
    claim_outputs([out / (stem + suffix) for stem in stems for suffix in suffixes], overwrite)
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
        figure_path = out / f"{stems[index]}.png"
        labels = _figure_labels(results, index, names, reference, weights)
        written = _write_image(
            network, batch, results, index, figure_path, rgb, names, predictions[index], ifa.signed, str(path), labels
        )
        if save:
            written.append(_save_maps(results, index, path, model, out / f"{stems[index]}.safetensors"))
        report.append(_entry(results, index, path, names, predictions[index], written))
    _print_report(report, json_output)


def explain_output_stems(images: list[Path], methods: list[str], **options: Any) -> list[str]:
    """The output names (without suffix) of ``camscope explain``: ``INPUT__METHODS[__OPTION-VALUE]...``.

    ``options`` are the command's options (``model``, ``weights``, ``layer``, ``size``, ``target``,
    ``versus``, ``gamma``, ``references``, ``bank``, ``reference``, ``regularization``, ``scale``,
    ``principal``); those at their default add nothing.

    Example:
        >>> explain_output_stems([Path("a/cat.jpg")], ["finer-gradcam"], versus=["tabby"], gamma=1.0)
        ['cat.jpg__finer-gradcam__vs-tabby__gamma-1']
    """
    get = options.get
    model, weights, bank, scale = get("model"), get("weights") or "default", get("bank"), get("scale")
    naming = [
        ("model", None if model in (None, "efficientnet_lite0") else model),
        ("random-weights", weights.strip().lower() == "none"),
        ("layer", get("layer") or None),
        ("size", None if get("size") in (None, 224) else get("size")),
        ("target", get("target")),
        ("vs", get("versus") or None),
        ("gamma", get("gamma")),
        ("references", get("references")),
        ("bank", Path(bank).stem if bank is not None else None),
        ("ref", get("reference")),
        ("reg", get("regularization")),
        ("scaled", Path(scale).stem if scale is not None else None),
        ("principal", get("principal")),
    ]
    return [output_name(label, methods, naming, suffix="") for label in input_labels(images)]


def _write_image(
    network: torch.nn.Module,
    batch: torch.Tensor,
    results: dict[str, Any],
    index: int,
    path: Path,
    rgb: np.ndarray,
    names: list[str],
    predictions: list[dict[str, Any]],
    signed: bool,
    title: str,
    labels: dict[str, str],
) -> list[Path]:
    """The Finer figure (one finer-* method) or the figure of the image and one overlay per method."""
    from camscope.viz.figures import explanation_figure, save_figure

    if len(results) == 1:
        (explanation,) = results.values()
        if finer_references(explanation, index, names):
            figure = finer_figure(network, batch, explanation, index, rgb, names, title=title, note=labels["note"])
            return [save_figure(path, figure)]
    figure = explanation_figure(
        rgb,
        {name: e.maps[index] for name, e in results.items()},
        [(p["name"], p["probability"]) for p in predictions],
        title=title,
        signed=signed,
        **labels,
    )
    return [save_figure(path, figure)]


def _figure_labels(
    results: dict[str, Any], index: int, names: list[str], reference: str | None, weights: str
) -> dict[str, str]:
    """What a figure says besides the maps: the explained class and its probability, the layer, a warning."""
    first = next(iter(results.values()))
    classes = first.classes
    explained = ""
    if classes is not None:
        c = int(classes.reshape(-1)[index] if classes.numel() > 1 else classes.reshape(-1)[0])
        if 0 <= c < len(names):
            explained = f"{names[c][:24]} {float(first.logits[index].softmax(dim=0)[c]) * 100:.1f}%"
    if any(name.lower() == "diffcam" for name in results):
        group = f"DiffCAM reference group: {reference or 'others'}"
        explained = group if len(results) == 1 else f"{explained}; {group}"
    layer = first.layer if isinstance(first.layer, str) else "+".join(first.layer)
    note = "random weights (--weights none): not a trained model" if weights.strip().lower() == "none" else ""
    return {"explained": explained, "layer": layer, "note": note}


def _save_maps(results: dict[str, Any], index: int, path: Path, model: str, file: Path) -> Path:
    """The raw and final maps of one image as safetensors, with the image, model, layer and methods."""
    from camscope.io import save_tensors

    first = next(iter(results.values()))
    tensors = {f"{name}.raw": e.raw[index] for name, e in results.items()}
    tensors.update({f"{name}.maps": e.maps[index] for name, e in results.items()})
    layer = first.layer if isinstance(first.layer, str) else list(first.layer)
    meta = {"image": str(path), "model": model, "layer": layer, "methods": list(results)}
    return save_tensors(file, tensors, meta, kind="maps")


def _entry(
    results: dict[str, Any],
    index: int,
    path: Path,
    names: list[str],
    predictions: list[dict[str, Any]],
    written: list[Path],
) -> dict[str, Any]:
    """The report of one image: predictions, explained class, layer, methods, files and Finer references."""
    first = next(iter(results.values()))
    classes = first.classes
    return {
        "image": str(path),
        "predictions": predictions,
        "explained_class": None if classes is None else int(classes[index]),
        "layer": first.layer,
        "methods": list(results),
        "files": [str(p) for p in written],
        **{f"{name}.references": refs for name, e in results.items() if (refs := finer_references(e, index, names))},
    }


def _print_report(report: list[dict[str, Any]], json_output: bool) -> None:
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    for entry in report:
        typer.echo(entry["image"])
        for p in entry["predictions"]:
            typer.echo(f"  {p['probability'] * 100:6.2f}%  {p['class']:4d}  {p['name']}")
        for file in entry["files"]:
            typer.echo(f"  wrote {file}")

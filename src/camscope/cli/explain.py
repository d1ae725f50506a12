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
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.cli.analyze import ScaleOptions
from camscope.cli.bank import DiffCAMOptions
from camscope.cli.common import (
    MODEL_HELP,
    DeviceOption,
    JsonOption,
    MethodOption,
    SeedOption,
    SkipBadOption,
    WeightsOption,
    check_model_size,
    check_seed,
    class_names_for,
    image_files,
    load_cli_model,
    method_list,
    model_option,
    random_weights,
    report_skipped,
    resolve_class,
    skip_bad_hint,
    top_predictions,
)
from camscope.cli.finer import check_finer_cli_options, finer_cli_options, finer_figure, finer_references
from camscope.cli.outputs import (
    NAMING_HELP,
    CmapOption,
    DpiOption,
    FormatOption,
    OverwriteOption,
    claim_outputs,
    figure_style,
    input_labels,
    output_name,
)
from camscope.cli.pass_options import cli_device
from camscope.errors import CamscopeError

if TYPE_CHECKING:
    import torch

    from camscope.models.preprocessing import Photo
    from camscope.viz.style import FigureStyle

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
    model_argument: Annotated[str | None, typer.Argument(hidden=True, metavar="(use --model)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    weights: WeightsOption = "none",
    seed: SeedOption = 0,
    size: Annotated[int, typer.Option(help="Input size used to trace the output shapes.")] = 224,
    device: DeviceOption = None,
    all_layers: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also list the names that give no map of their own: no-op modules (identity, dropout) and "
            "modules whose output is that of the module around them.",
        ),
    ] = False,
) -> None:
    """List candidate layers (outputs with a spatial grid or tokens) with their output shapes.

    No-op modules and modules whose output is that of the module around them are left out (--all lists them).
    """
    import torch

    from camscope.engine.capture import candidate_layers, default_layer

    network = load_cli_model(model_option(model, model_argument), weights, seed, cli_device(device))
    x = torch.zeros(1, 3, size, size, device=next(network.parameters()).device)
    default = default_layer(network, x)
    for name, shape in candidate_layers(network, x, all_layers=all_layers):
        marker = "  (default)" if name == default else ""
        typer.echo(f"{name:40s} {list(shape)}{marker}")


# explain's options (declared once here so that its signature reads as a list)
_ImagesArgument = Annotated[
    list[Path], typer.Argument(help="Image files, or folders (their images, sub-folders included).")
]
_ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help=MODEL_HELP + " Default: the bank's model with --bank, else efficientnet_lite0."),
]
_WeightsOption = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="'default' (pretrained), 'none' (random, seeded by --seed) or a checkpoint file (.pt/.pth state dict "
        "read with weights_only=True, or .safetensors). Default: the bank's with --bank, else 'default'.",
    ),
]
_SeedOption = Annotated[
    int | None, typer.Option("--seed", help="Seed of the random weights of --weights none (default 0, or the bank's).")
]
_LayerOption = Annotated[
    list[str] | None,
    typer.Option("--layer", "-l", help="Layer name (repeat for several; default: the model's default)."),
]
_TargetOption = Annotated[str | None, typer.Option(help="Class index or name to explain (default: predicted).")]
_OutOption = Annotated[Path, typer.Option(help="Output folder. " + NAMING_HELP)]
_SaveOption = Annotated[
    bool, typer.Option(help="Also save the maps: one Explanation file per method (camscope.Explanation.load).")
]
_SizeOption = Annotated[
    int | None,
    typer.Option(help="Input size (default: the bank's with --bank, a camscope: model's own, else 224)."),
]
_VersusOption = Annotated[
    list[str] | None,
    typer.Option("--versus", help="Finer-CAM: class (index or name) to compare with; repeat for several."),
]
_GammaOption = Annotated[float | None, typer.Option(help="Finer-CAM: comparison strength (default 0.6).")]
_ReferencesOption = Annotated[
    int | None, typer.Option("--references", help="Finer-CAM: how many similar classes to compare with (default 3).")
]
_BankOption = Annotated[
    Path | None,
    typer.Option("--bank", help="DiffCAM: reference bank file (camscope bank build); its model is the default."),
]
_ReferenceOption = Annotated[
    str | None, typer.Option("--reference", help="DiffCAM: others, all, intra, knn:K, class:NAME or folder:PATH.")
]
_RegularizationOption = Annotated[str | None, typer.Option(help="DiffCAM: 'oas' (default) or a number r >= 0.")]
_ScaleOption = Annotated[
    Path | None,
    typer.Option("--scale", help="S-CAMs: an analysis file (camscope analyze) giving the common intensity scale."),
]
_TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="classify, detect or segment (default: read from the model's outputs). detect and segment draw each "
        "box or region the model finds with its own map.",
    ),
]
_ScoreThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--score-threshold",
        help="detect/segment: the least score of a box (a region: its mean class probability). Default 0.5.",
    ),
]
_ObjectsOption = Annotated[
    int | None, typer.Option("--objects", help="detect/segment: the most boxes or regions explained (default 4).")
]
_PrincipalOption = Annotated[
    float | None,
    typer.Option(
        "--principal",
        help="FS-CAMs: keep the top FRACTION (e.g. 0.05) of the explained class's features (with --scale).",
    ),
]


_EigenSmoothOption = Annotated[
    bool,
    typer.Option(
        "--eigen-smooth",
        help="Each map: the projection of the weighted channels w_k A_k on their first principal component "
        "instead of their sum (methods with channel weights; pytorch-grad-cam's eigen_smooth).",
    ),
]
_AugSmoothOption = Annotated[
    bool,
    typer.Option(
        "--aug-smooth",
        help="Each map: the mean of the maps of six flipped and rescaled copies of the image, the class fixed "
        "on the image itself (six times the cost; pytorch-grad-cam's aug_smooth).",
    ),
]


def explain(
    images: _ImagesArgument,
    model: _ModelOption = None,
    weights: _WeightsOption = None,
    seed: _SeedOption = None,
    layer: _LayerOption = None,
    method: MethodOption = None,
    target: _TargetOption = None,
    out: _OutOption = Path("camscope-out/explain"),
    json_output: JsonOption = False,
    save: _SaveOption = False,
    size: _SizeOption = None,
    device: DeviceOption = None,
    versus: _VersusOption = None,
    gamma: _GammaOption = None,
    references: _ReferencesOption = None,
    bank: _BankOption = None,
    reference: _ReferenceOption = None,
    regularization: _RegularizationOption = None,
    scale: _ScaleOption = None,
    principal: _PrincipalOption = None,
    eigen_smooth: _EigenSmoothOption = False,
    aug_smooth: _AugSmoothOption = False,
    task: _TaskOption = None,
    score_threshold: _ScoreThresholdOption = None,
    objects: _ObjectsOption = None,
    overwrite: OverwriteOption = False,
    skip_bad: SkipBadOption = False,
    fmt: FormatOption = "png",
    dpi: DpiOption = 100,
    cmap: CmapOption = None,
) -> None:
    """Explain images: print the top-5 predictions and write one figure per image (a grid for several methods).

    With a finer-* method (Finer-CAM) the figure shows the base map, the Finer map and the reference classes.
    A detector's boxes or a segmenter's regions (--task detect|segment, read from the model's outputs by default)
    are each explained alone: one map per box or region and method.
    Outputs go to --out as INPUT__METHOD[__OPTION-VALUE]....png (and .safetensors with --save), e.g.
    chelsea.png__finer-gradcam__vs-tabby__gamma-1.png.
    """
    import torch

    from camscope.models import data_config

    device = cli_device(device)  # first: a missing GPU is one line before anything is read
    method_names = method_list(method)
    style = figure_style(fmt, dpi, cmap)
    check_finer_cli_options(method_names, versus, gamma, references)
    _check_object_values(score_threshold, objects)
    files = image_files(images)
    diffcam = DiffCAMOptions(bank, reference, regularization, target, method_names, model)
    model_name, weights_name, seed_value, size = _bank_defaults(diffcam, model, weights, seed, size)
    network = load_cli_model(model_name, weights_name, seed_value, device)
    config = data_config(model_name)
    files, loaded = _load_photos(files, size, config, skip_bad)
    diffcam.prepare(size, config, files)
    batch = torch.cat([tensor for tensor, _ in loaded]).to(next(network.parameters()).device)
    ifa = ScaleOptions(scale, principal)
    finer = {"versus": versus, "gamma": gamma, "references": references}
    smoothing = {"eigen_smooth": eigen_smooth, "aug_smooth": aug_smooth}
    options = _naming_options(
        model=model, model_name=model_name, weights=weights_name, seed=seed_value, layer=layer, size=size,
        target=target, finer=finer, diffcam=diffcam, bank=bank, reference=reference, regularization=regularization,
        scale=scale, principal=principal, smoothing=smoothing,
    )  # fmt: skip
    task = _task(task, network, batch, score_threshold, objects)
    if task != "classify":
        options.update(task=task, score_threshold=score_threshold, objects=objects)
    stems = explain_output_stems(files, method_names, **options)
    if task != "classify":
        flags = {"--save": save, "--versus": versus, "--gamma": gamma, "--references": references,
                 "--bank": bank, "--reference": reference, "--regularization": regularization,
                 "--scale": scale, "--principal": principal, "--eigen-smooth": eigen_smooth,
                 "--aug-smooth": aug_smooth}  # fmt: skip
        _explain_objects(
            task, flags, files, network, batch, loaded, stems, method_names, model=model_name, layer=layer,
            target=target, score_threshold=score_threshold, objects=objects, out=out, overwrite=overwrite,
            json_output=json_output, note=_random_weights_note(weights_name, seed_value), style=style,
        )  # fmt: skip
        return
    saved = _claim_map_outputs(files, method_names, options, stems, out, style.suffix, save, overwrite)
    results = _run_methods(network, batch, method_names, layer, target, diffcam, ifa, finer, smoothing)
    report = _write_results(
        network, batch, results, files, loaded, stems, saved, out, diffcam=diffcam, signed=ifa.signed,
        scaled="FS-" if principal is not None else "S-", smoothing=smoothing, model=model_name,
        weights=weights_name, seed=seed_value, style=style,
    )  # fmt: skip
    _print_report(report, json_output)


def _naming_options(
    *,
    model: str | None,
    model_name: str,
    weights: str,
    seed: int,
    layer: list[str] | None,
    size: int,
    target: str | None,
    finer: dict[str, Any],
    diffcam: DiffCAMOptions,
    bank: Path | None,
    reference: str | None,
    regularization: str | None,
    scale: Path | None,
    principal: float | None,
    smoothing: dict[str, bool],
) -> dict[str, Any]:
    """The options that name the outputs (:func:`explain_output_stems`); the size only when not the model's own."""
    return dict(
        model=model,
        weights=weights,
        seed=seed,
        layer=layer,
        size=None if size == _own_input_size(model_name) else size,
        target=target,
        **finer,
        bank=bank,
        reference=reference,
        regularization=regularization,
        refs=diffcam.fixed_size(),
        scale=scale,
        principal=principal,
        **smoothing,
    )


def _claim_map_outputs(
    files: list[Path],
    method_names: list[str],
    options: dict[str, Any],
    stems: list[str],
    out: Path,
    suffix: str,
    save: bool,
    overwrite: bool,
) -> dict[str, list[str]]:
    """Claim the figures' files (and with ``save``, each method's maps'); the maps' stems of each method."""
    saved = {name: explain_output_stems(files, [name], **options) for name in method_names} if save else {}
    claim_outputs(
        [out / f"{stem}{suffix}" for stem in stems]
        + [out / f"{stem}.safetensors" for each in saved.values() for stem in each],
        overwrite,
    )
    return saved


def _explain_objects(
    task: str,
    flags: dict[str, Any],
    files: list[Path],
    network: torch.nn.Module,
    batch: torch.Tensor,
    loaded: list[Any],
    stems: list[str],
    method_names: list[str],
    *,
    model: str,
    layer: list[str] | None,
    target: str | None,
    score_threshold: float | None,
    objects: int | None,
    out: Path,
    overwrite: bool,
    json_output: bool,
    note: str,
    style: FigureStyle,
) -> None:
    """``--task detect|segment``: each box or region the model finds explained alone (``flags``: refused options)."""
    from camscope.cli.objects import check_object_options, explain_objects

    check_object_options(task, method_names, flags)
    claim_outputs([out / f"{stem}{style.suffix}" for stem in stems], overwrite)
    explain_objects(
        files, network, batch, [photo for _, photo in loaded], stems, method_names, task=task, model=model,
        layer=layer, target=target, score_threshold=0.5 if score_threshold is None else score_threshold,
        max_objects=4 if objects is None else objects, out=out, json_output=json_output, note=note, style=style,
    )  # fmt: skip


def _write_results(
    network: torch.nn.Module,
    batch: torch.Tensor,
    results: dict[str, Any],
    files: list[Path],
    loaded: list[Any],
    stems: list[str],
    saved: dict[str, list[str]],
    out: Path,
    *,
    diffcam: DiffCAMOptions,
    signed: bool,
    scaled: str,
    smoothing: dict[str, bool],
    model: str,
    weights: str,
    seed: int,
    style: FigureStyle,
) -> list[dict[str, Any]]:
    """Each image's figure (and with ``saved``, its maps per method); the report's entry of each image."""
    first = next(iter(results.values()))
    names = class_names_for(network, first.logits.shape[1])
    predictions = top_predictions(first.logits, names)
    random = random_weights(weights)
    report = []
    for index, (path, (_, photo)) in enumerate(zip(files, loaded)):
        labels = _figure_labels(results, index, names, diffcam, random, seed)
        labels.update(model=model, style=style, scaled=scaled)
        labels.update(smoothing, note=_with_smoothing(labels["note"], smoothing))
        written = _write_image(
            network,
            batch,
            results,
            index,
            out / f"{stems[index]}{style.suffix}",
            photo,
            names,
            predictions[index],
            signed,
            str(path),
            labels,
        )
        for name, method_stems in saved.items():
            file = out / f"{method_stems[index]}.safetensors"
            written.append(_save_explanation(results[name], index, file, model, weights, seed))
        report.append(_entry(results, index, path, names, predictions[index], written, labels))
    return report


def _with_smoothing(note: str, smoothing: dict[str, bool]) -> str:
    """The figure's note, with the smoothing its maps had (a smoothed map is not the method's plain map).

    Example:
        >>> _with_smoothing("", {"eigen_smooth": True, "aug_smooth": True})
        'eigen-smoothed (PC1 of w_k A_k), aug-smoothed (6 copies)'
    """
    said = {
        "eigen_smooth": "eigen-smoothed (PC1 of w_k A_k)",
        "aug_smooth": "aug-smoothed (6 copies)",
    }
    parts = [said[name] for name, given in smoothing.items() if given]
    return " | ".join(part for part in (note, ", ".join(parts)) if part)


def _task(
    task: str | None, network: torch.nn.Module, batch: torch.Tensor, threshold: float | None, objects: int | None
) -> str:
    """``--task``, or what the model's outputs say it does (detections: detect; logits per pixel: segment)."""
    from camscope.cli.objects import TASK_CHOICES
    from camscope.engine.objects import model_task
    from camscope.errors import CamscopeError

    if task is not None and task not in TASK_CHOICES:
        raise CamscopeError(f"--task must be one of {', '.join(TASK_CHOICES)}, got {task!r}")
    if task is None:
        try:
            task = model_task(network, batch[:1])
        except CamscopeError:
            task = "classify"
    if task == "classify" and (threshold is not None or objects is not None):
        raise CamscopeError(
            "--score-threshold and --objects choose boxes or regions: use them with --task detect|segment"
        )
    return task


def _check_object_values(threshold: float | None, objects: int | None) -> None:
    """``--score-threshold`` and ``--objects`` in range, checked before the model is loaded."""
    if threshold is not None and not 0 <= threshold <= 1:  # scores are probabilities: outside, all or none pass
        raise CamscopeError(f"--score-threshold must be in [0, 1], such as 0.5, got {threshold}")
    if objects is not None and objects < 1:
        raise CamscopeError(f"--objects must be 1 or more (the most boxes or regions explained), got {objects}")


def _own_input_size(model: str) -> int | None:
    """The input size of camscope's shipped models (``camscope:NAME``), read from their data config."""
    from camscope.models import data_config

    return int(data_config(model).input_size) if model.strip().lower().startswith("camscope:") else None


def _random_weights_note(weights: str, seed: int) -> str:
    """The figures' warning for ``--weights none``."""
    return f"random weights (--weights none, seed {seed}): not a trained model" if random_weights(weights) else ""


def _load_photos(files: list[Path], size: int, config: Any, skip_bad: bool) -> tuple[list[Path], list[Any]]:
    """The images (model input and photo); with ``skip_bad``, those that cannot be read are left out and reported."""
    from camscope.data.folders import UnreadableImageError, read_image
    from camscope.models import load_photo

    def load(path: Path) -> Any:
        return load_photo(path, size=size, config=config)

    kept, loaded, skipped = [], [], []
    for path in files:
        try:
            if len(files) > 1 and not skip_bad:
                with skip_bad_hint():  # one bad file among many: say which, and how to go on without it
                    loaded.append(read_image(load, path))
            else:
                loaded.append(read_image(load, path))
            kept.append(path)
        except UnreadableImageError as error:
            if not skip_bad:
                raise
            skipped.append((path, str(error)))
    report_skipped(skipped, len(files))
    if not kept:
        raise CamscopeError(f"none of the {len(files)} images can be read")
    return kept, loaded


def _bank_defaults(
    diffcam: DiffCAMOptions, model: str | None, weights: str | None, seed: int | None, size: int | None
) -> tuple[str, str, int, int]:
    """The model, weights, seed and input size: as given, else the bank's (``--bank``), else the defaults."""
    built_with = diffcam.built_with
    model_name = model or built_with.get("name") or "efficientnet_lite0"
    same_model = model is None or model == built_with.get("name")
    weights_name = weights or (built_with.get("cli_weights") if same_model else None) or "default"
    check_seed(seed, weights_name)  # a --seed given with trained weights would change nothing
    seed_value = seed if seed is not None else int(built_with.get("cli_seed", 0) or 0)
    if size is None and diffcam.bank is not None:
        size = int((diffcam.bank.input_size or [224])[-1])
    elif size is None:  # camscope's shipped models take their own size (the scene models: 96)
        size = _own_input_size(model_name) or 224
    check_model_size(model_name, size)
    return model_name, weights_name, seed_value, size


def _run_methods(
    network: torch.nn.Module,
    batch: torch.Tensor,
    method_names: list[str],
    layer: list[str] | None,
    target: str | None,
    diffcam: DiffCAMOptions,
    ifa: ScaleOptions,
    finer: dict[str, Any],
    smoothing: dict[str, bool],
) -> dict[str, Any]:
    """One explanation of the batch per method, with its Finer, DiffCAM and S-CAM options and ``smoothing``.

    ``smoothing``: the explainer's ``eigen_smooth`` and ``aug_smooth`` (``--eigen-smooth``, ``--aug-smooth``).
    """
    import torch

    import camscope

    target_spec = None
    if target is not None and not diffcam.owns_target:
        with torch.no_grad():
            target_spec = resolve_class(target, network(batch[:1]).shape[1])
    results: dict[str, camscope.Explanation] = {}
    for name in method_names:
        finer_options = finer_cli_options(name, finer["versus"], finer["gamma"], finer["references"], network, batch)
        explainer = camscope.Explainer(
            network,
            layer=layer or diffcam.layer(name),
            method=name,
            eigen_smooth=smoothing["eigen_smooth"],
            aug_smooth=smoothing["aug_smooth"],
            **finer_options,
            **diffcam.method_options(name),
        )
        name_target = diffcam.target_for(name, target_spec)
        results[name] = explainer(batch, target=name_target, **ifa.call_options(network, batch, name_target))
    return results


def explain_output_stems(images: list[Path], methods: list[str], **options: Any) -> list[str]:
    """The output names (without suffix) of ``camscope explain``: ``INPUT__METHODS[__OPTION-VALUE]...``.

    ``options`` are the command's options (``model``, ``weights``, ``seed``, ``layer``, ``size``, ``target``,
    ``versus``, ``gamma``, ``references``, ``bank``, ``reference``, ``refs`` (the reference group's size
    where it is fixed), ``regularization``, ``scale``, ``principal``, ``eigen_smooth``, ``aug_smooth``); those
    at their default add nothing (a checkpoint file adds ``__weights-STEM``,
    a seed other than 0 of random weights ``__seed-N``).

    Example:
        >>> explain_output_stems([Path("a/cat.jpg")], ["finer-gradcam"], versus=["tabby"], gamma=1.0)
        ['cat.jpg__finer-gradcam__vs-tabby__gamma-1']
    """
    get = options.get
    model, weights, bank, scale = get("model"), get("weights") or "default", get("bank"), get("scale")
    random = random_weights(weights)
    checkpoint = weights.strip().lower() not in ("default", "none")
    naming = [
        ("model", None if model in (None, "efficientnet_lite0") else model),
        ("random-weights", random),
        ("seed", get("seed") if random and get("seed") not in (None, 0) else None),
        ("weights", Path(weights).stem if checkpoint else None),
        ("layer", get("layer") or None),
        ("size", None if get("size") in (None, 224) else get("size")),
        ("target", get("target")),
        ("vs", get("versus") or None),
        ("gamma", get("gamma")),
        ("references", get("references")),
        ("bank", Path(bank).stem if bank is not None else None),
        ("ref", get("reference")),
        ("refs", get("refs")),
        ("reg", get("regularization")),
        ("scaled", Path(scale).stem if scale is not None else None),
        ("principal", get("principal")),
        ("eigen-smooth", bool(get("eigen_smooth"))),
        ("aug-smooth", bool(get("aug_smooth"))),
        ("score-threshold", get("score_threshold")),
        ("objects", get("objects")),
    ]
    return [output_name(label, methods, naming, suffix="") for label in input_labels(images)]


def _write_image(
    network: torch.nn.Module,
    batch: torch.Tensor,
    results: dict[str, Any],
    index: int,
    path: Path,
    photo: Photo,
    names: list[str],
    predictions: list[dict[str, Any]],
    signed: bool,
    title: str,
    labels: dict[str, Any],
) -> list[Path]:
    """The Finer figure (one finer-* method) or the figure of the image and one overlay per method."""
    from camscope.viz.compare import comparisons
    from camscope.viz.figures import explanation_figure, save_figure

    style = labels["style"]
    if len(results) == 1:
        (explanation,) = results.values()
        if finer_references(explanation, index, names) and not signed:
            figure = finer_figure(
                network,
                batch,
                explanation,
                index,
                photo,
                names,
                title,
                labels["note"],
                model=labels["model"],
                style=style,
                eigen_smooth=labels["eigen_smooth"],
                aug_smooth=labels["aug_smooth"],
            )
            return [save_figure(path, figure, style=style)]
    differences = (
        {} if signed else {name: (base, shift.select(index)) for name, (base, shift) in comparisons(results).items()}
    )
    figure = explanation_figure(
        photo,
        {name: e.maps[index] for name, e in results.items()},
        [(p["name"], p["probability"]) for p in predictions],
        title=title,
        signed=signed,
        layer=labels["layer"],
        note=labels["note"],
        explained_by=labels["by_method"],
        model=labels["model"],
        scaled=labels["scaled"],
        differences=differences,
        style=style,
    )
    return [save_figure(path, figure, style=style)]


def _figure_labels(
    results: dict[str, Any], index: int, names: list[str], diffcam: DiffCAMOptions, random: bool, seed: int
) -> dict[str, Any]:
    """What a figure says besides the maps: per method the explained class and its probability, the layer, a warning.

    DiffCAM with a bank explains the bank's classes: its map names the bank class (by the bank's name,
    never the model's class of the same number) and the reference group with its size.
    """
    from camscope.viz.style import layer_label, shorten

    first = next(iter(results.values()))
    by_method: dict[str, str] = {}
    for name, explanation in results.items():
        classes = explanation.classes
        if classes is None or name == "diffcam":  # DiffCAM's class is a bank label: named below
            continue
        c = int(classes.reshape(-1)[index] if classes.numel() > 1 else classes.reshape(-1)[0])
        if 0 <= c < len(names):
            by_method[name] = f"{shorten(names[c], 24)} {float(explanation.logits[index].softmax(dim=0)[c]) * 100:.1f}%"
        references = finer_references(explanation, index, names)
        if references and name in by_method:  # Finer-CAM: the classes it is compared with
            listed = ", ".join(shorten(r["name"], 22) for r in references[:3]) + (" ..." if len(references) > 3 else "")
            by_method[name] += f"\nvs {listed}"  # the figure wraps it to its column
    group = ""
    bank_class = None
    if "diffcam" in results:
        found = results["diffcam"].classes
        label = None if found is None else int(found.reshape(-1)[index if found.numel() > 1 else 0])
        group = diffcam.describe(label)
        if diffcam.bank is not None and label is not None and label in diffcam.bank.labels:
            bank_class = {"label": label, "name": diffcam.bank.class_name(label)}
            group = f"bank class {bank_class['name']} vs {group}"
        by_method["diffcam"] = group
    layer = layer_label(first.layer)
    note = _random_weights_note("none" if random else "default", seed)
    return {"by_method": by_method, "layer": layer, "note": note, "group": group, "bank_class": bank_class}


def _save_explanation(explanation: Any, index: int, file: Path, model: str, weights: str, seed: int) -> Path:
    """One image's explanation as a file (:meth:`camscope.Explanation.save`): maps, raw, weights, target, method, layer."""
    import camscope
    from camscope.engine.explanation import SavedTarget

    def one(e: Any) -> Any:
        def cut(tensor: Any) -> Any:
            return None if tensor is None else tensor[index : index + 1]

        classes = e.classes
        kind = type(getattr(e.targets, "inner", e.targets)).__name__
        return camscope.Explanation(
            raw=cut(e.raw),
            maps=cut(e.maps),
            weights=cut(e.weights),
            contributions=cut(e.contributions),
            logits=cut(e.logits),
            targets=SavedTarget(
                None if classes is None else classes.reshape(-1)[index : index + 1], kind, repr(e.targets)
            ),
            scores=cut(e.scores),
            method=e.method,
            layer=e.layer,
            layers={name: one(per_layer) for name, per_layer in e.layers.items()},
            options={**e.options, "weights": weights, **({"seed": seed} if random_weights(weights) else {})},
        )

    return one(explanation).save(file, model=model)


def _entry(
    results: dict[str, Any],
    index: int,
    path: Path,
    names: list[str],
    predictions: list[dict[str, Any]],
    written: list[Path],
    labels: dict[str, Any],
) -> dict[str, Any]:
    """The report of one image: the model's top-5, explained class (a bank's class for DiffCAM with --bank,
    by the bank's name), layer, methods, files, Finer references, DiffCAM group."""
    first = next(iter(results.values()))
    classes = first.classes
    explained = None if classes is None else int(classes[index])
    bank_class = labels.get("bank_class")
    if first.method == "diffcam":
        name = None if bank_class is None else bank_class["name"]
    else:
        name = None if explained is None or not 0 <= explained < len(names) else names[explained]
    return {
        "image": str(path),
        "predictions": predictions,
        "explained_class": explained,
        "explained_name": name,
        "layer": first.layer,
        "methods": list(results),
        "files": [str(p) for p in written],
        **({"diffcam.group": labels["group"]} if labels.get("group") else {}),
        **({"diffcam.bank_class": bank_class} if bank_class is not None else {}),
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
        if entry.get("diffcam.group"):
            typer.echo(f"  DiffCAM: {entry['diffcam.group']}")
        for file in entry["files"]:
            typer.echo(f"  wrote {file}")

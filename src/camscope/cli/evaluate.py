"""``camscope evaluate``: metrics of several methods over an image folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.cli.common import (
    DeviceOption,
    ModelOption,
    SeedOption,
    SkipBadOption,
    WeightsOption,
    check_positive,
    check_seed,
    method_list,
    seeded_random_weights,
    skip_bad_hint,
    skip_unreadable,
)
from camscope.cli.objects import evaluate_scenes, is_scenes_data
from camscope.cli.outputs import CmapOption, DpiOption, FormatOption, OverwriteOption, claim_outputs, plot_style
from camscope.cli.pass_options import (
    CheckpointEveryOption,
    CheckpointOption,
    PrecisionOption,
    ResumeOption,
    WorkersOption,
    cli_device,
    is_main_process,
    pass_options,
)
from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from camscope.evaluation.report import EvaluationReport
    from camscope.viz.style import FigureStyle

__all__ = ["evaluate_command", "parse_options"]


def _value(text: str) -> Any:
    """A JSON value, else comma-separated numbers, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        parts = [part.strip() for part in text.split(",")]
        try:
            return [json.loads(part) for part in parts]
        except json.JSONDecodeError:
            return parts
    return text


def parse_options(items: list[str] | None, what: str) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` items into ``{NAME: {KEY: VALUE}}`` (values parsed as JSON or number lists)."""
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        head, sep, value = item.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not name or not key:
            raise CamscopeError(
                f"--{what}-option takes NAME.KEY=VALUE (e.g. road.percentages=0.25,0.5,0.75), got {item!r}"
            )
        options.setdefault(name.strip(), {})[key.strip().replace("-", "_")] = _value(value.strip())
    return options


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _folder(data: Path, model: str, size: int, skip_bad: bool, workers: int) -> Any:
    """The folder as given, or with ``--skip-bad`` the folder without its unreadable images (reported)."""
    if not skip_bad:
        return data
    from camscope.data.folders import ImageFolderData
    from camscope.models import data_config
    from camscope.passes.batches import ImageTransform

    folder = ImageFolderData(data, transform=ImageTransform(size, data_config(model)), size=size)
    skip_unreadable(folder, skip_bad, workers, report=is_main_process())
    return folder


_DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help="Image folder (ImageFolder layout or flat; JSON sidecars give boxes/masks/parts), or camscope:scenes: "
        "the test scenes of camscope:scenes-detector/-segmenter, measured per object (box pointing, mask IoU).",
    ),
]
_MethodsOption = Annotated[
    list[str],
    typer.Option(
        "--method",
        "--methods",
        help="Method; repeat or separate by commas for several (spelling forgiven: GradCAM is gradcam).",
    ),
]
_MetricsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metric",
        "--metrics",
        help="Comma-separated metrics: deletion, insertion, road, morf, lerf, rd, ad, ic, confidence_change, "
        "drop_in_confidence, iou, auprc, pointing, energy_pointing, parts, sanity, sparseness, entropy, "
        "complexity, coherency, arcc, consistency (or any metric registered with camscope.metrics.register_metric; "
        "default deletion,insertion); box_pointing, mask_iou with --data camscope:scenes (the default there).",
    ),
]
_OutOption = Annotated[
    Path,
    typer.Option(
        help="Output folder for summary.csv, per_sample.csv, results.json and curves_METRIC.png "
        "(existing files need --overwrite)."
    ),
]
_LayerOption = Annotated[str | None, typer.Option("--layer", "-l", help="Layer (default: the model's default).")]
_TargetOption = Annotated[
    str, typer.Option(help="'predicted', 'label' (folder name or sidecar label), or a class index/name.")
]
_BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
_SizeOption = Annotated[int, typer.Option(help="Input size.")]
_LimitOption = Annotated[int | None, typer.Option(help="Only the first N images.")]
_MetricOptionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metric-option",
        help="Protocol option METRIC.KEY=VALUE, e.g. road.percentages=0.25,0.5,0.75 (repeatable).",
    ),
]
_MethodOptionOption = Annotated[
    list[str] | None,
    typer.Option("--method-option", help="Method option METHOD.KEY=VALUE, e.g. finer-gradcam.gamma=0.6 (repeatable)."),
]
_PlotsOption = Annotated[bool, typer.Option(help="Write plots of the mean curves.")]
_JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")]


def evaluate_command(
    data: _DataOption,
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = "default",
    methods: _MethodsOption = ["gradcam"],  # noqa: B006
    metrics: _MetricsOption = None,
    out: _OutOption = Path("camscope-out/evaluate"),
    layer: _LayerOption = None,
    target: _TargetOption = "predicted",
    batch_size: _BatchSizeOption = 16,
    size: _SizeOption = 224,
    limit: _LimitOption = None,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    metric_option: _MetricOptionOption = None,
    method_option: _MethodOptionOption = None,
    plots: _PlotsOption = True,
    json_output: _JsonOption = False,
    overwrite: OverwriteOption = False,
    workers: WorkersOption = 0,
    checkpoint: CheckpointOption = None,
    checkpoint_every: CheckpointEveryOption = None,
    resume: ResumeOption = False,
    precision: PrecisionOption = "fp32",
    skip_bad: SkipBadOption = False,
    fmt: FormatOption = "png",
    dpi: DpiOption = 100,
    cmap: CmapOption = None,
) -> None:
    """Evaluate methods with faithfulness, localisation and other metrics over an image folder.

    With --data camscope:scenes, a detector's boxes or a segmenter's regions are explained one by one on the
    shipped test scenes and measured against each object's box and mask (box pointing, mask IoU).
    Under torchrun the pass is split over the processes; rank 0 prints and writes."""
    from camscope.evaluation.runner import checked_names_and_options, evaluate

    device = cli_device(device)
    method_names = method_list(methods)
    style = plot_style("evaluate", fmt, dpi, cmap)
    if not plots and (fmt != "png" or dpi != 100):
        raise CamscopeError(
            "--format and --dpi style the curves, which --no-plots leaves out: drop them, or --no-plots"
        )
    check_positive(batch_size=batch_size, size=size, limit=limit)
    check_seed(seed, weights)
    if is_scenes_data(data):
        _check_scene_flags(size, target, metric_option, skip_bad, checkpoint_every)
        return evaluate_scenes(
            data, model, weights, seed, method_names, _split(metrics) if metrics else None, out,
            layer=layer, batch_size=batch_size, limit=limit, device=device, plots=plots, style=style,
            method_options=parse_options(method_option, "method"), json_output=json_output,
            overwrite=overwrite, workers=workers, checkpoint=checkpoint, resume=resume, precision=precision,
        )  # fmt: skip
    if not data.is_dir():
        raise CamscopeError(f"--data must be an image folder or camscope:scenes, got {data}")
    metric_names = _split(metrics or ["deletion", "insertion"])
    method_options = parse_options(method_option, "method")
    metric_options = parse_options(metric_option, "metric")
    canonical = checked_names_and_options(method_names, metric_names, method_options, metric_options)[1]
    curves = [out / f"curves_{name}{style.suffix}" for name in canonical] if plots else []
    if is_main_process():
        claim_outputs([out / "summary.csv", out / "per_sample.csv", out / "results.json", *curves], overwrite)
    # evaluate builds the model: the same random weights on every run and rank
    with seeded_random_weights(weights, seed), skip_bad_hint():
        report = evaluate(
            model,
            _folder(data, model, size, skip_bad, workers),
            methods=method_names,
            metrics=metric_names,
            layer=layer or None,
            target=None if target == "predicted" else (int(target) if target.isdigit() else target),
            weights=None if weights.lower() == "none" else weights,
            batch_size=batch_size,
            size=size,
            device=device,
            method_options=method_options,
            metric_options=metric_options,
            limit=limit,
            out=out,
            plots=False,  # drawn below, in --format
            **pass_options(workers, checkpoint, checkpoint_every, resume, precision),
        )
    if is_main_process():
        _print_report(report, out, style if plots else None, json_output)


def _check_scene_flags(
    size: int, target: str, metric_option: list[str] | None, skip_bad: bool, checkpoint_every: int | None
) -> None:
    """Refuse the flags that ``--data camscope:scenes`` has no use for (its scenes, sizes and targets are fixed)."""
    unused = {
        "--size": size != 224,  # the scene models take their scenes at their own size
        "--target": target != "predicted",  # each object is explained for its own class
        "--metric-option": bool(metric_option),
        "--skip-bad": skip_bad,  # the shipped scenes are generated, never read from files
        "--checkpoint-every": checkpoint_every is not None,
    }
    given = [flag for flag, used in unused.items() if used]
    if given:
        raise CamscopeError(
            f"--data camscope:scenes explains each object of the shipped scenes for its own class, at the scene "
            f"models' own size, with box_pointing and mask_iou: drop {', '.join(given)}"
        )


def _print_report(report: EvaluationReport, out: Path, style: FigureStyle | None, json_output: bool) -> None:
    """Warn of metrics without ground truth, draw the mean curves (with a ``style``), print the summary."""
    for note in report.missing_ground_truth():  # never a silent "-" or an empty plot
        typer.echo(f"camscope evaluate: warning: {note}", err=True)
    if style is not None:
        report.plot_curves(out, style=style)
    if json_output:
        typer.echo(json.dumps(report.to_json()["summary"], indent=1, allow_nan=False))
    else:
        from rich.console import Console

        Console().print(report.table())
        drawn = [f"curves_{metric}{style.suffix}" for metric in report.curve_metrics()] if style is not None else []
        typer.echo(
            f"wrote {out}/summary.csv, per_sample.csv, results.json" + (f", {', '.join(drawn)}" if drawn else "")
        )

"""``camscope analyze``: integrated feature analysis of an image folder (analysis file, plots, Markdown report),
and the ``--scale`` / ``--principal`` options of ``camscope explain`` (S- and FS-CAMs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    load_cli_model,
    method_list,
    random_weights,
    skip_bad_hint,
    skip_unreadable,
)
from camscope.cli.outputs import CmapOption, DpiOption, FormatOption, OverwriteOption, claim_outputs, plot_style
from camscope.cli.pass_options import (
    CheckpointEveryOption,
    CheckpointOption,
    PrecisionOption,
    ResumeOption,
    WorkersOption,
    cli_device,
    is_main_process,
)
from camscope.cli.pass_options import pass_options as cli_pass_options
from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from camscope.analyses.ifa import Analysis
    from camscope.metrics.consistency import Consistency
    from camscope.viz.style import FigureStyle

__all__ = ["ScaleOptions", "analyze_command", "folder_dataset", "run_analysis"]


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def _num_classes(network: nn.Module, size: int) -> int:
    import torch

    from camscope.engine.capture import model_state, output_tensor

    with torch.no_grad(), model_state(network):
        device = next(network.parameters()).device
        try:
            logits = output_tensor(network(torch.zeros(1, 3, size, size, device=device)))
        except (RuntimeError, ValueError) as error:  # too small for the model's kernels, or a size it does not take
            raise CamscopeError(f"the model fails on {size} x {size} images ({error}): choose another --size") from None
    if logits.ndim != 2:
        raise CamscopeError(
            f"camscope analyze needs a classifier with outputs [batch, classes], got {list(logits.shape)}"
        )
    return logits.shape[1]


def folder_dataset(root: Path, network: nn.Module, size: int, config: Any = None) -> tuple[Any, list[str]]:
    """An image folder labelled as everywhere in camscope, and the names of its labels.

    Class folders that all name classes of the model (index or ImageNet name) are labelled by
    those classes; otherwise by their sorted positions 0..C-1, named by the folders
    (:func:`camscope.data.folders.label_by_model_classes`). A flat folder is unlabelled.
    """
    from camscope.data.folders import ImageFolderData, label_by_model_classes
    from camscope.models import data_config, imagenet_classes
    from camscope.passes.batches import ImageTransform

    config = config or data_config(network)
    dataset = ImageFolderData(root, transform=ImageTransform(size, config), size=size)
    num_classes = _num_classes(network, size)
    names = imagenet_classes() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]
    if dataset.class_names and not label_by_model_classes(dataset, num_classes):
        names = [
            f"{dataset.class_names[i]} (folder {i})" if i < len(dataset.class_names) else name
            for i, name in enumerate(names)
        ]
    return dataset, names


# --------------------------------------------------------------------------------------
# The analysis, its plots and its report
# --------------------------------------------------------------------------------------


def run_analysis(
    network: nn.Module,
    data: Any,
    out: Path,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    explain: str = "predicted",
    percentiles: tuple[float, float] = (10.0, 90.0),
    all_classes: bool = False,
    profiles: bool = True,
    fraction: float = 0.05,
    compare_data: Any = None,
    check_consistency: bool = True,
    class_names: list[str] | None = None,
    batch_size: int = 32,
    size: int = 224,
    device: str | None = None,
    title: str = "",
    random: bool = False,
    show_progress: bool | None = None,
    pass_options: dict[str, Any] | None = None,
    style: FigureStyle | None = None,
) -> dict[str, Any]:
    """Analyze ``data`` and write ``analysis.safetensors``, the plots and ``report.md`` into ``out``.

    ``pass_options`` (``distributed``, ``workers``, ``checkpoint``, ...) go to the
    passes (the checkpoint to the main analysis only); under a process group
    every rank runs the passes and only rank 0 writes.

    ``title`` heads the report and every plot (in red when ``random``: the weights are random);
    ``style`` gives the plots' format and resolution.

    Returns a JSON-friendly summary with the written files (none on other ranks).
    """
    from camscope.analyses.ifa.report import sample_names, write_report

    if not 0 < fraction <= 1:
        raise CamscopeError(f"--fraction must be in (0, 1], got {fraction}")
    if device is not None:
        network = network.to(device)
    settings = {"method": method, "explain": explain, "percentiles": percentiles, "all_classes": all_classes}
    extra = dict(pass_options or {})
    checkpointing: dict[str, Any] = {
        key: extra.pop(key) for key in ("checkpoint", "checkpoint_every", "resume") if key in extra
    }
    options: dict[str, Any] = {"batch_size": batch_size, "size": size, "progress": show_progress, **extra}
    analysis, other, results = _passes(
        network, data, compare_data, layer, profiles, check_consistency, settings, options, checkpointing
    )
    if not is_main_process():
        return analysis.summary()
    names = class_names or [f"class {i}" for i in range(analysis.num_classes)]
    files = _write_plots(analysis, other, results, names, out, title, random, style)
    files["report"] = write_report(
        out / "report.md",
        analysis,
        compared=other,
        consistency=results,
        class_names=names,
        fraction=fraction,
        title=title,
        samples=sample_names(data),
        files=[path.name for path in files.values()],
    )
    summary = analysis.summary()
    summary["files"] = {key: str(path) for key, path in files.items()}
    if results:
        summary["consistency"] = {r.name: {"method": r.logit.method, "r": r.coefficient} for r in results}
    if other is not None and bool((analysis.class_counts > 0).any()):
        summary["compare"] = analysis.compare(other).summary
    return summary


def _passes(
    network: nn.Module,
    data: Any,
    compare_data: Any,
    layer: str | None,
    profiles: bool,
    check_consistency: bool,
    settings: dict[str, Any],
    options: dict[str, Any],
    checkpointing: dict[str, Any],
) -> tuple[Analysis, Analysis | None, list[Consistency]]:
    """The analysis of ``data`` (checkpointed), of ``compare_data`` (if any) and the consistency pass (if asked)."""
    import camscope
    from camscope.metrics.consistency import consistency

    analysis = camscope.analyze(network, data, layer=layer, profiles=profiles, **settings, **options, **checkpointing)
    other = None
    if compare_data is not None:
        other = camscope.analyze(network, compare_data, layer=analysis.layer, **settings, **options)
    results: list[Consistency] = []
    if check_consistency:
        method = settings["method"]
        found = consistency(network, data, method=method, layer=analysis.layer, scale=[None, analysis], **options)
        results = found if isinstance(found, list) else [found]
    return analysis, other, results


def _write_plots(
    analysis: Analysis,
    other: Analysis | None,
    results: list[Consistency],
    names: list[str],
    out: Path,
    title: str,
    random: bool,
    style: FigureStyle | None,
) -> dict[str, Path]:
    """Write the analysis files and the plots into ``out``; the written files by kind."""
    import torch

    from camscope.viz.analysis import consistency_scatter, distribution_plot, importance_heatmap, importance_lines
    from camscope.viz.figures import headed, save_figure
    from camscope.viz.style import FigureStyle

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"analysis": analysis.save(out / "analysis.safetensors")}
    chosen = style or FigureStyle()

    def save(name: str, figure: Any) -> Path:
        # Every plot names the model and the data it was computed on (and random weights in red).
        heading = " | ".join(part for part in (title, f"layer {analysis.layer}") if part)
        return save_figure(out / f"{name}{chosen.suffix}", headed(figure, heading, warning=random), style=chosen)

    if analysis.has_importance:
        files["importance"] = save("importance", importance_heatmap(analysis, class_names=names))
    files["distribution"] = save("distribution", distribution_plot(analysis))
    if other is not None:
        files["compare_analysis"] = other.save(out / "compare.safetensors")
    if bool((analysis.class_counts > 0).any()):
        busiest = int(torch.argmax(analysis.class_counts.cpu()))
        labels = ("analysed data", "compared data")
        lines = importance_lines(analysis, other, cls=busiest, labels=labels, class_names=names)
        files["lines"] = save("lines", lines)
    if results:
        files["consistency"] = save("consistency", consistency_scatter(results))
    return files


def _percentiles(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise CamscopeError(f"--percentiles must be two numbers 'LOW,HIGH' such as 10,90, got {text!r}") from None
    if not 0 <= low < high <= 100:
        raise CamscopeError(f"--percentiles must be LOW,HIGH with 0 <= LOW < HIGH <= 100, such as 10,90, got {text}")
    return low, high


def _checked_values(explain: str, percentiles: str, fraction: float, batch_size: int, size: int) -> tuple[float, float]:
    """Check the values of ``analyze``'s own flags before any model is loaded; the percentiles as numbers."""
    if explain not in ("predicted", "true"):
        raise CamscopeError(f"--explain must be predicted or true, got {explain!r}")
    if not 0 < fraction <= 1:
        raise CamscopeError(f"--fraction must be in (0, 1], such as 0.05, got {fraction}")
    check_positive(batch_size=batch_size, size=size)
    return _percentiles(percentiles)


_DataOption = Annotated[
    Path,
    typer.Option("--data", help="Image folder: root/CLASS/* (CLASS = class index or ImageNet name) or a flat folder."),
]
_OutOption = Annotated[Path, typer.Option("--out", help="Output folder.")]
_MethodOption = Annotated[
    str,
    typer.Option(
        help="CAM method with channel weights of one class (one; spelling forgiven: GradCAM is gradcam): ablationcam, "
        "cam, gradcam, gradcampp, hirescam, layercam, scorecam, shapleycam, xgradcam, ..."
    ),
]
_LayerOption = Annotated[str | None, typer.Option("--layer", "-l", help="Layer (default: the model's default).")]
_ExplainOption = Annotated[str, typer.Option(help="Class whose values are collected: predicted or true.")]
_PercentilesOption = Annotated[str, typer.Option(help="Percentiles mapped to 0.1 and 0.9: LOW,HIGH.")]
_AllClassesOption = Annotated[
    bool, typer.Option("--all-classes", help="Also the Eq. 3 matrix (every class for every image).")
]
_FractionOption = Annotated[float, typer.Option(help="Share of principal features listed in the report.")]
_CompareOption = Annotated[
    Path | None, typer.Option("--compare", help="A second folder (e.g. the test set) for the overfitting comparison.")
]
_ConsistencyOption = Annotated[
    bool, typer.Option("--consistency/--no-consistency", help="Second pass: CAM sum vs logit.")
]
_ProfilesOption = Annotated[
    bool, typer.Option("--profiles/--no-profiles", help="Keep per-image feature profiles (outliers).")
]
_BatchSizeOption = Annotated[int, typer.Option(help="Images per batch.")]
_SizeOption = Annotated[int, typer.Option(help="Input size.")]
_JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def analyze_command(
    data: _DataOption,
    out: _OutOption = Path("camscope-out/analyze"),
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = "default",
    method: _MethodOption = "gradcam",
    layer: _LayerOption = None,
    explain: _ExplainOption = "predicted",
    percentiles: _PercentilesOption = "10,90",
    all_classes: _AllClassesOption = False,
    fraction: _FractionOption = 0.05,
    compare: _CompareOption = None,
    check_consistency: _ConsistencyOption = True,
    profiles: _ProfilesOption = True,
    batch_size: _BatchSizeOption = 32,
    size: _SizeOption = 224,
    device: DeviceOption = None,
    seed: SeedOption = 0,
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
    """Integrated feature analysis of an image folder: analysis file, plots and a Markdown report.

    Writes analysis.safetensors, report.md, distribution.png, importance.png, lines.png, consistency.png
    (and compare.safetensors with --compare) into --out; existing files are replaced only with --overwrite.
    Under torchrun the passes are split over the processes; rank 0 prints and writes.
    """
    device = cli_device(device)
    for flag, folder in (("--data", data), ("--compare", compare)):
        if folder is not None and not folder.is_dir():
            raise CamscopeError(f"{flag} {folder}: no such folder")
    style = plot_style("analyze", fmt, dpi, cmap)
    method = _one_method(method)
    bounds = _checked_values(explain, percentiles, fraction, batch_size, size)
    check_seed(seed, weights)
    options = cli_pass_options(workers, checkpoint, checkpoint_every, resume, precision)
    if is_main_process():
        claim_outputs(_output_files(out, style.suffix, check_consistency, compare is not None), overwrite)
    network, dataset, compared, names = _folders(model, weights, seed, device, data, compare, size)
    for folder in (dataset, compared) if compared is not None else (dataset,):
        skip_unreadable(folder, skip_bad, workers, report=is_main_process())
    random = random_weights(weights)
    with skip_bad_hint():
        summary = run_analysis(
            network,
            dataset,
            out,
            method=method,
            layer=layer,
            explain=explain,
            percentiles=bounds,
            all_classes=all_classes,
            profiles=profiles,
            fraction=fraction,
            compare_data=compared,
            check_consistency=check_consistency,
            class_names=names,
            batch_size=batch_size,
            size=size,
            device=device,
            title=f"{model}{' (random weights: not a trained model)' if random else ''} on {data}",
            random=random,
            pass_options=options,
            style=style,
        )
    if is_main_process():
        _print_summary(summary, json_output)


def _output_files(out: Path, suffix: str, consistency: bool, compare: bool) -> list[Path]:
    """The files ``camscope analyze`` writes into ``out`` (plots with ``suffix``)."""
    plots = ["distribution", "importance", "lines"] + (["consistency"] if consistency else [])
    names = ["analysis.safetensors", "report.md"] + [plot + suffix for plot in plots]
    names += ["compare.safetensors"] if compare else []
    return [out / name for name in names]


def _folders(
    model: str, weights: str, seed: int, device: str | None, data: Path, compare: Path | None, size: int
) -> tuple[nn.Module, Any, Any, list[str]]:
    """The model, the folder's dataset, the compared folder's (or None) and the class names."""
    from camscope.models import data_config

    network = load_cli_model(model, weights, seed)
    if device is not None:
        network = network.to(device)
    try:
        config = data_config(model)
    except CamscopeError:
        config = data_config(network)
    dataset, names = folder_dataset(data, network, size, config)
    compared = folder_dataset(compare, network, size, config)[0] if compare is not None else None
    return network, dataset, compared, names


def _print_summary(summary: dict[str, Any], json_output: bool) -> None:
    if json_output:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(f"camscope analyze: {summary['samples']} images, {summary['method']} at {summary['layer']}")
    for path in summary["files"].values():
        typer.echo(f"  wrote {path}")


def _one_method(text: str) -> str:
    """``--method``: one method whose channel weights make the importance matrices."""
    from camscope.analyses.ifa.methods import analysis_methods, why_not_analysable

    names = method_list([text])
    if len(names) > 1:
        raise CamscopeError(
            f"analyze runs one method (one common scale), got {', '.join(names)}: run it once per method"
        )
    reason = why_not_analysable(names[0])
    if reason is not None:
        raise CamscopeError(
            f"--method {names[0]} cannot be analysed: {reason}, and the importance matrices are made of the channel "
            f"weights of one class. Choose one of {', '.join(analysis_methods())}"
        )
    return names[0]


# --------------------------------------------------------------------------------------
# camscope explain --scale ANALYSIS [--principal F]
# --------------------------------------------------------------------------------------


@dataclass
class ScaleOptions:
    """``--scale`` (an analysis file: S-CAMs) and ``--principal`` (FS-CAMs) of ``camscope explain``."""

    scale: Path | None = None
    principal: float | None = None

    def __post_init__(self) -> None:
        self.analysis = None
        if self.principal is not None and self.scale is None:
            raise CamscopeError("--principal selects features from an analysis: give it with --scale ANALYSIS")
        if self.principal is not None and not 0 < self.principal <= 1:
            raise CamscopeError(f"--principal must be a fraction in (0, 1], such as 0.05, got {self.principal}")
        if self.scale is not None:
            from camscope.analyses.ifa import Analysis

            self.analysis = Analysis.load(self.scale)

    @property
    def signed(self) -> bool:
        """The maps are S-CAMs in (-1, 1): draw them with a diverging colormap."""
        return self.analysis is not None

    def call_options(self, network: nn.Module, batch: Tensor, target: Any) -> dict[str, Any]:
        """``scale=`` and ``features=`` for one explainer call."""
        if self.analysis is None:
            return {}
        import torch

        options: dict[str, Any] = {"scale": self.analysis}
        if self.principal is not None:
            if target is None:
                from camscope.engine.capture import model_state, output_tensor

                with torch.no_grad(), model_state(network):
                    target = output_tensor(network(batch)).argmax(dim=1)
            classes = torch.as_tensor(target).reshape(-1).expand(batch.shape[0]).cpu()
            options["features"] = self.analysis.principal_features(self.principal, cls=classes).to(batch.device)
        return options

"""``camscope analyze``: integrated feature analysis of an image folder (analysis file, plots, Markdown report),
and the ``--scale`` / ``--principal`` options of ``camscope explain`` (S- and FS-CAMs)."""

from __future__ import annotations

import json
import math
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
    load_cli_model,
    method_list,
    random_weights,
    skip_bad_hint,
    skip_unreadable,
)
from camscope.cli.outputs import CmapOption, DpiOption, FormatOption, OverwriteOption, claim_outputs, figure_style
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
        logits = output_tensor(network(torch.zeros(1, 3, size, size, device=device)))
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


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


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
    import torch

    import camscope
    from camscope.metrics.consistency import consistency
    from camscope.viz.analysis import consistency_scatter, distribution_plot, importance_heatmap, importance_lines
    from camscope.viz.figures import headed, save_figure
    from camscope.viz.style import FigureStyle

    if not 0 < fraction <= 1:
        raise CamscopeError(f"--fraction must be in (0, 1], got {fraction}")
    if device is not None:
        network = network.to(device)
    extra = dict(pass_options or {})
    checkpointing = {key: extra.pop(key) for key in ("checkpoint", "checkpoint_every", "resume") if key in extra}
    options: dict[str, Any] = {"batch_size": batch_size, "size": size, "progress": show_progress, **extra}
    analysis = camscope.analyze(
        network,
        data,
        method=method,
        layer=layer,
        explain=explain,
        percentiles=percentiles,
        all_classes=all_classes,
        profiles=profiles,
        **options,
        **checkpointing,
    )
    other = None
    if compare_data is not None:
        other = camscope.analyze(
            network,
            compare_data,
            method=method,
            layer=analysis.layer,
            explain=explain,
            percentiles=percentiles,
            all_classes=all_classes,
            **options,
        )
    results: list[Any] = []
    if check_consistency:
        found = consistency(network, data, method=method, layer=analysis.layer, scale=[None, analysis], **options)
        results = found if isinstance(found, list) else [found]
    if not is_main_process():
        return analysis.summary()
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"analysis": analysis.save(out / "analysis.safetensors")}
    names = class_names or [f"class {i}" for i in range(analysis.num_classes)]
    present = torch.nonzero(analysis.class_counts.cpu() > 0).flatten().tolist()
    style = style or FigureStyle()

    def save(name: str, figure: Any) -> Path:
        # Every plot names the model and the data it was computed on (and random weights in red).
        heading = " | ".join(part for part in (title, f"layer {analysis.layer}") if part)
        return save_figure(out / f"{name}{style.suffix}", headed(figure, heading, warning=random), style=style)

    if analysis.has_importance:
        files["importance"] = save("importance", importance_heatmap(analysis, class_names=names))
    files["distribution"] = save("distribution", distribution_plot(analysis))
    if other is not None:
        files["compare_analysis"] = other.save(out / "compare.safetensors")
    busiest = int(torch.argmax(analysis.class_counts.cpu())) if present else 0
    if present:
        labels = ("analysed data", "compared data")
        lines = importance_lines(analysis, other, cls=busiest, labels=labels, class_names=names)
        files["lines"] = save("lines", lines)
    if results:
        files["consistency"] = save("consistency", consistency_scatter(results))
    samples = _sample_names(data)
    report = _report(analysis, other, results, names, present, fraction, busiest, title, files, samples)
    for path in files.values():  # the report links the plots in their format
        report = report.replace(f"]({path.stem}.png)", f"]({path.name})")
    files["report"] = camscope.io.atomic_write_bytes(out / "report.md", report.encode())
    summary = analysis.summary()
    summary["files"] = {key: str(path) for key, path in files.items()}
    if results:
        summary["consistency"] = {r.name: {"method": r.logit.method, "r": r.coefficient} for r in results}
    if other is not None and present:
        summary["compare"] = analysis.compare(other).summary
    return summary


def _report(
    analysis: Any,
    other: Any,
    results: list[Any],
    names: list[str],
    present: list[int],
    fraction: float,
    busiest: int,
    title: str,
    files: dict[str, Path],
    samples: list[str] | None = None,
) -> str:
    """The Markdown report: distribution, scale, importance matrix, consistency, comparison and the files."""
    lines = _distribution_lines(analysis, title)
    if not present:
        lines += ["", f"Method {analysis.method} has no channel weights: no importance matrix.", ""]
    else:
        lines += _importance_lines(analysis, names, present, fraction, busiest, samples)
    if results:
        lines += _consistency_lines(results)
    if other is not None and present:
        lines += _compare_lines(analysis, other)
    lines += [
        "## Files",
        "",
        "- `analysis.safetensors`: the analysis (`camscope.analyses.ifa.Analysis.load`)",
        "- " + ", ".join(f"`{path.name}`" for key, path in files.items() if path.suffix != ".safetensors"),
        "",
    ]
    return "\n".join(lines)


def _distribution_lines(analysis: Any, title: str) -> list[str]:
    """The report's title, the data, the distribution of the class activations and the common scale."""
    lines = [f"# Integrated feature analysis{f': {title}' if title else ''}", ""]
    accuracy = analysis.accuracy
    lines += [
        f"- method **{analysis.method}** at layer **{analysis.layer}** ({analysis.num_features} features, "
        f"{analysis.num_classes} classes), explained class: {analysis.explain}",
        f"- {analysis.n_samples} images, {int(analysis.labelled)} labelled"
        + (f", top-1 accuracy {accuracy:.3f}" if accuracy is not None else "")
        + (
            f"; {int(analysis.stand_ins)} unlabelled images counted under their predicted class"
            if int(analysis.stand_ins)
            else ""
        ),
        "",
        "## Distribution of the class activations",
        "",
        "Signed class-activation values `M_c = sum_k w_k A_k` of the explained class over all pixels of all "
        "images (layer resolution, before ReLU and scaling).",
        "",
        "| mean | std | min | P10 | P50 | P90 | max |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    p10, p50, p90 = analysis.percentile([10, 50, 90]).tolist()
    lines.append(
        f"| {_fmt(analysis.mean)} | {_fmt(analysis.std)} | {_fmt(analysis.min)} | {_fmt(p10)} | {_fmt(p50)} | "
        f"{_fmt(p90)} | {_fmt(analysis.max)} |"
    )
    lines += ["", "![distribution](distribution.png)", ""]
    try:
        scale = analysis.scale()
        lines.append(
            f"Common intensity scale (S-CAMs): `tanh({scale.a:.6g} x + {scale.b:.6g})` maps "
            f"P{analysis.percentiles[0]:g} = {scale.low:.4g} to 0.1 and P{analysis.percentiles[1]:g} = {scale.high:.4g} to 0.9."
        )
        extremes = analysis.scale("image-extremes")
        lines.append(
            f"The authors' variant (`scale('image-extremes')`): median of the per-image minima {extremes.low:.4g} "
            f"-> 0.05, P90 of the per-image maxima {extremes.high:.4g} -> 0.95."
        )
    except CamscopeError as error:
        lines.append(f"No common scale: {error}.")
    return lines


def _sample_names(data: Any) -> list[str] | None:
    """The file of each sample of an image folder (relative to the folder), for the report; None for other data."""
    samples, root = getattr(data, "samples", None), getattr(data, "root", None)
    if not isinstance(samples, list) or root is None:
        return None
    names = []
    for path, _ in samples:
        try:
            names.append(str(Path(path).relative_to(root)))
        except ValueError:
            names.append(str(path))
    return names


def _importance_lines(
    analysis: Any, names: list[str], present: list[int], fraction: float, busiest: int, samples: list[str] | None
) -> list[str]:
    """The importance matrix: principal features, redundancy, confounder candidates, outliers, one class's column."""
    import torch

    lines: list[str] = []
    lines += ["", "## Importance matrix (Eq. 4)", "", "![importance matrix](importance.png)", ""]
    keep = analysis.principal_features(fraction)
    lines += [
        f"Principal features: the top {fraction:.0%} ({int(keep[0].sum())} of {analysis.num_features}) of each "
        "class's column (`explain --scale analysis.safetensors --principal F` draws FS-S-CAMs).",
        "",
        "| class | samples | principal features (most important first) |",
        "|---|---:|---|",
    ]
    matrix = analysis.importance
    shown = sorted(present, key=lambda c: -int(analysis.class_counts[c]))[:20]
    for c in shown:
        order = torch.sort(-matrix[:, c], stable=True).indices[: int(keep[c].sum())].tolist()
        listed = ", ".join(map(str, order[:12])) + (" ..." if len(order) > 12 else "")
        lines.append(f"| {c} {names[c]} | {int(analysis.class_counts[c])} | {listed} |")
    if len(present) > len(shown):
        lines.append(f"| ... {len(present) - len(shown)} more classes | | |")
    redundancy = analysis.redundancy()
    lines += [
        "",
        f"Redundancy: {redundancy.share:.1%} of the features are rarely activated for any class "
        f"(largest |IM| below {redundancy.threshold:.0%} of the strongest feature's).",
        "",
    ]
    confounders = analysis.confounders()
    if confounders:
        lines += [
            "Confounder candidates (a few features hold most of a class's positive importance; check them with an "
            "FS-CAM of just those features):",
            "",
            "| class | features | share | effective number of features |",
            "|---|---|---:|---:|",
        ]
        for item in confounders[:15]:
            lines.append(
                f"| {item.cls} {names[item.cls]} | {', '.join(map(str, item.features))} | {item.share:.2f} | "
                f"{item.effective_features:.1f} |"
            )
        lines.append("")
    else:
        lines += ["No class is dominated by very few features (no confounder candidate).", ""]
    if analysis.profiles is not None:
        lines += [
            "Outliers: samples whose feature profile departs most from their class's column (cosine distance).",
            "",
            "| file | label | prediction | distance |",
            "|---|---|---|---:|",
        ]
        for item in analysis.outliers(10):
            label = "-" if item.label < 0 else f"{item.label} {names[item.label]}"
            sample = f"`{samples[item.index]}`" if samples and 0 <= item.index < len(samples) else f"#{item.index}"
            lines.append(f"| {sample} | {label} | {item.prediction} {names[item.prediction]} | {item.distance:.3f} |")
        lines.append("")
    lines += [
        f"Column of class {busiest} {names[busiest]} over the features (minus the mean over classes):",
        "",
        "![column](lines.png)",
        "",
    ]
    return lines


def _consistency_lines(results: list[Any]) -> list[str]:
    """The consistency of each CAM's sum with the explained class's logit."""
    lines: list[str] = []
    lines += [
        "## Consistency with the model",
        "",
        "Correlation over the images between the sum of each CAM and the explained class's logit "
        "(Pearson if Mardia's test accepts bivariate normality at 5%, else Spearman).",
        "",
        "| CAM | coefficient | r | p | bivariate normal | with probabilities |",
        "|---|---|---:|---:|---|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.name} | {result.logit.method} | {result.coefficient:.3f} | {result.logit.p_value:.2g} | "
            f"{'yes' if result.logit.normal else 'no'} | {result.probability.coefficient:.3f} |"
        )
    lines += ["", "![consistency](consistency.png)", ""]
    return lines


def _compare_lines(analysis: Any, other: Any) -> list[str]:
    """The comparison of the analysed data's importance matrix with the compared data's."""
    lines: list[str] = []
    comparison = analysis.compare(other)
    lines += [
        "## Overfitting: analysed vs compared data",
        "",
        f"Relative difference of the importance matrices: **{comparison.summary:.3f}** over "
        f"{len(comparison.classes)} common classes (0: identical). Features more active on the analysed data: "
        f"{', '.join(map(str, comparison.top_features[:10]))}.",
        "",
    ]
    return lines


def _percentiles(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise CamscopeError(f"--percentiles must be two numbers 'LOW,HIGH' such as 10,90, got {text!r}") from None
    return low, high


def analyze_command(
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="Image folder: root/CLASS/* (CLASS = class index or ImageNet name) or a flat folder."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("camscope-out/analyze"),
    model: ModelOption = "efficientnet_lite0",
    weights: WeightsOption = "default",
    method: Annotated[
        str, typer.Option(help="CAM method with channel weights (one; spelling forgiven: GradCAM is gradcam).")
    ] = "gradcam",
    layer: Annotated[str | None, typer.Option("--layer", "-l", help="Layer (default: the model's default).")] = None,
    explain: Annotated[str, typer.Option(help="Class whose values are collected: predicted or true.")] = "predicted",
    percentiles: Annotated[str, typer.Option(help="Percentiles mapped to 0.1 and 0.9: LOW,HIGH.")] = "10,90",
    all_classes: Annotated[
        bool, typer.Option("--all-classes", help="Also the Eq. 3 matrix (every class for every image).")
    ] = False,
    fraction: Annotated[float, typer.Option(help="Share of principal features listed in the report.")] = 0.05,
    compare: Annotated[
        Path | None,
        typer.Option("--compare", help="A second folder (e.g. the test set) for the overfitting comparison."),
    ] = None,
    check_consistency: Annotated[
        bool, typer.Option("--consistency/--no-consistency", help="Second pass: CAM sum vs logit.")
    ] = True,
    profiles: Annotated[
        bool, typer.Option("--profiles/--no-profiles", help="Keep per-image feature profiles (outliers).")
    ] = True,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    size: Annotated[int, typer.Option(help="Input size.")] = 224,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
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
    from camscope.models import data_config

    device = cli_device(device)
    if not data.is_dir():
        raise CamscopeError(f"no such folder: {data}")
    style = figure_style(fmt, dpi, cmap)
    plots = ["distribution", "importance", "lines"] + (["consistency"] if check_consistency else [])
    names = ["analysis.safetensors", "report.md"] + [plot + style.suffix for plot in plots]
    names += ["compare.safetensors"] if compare is not None else []
    if is_main_process():
        claim_outputs([out / name for name in names], overwrite)
    options = cli_pass_options(workers, checkpoint, checkpoint_every, resume, precision)
    method = _one_method(method)
    network = load_cli_model(model, weights, seed)
    if device is not None:
        network = network.to(device)
    try:
        config = data_config(model)
    except CamscopeError:
        config = data_config(network)
    dataset, names = folder_dataset(data, network, size, config)
    compared = folder_dataset(compare, network, size, config)[0] if compare is not None else None
    for folder in (dataset, compared) if compared is not None else (dataset,):
        skip_unreadable(folder, skip_bad, workers, report=is_main_process())
    with skip_bad_hint():
        summary = run_analysis(
            network,
            dataset,
            out,
            method=method,
            layer=layer,
            explain=explain,
            percentiles=_percentiles(percentiles),
            all_classes=all_classes,
            profiles=profiles,
            fraction=fraction,
            compare_data=compared,
            check_consistency=check_consistency,
            class_names=names,
            batch_size=batch_size,
            size=size,
            device=device,
            title=f"{model}{' (random weights: not a trained model)' if random_weights(weights) else ''} on {data}",
            random=random_weights(weights),
            pass_options=options,
            style=style,
        )
    if not is_main_process():
        return
    if json_output:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(f"camscope analyze: {summary['samples']} images, {summary['method']} at {summary['layer']}")
    for path in summary["files"].values():
        typer.echo(f"  wrote {path}")


def _one_method(text: str) -> str:
    names = method_list([text])
    if len(names) > 1:
        raise CamscopeError(
            f"analyze runs one method (one common scale), got {', '.join(names)}: run it once per method"
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

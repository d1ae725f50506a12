"""The Markdown report of an integrated feature analysis: distribution, scale, importance matrix, findings.

Li et al., "Integrated feature analysis for deep learning interpretation and class activation maps",
arXiv:2407.01142. The report puts the paper's analyses of one :class:`~camscope.analyses.ifa.Analysis`
on one page: the distribution of the signed class activations ``M_c = sum_k w_k A_k`` and the common
scale ``tanh(a x + b)`` of the S-CAMs, the importance matrix (Eq. 4) with each class's principal
features, redundancy, confounder candidates and outliers, the consistency of each CAM's sum with the
logit (:func:`camscope.metrics.consistency.consistency`) and, given the analysis of other data, the
overfitting comparison. ``camscope analyze`` writes it as ``report.md`` next to the analysis file.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from camscope.analyses.ifa import analyze
    >>> model = resnet18(num_classes=3).eval()
    >>> data = [(torch.randn(6, 3, 32, 32), torch.arange(6) % 3)]
    >>> text = markdown_report(analyze(model, data, layer="layer4", progress=False), title="resnet18")
    >>> text.splitlines()[0]
    '# Integrated feature analysis: resnet18'
    >>> "## Importance matrix (Eq. 4)" in text
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from camscope.errors import CamscopeError
from camscope.io import atomic_write_bytes

if TYPE_CHECKING:
    from camscope.analyses.ifa.analysis import Analysis
    from camscope.metrics.consistency import Consistency

__all__ = ["markdown_report", "sample_names", "write_report"]


def markdown_report(
    analysis: Analysis,
    *,
    compared: Analysis | None = None,
    consistency: Sequence[Consistency] = (),
    class_names: Sequence[str] | None = None,
    fraction: float = 0.05,
    title: str = "",
    samples: Sequence[str] | None = None,
    files: Sequence[str] = (),
) -> str:
    """The Markdown report of ``analysis``.

    Args:
        analysis: the analysis of the data.
        compared: the analysis of other data (e.g. the test set) for the overfitting comparison.
        consistency: results of :func:`camscope.metrics.consistency.consistency` on the data.
        class_names: a name per class (default ``class i``).
        fraction: share of each class's features listed as principal, in ``(0, 1]``.
        title: heads the report (e.g. the model and the data).
        samples: a name per sample (e.g. its file, :func:`sample_names`) for the outliers;
            default ``#index``.
        files: names of the files written next to the report. The report links its plots
            ``distribution``, ``importance``, ``lines`` and ``consistency`` as PNG files, or in the
            format of a listed file of that name; its last section lists them.

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> from camscope.analyses.ifa import analyze
        >>> analysis = analyze(resnet18(num_classes=2).eval(), [(torch.randn(4, 3, 32, 32), torch.arange(4) % 2)],
        ...                    layer="layer4", progress=False)
        >>> "![distribution](distribution.svg)" in markdown_report(analysis, files=["distribution.svg"])
        True
    """
    if not 0 < fraction <= 1:
        raise CamscopeError(f"fraction must be in (0, 1], got {fraction}")
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(analysis.num_classes)]
    if len(names) < analysis.num_classes:
        raise CamscopeError(f"class_names has {len(names)} names for the analysis's {analysis.num_classes} classes")
    present = torch.nonzero(analysis.class_counts.cpu() > 0).flatten().tolist()
    lines = _distribution_lines(analysis, title)
    if not present:
        lines += ["", f"Method {analysis.method} has no channel weights: no importance matrix.", ""]
    else:
        lines += _importance_lines(analysis, names, present, fraction, samples)
    if consistency:
        lines += _consistency_lines(consistency)
    if compared is not None and present:
        lines += _compare_lines(analysis, compared)
    listed = [name for name in files if not name.endswith(".safetensors")]
    lines += [
        "## Files",
        "",
        "- `analysis.safetensors`: the analysis (`camscope.analyses.ifa.Analysis.load`)",
        "- " + ", ".join(f"`{name}`" for name in listed),
        "",
    ]
    text = "\n".join(lines)
    for name in files:  # the report links the plots in their format
        text = text.replace(f"]({Path(name).stem}.png)", f"]({name})")
    return text


def write_report(path: str | os.PathLike[str], analysis: Analysis, **options: Any) -> Path:
    """Write :func:`markdown_report` of ``analysis`` (with ``options``) to ``path`` atomically; returns the path.

    Example:
        >>> import tempfile, torch
        >>> from torchvision.models import resnet18
        >>> from camscope.analyses.ifa import analyze
        >>> analysis = analyze(resnet18(num_classes=2).eval(), [(torch.randn(4, 3, 32, 32), torch.arange(4) % 2)],
        ...                    layer="layer4", progress=False)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     write_report(Path(folder) / "report.md", analysis).name
        'report.md'
    """
    return atomic_write_bytes(Path(path), markdown_report(analysis, **options).encode())


def sample_names(data: Any) -> list[str] | None:
    """The file of each sample of an image folder (relative to the folder), for the report; None for other data.

    Example:
        >>> from types import SimpleNamespace
        >>> sample_names(SimpleNamespace(root="photos", samples=[("photos/cat/1.png", 0), ("elsewhere.png", 1)]))
        ['cat/1.png', 'elsewhere.png']
        >>> sample_names([1, 2]) is None
        True
    """
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


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def _distribution_lines(analysis: Analysis, title: str) -> list[str]:
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
    return lines + _scale_lines(analysis)


def _scale_lines(analysis: Analysis) -> list[str]:
    """The common intensity scale of the S-CAMs and the authors' variant, or why there is none."""
    lines: list[str] = []
    try:
        scale = analysis.scale()
        lines.append(
            f"Common intensity scale (S-CAMs): `tanh({scale.a:.6g} x + {scale.b:.6g})` maps "
            f"P{analysis.percentiles[0]:g} = {scale.low:.4g} to 0.1 and "
            f"P{analysis.percentiles[1]:g} = {scale.high:.4g} to 0.9."
        )
        extremes = analysis.scale("image-extremes")
        lines.append(
            f"The authors' variant (`scale('image-extremes')`): median of the per-image minima {extremes.low:.4g} "
            f"-> 0.05, P90 of the per-image maxima {extremes.high:.4g} -> 0.95."
        )
    except CamscopeError as error:
        lines.append(f"No common scale: {error}.")
    return lines


def _importance_lines(
    analysis: Analysis, names: list[str], present: list[int], fraction: float, samples: Sequence[str] | None
) -> list[str]:
    """The importance matrix: principal features, redundancy, confounder candidates, outliers, one class's column."""
    lines = ["", "## Importance matrix (Eq. 4)", "", "![importance matrix](importance.png)", ""]
    lines += _principal_lines(analysis, names, present, fraction)
    redundancy = analysis.redundancy()
    lines += [
        "",
        f"Redundancy: {redundancy.share:.1%} of the features are rarely activated for any class "
        f"(largest |IM| below {redundancy.threshold:.0%} of the strongest feature's).",
        "",
    ]
    lines += _confounder_lines(analysis, names)
    if analysis.profiles is not None:
        lines += _outlier_lines(analysis, names, samples)
    busiest = int(torch.argmax(analysis.class_counts.cpu()))
    lines += [
        f"Column of class {busiest} {names[busiest]} over the features (minus the mean over classes):",
        "",
        "![column](lines.png)",
        "",
    ]
    return lines


def _principal_lines(analysis: Analysis, names: list[str], present: list[int], fraction: float) -> list[str]:
    """The principal features of the (at most 20) classes with the most samples."""
    keep = analysis.principal_features(fraction)
    lines = [
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
    return lines


def _confounder_lines(analysis: Analysis, names: list[str]) -> list[str]:
    """The classes whose positive importance a few features hold (at most 15), or that there are none."""
    confounders = analysis.confounders()
    if not confounders:
        return ["No class is dominated by very few features (no confounder candidate).", ""]
    lines = [
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
    return lines + [""]


def _outlier_lines(analysis: Analysis, names: list[str], samples: Sequence[str] | None) -> list[str]:
    """The ten samples whose feature profile departs most from their class's column."""
    lines = [
        "Outliers: samples whose feature profile departs most from their class's column (cosine distance).",
        "",
        "| file | label | prediction | distance |",
        "|---|---|---|---:|",
    ]
    for item in analysis.outliers(10):
        label = "-" if item.label < 0 else f"{item.label} {names[item.label]}"
        sample = f"`{samples[item.index]}`" if samples and 0 <= item.index < len(samples) else f"#{item.index}"
        lines.append(f"| {sample} | {label} | {item.prediction} {names[item.prediction]} | {item.distance:.3f} |")
    return lines + [""]


def _consistency_lines(results: Sequence[Consistency]) -> list[str]:
    """The consistency of each CAM's sum with the explained class's logit."""
    lines = [
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
    return lines + ["", "![consistency](consistency.png)", ""]


def _compare_lines(analysis: Analysis, other: Analysis) -> list[str]:
    """The comparison of the analysed data's importance matrix with the compared data's."""
    comparison = analysis.compare(other)
    return [
        "## Overfitting: analysed vs compared data",
        "",
        f"Relative difference of the importance matrices: **{comparison.summary:.3f}** over "
        f"{len(comparison.classes)} common classes (0: identical). Features more active on the analysed data: "
        f"{', '.join(map(str, comparison.top_features[:10]))}.",
        "",
    ]

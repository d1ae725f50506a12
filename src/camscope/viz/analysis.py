"""Plots of an integrated feature analysis (matplotlib figures on the Agg canvas, whatever the user's backend).

* :func:`importance_heatmap`: the importance matrix, features x classes (the paper's Fig. 11 I);
* :func:`importance_lines`: one column of the matrix over the features, train vs
  test, relative to the mean over classes (Fig. 11 II: overfitting);
* :func:`consistency_scatter`: CAM sum against logit with the correlation (Fig. 9);
* :func:`distribution_plot`: the pooled class-activation values with the
  percentiles and the common intensity scale.

Every function returns a :class:`matplotlib.figure.Figure`; save it with
:func:`camscope.viz.figures.save_figure` (atomic, closes the figure).

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> from camscope.viz.analysis import importance_heatmap
    >>> model = resnet18(num_classes=3).eval()
    >>> analysis = camscope.analyze(model, [(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2] * 2))], layer="layer4")
    >>> importance_heatmap(analysis).axes[0].get_xlabel()
    'class'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from camscope.analyses.ifa import Analysis
from camscope.analyses.similarity import ClassSimilarity
from camscope.errors import CamscopeError
from camscope.metrics.consistency import Consistency
from camscope.viz.figures import map_title, new_figure
from camscope.viz.style import MIN_FONT, shorten

__all__ = [
    "LABELLED_CLASSES",
    "consistency_scatter",
    "distribution_plot",
    "importance_heatmap",
    "importance_lines",
    "similarity_curve",
]


#: The importance matrix names its classes when it shows at most this many.
LABELLED_CLASSES = 40


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    figure = new_figure((width, height))
    axis = figure.subplots()
    return figure, axis


def importance_heatmap(
    analysis: Analysis,
    *,
    source: str = "true",
    relative_to_mean: bool = False,
    sort_features: bool = True,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """The importance matrix as a heatmap: features (rows) x classes (columns), zero white.

    Args:
        analysis: the analysis.
        source: ``"true"`` (Eq. 4) or ``"all"`` (Eq. 3).
        relative_to_mean: show ``IM - mean over classes``.
        sort_features: order the rows by each feature's largest absolute value
            (the "lazy" features end up at the bottom).
        class_names: the name of every class (indexed by class); the columns are labelled with them
            when at most :data:`LABELLED_CLASSES` are shown.

    Only the classes with samples are shown (all of them for Eq. 3): a dataset of a few classes of
    ImageNet gives a few columns, not a blank matrix of 1000.
    """
    matrix = analysis.relative_importance(source) if relative_to_mean else analysis.matrix(source)
    present = analysis.present_classes(source)
    shown = torch.nonzero(present).flatten() if bool(present.any()) else torch.arange(matrix.shape[1])
    matrix = matrix.double()[:, shown]
    if sort_features:
        matrix = matrix[torch.sort(-matrix.abs().amax(dim=1), stable=True).indices]
    values = matrix.numpy()
    limit = float(np.abs(values).max()) or 1.0
    figure, axis = _figure(7, 5)
    image = axis.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axis.set_xlabel("class" if bool(present.all()) else f"class (the {len(shown)} with samples)")
    axis.set_ylabel("feature" + (" (sorted by importance)" if sort_features else ""))
    kind = "Eq. 3, all classes" if source in ("all", "eq3") else "Eq. 4, true classes"
    axis.set_title(f"importance matrix ({kind}){' - mean over classes' if relative_to_mean else ''}", fontsize=10)
    if len(shown) <= LABELLED_CLASSES:
        labels = [shorten(class_names[int(c)], 16) if class_names is not None else str(int(c)) for c in shown]
        axis.set_xticks(range(len(shown)))
        axis.set_xticklabels(
            labels, rotation=60 if len(shown) > 4 else 0, ha="right" if len(shown) > 4 else "center", fontsize=MIN_FONT
        )
    figure.colorbar(image, ax=axis).set_label("mean contribution sum_ij w_k A_k", fontsize=MIN_FONT + 1)
    figure.tight_layout()
    return figure


def importance_lines(
    first: Analysis,
    second: Analysis | None = None,
    cls: int = 0,
    *,
    relative_to_mean: bool = True,
    labels: tuple[str, str] = ("train", "test"),
    source: str = "true",
    class_names: Sequence[str] | None = None,
) -> Figure:
    """One class's column of the importance matrix over the features, train (blue) vs test (orange).

    As in the paper's Fig. 11 II, the mean over classes is subtracted by default;
    features much more active on the training set than on the test set suggest overfitting.
    ``class_names`` (indexed by class) names the class in the title.
    """
    if not 0 <= cls < first.num_classes:
        raise CamscopeError(f"class {cls} is out of range for {first.num_classes} classes")
    figure, axis = _figure(8, 3.2)
    for analysis, label, colour in zip((first, second), labels, ("tab:blue", "tab:orange")):
        if analysis is None:
            continue
        matrix = analysis.relative_importance(source) if relative_to_mean else analysis.matrix(source)
        axis.plot(matrix[:, cls].numpy(), label=label, color=colour, linewidth=1)
    axis.axhline(0, color="0.6", linewidth=0.5)
    axis.set_xlabel("feature")
    axis.set_ylabel("importance" + (" - mean over classes" if relative_to_mean else ""))
    named = f" ({class_names[cls]})" if class_names is not None and cls < len(class_names) else ""
    axis.set_title(f"importance of each feature for class {cls}{named}", fontsize=10)
    axis.legend(fontsize=MIN_FONT)
    figure.tight_layout()
    return figure


def consistency_scatter(results: Consistency | Sequence[Consistency], against: str = "logit") -> Figure:
    """Per-image CAM sum (vertical) against the logit or probability (horizontal), one panel per variant."""

    if against not in ("logit", "probability"):
        raise CamscopeError(f"against must be 'logit' or 'probability', got {against!r}")
    results = [results] if isinstance(results, Consistency) else list(results)
    figure = new_figure((3.6 * len(results), 3.4))
    axes = figure.subplots(1, len(results), squeeze=False)
    for axis, result in zip(axes[0], results):
        x = result.logits if against == "logit" else result.probabilities
        correlation = result.logit if against == "logit" else result.probability
        axis.scatter(x.numpy(), result.cam_sums.numpy(), s=6, alpha=0.6)
        axis.set_xlabel(against)
        axis.set_ylabel("sum of the CAM")
        axis.set_title(f"{map_title(result.name)}\n{correlation.method} r = {correlation.coefficient:.3f}", fontsize=9)
    figure.tight_layout()
    return figure


def distribution_plot(analysis: Analysis, bars: int = 80) -> Figure:
    """The pooled raw values (from the quantile sketch), the percentiles and the tanh scale."""
    sketch = analysis.values.to("cpu")
    if int(sketch.count) == 0:
        raise CamscopeError("the analysis holds no values")
    counts = sketch.counts.double()
    used = torch.nonzero(counts).flatten()
    first, last = int(used[0]), int(used[-1]) + 1
    counts = counts[first:last]
    width = sketch.width
    edges = (int(sketch.offset) + first + torch.arange(last - first + 1, dtype=torch.float64)) * width
    group = max(1, int(np.ceil(len(counts) / bars)))
    padded = torch.nn.functional.pad(counts, (0, (-len(counts)) % group))
    grouped = padded.reshape(-1, group).sum(dim=1)
    left = edges[:-1:group][: len(grouped)]
    figure, axis = _figure(7, 3.4)
    axis.bar(left.numpy(), grouped.numpy(), width=group * width, align="edge", color="0.7")
    axis.set_xlabel(f"class activation M_c ({map_title(analysis.method)}, layer {analysis.layer})")
    axis.set_ylabel("pixels")
    low, high = analysis.percentiles
    values = analysis.percentile([low, high]).tolist()
    for value, q in zip(values, (low, high)):
        axis.axvline(value, color="tab:red", linewidth=1)
        axis.text(value, axis.get_ylim()[1] * 0.95, f"P{q:g}", color="tab:red", fontsize=8, ha="center")
    try:
        scale = analysis.scale()
        grid = torch.linspace(float(edges[0]), float(edges[-1]), 200, dtype=torch.float64)
        twin = axis.twinx()
        twin.plot(grid.numpy(), scale(grid).numpy(), color="tab:blue", linewidth=1)
        twin.set_ylim(-1, 1)
        twin.set_ylabel("S-CAM value tanh(a x + b)", color="tab:blue")
    except CamscopeError:
        pass
    axis.set_title(f"distribution over {analysis.n_samples} images ({analysis.n_values} values)", fontsize=10)
    figure.tight_layout()
    return figure


def similarity_curve(similarity: ClassSimilarity, label: str | None = None) -> Figure:
    """The sorted-similarity curve of a classifier (Finer-CAM's Fig. 1): mean with a band of one standard deviation.

    Example:
        >>> import torch
        >>> from camscope.analyses.similarity import class_similarity
        >>> figure = similarity_curve(class_similarity(torch.nn.Linear(8, 6)))
        >>> figure.axes[0].get_xlabel()
        'classes, sorted by similarity'
    """
    mean, std = (t.detach().cpu().double().numpy() for t in similarity.curve())
    ranks = range(1, len(mean) + 1)
    figure, axis = _figure(5, 3.5)
    axis.plot(ranks, mean, label=label or f"{len(mean)} classes")
    axis.fill_between(ranks, mean - std, mean + std, alpha=0.25)
    axis.set_xlabel("classes, sorted by similarity")
    axis.set_ylabel("cosine similarity of classifier weights")
    axis.set_xscale("log")
    axis.legend()
    figure.tight_layout()
    return figure

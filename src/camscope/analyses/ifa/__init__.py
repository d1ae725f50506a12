"""Integrated feature analysis (IFA): one pass over a dataset, S-CAMs and FS-CAMs.

Li et al., "Integrated feature analysis for deep learning interpretation and class
activation maps", arXiv:2407.01142.

:func:`analyze` runs a CAM method over a dataset once and collects

* the distribution of the signed class-activation values ``M_c = sum_k w_k A_k``
  (``Explanation.raw``: layer resolution, before ReLU and before any per-image
  scaling) of the explained class over all pixels of all images: quantiles
  (:class:`~camscope.stats.sketch.QuantileSketch`), mean and standard deviation, and the distributions
  of the per-image maxima and minima (for the authors' variant of the scale);
* the importance matrix ``IM [features, classes]``: Eq. 4 of the paper (each
  sample explained for its true class, averaged over that class's samples) and,
  on request, Eq. 3 (every class explained for every sample, averaged over all
  samples), where an entry is the channel's contribution ``sum_ij w_k A_k^ij``;
* optionally each sample's feature profile (its Eq. 4 contributions), for outliers.

The result, an :class:`Analysis`, gives the common intensity scale of the
"S-" CAMs (:meth:`Analysis.scale`, used by ``camscope.explain(..., scale=analysis)``),
the principal features of the "FS-" CAMs (:meth:`Analysis.principal_features`,
used by ``camscope.explain(..., features=mask)``), and the paper's analyses:
overfitting (:meth:`Analysis.compare`), redundancy, outliers and confounder
candidates. Shards of a dataset merge (:meth:`Analysis.merge`), so a pass can
be split over processes: counts, extremes and quantile sketches merge exactly
(bit for bit the state of one pass over everything), sums and moments up to
float64 rounding.

Modules: :mod:`.scale` (the tanh scale), :mod:`.batch` (one batch: the explained
map and the contributions), :mod:`.analysis` (:class:`Analysis`), :mod:`.findings`
(overfitting, redundancy, outliers, confounders) and their :mod:`.results`, and
:mod:`.dataset_pass` (:func:`analyze`).

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=4).eval()
    >>> data = [(torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))) for _ in range(2)]
    >>> analysis = camscope.analyze(model, data, method="gradcam", layer="layer4")
    >>> analysis.importance.shape
    torch.Size([512, 4])
    >>> explanation = camscope.explain(model, data[0][0], layer="layer4", scale=analysis)
    >>> bool(explanation.maps.abs().max() < 1)
    True
"""

from camscope.analyses.ifa.analysis import Analysis
from camscope.analyses.ifa.dataset_pass import analyze
from camscope.analyses.ifa.report import markdown_report, write_report
from camscope.analyses.ifa.results import Comparison, Confounder, Outlier, Redundancy
from camscope.analyses.ifa.scale import TanhScale
from camscope.stats.sketch import QuantileSketch

__all__ = [
    "Analysis",
    "Comparison",
    "Confounder",
    "Outlier",
    "QuantileSketch",
    "Redundancy",
    "TanhScale",
    "analyze",
    "markdown_report",
    "write_report",
]

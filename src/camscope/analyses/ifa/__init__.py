"""Integrated feature analysis (Li et al., IFA): one pass over a dataset, S-CAMs and FS-CAMs."""

from camscope.analyses.ifa.analysis import (
    Analysis,
    Comparison,
    Confounder,
    Outlier,
    QuantileSketch,
    Redundancy,
    TanhScale,
    analyze,
)

__all__ = [
    "Analysis",
    "Comparison",
    "Confounder",
    "Outlier",
    "QuantileSketch",
    "Redundancy",
    "TanhScale",
    "analyze",
]

"""What the IFA section measures, shared by its run (:mod:`camscope.reproduce.ifa`) and its claims."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DATASETS", "FRACTIONS", "Measured"]

#: Shares of principal features (Table II; the paper: 5%, 20% MNIST, 25% ImageNet).
FRACTIONS: tuple[float, ...] = (0.05, 0.10, 0.20, 0.25)
#: The two shipped models the section runs on.
DATASETS: tuple[str, ...] = ("species", "digits")


@dataclass
class Measured:
    """What the section measured on both data sets, filled in data set by data set."""

    numbers: dict[str, float] = field(default_factory=dict)
    consistency_rows: list[list[Any]] = field(default_factory=list)
    scatter: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)
    coefficients: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    equal: dict[str, float] = field(default_factory=dict)
    accuracy_tables: list[str] = field(default_factory=list)

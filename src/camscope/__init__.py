"""camscope: class activation maps that compare, for PyTorch.

The public names load on first use (``camscope.explain`` imports torch and registers
every method then), so that ``import camscope.cli`` and ``camscope --version`` stay fast.

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> explanation = camscope.explain(resnet18(num_classes=10), torch.randn(1, 3, 64, 64))
    >>> explanation.maps.shape
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from camscope import methods as methods
    from camscope.analyses.ifa import Analysis, analyze
    from camscope.analyses.similarity import class_similarity
    from camscope.engine.explainer import Explainer, Explanation, explain
    from camscope.engine.method import available_methods, register_method
    from camscope.engine.pairs import explain_pair
    from camscope.errors import CamscopeError
    from camscope.evaluation.runner import evaluate
    from camscope.stats.reference_bank import ReferenceBank
    from camscope.targets.base import ClassDifference, ClassTarget, ScoreTarget, Target
    from camscope.targets.detection import BoxTarget, OnBox, YoloOutputs
    from camscope.targets.embedding import SimilarityTarget
    from camscope.targets.finer import Finer
    from camscope.targets.heads import BinaryTarget, MultiLabel, RawScores, RegressionTarget, ReSTTarget, SoftmaxTarget
    from camscope.targets.outputs import TargetWarning
    from camscope.targets.segmentation import OnRegion, SegmentationTarget

__all__ = [
    "Analysis",
    "BinaryTarget",
    "BoxTarget",
    "CamscopeError",
    "ClassDifference",
    "ClassTarget",
    "Explainer",
    "Explanation",
    "Finer",
    "MultiLabel",
    "OnBox",
    "OnRegion",
    "RawScores",
    "ReSTTarget",
    "ReferenceBank",
    "RegressionTarget",
    "ScoreTarget",
    "SegmentationTarget",
    "SimilarityTarget",
    "SoftmaxTarget",
    "Target",
    "TargetWarning",
    "YoloOutputs",
    "analyze",
    "available_methods",
    "class_similarity",
    "evaluate",
    "explain",
    "explain_pair",
    "register_method",
]

#: Where each public name is defined (imported on first access).
_WHERE = {
    "Analysis": "camscope.analyses.ifa",
    "BinaryTarget": "camscope.targets.heads",
    "BoxTarget": "camscope.targets.detection",
    "CamscopeError": "camscope.errors",
    "ClassDifference": "camscope.targets.base",
    "ClassTarget": "camscope.targets.base",
    "Explainer": "camscope.engine.explainer",
    "Explanation": "camscope.engine.explainer",
    "Finer": "camscope.targets.finer",
    "MultiLabel": "camscope.targets.heads",
    "OnBox": "camscope.targets.detection",
    "OnRegion": "camscope.targets.segmentation",
    "RawScores": "camscope.targets.heads",
    "ReSTTarget": "camscope.targets.heads",
    "ReferenceBank": "camscope.stats.reference_bank",
    "RegressionTarget": "camscope.targets.heads",
    "ScoreTarget": "camscope.targets.base",
    "SegmentationTarget": "camscope.targets.segmentation",
    "SimilarityTarget": "camscope.targets.embedding",
    "SoftmaxTarget": "camscope.targets.heads",
    "Target": "camscope.targets.base",
    "TargetWarning": "camscope.targets.outputs",
    "YoloOutputs": "camscope.targets.detection",
    "analyze": "camscope.analyses.ifa",
    "available_methods": "camscope.engine.method",
    "class_similarity": "camscope.analyses.similarity",
    "evaluate": "camscope.evaluation.runner",
    "explain": "camscope.engine.explainer",
    "explain_pair": "camscope.engine.pairs",
    "register_method": "camscope.engine.method",
}


def __getattr__(name: str) -> Any:
    """A public name (or ``__version__``), imported on first access and kept."""
    if name == "__version__":
        from importlib import metadata

        try:
            value: Any = metadata.version("camscope")
        except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
            value = "0+unknown"
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"camscope.{name}") is not None:
        value = importlib.import_module(f"camscope.{name}")  # a subpackage, as after an eager import
    else:
        raise AttributeError(f"module 'camscope' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "__version__"})

"""camscope: class activation maps that compare, for PyTorch.

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> explanation = camscope.explain(resnet18(num_classes=10), torch.randn(1, 3, 64, 64))
    >>> explanation.maps.shape
    torch.Size([1, 64, 64])
"""

from importlib import metadata as _metadata

from camscope import methods as methods  # importing the package registers every method
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

try:
    __version__ = _metadata.version("camscope")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

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

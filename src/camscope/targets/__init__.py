"""What is explained: a class, a difference of classes, a box, a region, an embedding's similarity, any score."""

from camscope.targets.base import ClassDifference, ClassTarget, FrozenTarget, ScoreTarget, Target, as_target
from camscope.targets.detection import BoxTarget, OnBox, TorchvisionDetections, YoloOutputs, box_pool
from camscope.targets.embedding import SimilarityTarget
from camscope.targets.example import ExampleTarget
from camscope.targets.finer import Finer, classifier_weights
from camscope.targets.heads import BinaryTarget, MultiLabel, RawScores, RegressionTarget, ReSTTarget, SoftmaxTarget
from camscope.targets.outputs import TargetWarning, output_tensor
from camscope.targets.segmentation import OnRegion, SegmentationTarget

__all__ = [
    "BinaryTarget",
    "BoxTarget",
    "ClassDifference",
    "ClassTarget",
    "ExampleTarget",
    "Finer",
    "FrozenTarget",
    "MultiLabel",
    "OnBox",
    "OnRegion",
    "RawScores",
    "ReSTTarget",
    "RegressionTarget",
    "ScoreTarget",
    "SegmentationTarget",
    "SimilarityTarget",
    "SoftmaxTarget",
    "Target",
    "TargetWarning",
    "TorchvisionDetections",
    "YoloOutputs",
    "as_target",
    "box_pool",
    "classifier_weights",
    "output_tensor",
]

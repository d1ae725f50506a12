"""What is explained: a class, a difference of classes, any score."""

from camscope.targets.base import ClassDifference, ClassTarget, FrozenTarget, ScoreTarget, Target, as_target
from camscope.targets.example import ExampleTarget
from camscope.targets.finer import Finer, classifier_weights

__all__ = [
    "ClassDifference",
    "ClassTarget",
    "ExampleTarget",
    "Finer",
    "FrozenTarget",
    "ScoreTarget",
    "Target",
    "as_target",
    "classifier_weights",
]

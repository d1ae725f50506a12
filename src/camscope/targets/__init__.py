"""What is explained: a class, a difference of classes, any score."""

from camscope.targets.base import ClassDifference, ClassTarget, FrozenTarget, ScoreTarget, Target, as_target
from camscope.targets.example import ExampleTarget

__all__ = ["ClassDifference", "ClassTarget", "ExampleTarget", "FrozenTarget", "ScoreTarget", "Target", "as_target"]

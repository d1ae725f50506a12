"""What is explained: a class, a difference of classes, any score."""

from camscope.targets.base import ClassDifference, ClassTarget, FrozenTarget, ScoreTarget, Target, as_target

__all__ = ["ClassDifference", "ClassTarget", "FrozenTarget", "ScoreTarget", "Target", "as_target"]

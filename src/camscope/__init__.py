"""camscope: class activation maps that compare, for PyTorch.

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> explanation = camscope.explain(resnet18(num_classes=10), torch.randn(1, 3, 64, 64))
    >>> explanation.maps.shape
    torch.Size([1, 64, 64])
"""

from camscope.analyses.ifa import Analysis, analyze
from camscope.engine.explainer import Explainer, Explanation, explain
from camscope.methods.diffcam import ReferenceBank
from camscope.errors import CamscopeError
from camscope.methods.finer import Finer, class_similarity
from camscope.engine.method import available_methods, register_method
from camscope.methods import perturbation
from camscope.methods import projection  # noqa: F401,E402  (registers the perturbation and projection CAMs)
from camscope.targets.base import ClassDifference, ClassTarget, ScoreTarget, Target
from camscope.evaluation.runner import evaluate

__version__ = "0.1.0"

__all__ = [
    "explain",
    "ReferenceBank",
    "Explainer",
    "Explanation",
    "analyze",
    "Analysis",
    "CamscopeError",
    "available_methods",
    "register_method",
    "Target",
    "ClassTarget",
    "ClassDifference",
    "ScoreTarget",
    "Finer",
    "class_similarity",
    "evaluate",
]

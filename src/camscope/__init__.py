"""camscope: class activation maps that compare, for PyTorch.

Example:
    >>> import camscope, torch
    >>> from torchvision.models import resnet18
    >>> explanation = camscope.explain(resnet18(num_classes=10), torch.randn(1, 3, 64, 64))
    >>> explanation.maps.shape
    torch.Size([1, 64, 64])
"""

from camscope.analysis import Analysis, analyze
from camscope.core import Explainer, Explanation, explain
from camscope.diffcam import ReferenceBank
from camscope.errors import CamscopeError
from camscope.finer import Finer, class_similarity
from camscope.methods import available_methods, register_method
from camscope import perturbation, projection  # noqa: F401,E402  (registers the perturbation and projection CAMs)
from camscope.targets import ClassDifference, ClassTarget, ScoreTarget, Target
from camscope.evaluate import evaluate

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

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
    from camscope.errors import CamscopeError
    from camscope.evaluation.runner import evaluate
    from camscope.stats.reference_bank import ReferenceBank
    from camscope.targets.base import ClassDifference, ClassTarget, ScoreTarget, Target
    from camscope.targets.finer import Finer

__all__ = [
    "Analysis",
    "CamscopeError",
    "ClassDifference",
    "ClassTarget",
    "Explainer",
    "Explanation",
    "Finer",
    "ReferenceBank",
    "ScoreTarget",
    "Target",
    "analyze",
    "available_methods",
    "class_similarity",
    "evaluate",
    "explain",
    "register_method",
]

#: Where each public name is defined (imported on first access).
_WHERE = {
    "Analysis": "camscope.analyses.ifa",
    "CamscopeError": "camscope.errors",
    "ClassDifference": "camscope.targets.base",
    "ClassTarget": "camscope.targets.base",
    "Explainer": "camscope.engine.explainer",
    "Explanation": "camscope.engine.explainer",
    "Finer": "camscope.targets.finer",
    "ReferenceBank": "camscope.stats.reference_bank",
    "ScoreTarget": "camscope.targets.base",
    "Target": "camscope.targets.base",
    "analyze": "camscope.analyses.ifa",
    "available_methods": "camscope.engine.method",
    "class_similarity": "camscope.analyses.similarity",
    "evaluate": "camscope.evaluation.runner",
    "explain": "camscope.engine.explainer",
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

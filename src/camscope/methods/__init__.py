"""How a map is computed: gradient, perturbation, projection, Finer and DiffCAM methods.

Importing this package registers every method with the engine's registry.
"""

from camscope.engine.method import (
    CamContext,
    CamMethod,
    CamResult,
    available_methods,
    get_method,
    register_method,
)
from camscope.methods import diffcam, finer, perturbation, projection

__all__ = [
    "CamContext",
    "CamMethod",
    "CamResult",
    "available_methods",
    "diffcam",
    "finer",
    "get_method",
    "perturbation",
    "projection",
    "register_method",
]

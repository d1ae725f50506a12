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
from camscope.methods import diffcam, finer, gradient, perturbation, projection
from camscope.methods.gradient import CAM, GradCAM, GradCAMpp, HiResCAM, LayerCAM, SmoothGradCAMpp, XGradCAM

__all__ = [
    "CAM",
    "CamContext",
    "CamMethod",
    "CamResult",
    "GradCAM",
    "GradCAMpp",
    "HiResCAM",
    "LayerCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
    "available_methods",
    "diffcam",
    "finer",
    "get_method",
    "gradient",
    "perturbation",
    "projection",
    "register_method",
]

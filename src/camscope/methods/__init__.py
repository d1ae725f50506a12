"""How a map is computed: gradient, perturbation, projection, attention, Finer and DiffCAM methods.

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
from camscope.methods import diffcam, finer, gradient, gradrollout, legrad, perturbation, projection, rollout
from camscope.methods.gradient import CAM, GradCAM, GradCAMpp, HiResCAM, LayerCAM, SmoothGradCAMpp, XGradCAM
from camscope.methods.gradrollout import GradRollout
from camscope.methods.legrad import LeGrad
from camscope.methods.rollout import AttentionRollout

__all__ = [
    "CAM",
    "AttentionRollout",
    "CamContext",
    "CamMethod",
    "CamResult",
    "GradCAM",
    "GradCAMpp",
    "GradRollout",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "SmoothGradCAMpp",
    "XGradCAM",
    "available_methods",
    "diffcam",
    "finer",
    "get_method",
    "gradient",
    "gradrollout",
    "legrad",
    "perturbation",
    "projection",
    "register_method",
    "rollout",
]

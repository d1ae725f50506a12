"""How a map is computed: gradient, perturbation, projection, Finer and DiffCAM methods, and FullGrad,
Guided Grad-CAM, SESS and Deep Feature Factorization.

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
from camscope.methods import dff, diffcam, finer, fullgrad, gradient, guided, perturbation, projection, sess
from camscope.methods.dff import DeepFeatureFactorization
from camscope.methods.fullgrad import FullGrad
from camscope.methods.gradient import CAM, GradCAM, GradCAMpp, HiResCAM, LayerCAM, SmoothGradCAMpp, XGradCAM
from camscope.methods.guided import GuidedGradCAM
from camscope.methods.sess import SESS

__all__ = [
    "CAM",
    "SESS",
    "CamContext",
    "CamMethod",
    "CamResult",
    "DeepFeatureFactorization",
    "FullGrad",
    "GradCAM",
    "GradCAMpp",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
    "available_methods",
    "dff",
    "diffcam",
    "finer",
    "fullgrad",
    "get_method",
    "gradient",
    "guided",
    "perturbation",
    "projection",
    "register_method",
    "sess",
]

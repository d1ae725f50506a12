"""How a map is computed: gradient, perturbation, projection, attention, Finer and DiffCAM methods, and their relatives.

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
from camscope.methods import (
    dff,
    diffcam,
    elementwise,
    fem,
    finer,
    fullgrad,
    gradient,
    gradrollout,
    guided,
    kpca,
    legrad,
    perturbation,
    projection,
    random_cam,
    refine,
    rollout,
    segeigen,
    sess,
    shapley,
)
from camscope.methods.dff import DeepFeatureFactorization
from camscope.methods.elementwise import GradCAMElementWise
from camscope.methods.fem import FEM
from camscope.methods.fullgrad import FullGrad
from camscope.methods.gradient import CAM, GradCAM, GradCAMpp, HiResCAM, LayerCAM, SmoothGradCAMpp, XGradCAM
from camscope.methods.gradrollout import GradRollout
from camscope.methods.guided import GuidedGradCAM
from camscope.methods.kpca import KPCACAM
from camscope.methods.legrad import LeGrad
from camscope.methods.random_cam import RandomCAM
from camscope.methods.refine import RefineCAM
from camscope.methods.rollout import AttentionRollout
from camscope.methods.segeigen import SegEigenCAM
from camscope.methods.sess import SESS
from camscope.methods.shapley import ShapleyCAM

__all__ = [
    "CAM",
    "FEM",
    "KPCACAM",
    "SESS",
    "AttentionRollout",
    "CamContext",
    "CamMethod",
    "CamResult",
    "DeepFeatureFactorization",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMpp",
    "GradRollout",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "RandomCAM",
    "RefineCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
    "available_methods",
    "dff",
    "diffcam",
    "elementwise",
    "fem",
    "finer",
    "fullgrad",
    "get_method",
    "gradient",
    "gradrollout",
    "guided",
    "kpca",
    "legrad",
    "perturbation",
    "projection",
    "random_cam",
    "refine",
    "register_method",
    "rollout",
    "segeigen",
    "sess",
    "shapley",
]

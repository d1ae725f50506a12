"""Which CAM methods integrated feature analysis takes in full: one class's map that weights the layer's channels.

The importance matrices (Eq. 3 and 4 of Li et al., "Integrated feature analysis for deep
learning interpretation and class activation maps", arXiv:2407.01142) are made of the
contributions ``sum_ij w_k A_k^ij`` of the channel weights ``w_k`` of one explained class.
A method whose map is made another way (Eigen-CAM, FullGrad, the attention methods) or that
explains a comparison (Finer-CAM, DiffCAM) cannot give them.

Example:
    >>> "gradcam" in analysis_methods(), "rollout" in analysis_methods()
    (True, False)
    >>> why_not_analysable("eigencam")
    "its map is not a weighting sum_k w_k A_k of the layer's channels (no channel weights)"
"""

from __future__ import annotations

from camscope.engine.method import CamMethod, available_methods, method_class
from camscope.methods.diffcam import DiffCAM

__all__ = ["analysis_methods", "why_not_analysable"]


def why_not_analysable(method: str | type[CamMethod]) -> str | None:
    """Why ``method`` (a registered name or a method class) gives no importance matrix; None when it gives one."""
    cls = method_class(method) if isinstance(method, str) else method
    if not cls.reads_layer:
        return "it reads the attention of the transformer's blocks, not the channels of one layer"
    if issubclass(cls, DiffCAM) or cls.name.startswith("finer-"):
        return "it explains a comparison (of classes, or of an example with a reference group), not one class"
    if not cls.channel_weights:
        return "its map is not a weighting sum_k w_k A_k of the layer's channels (no channel weights)"
    return None


def analysis_methods() -> list[str]:
    """The registered methods that give integrated feature analysis its importance matrices, by name."""
    return [name for name, cls in available_methods().items() if why_not_analysable(cls) is None]

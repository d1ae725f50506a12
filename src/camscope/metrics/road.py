"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022, arXiv:2202.00449).

The imputation (noisy linear imputation, batched and solved in torch on the inputs'
device) lives in :mod:`camscope.metrics.imputation`; its public names are re-exported
here. The removal steps are :mod:`camscope.metrics.removal`'s, shared with the
perturbation-confidence metrics (:mod:`camscope.metrics.perturbation_confidence`). The
metric removes the most (MoRF) or least (LeRF) relevant pixels at each percentage,
imputes them and re-scores the model, the forward passes batched over percentages and
orders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.explainer import Explanation
from camscope.metrics.batching import BatchSize
from camscope.metrics.common import MetricResult, check_fractions
from camscope.metrics.imputation import NEIGHBOUR_WEIGHTS, noisy_linear_impute
from camscope.metrics.registry import register_metric
from camscope.metrics.removal import ORDERS, Imputation, RemovalProtocol, removal_scores

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute", "road"]

_DEFAULT_PERCENTAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@register_metric("road", kind="model")
def road(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor | Explanation,
    target: Any = None,
    *,
    percentages: Sequence[float] = _DEFAULT_PERCENTAGES,
    imputation: Imputation = "linear",
    noise: float = 0.01,
    score: str | Callable[[Tensor, Any], Tensor] = "probability",
    tie_break: float = 1e-4,
    seed: int = 0,
    batch_size: BatchSize = "auto",
    atol: float = 1e-4,
) -> MetricResult:
    r"""ROAD (Rong et al. 2022): remove the most (MoRF) or least (LeRF) relevant pixels, impute, re-score.

    For each fraction ``p`` in ``percentages`` the ``floor(p * H * W)`` pixels ranked
    highest (MoRF) or lowest (LeRF) by the map are removed and imputed (noisy linear
    imputation by default), and the target's score is measured. A faithful map makes
    the MoRF curve fall fast and the LeRF curve stay high.

    .. math::
        \mathrm{combined} = \frac{1}{|P|} \sum_{p \in P} \frac{s_\mathrm{LeRF}(p) - s_\mathrm{MoRF}(p)}{2}

    which equals grad-cam 1.5.7's ``ROADCombined`` (it averages the differences to the
    clean score, which cancel).

    Protocol details and deviations:
        * Ranking follows the reference ``ImputedDataset``: the map is min-max scaled,
          ``tie_break * N(0, 1)`` noise (one field for the batch, seeded) is added so
          that plateaus (zeros after ReLU) are removed in random rather than raster
          order, and ``floor(p * H * W)`` pixels are removed.
        * The imputation noise of a step is one seeded ``N(0, 1)`` field per order and
          fraction, shared by the batch's images (:func:`camscope.metrics.removal.step_noise`):
          each image's noise is i.i.d. per pixel as in the reference, and an image's score
          does not depend on the batch it came in nor on how the work was batched.
        * ``p`` is the fraction *removed* for both orders. The reference code's LeRF
          keeps the top ``p`` (removes ``1 - p``) and grad-cam's ``percentile`` is the
          fraction kept; over a symmetric set such as 0.1..0.9 the averaged scores agree
          (up to grad-cam's ``np.percentile`` rounding of the pixel count).
        * DiffCAM reports ROAD at 25/50/75%: ``percentages=(0.25, 0.5, 0.75)``.

    Args:
        model: the classifier.
        inputs: ``[B, C, H, W]`` on the model's device.
        maps: ``[B, H, W]`` maps (or an Explanation), resized to the inputs.
        target: what is scored (see :mod:`camscope.metrics`); default the predicted class.
        percentages: fractions of pixels removed (each in [0, 1)).
        imputation: ``"linear"`` (noisy linear, ROAD's default), ``"mean"`` (per-image
            channel mean, ROAD's "fixed"), ``"zero"``, or ``callable(inputs, keep)``.
        noise: noise of the linear imputation (0.01).
        score: ``"probability"`` (softmax of the target class; ROAD), ``"logit"`` or a callable.
        tie_break: scale of the ranking noise (1e-4 as in the reference; 0 for raster-order ties).
        seed: seeds the ranking and imputation noise.
        batch_size: perturbed images per forward pass (several percentages and orders of the
            batch together), or ``"auto"``: the model's fastest, calibrated on these passes
            (:mod:`camscope.metrics.batching`). The imputation solves 8 images at a time on
            the CPU, a whole chunk on other devices.
        atol: accuracy of the imputation solve (see :func:`noisy_linear_impute`).

    Returns:
        A :class:`MetricResult` with values ``combined`` (headline, higher is better),
        ``morf`` (mean MoRF score, lower is better), ``lerf`` (mean LeRF score, higher is
        better) and ``score`` (clean score); curves ``morf`` and ``lerf`` ``[B, P]`` over
        ``percentages``.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> x = torch.randn(2, 3, 32, 32)
        >>> e = camscope.explain(model, x, "gradcam", layer="layer3")
        >>> r = camscope.metrics.road(model, x, e, percentages=(0.25, 0.5, 0.75))
        >>> r["morf"].shape, r.curves["lerf"].shape
        (torch.Size([2]), torch.Size([2, 3]))
    """
    fractions = check_fractions(percentages, "percentages")
    protocol = RemovalProtocol(imputation, noise, score, tie_break, seed, batch_size, atol)
    clean_scores, curves = removal_scores(model, inputs, maps, target, ORDERS, fractions, protocol)
    morf_curve, lerf_curve = curves["morf"], curves["lerf"]
    steps = torch.tensor(fractions)
    return MetricResult(
        name="road",
        values={
            "combined": ((lerf_curve - morf_curve) / 2).mean(dim=1),
            "morf": morf_curve.mean(dim=1),
            "lerf": lerf_curve.mean(dim=1),
            "score": clean_scores,
        },
        curves={"morf": morf_curve, "lerf": lerf_curve},
        steps={"morf": steps, "lerf": steps},
        headline="combined",
        higher_is_better={"combined": True, "morf": False, "lerf": True, "score": True},
        params={"percentages": fractions, **protocol.params()},
    )

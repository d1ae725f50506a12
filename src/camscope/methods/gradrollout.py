"""Gradient-weighted attention rollout (Chefer, Gur and Wolf 2021).

Hila Chefer, Shir Gur and Lior Wolf, "Generic Attention-model Explainability for Interpreting
Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, arXiv:2103.15679: the rule for
self-attention (Eq. 5-6), which is what vision transformers need. (Their earlier "Transformer
Interpretability Beyond Attention Visualization", arXiv:2012.09838, propagates LRP relevance
through every layer instead of weighting the attention by its gradient.)

For the explained score ``y`` and each block ``l`` in execution order, from ``R = I``:

    Ā_l = E_h[ (∇A_l ⊙ A_l)^+ ]       ∇A_l = dy / dA_l              (Eq. 5)
    R  <- R + Ā_l R                                                (Eq. 6)

so ``R = (I + Ā_L) ... (I + Ā_1)``. The map is the row of ``R`` of the class token at the
patch columns (the mean of the patch rows for a head that averages the patch tokens, a choice
the paper leaves open), taken from the left as for the rollout. ``∇A_l`` comes from one
backward pass to the blocks' attention outputs (``dy/dA_h = (dy/do_h) v_h^T``).

With a comparison target (Finer-CAM's ``T`` components ``y_c - gamma y_{d_t}``), the mean
before the ReLU is the gradient of the averaged score (one backward); the other aggregations
compute one map per component and combine them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.backward import model_backward
from camscope.engine.method import CamContext, CamResult, register_method
from camscope.methods.attention import (
    AttentionCapture,
    AttentionMethod,
    BlockAttention,
    block_name,
    common_tokens,
    explained_scores,
    gradients_from,
    readout_weights,
    token_layout,
)
from camscope.methods.finer import finer_method

__all__ = ["FinerGradRollout", "GradRollout", "gradient_rollout_row"]


def gradient_rollout_row(records: list[BlockAttention], grads: list[Tensor], row: Tensor) -> Tensor:
    """``r^T (I + Ā_L) ... (I + Ā_1)`` with ``Ā_l = mean_h ReLU(∇A_l ⊙ A_l)``, for rows ``r`` ``[B, N]``.

    ``grads[l]`` is ``dy / d handle`` of block ``l`` (see :meth:`BlockAttention.gradient`).
    """
    relevance = row[:, None, :]
    for record, grad in zip(reversed(records), reversed(grads)):
        attention = record.probabilities(relevance.dtype)
        weighted = (record.gradient(grad, relevance.dtype) * attention).clamp(min=0).mean(dim=1)
        relevance = relevance + relevance @ weighted
    return relevance[:, 0]


@register_method
class GradRollout(AttentionMethod):
    """Gradient-weighted attention rollout (Chefer et al. 2021, arXiv:2103.15679, Eq. 5-6).

    ``Ā_l = E_h[(dy/dA_l ⊙ A_l)^+]``, ``R = (I + Ā_L) ... (I + Ā_1)``; the map is the class
    token's row of ``R`` at the patch columns. The queries, keys, values and attention outputs
    are captured in the explainer's forward pass (autograd from the first chosen block on), then
    one backward pass to the attention outputs.

    Options: ``blocks`` (which blocks: None for all, N for the last N, or indices).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import VisionTransformer
        >>> model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
        >>> camscope.explain(model.eval(), torch.randn(2, 3, 32, 32), method="gradrollout", target=[1, 3]).raw.shape
        torch.Size([2, 4, 4])
    """

    name = "gradrollout"
    display_name = "Grad-Rollout"

    def hooks(self, model: nn.Module, names: list[str], chosen: list[str]) -> list[AbstractContextManager[Any]]:
        del names  # the chosen blocks are enough
        return [
            AttentionCapture(model, chosen, want={"qk", "v", "grad"}),
            gradients_from(model, [block_name(chosen[0])]),
        ]

    def __call__(self, ctx: CamContext) -> CamResult:
        captured = self.captured(ctx)
        records = captured.records()
        tokens = common_tokens(records)
        prefix, gh, gw = token_layout(ctx, tokens)
        weights = readout_weights(ctx.model, prefix, tokens, "gradient-weighted rollout")
        row = weights.to(ctx.inputs.device, records[0].dtype).expand(ctx.inputs.shape[0], tokens)
        handles = [record.require_handle() for record in records]
        maps = []
        with torch.enable_grad():
            scores = explained_scores(ctx.target, captured.require_outputs())
        for score in scores:
            with model_backward(captured.chosen[:1]):
                grads = torch.autograd.grad(score.sum(), handles, retain_graph=len(scores) > 1)
            flow = gradient_rollout_row(records, list(grads), row)
            maps.append(flow[:, prefix:].reshape(-1, gh, gw))
        raw = self.combine(maps, ctx.target).to(ctx.inputs.dtype)
        return CamResult(raw=raw, read_from=captured.chosen)


FinerGradRollout = finer_method(
    GradRollout,
    "Grad-Rollout",
    """the gradient weights ``dy/dA`` of ``y_c - gamma y_{d_t}``, averaged over the references before
    the ReLU of Eq. 5 (one backward of the averaged score); ``"max-before-relu"`` and
    ``"mean-after-relu"`` run Grad-Rollout once per reference and combine the maps.""",
)

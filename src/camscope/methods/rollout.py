"""Attention rollout (Abnar and Zuidema 2020): how much of each patch flows into the token the head reads.

Samira Abnar and Willem Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020, arXiv:2005.00928.

Each block's attention is averaged over its heads and the residual connection is added as an
identity (Sec. 3, "attention rollout"):

    Â_l = 0.5 * mean_h A_{l,h} + 0.5 * I

and the attention of the last block to the input tokens is rolled out through the blocks,

    Ã = Â_L Â_{L-1} ... Â_1

The map is the row of ``Ã`` of the token the model's head reads, at the patch tokens' columns,
on the patch grid. Choices the paper leaves open (it reads the class token of a BERT-like
model): a head that averages the patch tokens (timm ``global_pool="avg"``, open_clip
``pool_type="avg"``) is read at the mean of those rows; ``blocks=`` rolls out the chosen
blocks only. Only the row is needed, so the product is taken from the left,
``r^T Ã = ((r^T Â_L) Â_{L-1}) ... Â_1`` (``O(N^2)`` per block instead of ``O(N^3)``).

The rollout does not depend on the explained class: the target only labels the explanation,
and comparisons (Finer-CAM's ``y_c - gamma y_d``) are refused.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from torch import Tensor, nn

from camscope.engine.method import CamContext, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.methods.attention import (
    AttentionCapture,
    AttentionMethod,
    BlockAttention,
    common_tokens,
    readout_weights,
    token_layout,
)
from camscope.targets.base import ClassDifference, FrozenTarget, Target
from camscope.targets.finer import Finer

__all__ = ["AttentionRollout", "rollout_row"]


def rollout_row(records: list[BlockAttention], row: Tensor) -> Tensor:
    """``r^T Â_L ... Â_1`` for rows ``r`` ``[B, N]`` and the blocks' attention in execution order.

    ``Â_l = 0.5 * mean_h A_l + 0.5 * I``.
    """
    flow = row[:, None, :]
    for record in reversed(records):
        mean = record.probabilities(flow.dtype).mean(dim=1)
        flow = 0.5 * (flow @ mean) + 0.5 * flow
    return flow[:, 0]


@register_method
class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar and Zuidema 2020, arXiv:2005.00928): ``Ã = Â_L ... Â_1``, ``Â = 0.5 mean_h A + 0.5 I``.

    The map is the row of the class token (or the mean of the patch rows for a mean-pooled
    head) at the patch columns. Class-agnostic; the queries and keys are captured in the
    explainer's forward pass (no pass of its own, no autograd).

    Options: ``blocks`` (which blocks are rolled out: None for all, N for the last N, or indices).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import VisionTransformer
        >>> model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32).eval()
        >>> camscope.explain(model, torch.randn(2, 3, 32, 32), method="rollout").raw.shape
        torch.Size([2, 4, 4])
    """

    name = "rollout"
    display_name = "Attention Rollout"

    def prepare_target(self, target: Target, model: nn.Module) -> Target:
        del model  # the check reads the target only
        inner = target.inner if isinstance(target, FrozenTarget) else target
        if isinstance(inner, (Finer, ClassDifference)):
            raise CamscopeError(
                "attention rollout does not depend on the explained class, so a comparison of classes changes "
                "nothing: use legrad or gradrollout (finer-legrad, finer-gradrollout) to compare classes"
            )
        return target

    def hooks(self, model: nn.Module, names: list[str], chosen: list[str]) -> list[AbstractContextManager[Any]]:
        del names  # the chosen blocks are enough
        return [AttentionCapture(model, chosen, want={"qk"})]

    def __call__(self, ctx: CamContext) -> CamResult:
        captured = self.captured(ctx)
        records = captured.records()
        tokens = common_tokens(records)
        prefix, gh, gw = token_layout(ctx, tokens)
        weights = readout_weights(ctx.model, prefix, tokens, "attention rollout")
        row = weights.to(ctx.inputs.device, records[0].dtype).expand(ctx.inputs.shape[0], tokens)
        flow = rollout_row(records, row)
        return CamResult(raw=flow[:, prefix:].reshape(-1, gh, gw).to(ctx.inputs.dtype), read_from=captured.chosen)

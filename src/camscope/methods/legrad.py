"""LeGrad (Bousselham et al. 2024): each block's prediction, differentiated with respect to its own attention.

Walid Bousselham, Angie Boggust, Sofian Chaybouti, Hendrik Strobelt and Hilde Kuehne, "LeGrad:
An Explainability Method for Vision Transformers via Feature Formation Sensitivity",
arXiv:2404.03214.

The tokens ``Z^l`` of every block ``l`` are read by the model's own head, as if they were the
last block's, and give the block's score ``s^l = target(head(Z^l))``; the explanation is the
positive part of its gradient with respect to the block's attention ``A^l``
(``[heads, queries, keys]``), averaged over heads and query tokens, then over blocks:

    E^l = mean_{h, i} ReLU(d s^l / d A^l_{h, i, :})
    E   = mean_l E^l   at the patch keys (prefix keys dropped), on the patch grid

The displayed maps are min-max scaled (the averaging over blocks and the sum of the authors'
code differ only by that scale). ``ds^l/dA^l`` is exact without materialising ``A``
(``= (ds^l/do) v^T``, see :mod:`camscope.methods.attention`). Each chosen block's input
tokens start a graph of their own, so ``s^l`` depends through autograd on block ``l`` alone
and one backward pass of ``sum_l s^l`` gives every block its own ``ds^l/dA^l``.

The head: camscope runs the model's own layers after its last block (final norm, pooling,
classifier, CLIP's projection and prompt similarities) on every chosen block's tokens at once,
as extra rows of the last block's output, so any target works unchanged, Finer comparisons of
classes or of CLIP prompts included, and ``s^L`` is the model's own score. Those layers must
treat samples independently (true of norms, poolers, linear heads and CLIP's similarities).
``readout="token-mean"`` reads a class-token head at the mean of all the tokens instead of the
class token, as the authors' released code does for CLIP ViTs and torchcam 0.5.0's ``LeGrad``
does for torchvision ViTs (``heads(ln(tokens.mean(1)))``); with it camscope equals torchcam.
The paper aggregates all blocks (the default, ``blocks=None``); the authors' code starts at a
late block, which ``blocks=N`` (the last ``N``) gives.

With a comparison target (Finer-CAM's ``T`` components ``y_c - gamma y_{d_t}``), the mean before
the ReLU is the gradient of the averaged score; the other aggregations compute one map per
component and combine them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from camscope.engine.capture import register_owned_hook, split_output
from camscope.engine.method import CamContext, CamResult, register_method
from camscope.errors import CamscopeError
from camscope.methods.attention import (
    BLOCKS,
    AttentionCapture,
    AttentionMethod,
    BlockAttention,
    block_name,
    common_tokens,
    explained_scores,
    gradients_from,
    head_pooling,
    token_layout,
)
from camscope.methods.finer import finer_method
from camscope.options import Option

__all__ = ["READOUTS", "FinerLeGrad", "LeGrad", "legrad_relevance"]

#: How each block's tokens are read by the model's head.
READOUTS = ("model", "token-mean")


def legrad_relevance(record: BlockAttention, grad: Tensor) -> Tensor:
    """``mean_{h, i} ReLU(ds/dA_{h, i, :})``, ``[B, N]`` over the keys, from ``grad = ds / d handle``."""
    return record.gradient(grad).clamp(min=0).mean(dim=(1, 2))


def _mean_token(tokens: Tensor) -> Tensor:
    """The tokens with the first (class) token replaced by the mean of all of them."""
    return torch.cat([tokens.mean(dim=1, keepdim=True), tokens[:, 1:]], dim=1)


class _BlockReadout:
    """Forward hooks that send the chosen blocks' tokens through the model's head as rows of the last block's output.

    Each chosen block passes a copy of its tokens downstream (in-place operations after it
    cannot change what is read); the last block's output becomes the chosen blocks' tokens
    stacked along the batch, so the model's output has one group of rows per chosen block.
    """

    def __init__(self, model: nn.Module, blocks: list[str], last: str, transform: Callable[[Tensor], Tensor]) -> None:
        self.modules = dict(model.named_modules())
        self.blocks, self.last, self.transform = blocks, last, transform
        self.tokens: dict[str, Tensor] = {}
        self.stack = ExitStack()

    def __enter__(self) -> _BlockReadout:
        try:
            for name in self.blocks:
                self.stack.enter_context(register_owned_hook(self.modules[name], self._keep(name)))
            self.stack.enter_context(register_owned_hook(self.modules[self.last], self._stack))
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _keep(self, name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, _i: Any, output: Any) -> Any:
            tensor, rebuild = split_output(output, name)
            self.tokens[name] = tensor
            return rebuild(tensor.clone())

        return hook

    def _stack(self, _m: nn.Module, _i: Any, output: Any) -> Any:
        tensor, rebuild = split_output(output, self.last)
        missing = [name for name in self.blocks if name not in self.tokens]
        shapes = {tuple(self.tokens[name].shape) for name in self.blocks if name in self.tokens}
        if missing or len(shapes) != 1 or tensor.ndim != 3:
            raise CamscopeError(
                f"LeGrad reads the tokens [B, N, C] of each block with the model's head, but blocks {missing} did not "
                f"run before the last one or the blocks' outputs differ ({sorted(shapes)})"
            )
        return rebuild(torch.cat([self.transform(self.tokens[name]) for name in self.blocks], dim=0))


@register_method
class LeGrad(AttentionMethod):
    """LeGrad (Bousselham et al. 2024, arXiv:2404.03214): ``mean_l mean_{h,i} ReLU(ds^l/dA^l)``.

    ``s^l`` is the target's score of block ``l``'s tokens read by the model's own head. One
    forward pass (all chosen blocks read at once) and one backward pass, through the head and
    each block's own layers only.

    Options: ``blocks`` (None for all, N for the last N, or indices), ``readout`` (``"model"``:
    the head as it is; ``"token-mean"``: a class-token head reads the mean of the tokens, as
    torchcam 0.5.0 and the authors' code for CLIP).

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import VisionTransformer
        >>> model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
        >>> e = camscope.explain(model.eval(), torch.randn(2, 3, 32, 32), method="legrad", target=[1, 3])
        >>> e.raw.shape, bool((e.raw >= 0).all())
        (torch.Size([2, 4, 4]), True)
    """

    name = "legrad"
    display_name = "LeGrad"
    declared_options = (
        BLOCKS,
        Option(
            "readout",
            str,
            "model",
            "how each block's tokens are read: 'model' (the model's head as it is) or 'token-mean' (a class-token "
            "head reads the mean of all tokens, as torchcam 0.5.0 and the authors' code for CLIP)",
            choices=READOUTS,
        ),
    )

    def __call__(self, ctx: CamContext) -> CamResult:
        names, chosen = self.blocks_of(ctx)
        attention = [names[i] for i in chosen]
        blocks = [block_name(name) for name in attention]
        if len(set(blocks)) != len(blocks):
            raise CamscopeError(
                f"LeGrad reads the output of the block around each attention module, and {attention} share blocks: "
                "one attention per block is needed"
            )
        outputs, records = self._forward(ctx, attention, blocks, block_name(names[-1]))
        tokens = common_tokens(records)
        prefix, gh, gw = token_layout(ctx, tokens)
        if self.options["readout"] == "token-mean" and head_pooling(ctx.model, prefix) != "token":
            raise CamscopeError(
                "readout='token-mean' replaces the class token that the model's head reads, and this model's head "
                "does not read a class token: use readout='model'"
            )
        batch = ctx.inputs.shape[0]
        with torch.enable_grad():
            scores = [explained_scores(ctx.target, rows) for rows in outputs.split(batch)]
        handles = [record.require_handle() for record in records]
        maps = []
        for component in range(len(scores[0])):
            # Each block's tokens start a graph of their own: one backward gives each block d s^l / d o^l.
            total = torch.stack([score[component].sum() for score in scores]).sum()
            grads = torch.autograd.grad(total, handles, retain_graph=component + 1 < len(scores[0]))
            relevance = torch.stack([legrad_relevance(record, grad) for record, grad in zip(records, grads)])
            maps.append(relevance.mean(dim=0)[:, prefix:].reshape(batch, gh, gw))
        return CamResult(raw=self.combine(maps, ctx.target).to(ctx.inputs.dtype))

    def _forward(
        self, ctx: CamContext, attention: list[str], blocks: list[str], last: str
    ) -> tuple[Tensor, list[BlockAttention]]:
        """One forward pass that reads every chosen block with the head: outputs ``[len(blocks) * B, ...]``."""
        transform = _mean_token if self.options["readout"] == "token-mean" else (lambda tokens: tokens)
        with (
            AttentionCapture(ctx.model, attention, want={"v", "grad"}) as capture,
            _BlockReadout(ctx.model, blocks, last, transform),
            gradients_from(ctx.model, blocks, every_block=True),
        ):
            try:
                outputs = ctx.forward(ctx.inputs)
            except CamscopeError as error:
                cause = error.__cause__
                if not isinstance(cause, (RuntimeError, ValueError, AssertionError)) or isinstance(
                    cause, CamscopeError
                ):
                    raise
                raise CamscopeError(
                    f"LeGrad runs the model's layers after its last block on every chosen block's tokens at once "
                    f"(as extra rows of the batch), and this model failed on that: {cause}"
                ) from cause
        expected = len(blocks) * ctx.inputs.shape[0]
        if outputs.shape[0] != expected:
            raise CamscopeError(
                f"LeGrad reads {len(blocks)} blocks as extra rows of the batch through the layers after the last "
                f"block, and the model returned {outputs.shape[0]} rows instead of {expected}: those layers must treat "
                "samples independently"
            )
        return outputs, capture.complete()


FinerLeGrad = finer_method(
    LeGrad,
    "LeGrad",
    """each block's score is ``y_c - gamma y_{d_t}`` of its tokens read by the head, and the
    gradients of the ``T`` comparisons are averaged before LeGrad's ReLU (one backward of the averaged
    score); ``"max-before-relu"`` and ``"mean-after-relu"`` run LeGrad once per reference and
    combine the maps. With a CLIP classifier (:class:`camscope.models.clip.CLIPClassifier`) the classes
    are prompts: a prompt against other prompts.""",
)

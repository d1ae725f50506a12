"""Building a reference bank in one pass over a dataset (see :meth:`ReferenceBank.build`).

Each batch of the :class:`~camscope.passes.engine.DatasetPass` runs through the
model without autograd and in eval mode up to the layer only (a forward hook
ends the pass there; the first batch runs the whole model, to refuse a shared
module); its embeddings ``z`` (``[B, K]``) update the bank's
per-class counts, means and scatters on the model's device.

Example:
    >>> import torch
    >>> from camscope.accumulators.reference_bank import ReferenceBank
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> data = [(torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1]))]
    >>> bank = build_reference_bank(ReferenceBank, model, data, "0", progress=False)
    >>> bank.layer, bank.counts.tolist()
    ('0', [3, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from camscope.engine.capture import LayerSpec, model_state, validate_inputs
from camscope.engine.embedding import LayerEmbedder, check_embedding, embedding_layer
from camscope.models.fingerprint import model_fingerprint
from camscope.passes.engine import DatasetPass

if TYPE_CHECKING:
    from camscope.accumulators.reference_bank import ReferenceBank

__all__ = ["build_reference_bank"]


def build_reference_bank(
    bank_class: type[ReferenceBank],
    model: nn.Module,
    data: Any,
    layer: LayerSpec | None = None,
    *,
    embedding: str = "mean",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    size: int = 224,
    class_names: Sequence[str] | dict[int, str] | None = None,
    scatter: str = "auto",
    max_scatter_bytes: int | None = None,
    model_name: str | None = None,
    progress: bool | None = None,
    layout: str = "auto",
    grid: tuple[int, int] | None = None,
    prefix_tokens: int | None = None,
    **pass_options: Any,
) -> ReferenceBank:
    """A ``bank_class`` bank of ``model``'s ``layer`` over ``data`` (the arguments of :meth:`ReferenceBank.build`).

    The bank is created at the first batch, once the layer's embedding size
    ``K`` and the input size are known; ``max_scatter_bytes=None`` keeps the
    bank's default. ``pass_options`` (``distributed``, ``workers``,
    ``checkpoint``, ``checkpoint_every``, ``resume``) go to the
    :class:`~camscope.passes.engine.DatasetPass`.

    Raises:
        CamscopeError: for a model that is not a module, a bad batch size or
            embedding, a layer that does not resolve to one module, or data
            that gave no batch.
    """
    embedding = check_embedding(embedding)
    layout_options = dict(layout=layout, grid=grid, prefix_tokens=prefix_tokens)
    pass_ = DatasetPass(
        model,
        data,
        batch_size=batch_size,
        size=size,
        device=device,
        progress=progress,
        description="building reference bank",
        restore=lambda state, where: bank_class.from_state_dict(state, device=where),
        identity=lambda: {
            "model": model_fingerprint(model, model_name),
            "layer": repr(layer),
            "embedding": embedding,
            "layout": layout_options,
        },
        **pass_options,
    )
    names = class_names if class_names is not None else pass_.class_names
    options: dict[str, Any] = {} if max_scatter_bytes is None else {"max_scatter_bytes": max_scatter_bytes}
    bank: ReferenceBank | None = pass_.resumed
    embedder: LayerEmbedder | None = None
    with model_state(model), ExitStack() as hooks:
        for batch in pass_.tracking(lambda: bank):  # noqa: B023 (the checkpoint saves the current bank)
            inputs = batch.inputs
            if embedder is None:
                inputs = validate_inputs(model, inputs)
                name, module = embedding_layer(model, layer, inputs[:1])
                embedder = hooks.enter_context(LayerEmbedder(model, name, module, embedding, layout_options, True))
            z = embedder(inputs)
            if bank is None:
                bank = bank_class(
                    z.shape[1],
                    embedder.layer,
                    embedding=embedding,
                    model=model_fingerprint(model, model_name),
                    class_names=names,
                    scatter=scatter,
                    layout=layout_options,
                    input_size=list(inputs.shape[2:]),
                    device=z.device,
                    **options,
                )
            bank.update(z, batch.labels)
    return pass_.finish(bank, "a reference bank")

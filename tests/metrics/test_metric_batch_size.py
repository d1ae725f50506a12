"""A metric's batch_size must be a positive integer: anything else is a clear CamscopeError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from camscope.errors import CamscopeError
from camscope.metrics.faithfulness import average_drop, deletion, insertion


@pytest.mark.parametrize("batch_size", [2.5, 0, -3, True, "8", None])
@pytest.mark.parametrize("metric", [deletion, insertion, average_drop])
def test_bad_batch_size_is_a_clear_error(
    tiny_cnn: nn.Module, images: torch.Tensor, metric: Any, batch_size: Any
) -> None:
    maps = torch.rand(images.shape[0], *images.shape[2:])
    with pytest.raises(CamscopeError, match="batch_size must be a positive integer"):
        metric(tiny_cnn, images, maps, target=0, batch_size=batch_size)


def test_integer_like_batch_sizes_work(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    maps = torch.rand(images.shape[0], *images.shape[2:])
    plain = deletion(tiny_cnn, images, maps, target=0, batch_size=4)
    numpy = deletion(tiny_cnn, images, maps, target=0, batch_size=np.int64(4))
    assert plain.values.keys() == numpy.values.keys()
    assert all(torch.equal(plain.values[key], numpy.values[key]) for key in plain.values)

"""An evaluation report's output folder that cannot be one is a CamscopeError, not a raw OSError."""

from __future__ import annotations

import pytest
import torch

import camscope
from camscope.errors import CamscopeError


def test_saving_a_report_into_a_file_is_a_clear_error(tmp_path, tiny_cnn):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    report = camscope.evaluate(tiny_cnn, images, methods=["gradcam"], metrics=["sparseness"], progress=False)
    (tmp_path / "file").write_bytes(b"keep")
    with pytest.raises(CamscopeError, match="it is a file; choose a folder"):
        report.save(tmp_path / "file")
    with pytest.raises(CamscopeError, match="is a file, not a folder"):
        report.save(tmp_path / "file" / "sub")
    assert (tmp_path / "file").read_bytes() == b"keep"

"""Map-style datasets and image folders loaded by worker processes: the same batches as in-process loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.errors import CamscopeError
from camscope.passes.engine import DatasetPass


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def _folder(root: Path, per_class: int = 3) -> Path:
    from PIL import Image

    g = np.random.default_rng(3)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_map_style_dataset_of_samples_is_batched() -> None:
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    model = _model()
    bank = ReferenceBank.build(model, TensorDataset(x, y), "0", batch_size=2, progress=False)
    batches = ReferenceBank.build(model, [(x[:2], y[:2]), (x[2:4], y[2:4]), (x[4:], y[4:])], "0", progress=False)
    assert bank.counts.tolist() == [2, 2, 1]
    torch.testing.assert_close(bank.moments.means, batches.moments.means, rtol=1e-12, atol=1e-12)
    sizes = [b.inputs.shape[0] for b in DatasetPass(model, TensorDataset(x), batch_size=2, progress=False)]
    assert sizes == [2, 2, 1]
    analysis = camscope.analyze(model, TensorDataset(x, y), layer="0", batch_size=2, progress=False)
    assert analysis.n_samples == 5 and analysis.class_counts.tolist() == [2, 2, 1]


def test_a_sequence_of_single_samples_is_a_clear_error() -> None:
    samples = [(torch.randn(3, 8, 8), 0), (torch.randn(3, 8, 8), 1)]
    with pytest.raises(CamscopeError, match="map-style torch Dataset"):
        ReferenceBank.build(_model(), samples, "0", progress=False)


def test_image_folders_through_worker_processes_give_the_same_results(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    data = _folder(tmp_path / "data")
    model = _model()
    alone = ReferenceBank.build(model, data, "0", size=12, batch_size=2, progress=False)
    helped = ReferenceBank.build(model, data, "0", size=12, batch_size=2, workers=2, progress=False)
    assert helped.class_names == alone.class_names == ["a", "b"]
    assert torch.equal(helped.moments.means, alone.moments.means)
    folder = ImageFolder(str(data), transform=ToTensor())
    first = camscope.analyze(model, folder, layer="0", batch_size=4, progress=False)
    second = camscope.analyze(model, folder, layer="0", batch_size=4, workers=1, progress=False)
    assert torch.equal(first.importance, second.importance) and first.n_samples == 6
    assert ReferenceBank.build(model, folder, "0", progress=False).class_names == ["a", "b"]


class _Pictures(Dataset):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[object, int]:
        from PIL import Image

        return Image.new("RGB", (8, 8)), index


def test_samples_that_cannot_be_batched_are_a_clear_error() -> None:
    with pytest.raises(CamscopeError, match=r"cannot be batched.*ToTensor"):
        ReferenceBank.build(_model(), _Pictures(), "0", progress=False)


@pytest.mark.parametrize("workers", [-1, 1.5, True])
def test_bad_worker_counts(workers: object) -> None:
    with pytest.raises(CamscopeError, match="workers must be"):
        DatasetPass(_model(), torch.zeros(2, 3, 8, 8), workers=workers)  # type: ignore[arg-type]


class _Named(Dataset):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return torch.zeros(3, 8, 8), "cat"


def test_labels_that_are_not_class_indices_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CamscopeError, match="labels must be integer class indices"):
        ReferenceBank.build(_model(), _Named(), "0", progress=False)
    (tmp_path / "folder.ckpt").mkdir()
    with pytest.raises(CamscopeError, match="is a folder"):
        ReferenceBank.build(_model(), torch.zeros(2, 3, 8, 8), "0", checkpoint=tmp_path / "folder.ckpt")

"""Dataset passes: batches from DataLoaders, iterables or image folders, with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderData", "iter_batches", "progress"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Label of samples that have none (a flat folder, an unlabelled iterable).
UNLABELLED = -1


class ImageFolderData:
    """Images in ImageFolder layout (``root/CLASS/*.png``) or a flat folder (unlabelled).

    Args:
        root: the folder.
        transform: maps an image path to a ``[C, H, W]`` tensor; default:
            :func:`camscope.models.loading.load_image` at ``size``.
        size: the image size for the default transform.
    """

    def __init__(
        self, root: str | os.PathLike[str], transform: Callable[[Path], Tensor] | None = None, size: int = 224
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CamscopeError(f"no such folder: {self.root}")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folders:
            self.class_names = [p.name for p in folders]
            self.samples = [(f, i) for i, d in enumerate(folders) for f in _images(d)]
        else:
            self.class_names = []
            self.samples = [(f, UNLABELLED) for f in _images(self.root)]
        if not self.samples:
            raise CamscopeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {self.root}")
        self.size = size
        self.transform = transform or self._default_transform

    def _default_transform(self, path: Path) -> Tensor:
        from camscope.models.loading import load_image

        tensor, _ = load_image(path, size=self.size)
        return tensor[0]

    def __len__(self) -> int:
        return len(self.samples)

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.samples), batch_size):
            chunk = self.samples[start : start + batch_size]
            images = torch.stack([self.transform(path) for path, _ in chunk])
            yield images, torch.tensor([label for _, label in chunk], dtype=torch.long)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def iter_batches(
    data: Any, batch_size: int = 32, device: torch.device | str | None = None, size: int = 224
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(inputs, labels)`` batches on ``device``.

    ``data`` may be a folder path (ImageFolder layout or flat), an
    :class:`ImageFolderData`, a DataLoader or any iterable of ``(inputs, labels)``
    pairs or of input tensors (labels are then -1), or a single tensor batch.
    """
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolderData(data, size=size)
    if isinstance(data, ImageFolderData):
        source: Iterable[Any] = data.batches(batch_size)
    elif isinstance(data, Tensor):
        source = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    else:
        source = data
    for item in source:
        if isinstance(item, Tensor):
            inputs, labels = item, torch.full((item.shape[0],), UNLABELLED, dtype=torch.long)
        elif isinstance(item, (tuple, list)) and len(item) >= 2 and isinstance(item[0], Tensor):
            inputs, labels = item[0], torch.as_tensor(item[1]).long().reshape(-1)
        else:
            raise CamscopeError(
                f"dataset items must be (inputs, labels) pairs or input tensors, got {type(item).__name__}"
            )
        if labels.numel() != inputs.shape[0]:
            raise CamscopeError(f"a batch has {inputs.shape[0]} inputs but {labels.numel()} labels")
        yield (
            inputs.to(device) if device is not None else inputs,
            labels.to(inputs.device if device is None else device),
        )


def progress(
    iterable: Iterable[Any], description: str, total: int | None = None, enabled: bool | None = None
) -> Iterator[Any]:
    """Iterate with a rich progress bar on stderr (shown when stderr is a terminal unless ``enabled``)."""
    import sys

    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield from iterable
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)

"""Image folders as datasets: ``root/CLASS/*.png`` (labelled by folder) or a flat folder (unlabelled)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["IMAGE_SUFFIXES", "UNLABELLED", "ImageFolderData"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Label of samples that have none (a flat folder, an unlabelled iterable).
UNLABELLED = -1


class ImageFolderData:
    """Images in ImageFolder layout (``root/CLASS/*.png``) or a flat folder (unlabelled).

    Args:
        root: the folder.
        transform: maps an image path to a ``[C, H, W]`` tensor; default:
            :func:`camscope.models.load_image` at ``size``.
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
        from camscope.models import load_image

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

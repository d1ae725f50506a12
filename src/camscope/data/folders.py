"""Image folders as datasets: ``root/CLASS/*.png`` (labelled by folder) or a flat folder (unlabelled)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["IMAGE_SUFFIXES", "UNLABELLED", "ImageFolderData", "label_by_model_classes"]

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

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """One sample, ``(image [C, H, W], label)`` as tensors: the folder works in a ``torch.utils.data.DataLoader``.

        Example:
            >>> import tempfile, numpy as np, torch
            >>> from pathlib import Path
            >>> from camscope.viz.figures import save_image
            >>> root = Path(tempfile.mkdtemp())
            >>> for name in ("cat", "dog"):
            ...     (root / name).mkdir()
            ...     _ = save_image(root / name / "0.png", np.random.default_rng(0).random((8, 8, 3)))
            >>> loader = torch.utils.data.DataLoader(ImageFolderData(root, size=16), batch_size=2)
            >>> images, labels = next(iter(loader))
            >>> images.shape, labels.tolist()
            (torch.Size([2, 3, 16, 16]), [0, 1])
        """
        path, label = self.samples[index]
        return self.transform(Path(path)), torch.tensor(label, dtype=torch.long)

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.samples), batch_size):
            chunk = self.samples[start : start + batch_size]
            images = torch.stack([self.transform(path) for path, _ in chunk])
            yield images, torch.tensor([label for _, label in chunk], dtype=torch.long)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def label_by_model_classes(dataset: ImageFolderData, num_classes: int) -> bool:
    """Relabel a folder by the model's classes when every class folder names one; else keep 0..C-1.

    The one rule for folders everywhere (``camscope analyze``/``evaluate`` and their Python
    functions): class folders are sorted by name and numbered ``0..C-1``, unless *every*
    folder names a class of the model, by index (``281``) or, for a 1000-class model, by
    ImageNet name (``tabby``, ``tiger cat``, ``tiger_cat``): then the labels are those
    classes. Banks keep ``0..C-1`` with the folder names (they need no classifier).

    Returns:
        Whether the labels are now the model's classes.

    Example:
        >>> import tempfile, numpy as np
        >>> from camscope.viz.figures import save_image
        >>> root = Path(tempfile.mkdtemp())
        >>> for name in ("tabby", "lynx"):
        ...     (root / name).mkdir()
        ...     _ = save_image(root / name / "0.png", np.zeros((8, 8, 3)))
        >>> data = ImageFolderData(root)
        >>> label_by_model_classes(data, 1000), [label for _, label in data.samples]
        (True, [287, 281])
    """
    from camscope.models import class_index

    if not dataset.class_names:
        return False
    try:
        mapping = [class_index(name.replace("_", " "), num_classes) for name in dataset.class_names]
    except CamscopeError:
        return False
    if len(set(mapping)) != len(mapping):
        return False
    dataset.samples = [(path, UNLABELLED if label < 0 else mapping[label]) for path, label in dataset.samples]
    return True

"""Image folders as datasets: ``root/CLASS/*.png`` (labelled by folder) or a flat folder (unlabelled)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from camscope.errors import CamscopeError

__all__ = ["IMAGE_SUFFIXES", "UNLABELLED", "ImageFolderData", "UnreadableImageError", "label_by_model_classes"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: Label of samples that have none (a flat folder, an unlabelled iterable).
UNLABELLED = -1


class UnreadableImageError(CamscopeError):
    """An image file of a folder that cannot be read (not an image, truncated, unreadable): its message names it."""


_Read = TypeVar("_Read")


def read_image(transform: Callable[[Path], _Read], path: Path) -> _Read:
    """``transform(path)``; a file that cannot be read is an :class:`UnreadableImageError` that names it."""
    try:
        return transform(path)
    except UnreadableImageError:
        raise
    except (CamscopeError, OSError) as error:
        reason = str(error) if isinstance(error, CamscopeError) else (error.strerror or type(error).__name__)
        shown = reason if str(path) in reason else f"{path}: {reason}"
        raise UnreadableImageError(shown) from error


class _Readability(Dataset[tuple[int, str]]):
    """``index -> (index, reason)`` over a folder's samples: reason is '' for a readable image (picklable)."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable[[Path], Tensor]) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, str]:
        try:
            read_image(self.transform, Path(self.samples[index][0]))
        except UnreadableImageError as error:
            return index, str(error)
        return index, ""


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
        return read_image(self.transform, Path(path)), torch.tensor(label, dtype=torch.long)

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.samples), batch_size):
            chunk = self.samples[start : start + batch_size]
            images = torch.stack([read_image(self.transform, Path(path)) for path, _ in chunk])
            yield images, torch.tensor([label for _, label in chunk], dtype=torch.long)

    def drop_unreadable(self, workers: int = 0) -> list[tuple[Path, str]]:
        """Read every image once and leave out those that cannot be read; returns ``(path, reason)`` of each.

        For a folder with a few bad files (truncated downloads, text files named ``.jpg``) that
        should not stop a whole pass; it costs one extra read of the folder (``workers``
        processes share it). Class names and labels stay as they are. Nothing readable left is
        an error.

        Example:
            >>> import tempfile, numpy as np
            >>> from camscope.viz.figures import save_image
            >>> root = Path(tempfile.mkdtemp())
            >>> _ = save_image(root / "good.png", np.zeros((8, 8, 3)))
            >>> _ = (root / "bad.png").write_text("not an image")
            >>> data = ImageFolderData(root, size=8)
            >>> [(path.name, "cannot" in reason) for path, reason in data.drop_unreadable()], len(data)
            ([('bad.png', True)], 1)
        """
        from torch.utils.data import DataLoader

        checks: DataLoader[tuple[int, str]] = DataLoader(
            _Readability(self.samples, self.transform), batch_size=None, num_workers=workers
        )
        bad = {index: reason for index, reason in checks if reason}
        skipped = [(Path(self.samples[index][0]), reason) for index, reason in sorted(bad.items())]
        kept = [sample for index, sample in enumerate(self.samples) if index not in bad]
        if not kept:
            raise CamscopeError(f"none of the {len(self.samples)} images in {self.root} can be read")
        self.samples = kept
        return skipped


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

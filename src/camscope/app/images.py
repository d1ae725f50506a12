"""The images the explorer can explain: the bundled photos, a data folder, uploads.

An image is named by a reference string:

* ``photo:NAME``: a bundled photo (:func:`camscope.models.sample_images`);
* ``data:RELATIVE/PATH``: a file inside the ``--data`` folder. Only regular image
  files whose *resolved* path lies inside the resolved folder are ever read: absolute
  paths, ``..`` components and symbolic links that lead out of the folder are refused
  (:func:`safe_data_path`), and the listing skips them;
* ``upload:ID``: an uploaded file, decoded once with Pillow (:func:`decode_upload`) and kept
  in memory (the most recent ``max_uploads``).

Example:
    >>> store = ImageStore()
    >>> store.rgb("photo:chelsea").shape
    (300, 451, 3)
"""

from __future__ import annotations

import io
import os
import secrets
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from camscope.data.folders import IMAGE_SUFFIXES
from camscope.errors import CamscopeError

__all__ = ["MAX_PIXELS", "MAX_UPLOAD_BYTES", "ImageStore", "decode_upload", "safe_data_path"]

#: Largest upload accepted, in bytes.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Largest decoded image accepted, in pixels (width x height): refuses decompression bombs.
MAX_PIXELS = 40_000_000
#: Most files listed from a data folder.
MAX_LISTED = 2000


def decode_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded image file into an ``[H, W, 3]`` ``uint8`` RGB array, refusing what is not a sane image.

    The size is checked before decoding, the pixel count from the header before the pixels are
    decoded, and any decoding error (a text file named ``.png``, a truncated file) becomes a
    :class:`CamscopeError` that says what was wrong.

    Example:
        >>> decode_upload(b"hello")
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: the upload is not an image that can be read (PNG, JPEG, ...): cannot identify image file; choose an image file
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise CamscopeError("the upload is empty: choose an image file")
    if len(data) > max_bytes:
        raise CamscopeError(
            f"the upload is {len(data) / 1e6:.1f} MB, more than the limit of {max_bytes / 1e6:.1f} MB: "
            "choose a smaller image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise CamscopeError(
                        f"the image has {width}x{height} pixels, more than the limit of {max_pixels / 1e6:.0f} "
                        "megapixels: choose a smaller image"
                    )
                image.draft("RGB", (4096, 4096))  # JPEGs decode at a reduced size when huge
                rgb = np.asarray(image.convert("RGB"))
    except CamscopeError:
        raise
    except UnidentifiedImageError:
        raise CamscopeError(
            "the upload is not an image that can be read (PNG, JPEG, ...): cannot identify image file; "
            "choose an image file"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise CamscopeError(
            f"the upload could not be decoded as an image ({type(error).__name__}: {error}); choose another file"
        ) from None
    if rgb.ndim != 3 or rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise CamscopeError(f"the image is too small ({rgb.shape[1]}x{rgb.shape[0]}): choose one of 8x8 pixels or more")
    return rgb


def safe_data_path(root: Path, relative: str) -> Path:
    """The file ``relative`` inside ``root``, refusing anything that would read outside it.

    Refused: absolute paths, ``..`` components, paths whose resolved location (after
    following symbolic links) is not inside the resolved ``root``, missing files, folders and
    files that are not images (by suffix).

    Example:
        >>> import tempfile
        >>> safe_data_path(Path(tempfile.mkdtemp()), "../etc/passwd")
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: refused data path '../etc/passwd': only files inside the data folder can be read
    """
    refused = CamscopeError(f"refused data path {relative!r}: only files inside the data folder can be read")
    if not relative or "\x00" in relative or "\\" in relative:
        raise refused
    candidate = Path(relative)
    if candidate.is_absolute() or any(part in ("..", "") for part in candidate.parts) or candidate.drive:
        raise refused
    base = root.resolve()
    try:
        resolved = (base / candidate).resolve(strict=True)
    except (OSError, RuntimeError):
        raise CamscopeError(f"no such image in the data folder: {relative}") from None
    if not resolved.is_relative_to(base):
        raise refused
    if not resolved.is_file() or resolved.suffix.lower() not in IMAGE_SUFFIXES:
        raise CamscopeError(f"{relative} is not an image file ({', '.join(IMAGE_SUFFIXES)}) of the data folder")
    return resolved


def _listed(root: Path) -> list[str]:
    """Image files inside ``root`` (relative, sorted), without following links out of it."""
    base = root.resolve()
    found: list[str] = []
    for folder, subfolders, files in os.walk(base, followlinks=False):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                inside = path.resolve(strict=True).is_relative_to(base) and path.resolve().is_file()
            except (OSError, RuntimeError):
                inside = False
            if inside:
                found.append(path.relative_to(base).as_posix())
            if len(found) >= MAX_LISTED:
                return found
    return found


class ImageStore:
    """The bundled photos, the files of an allowed data folder, and uploads, by reference string.

    Args:
        data: the folder whose images may be read (None: no data folder).
        max_uploads: how many uploads are kept in memory (oldest forgotten first).
        max_upload_bytes: the upload size limit.
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | None = None,
        max_uploads: int = 32,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        from camscope.models import sample_images

        self.photos = sample_images()
        self.data = Path(data).resolve() if data is not None else None
        if self.data is not None and not self.data.is_dir():
            raise CamscopeError(f"--data must be a folder of images, got {data}")
        self.max_uploads = max_uploads
        self.max_upload_bytes = max_upload_bytes
        self.uploads: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def listing(self) -> dict[str, Any]:
        """What the page offers: the photos' names and the data folder's image files."""
        return {
            "photos": list(self.photos),
            "data": _listed(self.data) if self.data is not None else [],
            "data_folder": str(self.data) if self.data is not None else None,
        }

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        """Decode and keep an upload; returns its reference and size."""
        rgb = decode_upload(data, self.max_upload_bytes)
        key = secrets.token_hex(8)
        with self._lock:
            self.uploads[key] = (name, rgb)
            while len(self.uploads) > self.max_uploads:
                self.uploads.popitem(last=False)
        return {"image": f"upload:{key}", "name": name, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}

    def rgb(self, reference: str) -> np.ndarray:
        """The ``[H, W, 3]`` ``uint8`` image of a reference (a :class:`CamscopeError` when unknown or refused)."""
        kind, _, name = str(reference).partition(":")
        if kind == "photo" and name in self.photos:
            return self.photos[name]
        if kind == "upload":
            with self._lock:
                entry = self.uploads.get(name)
            if entry is None:
                raise CamscopeError("that upload is no longer kept on the server: upload the image again")
            return entry[1]
        if kind == "data":
            if self.data is None:
                raise CamscopeError("no data folder: start camscope serve with --data FOLDER")
            path = safe_data_path(self.data, name)
            try:
                return decode_upload(path.read_bytes(), max_bytes=1 << 62)
            except CamscopeError as error:
                raise CamscopeError(f"{name}: {error}".replace("the upload", "the file")) from None
        raise CamscopeError(
            f"unknown image {reference!r}: use photo:NAME ({', '.join(self.photos)}), data:PATH or upload:ID"
        )

    def label(self, reference: str) -> str:
        """A short name of the image for titles and file names."""
        kind, _, name = str(reference).partition(":")
        if kind == "upload":
            with self._lock:
                entry = self.uploads.get(name)
            return entry[0] if entry else "upload"
        return Path(name).name or str(reference)

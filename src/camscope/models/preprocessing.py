"""Image preprocessing: the data config of a model, image conversions, ``preprocess`` and ``load_image``.

Example:
    >>> import numpy as np
    >>> from camscope.models.preprocessing import load_image
    >>> x, rgb = load_image(np.zeros((300, 400, 3), dtype=np.uint8), size=224)
    >>> tuple(x.shape), rgb.shape
    ((1, 3, 224, 224), (224, 224, 3))
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from camscope.errors import CamscopeError, needs_extra
from camscope.models.efficientnet_lite0 import DEFAULT_MODEL, DEFAULT_MODEL_NAMES, TIMM_LITE0
from camscope.models.loading import ACCEPTED_FORMS, CAMSCOPE_PREFIX, TIMM_PREFIX, TORCHVISION_PREFIX

__all__ = ["DataConfig", "ImageInput", "Photo", "data_config", "load_image", "load_photo", "pil_to_rgb", "preprocess"]

# ImageNet statistics used by torchvision (and by most timm models).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """How images must be prepared for a model.

    Images are resized so that their shorter side is ``floor(size / crop_pct)``, center
    cropped to ``size`` x ``size``, scaled to [0, 1] and normalised with ``mean``/``std``.

    Attributes:
        mean: Per-channel RGB mean subtracted after scaling to [0, 1].
        std: Per-channel RGB standard deviation divided by.
        interpolation: Resize filter: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        crop_pct: Fraction of the resized shorter side kept by the center crop.
        input_size: The model's native input size (pixels).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    input_size: int = 224


def _config_from_timm_cfg(cfg: Any) -> DataConfig:
    """Make a :class:`DataConfig` from a timm ``PretrainedCfg`` or a resolved data-config dict.

    Args:
        cfg: ``timm.models.PretrainedCfg`` or dict with ``mean``, ``std``, ``interpolation``,
            ``crop_pct`` and ``input_size``.

    Returns:
        The data config.
    """
    get = cfg.get if isinstance(cfg, Mapping) else functools.partial(getattr, cfg)
    mean = tuple(float(v) for v in (get("mean", None) or _IMAGENET_MEAN))
    std = tuple(float(v) for v in (get("std", None) or _IMAGENET_STD))
    interpolation = get("interpolation", None) or "bicubic"
    if interpolation not in {"bicubic", "bilinear", "nearest"}:
        interpolation = "bicubic"
    crop_pct = float(get("crop_pct", None) or 0.875)
    input_size = get("input_size", None) or (3, 224, 224)
    return DataConfig(mean, std, interpolation, crop_pct, int(input_size[-1]))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def _data_config_for_name(name: str) -> DataConfig:
    """Data config of a model given by its :func:`load_model` name.

    Args:
        name: Model name as accepted by :func:`load_model`.

    Returns:
        The data config.
    """
    lowered = name.strip().lower()
    if lowered in DEFAULT_MODEL_NAMES:
        with needs_extra("photo", "the default photo model (efficientnet_lite0)"):
            from timm.models import get_pretrained_cfg

        return _config_from_timm_cfg(get_pretrained_cfg(TIMM_LITE0))
    if lowered.startswith(TIMM_PREFIX):
        with needs_extra("photo", "timm models"):
            from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name.strip()[len(TIMM_PREFIX) :].strip())
        if cfg is not None:
            return _config_from_timm_cfg(cfg)
        return DataConfig(_IMAGENET_MEAN, _IMAGENET_STD, "bicubic", 0.875, 224)
    if lowered.startswith(CAMSCOPE_PREFIX):  # the shipped scene models take [0, 1] images as they are
        from camscope.models.scene_zoo import scene_model_info

        size = int(scene_model_info(name.strip()[len(CAMSCOPE_PREFIX) :].strip())["input"]["size"])
        return DataConfig((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear", 1.0, size)
    if lowered.startswith(TORCHVISION_PREFIX):
        import torchvision

        try:
            arch = name.strip()[len(TORCHVISION_PREFIX) :].strip()
            transform = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
            crop = int(transform.crop_size[0])
            resize = int(transform.resize_size[0])
            return DataConfig(
                tuple(float(v) for v in transform.mean),  # type: ignore[arg-type]
                tuple(float(v) for v in transform.std),  # type: ignore[arg-type]
                str(transform.interpolation.value),
                crop / resize,
                crop,
            )
        except (ValueError, AttributeError, TypeError, IndexError):
            # an unknown or weightless architecture (ValueError), or weights whose transforms have no
            # crop (detection, segmentation, optical flow): the ImageNet defaults
            return DataConfig(_IMAGENET_MEAN, _IMAGENET_STD, "bilinear", 0.875, 224)
    raise CamscopeError(f"Unknown model {name!r}. Accepted forms: {ACCEPTED_FORMS}.")


def data_config(model: str | nn.Module = DEFAULT_MODEL) -> DataConfig:
    """Return the preprocessing (mean, std, interpolation, crop) a model expects.

    For the default model this is read from timm's pretrained config of
    ``tf_efficientnet_lite0``: mean = std = (0.5, 0.5, 0.5), bicubic, crop_pct 0.875.

    Args:
        model: A :func:`load_model` name, or a model instance (timm models carry a
            ``pretrained_cfg``; others get the ImageNet defaults).

    Returns:
        The data config.
    """
    if isinstance(model, str):
        return _data_config_for_name(model)
    if isinstance(getattr(model, "pretrained_cfg", None), Mapping):
        with needs_extra("photo", "timm models"):
            from timm.data import resolve_data_config

        return _config_from_timm_cfg(resolve_data_config({}, model=model))
    return DataConfig(_IMAGENET_MEAN, _IMAGENET_STD, "bilinear", 0.875, 224)


ImageInput = Image.Image | np.ndarray


def _array_to_pil(array: np.ndarray) -> Image.Image:
    """Convert an HxW, HxWx1, HxWx3 or HxWx4 array to an RGB PIL image.

    Args:
        array: ``uint8`` (0..255), ``bool``, other integers within 0..255, or floats in [0, 1].

    Returns:
        An RGB image.

    Raises:
        CamscopeError: On an unsupported shape, dtype or value range.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise CamscopeError(
            f"Image array must be HxW (grayscale), HxWx3 (RGB) or HxWx4 (RGBA), got shape {array.shape}."
        )
    if array.size == 0:
        raise CamscopeError(f"Image array is empty (shape {array.shape}).")
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise CamscopeError("Float image arrays must hold finite values in [0, 1]; use uint8 for 0..255.")
        data = np.rint(array * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise CamscopeError(
                f"Integer image arrays must hold values in 0..255, got {array.min()}..{array.max()} "
                f"(dtype {array.dtype}); rescale to uint8 first."
            )
        data = array.astype(np.uint8)
    else:
        raise CamscopeError(f"Unsupported image array dtype {array.dtype}: use uint8 (0..255) or float in [0, 1].")
    return Image.fromarray(np.ascontiguousarray(data)).convert("RGB")


def _scaled_values(image: Image.Image) -> np.ndarray:
    """The values of a single-band integer or float image (modes ``I;16*``, ``I``, ``F``) scaled to [0, 1].

    16-bit modes are divided by 65535. 32-bit integers (``I``, the mode Pillow gives some 16-bit
    files) within 0..65535 are too; other ranges, and floats outside [0, 1], are min-max scaled
    (a constant image gives zeros; NaN gives 0).
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        return values / 65535.0
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape)
    low, high = float(finite.min()), float(finite.max())
    if image.mode == "I" and low >= 0 and high <= 65535:
        return values / 65535.0
    if image.mode == "F" and low >= 0 and high <= 1:
        return np.nan_to_num(values, nan=0.0)
    span = high - low
    scaled = (values - low) / span if span > 0 else np.zeros(values.shape)
    return np.clip(np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """An RGB image with the real content of a PIL image of any mode Pillow opens.

    Pillow's own ``convert("RGB")`` clips 16- and 32-bit values at 255 (a 16-bit grayscale PNG
    becomes white); those modes are scaled to their range instead (see :func:`_scaled_values`).
    Palette images with transparency go through RGBA; alpha is dropped.

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> gray16 = Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16))
        >>> np.asarray(pil_to_rgb(gray16))[0, 0].tolist()
        [128, 128, 128]
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        gray = np.rint(_scaled_values(image) * 255.0).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(gray)).convert("RGB")
    if image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _to_pil_rgb(image: ImageInput) -> Image.Image:
    """Convert a PIL image or numpy array to an RGB PIL image (grayscale/RGBA -> RGB).

    Args:
        image: The image.

    Returns:
        An RGB image.
    """
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_pil(image)
    raise CamscopeError(f"Expected a PIL image or an HxWx3 uint8 numpy array, got {type(image).__name__}.")


@dataclass(frozen=True)
class Photo:
    """A whole photo as the model's preprocessing resized it, and where the model's square crop lies in it.

    Figures draw maps on the whole photo with the crop in its place (:func:`camscope.viz.overlay`
    accepts a ``Photo``), so that what the model did not see stays visible.

    Attributes:
        image: ``[H, W, 3]`` float32 RGB in [0, 1]: the photo with its shorter side resized to
            ``floor(size / crop_pct)`` (the step before the center crop).
        top: first row of the crop in ``image``.
        left: first column of the crop in ``image``.
        size: side of the crop.
    """

    image: np.ndarray
    top: int
    left: int
    size: int

    @property
    def crop(self) -> np.ndarray:
        """``[size, size, 3]``: the crop the model saw (un-normalised), as :func:`load_image` returns it."""
        return self.image[self.top : self.top + self.size, self.left : self.left + self.size]


def _prepare(image: ImageInput, size: int, config: DataConfig | None) -> tuple[torch.Tensor, Photo]:
    """Resize, crop, scale and normalise an image.

    Args:
        image: The image.
        size: Side of the square crop.
        config: Preprocessing; the default model's when ``None``.

    Returns:
        The normalised ``1x3xSxS`` tensor and the resized photo with the crop's place.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CamscopeError(f"Image size must be a positive integer, got {size!r}.")
    cfg = config if config is not None else data_config(DEFAULT_MODEL)
    pil = _to_pil_rgb(image)
    scale = math.floor(size / cfg.crop_pct)
    resized = TF.resize(pil, scale, interpolation=InterpolationMode(cfg.interpolation))
    if min(resized.size) < size:  # crop_pct > 1: center_crop pads, so the crop is the whole picture
        resized = TF.center_crop(resized, [size, size])
    # torchvision's center_crop offsets
    top, left = round((resized.height - size) / 2.0), round((resized.width - size) / 2.0)
    photo = Photo(np.asarray(resized, dtype=np.float32) / np.float32(255), top, left, size)
    scaled = torch.from_numpy(np.ascontiguousarray(photo.crop)).permute(2, 0, 1)
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(-1, 1, 1)
    tensor = scaled.sub(mean).div(std).unsqueeze(0)
    return tensor, photo


def preprocess(image: ImageInput, size: int = 224, *, config: DataConfig | None = None) -> torch.Tensor:
    """Turn an image into a normalised model input.

    The shorter side is resized to ``floor(size / crop_pct)`` (256 for 224) with the
    model's interpolation (bicubic for the default model), the center ``size`` x ``size``
    crop is taken, scaled to [0, 1] and normalised with the model's mean/std (0.5/0.5 for
    the default model). This matches timm's evaluation transform.

    Args:
        image: A PIL image or an HxWx3 ``uint8`` numpy array (HxW grayscale and HxWx4 RGBA
            are converted to RGB; float arrays in [0, 1] are accepted).
        size: Side of the square crop fed to the model.
        config: Preprocessing of another model (see :func:`data_config`); the default
            model's when ``None``.

    Returns:
        A float32 tensor of shape ``(1, 3, size, size)``.

    Raises:
        CamscopeError: On an unsupported image type, shape or dtype, or a bad size.
    """
    return _prepare(image, size, config)[0]


def _opened(path_or_array: str | os.PathLike[str] | ImageInput) -> ImageInput:
    """The image of a file (EXIF orientation applied), or the given image."""
    if not isinstance(path_or_array, (str, os.PathLike)):
        return path_or_array
    path = Path(path_or_array).expanduser()
    if not path.is_file():
        raise CamscopeError(f"Image file {str(path)!r} does not exist.")
    try:
        with Image.open(path) as opened:
            opened.load()
            return pil_to_rgb(ImageOps.exif_transpose(opened))
    except (UnidentifiedImageError, OSError) as exc:
        raise CamscopeError(f"Could not read {str(path)!r} as an image: {exc}") from exc


def load_image(
    path_or_array: str | os.PathLike[str] | ImageInput,
    size: int = 224,
    *,
    config: DataConfig | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Load an image and prepare it for the model and for display.

    Args:
        path_or_array: Path of an image file (EXIF orientation is applied), a PIL image
            or an HxWx3 ``uint8`` numpy array. Grayscale and RGBA images become RGB.
        size: Side of the square crop.
        config: Preprocessing of another model (see :func:`data_config`); the default
            model's when ``None``.

    Returns:
        ``(tensor, rgb)``: the normalised ``(1, 3, size, size)`` model input and the same
        crop, un-normalised, as a float32 ``(size, size, 3)`` RGB array in [0, 1] for overlays.

    Raises:
        CamscopeError: If the file is missing or not an image, or on an unsupported array.
    """
    tensor, photo = _prepare(_opened(path_or_array), size, config)
    return tensor, np.ascontiguousarray(photo.crop)


def load_photo(
    path_or_array: str | os.PathLike[str] | ImageInput,
    size: int = 224,
    *,
    config: DataConfig | None = None,
) -> tuple[torch.Tensor, Photo]:
    """Like :func:`load_image`, with the whole photo and the crop's place in it, for figures.

    Returns:
        ``(tensor, photo)``: the model input and a :class:`Photo` (``photo.crop`` is the
        ``rgb`` of :func:`load_image`).

    Example:
        >>> import numpy as np
        >>> x, photo = load_photo(np.zeros((300, 400, 3), dtype=np.uint8), size=224)
        >>> photo.image.shape, (photo.top, photo.left), photo.crop.shape
        ((256, 341, 3), (16, 58), (224, 224, 3))
    """
    return _prepare(_opened(path_or_array), size, config)

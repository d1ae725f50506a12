"""Bundled sample photos (offline): scikit-image's and matplotlib's sample pictures.

Example:
    >>> from camscope.models.photos import sample_image
    >>> sample_image("chelsea").shape
    (300, 451, 3)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image

from camscope.errors import CamscopeError, needs_extra, suggest

__all__ = ["sample_image", "sample_images"]


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    """Return a loader for a scikit-image sample image shipped inside the package.

    Args:
        name: Function name in ``skimage.data``.

    Returns:
        A function returning the image.
    """

    def load() -> np.ndarray:
        with needs_extra("photo", "the sample photos"):
            import skimage.data

        return np.asarray(getattr(skimage.data, name)())

    return load


def _motorcycle() -> np.ndarray:
    """Left view of scikit-image's stereo motorcycle pair (shipped in the package).

    Returns:
        The RGB image.
    """
    with needs_extra("photo", "the sample photos"):
        import skimage.data

    return np.asarray(skimage.data.stereo_motorcycle()[0])


def _grace_hopper() -> np.ndarray:
    """Matplotlib's bundled ``grace_hopper.jpg`` sample photo.

    Returns:
        The RGB image.
    """
    with needs_extra("plots", "the grace_hopper sample photo"):
        import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


_SAMPLES: dict[str, Callable[[], np.ndarray]] = {
    "chelsea": _skimage_loader("chelsea"),
    "astronaut": _skimage_loader("astronaut"),
    "coffee": _skimage_loader("coffee"),
    "rocket": _skimage_loader("rocket"),
    "motorcycle": _motorcycle,
    "grace_hopper": _grace_hopper,
}


def sample_image(name: str) -> np.ndarray:
    """Load one bundled sample photo by name (offline).

    Args:
        name: One of ``chelsea`` (a tabby cat), ``astronaut``, ``coffee``, ``rocket``,
            ``motorcycle`` or ``grace_hopper``.

    Returns:
        An HxWx3 ``uint8`` RGB array.

    Raises:
        CamscopeError: If the name is unknown.
    """
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in _SAMPLES:
        raise CamscopeError(
            f"Unknown sample image {name!r}; available: {', '.join(_SAMPLES)}.{suggest(str(key), list(_SAMPLES))}"
        )
    return _SAMPLES[key]()


def sample_images() -> dict[str, np.ndarray]:
    """Load all bundled sample photos (offline).

    Sources: scikit-image's ``chelsea``, ``astronaut``, ``coffee``, ``rocket`` and the left
    view of ``stereo_motorcycle`` (all shipped inside scikit-image, no download), and
    matplotlib's ``grace_hopper.jpg`` sample. A photo that cannot be loaded offline is
    skipped with a warning.

    Returns:
        A dict from name to HxWx3 ``uint8`` RGB array, in a fixed order.
    """
    images: dict[str, np.ndarray] = {}
    for name, loader in _SAMPLES.items():
        try:
            images[name] = loader()
        except (ImportError, OSError, ValueError) as exc:  # a missing package, a download without network, a bad file
            warnings.warn(f"camscope: sample image {name!r} is unavailable offline: {exc}", stacklevel=2)
    return images

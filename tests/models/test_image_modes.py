"""Every image mode Pillow opens loads with its real content (16-bit grayscale is not a white image)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from camscope.errors import CamscopeError
from camscope.models.preprocessing import DataConfig, load_image, load_photo

SIDE = 16
# Identity preprocessing: no resize (crop_pct 1, nearest), no normalisation.
IDENTITY = DataConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="nearest", crop_pct=1.0)


def _raw(array: np.ndarray, mode: str) -> Image.Image:
    """An 8-bit-per-band image of ``mode`` from the raw bytes of ``array``."""
    return Image.frombytes(mode, (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())


def _gray(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def _ramp(high: float, dtype: type) -> np.ndarray:
    return np.linspace(0, high, SIDE * SIDE).reshape(SIDE, SIDE).astype(dtype)


def _palette_image(transparency: bool) -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    indices = rng.integers(0, 256, size=(SIDE, SIDE), dtype=np.uint8)
    image = _raw(indices, "P")
    image.putpalette(palette.reshape(-1).tolist())
    if transparency:
        image.info["transparency"] = int(indices[0, 0])
    return image, palette[indices] / 255.0


def _cases() -> dict[str, tuple[Image.Image, str, np.ndarray]]:
    """Mode name -> (image, file format, reference RGB in [0, 1] computed from the raw values)."""
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, size=(SIDE, SIDE)).astype(bool)
    gray8 = _ramp(255, np.uint8)
    gray16 = _ramp(65535, np.uint16)
    int32 = _ramp(65535, np.int32)
    int32_wide = _ramp(200000, np.int32) - 100000
    float01 = _ramp(1.0, np.float32)
    float_wide = _ramp(300.0, np.float32) - 50.0
    rgba = rng.integers(0, 256, size=(SIDE, SIDE, 4), dtype=np.uint8)
    la = rng.integers(0, 256, size=(SIDE, SIDE, 2), dtype=np.uint8)
    cmyk = rng.integers(0, 128, size=(SIDE, SIDE, 4), dtype=np.uint8)
    palette, palette_rgb = _palette_image(False)
    palette_t, palette_t_rgb = _palette_image(True)
    wide = int32_wide.astype(np.float64)
    return {
        "1": (Image.fromarray(bits).convert("1"), "PNG", _gray(bits.astype(np.float64))),
        "L": (_raw(gray8, "L"), "PNG", _gray(gray8 / 255.0)),
        "I;16": (Image.fromarray(gray16), "PNG", _gray(gray16 / 65535.0)),
        "I": (Image.fromarray(int32), "TIFF", _gray(int32 / 65535.0)),
        "I-wide": (Image.fromarray(int32_wide), "TIFF", _gray((wide - wide.min()) / (wide.max() - wide.min()))),
        "F": (Image.fromarray(float01), "TIFF", _gray(float01.astype(np.float64))),
        "F-wide": (
            Image.fromarray(float_wide),
            "TIFF",
            _gray((float_wide - float_wide.min()) / (float_wide.max() - float_wide.min())),
        ),
        "P": (palette, "PNG", palette_rgb),
        "P-transparency": (palette_t, "PNG", palette_t_rgb),
        "LA": (_raw(la, "LA"), "PNG", _gray(la[..., 0] / 255.0)),
        "RGBA": (_raw(rgba, "RGBA"), "PNG", rgba[..., :3] / 255.0),
        # CMYK -> RGB: R = (1 - C) (1 - K), and so on.
        "CMYK": (_raw(cmyk, "CMYK"), "TIFF", (1 - cmyk[..., :3] / 255.0) * (1 - cmyk[..., 3:] / 255.0)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_every_mode_loads_with_its_real_content(name, tmp_path):
    image, file_format, reference = CASES[name]
    path = tmp_path / f"image.{file_format.lower()}"
    image.save(path, format=file_format)
    with Image.open(path) as reopened:
        assert reopened.mode.split(";")[0] == image.mode.split(";")[0], "the file keeps the mode under test"
    x, rgb = load_image(path, size=SIDE, config=IDENTITY)
    assert rgb.shape == (SIDE, SIDE, 3)
    np.testing.assert_allclose(rgb, reference, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), rgb, atol=1e-6)
    np.testing.assert_array_equal(load_photo(path, size=SIDE, config=IDENTITY)[1].crop, rgb)  # figures see the same


def test_a_16_bit_grayscale_png_is_not_blank(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(_ramp(65535, np.uint16)).save(path)
    _, rgb = load_image(path, size=SIDE, config=IDENTITY)
    assert rgb.min() == 0.0 and rgb.max() == 1.0 and len(np.unique(rgb)) > 100


def test_pil_images_of_any_mode_are_accepted_directly():
    image, _, reference = CASES["I;16"]
    _, rgb = load_image(image, size=SIDE, config=IDENTITY)
    np.testing.assert_allclose(rgb, reference, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("loader", [load_image, load_photo])
def test_a_truncated_or_empty_file_is_a_clear_error(loader, tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_ramp(255, np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CamscopeError, match=r"Could not read .*cut\.png.* as an image"):
        loader(path, size=SIDE, config=IDENTITY)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CamscopeError, match="as an image"):
        loader(tmp_path / "empty.png", size=SIDE, config=IDENTITY)

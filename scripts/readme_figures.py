"""Regenerate the README's comparison figures from the CLI's own labelled figures.

Run from the repository root: ``python scripts/readme_figures.py``. It writes the bundled photos to a
temporary folder, runs ``camscope explain`` as a user would, and stores the figures as JPEG in
``docs/images/``:

* ``chelsea_compare.jpg``: ``explain camscope-out/demo/photos/chelsea.png --method gradcam,finer-gradcam,diffcam
  --reference folder:camscope-out/demo/photos`` (Grad-CAM, Finer-CAM against the similar cats, DiffCAM against
  the photos);
* ``chelsea_finer.jpg``: ``explain chelsea.png --method finer-gradcam`` (the Finer figure);
* ``overview.jpg``: ``camscope demo``'s ``overview.png`` (the comparisons on every bundled photo).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

from camscope.cli.app import main
from camscope.models import sample_images
from camscope.viz.figures import save_image

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"

FIGURES = {
    "chelsea_compare.jpg": [
        "--method",
        "gradcam,finer-gradcam,diffcam",
        "--reference",
        "folder:camscope-out/demo/photos",
    ],
    "chelsea_finer.jpg": ["--method", "finer-gradcam"],
}


def regenerate(target: Path = IMAGES) -> list[Path]:
    """Run the commands (in a temporary folder laid out as ``make demo`` leaves it) and write the JPEGs."""
    written = []
    target = target.resolve()
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        try:
            for name, rgb in sample_images().items():
                save_image(Path("camscope-out/demo/photos") / f"{name}.png", rgb / 255.0)
            for figure, options in FIGURES.items():
                argv = ["explain", "camscope-out/demo/photos/chelsea.png", *options, "--out", figure]
                if main(argv) != 0:
                    raise SystemExit(f"camscope {' '.join(argv)} failed")
                (png,) = sorted(Path(figure).glob("*.png"))
                Image.open(png).convert("RGB").save(target / figure, quality=88, optimize=True)
                written.append(target / figure)
            if main(["demo", "--out", "demo"]) != 0:
                raise SystemExit("camscope demo failed")
            Image.open("demo/overview.png").convert("RGB").save(target / "overview.jpg", quality=88, optimize=True)
            written.append(target / "overview.jpg")
        finally:
            os.chdir(here)
    return written


if __name__ == "__main__":
    for path in regenerate(Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES):
        print(f"wrote {path}")

"""Regenerate the README's figures from the CLI's own figures, and print the numbers their captions quote.

Run from the repository root: ``python scripts/readme_figures.py``. It runs ``camscope demo`` and
``camscope explain`` as a user would, in a temporary folder laid out as ``make demo`` leaves it, and
stores the figures as JPEG in ``docs/images/``:

* ``chelsea_compare.jpg``: ``camscope demo``'s ``chelsea.png__compare.png`` (every comparison of chelsea:
  Finer-CAM against the next classes, why tiger cat and not Egyptian cat and back, DiffCAM against the
  other photos; each with its base map and what it changed);
* ``overview.jpg``: ``camscope demo``'s ``overview.png`` (the comparisons on every bundled photo);
* ``chelsea_finer.jpg``: ``explain camscope-out/demo/photos/chelsea.png --method finer-gradcam`` (the Finer figure).

The shares of the map's mass that each comparison moved (and removed) are ``camscope demo``'s
``comparisons.json``; they are printed for the captions.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

from camscope.cli.app import main

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"

#: README image -> the demo's figure it is made from.
FROM_DEMO = {"chelsea_compare.jpg": "chelsea.png__compare.png", "overview.jpg": "overview.png"}

#: README image -> the options of ``camscope explain`` on chelsea.
FROM_EXPLAIN = {"chelsea_finer.jpg": ["--method", "finer-gradcam"]}


def _jpeg(png: Path, target: Path) -> Path:
    Image.open(png).convert("RGB").save(target, quality=85, optimize=True)
    return target


def regenerate(target: Path = IMAGES) -> tuple[list[Path], dict[str, object]]:
    """Run the commands and write the JPEGs; return them and the demo's measured numbers."""
    written = []
    target = target.resolve()
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        try:
            if main(["demo", "--out", "camscope-out/demo"]) != 0:
                raise SystemExit("camscope demo failed")
            demo = Path("camscope-out/demo")
            written += [_jpeg(demo / figure, target / name) for name, figure in FROM_DEMO.items()]
            for name, options in FROM_EXPLAIN.items():
                argv = ["explain", "camscope-out/demo/photos/chelsea.png", *options, "--out", name]
                if main(argv) != 0:
                    raise SystemExit(f"camscope {' '.join(argv)} failed")
                (png,) = sorted(Path(name).glob("*.png"))
                written.append(_jpeg(png, target / name))
            numbers = json.loads((demo / "comparisons.json").read_text())
        finally:
            os.chdir(here)
    return written, numbers


if __name__ == "__main__":
    paths, measured = regenerate(Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES)
    for path in paths:
        print(f"wrote {path}")
    print(json.dumps(measured, indent=1))

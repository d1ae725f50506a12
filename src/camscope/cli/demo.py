"""``camscope demo``: explain the bundled photos with the default model and every gradient method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

__all__ = ["DEMO_METHODS", "demo", "run_demo"]

#: The methods shown side by side.
DEMO_METHODS = ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "smoothgradcampp")


def run_demo(out: str | Path, methods: tuple[str, ...] = DEMO_METHODS) -> list[Path]:
    """Explain every bundled photo; write one figure per photo, an overview image, and the photos.

    The photos go to ``out/photos/NAME.png`` as they ship (full resolution), so that
    the README's examples have real files to work on.

    Returns:
        The written files, the overview last.
    """
    import camscope
    from camscope.models import imagenet_classes, load_image, load_model, sample_images
    from camscope.viz.figures import explanation_figure, overlay, save_figure, save_image

    out = Path(out)
    model = load_model()
    photos = sample_images()
    loaded = {name: load_image(array) for name, array in photos.items()}
    batch = torch.cat([tensor for tensor, _ in loaded.values()])
    names = imagenet_classes()
    explanations = {}
    for method in methods:
        options: dict[str, Any] = {"generator": torch.Generator().manual_seed(0)} if method == "smoothgradcampp" else {}
        explanations[method] = camscope.explain(model, batch, method=method, **options)
    probabilities = explanations[methods[0]].logits.softmax(dim=1)
    top = probabilities.topk(5, dim=1)
    written = [save_image(out / "photos" / f"{name}.png", array) for name, array in photos.items()]
    for index, (name, (_, rgb)) in enumerate(loaded.items()):
        predictions = [(names[int(i)], float(p)) for p, i in zip(top.values[index], top.indices[index])]
        figure = explanation_figure(rgb, {m: e.maps[index] for m, e in explanations.items()}, predictions, title=name)
        written.append(save_figure(out / f"{name}.png", figure))
    rows = [
        np.concatenate([rgb] + [overlay(rgb, explanations[m].maps[i]) for m in methods], axis=1)
        for i, (_, rgb) in enumerate(loaded.values())
    ]
    written.append(save_image(out / "overview.png", np.concatenate(rows, axis=0)))
    return written


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("camscope-out"),
) -> None:
    """Explain the bundled photos with the default model and every gradient method."""
    written = run_demo(out)
    typer.echo(f"camscope demo: wrote {len(written)} files (figures, overview, photos/) to {out.resolve()}")
    for path in written:
        typer.echo(f"  {path}")

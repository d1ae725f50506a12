"""``camscope demo``: explain the bundled photos with the default model and every gradient method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from camscope.cli.outputs import OverwriteOption

__all__ = ["DEMO_METHODS", "demo", "run_demo"]

#: The methods shown side by side.
DEMO_METHODS = ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "smoothgradcampp")


def run_demo(out: str | Path, methods: tuple[str, ...] = DEMO_METHODS, overwrite: bool = False) -> list[Path]:
    """Explain every bundled photo; write one figure per photo, an overview figure, and the photos.

    The photos go to ``out/photos/NAME.png`` as they ship (full resolution), so that
    the README's examples have real files to work on; the figures are named like those of
    ``camscope explain`` on those photos (``NAME.png__cam+gradcam+....png``), the overview
    ``overview__cam+gradcam+....png``. Existing files are replaced only with ``overwrite``.

    Returns:
        The written files, the overview last.
    """
    import camscope
    from camscope.cli.outputs import claim_outputs, output_name
    from camscope.models import imagenet_classes, load_image, load_model, sample_images
    from camscope.viz.figures import explanation_figure, save_figure, save_image

    out = Path(out)
    photos = sample_images()
    photo_files = {name: out / "photos" / f"{name}.png" for name in photos}
    figure_files = {name: out / output_name(f"{name}.png", list(methods)) for name in photos}
    overview_file = out / output_name("overview", list(methods))
    claim_outputs([*photo_files.values(), *figure_files.values(), overview_file], overwrite)
    model = load_model()
    loaded = {name: load_image(array) for name, array in photos.items()}
    batch = torch.cat([tensor for tensor, _ in loaded.values()])
    names = imagenet_classes()
    explanations = {}
    for method in methods:
        options: dict[str, Any] = {"generator": torch.Generator().manual_seed(0)} if method == "smoothgradcampp" else {}
        explanations[method] = camscope.explain(model, batch, method=method, **options)
    probabilities = explanations[methods[0]].logits.softmax(dim=1)
    top = probabilities.topk(5, dim=1)
    written = [save_image(photo_files[name], array) for name, array in photos.items()]
    for index, (name, (_, rgb)) in enumerate(loaded.items()):
        predictions = [(names[int(i)], float(p)) for p, i in zip(top.values[index], top.indices[index])]
        c = int(top.indices[index, 0])  # the predicted class is the explained one
        figure = explanation_figure(
            rgb,
            {m: e.maps[index] for m, e in explanations.items()},
            predictions,
            title=name,
            explained=f"{names[c][:24]} {float(probabilities[index, c]) * 100:.1f}%",
            layer=str(explanations[methods[0]].layer),
        )
        written.append(save_figure(figure_files[name], figure))
    labels = [
        f"{name}\n{names[int(c)][:18]} {float(probabilities[i, c]) * 100:.0f}%"
        for i, (name, c) in enumerate(zip(loaded, explanations[methods[0]].logits.argmax(dim=1)))
    ]
    rgbs = [rgb for _, rgb in loaded.values()]
    figure = overview_figure(rgbs, {m: explanations[m].maps for m in methods}, labels)
    written.append(save_figure(overview_file, figure, dpi=80))
    return written


def overview_figure(images: list[np.ndarray], maps: dict[str, torch.Tensor], row_labels: list[str]) -> Any:
    """Rows: the images (labelled with their name and explained class); columns: the input and one overlay per method."""
    from camscope.viz.figures import colorbar, new_figure, overlay

    columns = 1 + len(maps)
    figure = new_figure((1.9 * columns + 0.8, 1.9 * len(images) + 0.4))
    axes = figure.subplots(len(images), columns, squeeze=False)
    for row, (rgb, label) in enumerate(zip(images, row_labels)):
        axes[row][0].imshow(rgb)
        axes[row][0].set_ylabel(label, fontsize=7)
        for column, cam in enumerate(maps.values(), start=1):
            axes[row][column].imshow(overlay(rgb, cam[row]))
    for column, title in enumerate(["input", *maps]):
        axes[0][column].set_title(title, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    colorbar(figure, list(axes.flat), label="map value (each map min-max scaled per image)")
    return figure


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("camscope-out"),
    overwrite: OverwriteOption = False,
) -> None:
    """Explain the bundled photos with the default model and every gradient method.

    Writes photos/NAME.png, NAME.png__METHODS.png (one figure per photo) and overview__METHODS.png.
    """
    written = run_demo(out, overwrite=overwrite)
    typer.echo(f"camscope demo: wrote {len(written)} files (figures, overview, photos/) to {out.resolve()}")
    for path in written:
        typer.echo(f"  {path}")

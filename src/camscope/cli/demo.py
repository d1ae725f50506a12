"""``camscope demo``: the bundled photos explained by the default model: the comparisons first, then the classic family.

``overview.png`` shows, per photo, Grad-CAM, Finer-CAM against the model's next classes, DiffCAM
against the other photos and an S-CAM on a scale fitted over the photos (integrated feature
analysis of the six photos); ``overview__METHODS.png`` the classic family side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.cli.outputs import OverwriteOption

if TYPE_CHECKING:
    import torch

    from camscope.viz.figures import Picture

__all__ = ["DEMO_METHODS", "comparison_columns", "demo", "run_demo"]

#: The methods shown side by side.
DEMO_METHODS = ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "smoothgradcampp")


def run_demo(out: str | Path, methods: tuple[str, ...] = DEMO_METHODS, overwrite: bool = False) -> list[Path]:
    """Explain every bundled photo; write one figure per photo, two overview figures, and the photos.

    The photos go to ``out/photos/NAME.png`` as they ship (full resolution), so that
    the README's examples have real files to work on; the figures are named like those of
    ``camscope explain`` on those photos (``NAME.png__cam+gradcam+....png``), the classic
    family's overview ``overview__cam+gradcam+....png`` and the comparisons' overview
    ``overview.png`` (:func:`comparison_columns`). Existing files are replaced only with ``overwrite``.

    Returns:
        The written files, the comparisons' overview last.
    """
    import torch

    import camscope
    from camscope.cli.outputs import claim_outputs, output_name
    from camscope.models import imagenet_classes, load_model, load_photo, sample_images
    from camscope.viz.figures import explanation_figure, save_figure, save_image
    from camscope.viz.overview import overview_grid

    out = Path(out)
    photos = sample_images()
    photo_files = {name: out / "photos" / f"{name}.png" for name in photos}
    figure_files = {name: out / output_name(f"{name}.png", list(methods)) for name in photos}
    overview_file = out / output_name("overview", list(methods))
    comparison_file = out / "overview.png"
    claim_outputs([*photo_files.values(), *figure_files.values(), overview_file, comparison_file], overwrite)
    model = load_model()
    loaded = {name: load_photo(array) for name, array in photos.items()}
    batch = torch.cat([tensor for tensor, _ in loaded.values()])
    names = imagenet_classes()
    explanations = {}
    for method in methods:
        options: dict[str, Any] = {"generator": torch.Generator().manual_seed(0)} if method == "smoothgradcampp" else {}
        explanations[method] = camscope.explain(model, batch, method=method, **options)
    probabilities = explanations[methods[0]].logits.softmax(dim=1)
    top = probabilities.topk(5, dim=1)
    written = [save_image(photo_files[name], array) for name, array in photos.items()]
    for index, (name, (_, photo)) in enumerate(loaded.items()):
        predictions = [(names[int(i)], float(p)) for p, i in zip(top.values[index], top.indices[index])]
        c = int(top.indices[index, 0])  # the predicted class is the explained one
        figure = explanation_figure(
            photo,
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
    shown = [photo for _, photo in loaded.values()]
    figure = overview_figure(shown, {m: explanations[m].maps for m in methods}, labels)
    written.append(save_figure(overview_file, figure, dpi=80))
    columns = comparison_columns(model, batch, names)
    figure = overview_grid(shown, columns, list(loaded))
    written.append(save_figure(comparison_file, figure, dpi=80))
    return written


def comparison_columns(model: torch.nn.Module, batch: torch.Tensor, names: list[str]) -> list[Any]:
    """The comparisons of the overview, each cell captioned with what it explains.

    * Grad-CAM of the predicted class (its probability);
    * Finer-CAM (``finer-gradcam``, gamma 0.6) of the predicted class against the model's next three classes;
    * DiffCAM of each photo against the other photos (one reference group per photo);
    * S-CAM (Grad-CAM on the common ``tanh`` scale of an integrated feature analysis of the
      photos themselves, the paper's 10th and 90th percentiles mapped to 0.1 and 0.9), signed.
    """
    import torch

    import camscope
    from camscope.viz.overview import OverviewColumn

    gradcam = camscope.explain(model, batch, method="gradcam")
    probabilities = gradcam.logits.softmax(dim=1)
    predicted = gradcam.logits.argmax(dim=1)

    def named(c: int, i: int) -> str:
        return f"{names[c][:16]} {float(probabilities[i, c]) * 100:.0f}%"

    finer = camscope.explain(model, batch, method="finer-gradcam")
    target = finer.targets
    references = target.references() if isinstance(target, camscope.Finer) else None
    assert references is not None  # a finer-* method explains a Finer target
    diffcam = torch.cat(
        [
            camscope.explain(
                model, batch[i : i + 1], method="diffcam", reference=torch.cat([batch[:i], batch[i + 1 :]])
            ).maps
            for i in range(batch.shape[0])
        ]
    )
    analysis = camscope.analyze(model, batch, method="gradcam", progress=False)
    scaled = camscope.explain(model, batch, method="gradcam", scale=analysis)
    rows = range(batch.shape[0])
    return [
        OverviewColumn("Grad-CAM\nof the predicted class", gradcam.maps, [named(int(predicted[i]), i) for i in rows]),
        OverviewColumn(
            "Finer-CAM\nvs the next classes",
            finer.maps,
            ["vs " + ", ".join(names[int(d)][:14] for d in references[i]) for i in rows],
        ),
        OverviewColumn(
            "DiffCAM\nvs the other photos", diffcam, [f"vs the {batch.shape[0] - 1} other photos" for _ in rows]
        ),
        OverviewColumn(
            "S-CAM\non the photos' scale", scaled.maps, [named(int(predicted[i]), i) for i in rows], signed=True
        ),
    ]


def overview_figure(images: Sequence[Picture], maps: dict[str, torch.Tensor], row_labels: list[str]) -> Any:
    """Rows: the images (labelled with their name and explained class); columns: the input and one overlay per method."""
    from camscope.viz.figures import colorbar, framed, new_figure, overlay

    columns = 1 + len(maps)
    figure = new_figure((1.9 * columns + 0.8, 1.9 * len(images) + 0.4))
    axes = figure.subplots(len(images), columns, squeeze=False)
    for row, (image, label) in enumerate(zip(images, row_labels)):
        axes[row][0].imshow(framed(image))
        axes[row][0].set_ylabel(label, fontsize=7)
        for column, cam in enumerate(maps.values(), start=1):
            axes[row][column].imshow(overlay(image, cam[row]))
    for column, title in enumerate(["input", *maps]):
        axes[0][column].set_title(title, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    colorbar(figure, list(axes.flat), label="map value (each map min-max scaled per image)")
    return figure


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("camscope-out/demo"),
    overwrite: OverwriteOption = False,
) -> None:
    """Explain the bundled photos with the default model: the comparisons, then every gradient method.

    Writes overview.png (Grad-CAM, Finer-CAM, DiffCAM and S-CAM per photo), overview__METHODS.png
    (the classic family), NAME.png__METHODS.png (one figure per photo) and photos/NAME.png.
    """
    written = run_demo(out, overwrite=overwrite)
    typer.echo(f"camscope demo: wrote {len(written)} files (figures, overview, photos/) to {out.resolve()}")
    for path in written:
        typer.echo(f"  {path}")

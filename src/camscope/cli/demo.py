"""``camscope demo``: the bundled photos explained by the default model: the comparisons first, then the classic family.

``overview.png`` shows, per photo, Grad-CAM, Finer-CAM against the model's next classes and what it
changed, DiffCAM against the other photos and what it changed, and S-CAMs of the predicted class and of
a class the model rejects, on a scale fitted over the photos (integrated feature analysis of the six
photos); ``pairs.png`` both directions of the pair the model hesitates between ("why c, not d" and "why
d, not c"); ``NAME.png__compare.png`` every comparison of one photo; ``comparisons.json`` the measured
numbers; ``overview__METHODS.png`` the classic family side by side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.cli.outputs import CmapOption, DpiOption, FormatOption, OverwriteOption, figure_style

if TYPE_CHECKING:  # the command line starts without torch and matplotlib: they are imported where used
    import torch

    from camscope.viz.compare import MassShift
    from camscope.viz.figures import Picture
    from camscope.viz.overview import Comparison, OverviewColumn
    from camscope.viz.style import FigureStyle

__all__ = [
    "DEMO_METHODS",
    "HESITATION",
    "Comparisons",
    "compare_photos",
    "comparison_columns",
    "demo",
    "pair_columns",
    "photo_comparisons",
    "run_demo",
]

#: The methods shown side by side.
DEMO_METHODS = ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "smoothgradcampp")

#: The model hesitates between its two top classes when the second is at least this share of the first.
HESITATION = 0.5


def run_demo(
    out: str | Path, methods: tuple[str, ...] = DEMO_METHODS, overwrite: bool = False, style: FigureStyle | None = None
) -> list[Path]:
    """Explain every bundled photo; write the comparisons' figures and numbers, one figure per photo, and the photos.

    The photos go to ``out/photos/NAME.png`` as they ship (full resolution), so that the README's
    examples have real files to work on; the figures are named like those of ``camscope explain``
    on those photos (``NAME.png__cam+gradcam+....png``, ``NAME.png__compare.png``), the classic
    family's overview ``overview__cam+gradcam+....png``, the comparisons' ``overview.png`` and
    ``pairs.png``, and their numbers ``comparisons.json``. Figures are saved in ``style``'s format.
    Existing files are replaced only with ``overwrite``.

    Returns:
        The written files, the comparisons' overview last.
    """
    import torch

    from camscope.cli.outputs import claim_outputs, output_name
    from camscope.models import imagenet_classes, load_model, load_photo, sample_images
    from camscope.viz.figures import save_image
    from camscope.viz.style import FigureStyle

    style = style or FigureStyle()
    out = Path(out)
    photos = sample_images()
    suffix = style.suffix
    files = {
        "photos": {name: out / "photos" / f"{name}.png" for name in photos},
        "figures": {name: out / output_name(f"{name}.png", list(methods), suffix=suffix) for name in photos},
        "compare": {name: out / output_name(f"{name}.png", "compare", suffix=suffix) for name in photos},
    }
    singles = {
        "overview": out / output_name("overview", list(methods), suffix=suffix),
        "numbers": out / "comparisons.json",
        "pairs": out / f"pairs{suffix}",
        "comparisons": out / f"overview{suffix}",
    }
    claim_outputs([path for group in files.values() for path in group.values()] + list(singles.values()), overwrite)
    model = load_model()
    loaded = {name: load_photo(array) for name, array in photos.items()}
    batch = torch.cat([tensor for tensor, _ in loaded.values()])
    shown = [photo for _, photo in loaded.values()]
    written = [save_image(files["photos"][name], array) for name, array in photos.items()]
    written += _classic_figures(
        model, batch, list(loaded), shown, methods, files["figures"], singles["overview"], style
    )
    found = compare_photos(model, batch, imagenet_classes(), list(loaded))
    written += _comparison_figures(found, shown, files["compare"], singles, style)
    return written


def _classic_figures(
    model: torch.nn.Module,
    batch: torch.Tensor,
    labels: list[str],
    shown: Sequence[Picture],
    methods: Sequence[str],
    files: dict[str, Path],
    overview_file: Path,
    style: FigureStyle,
) -> list[Path]:
    """One figure per photo with every method, and the classic family's overview."""
    import torch

    import camscope
    from camscope.models import imagenet_classes
    from camscope.viz.figures import explanation_figure, save_figure
    from camscope.viz.style import shorten

    names = imagenet_classes()
    explanations = {}
    for method in methods:
        options: dict[str, Any] = {"generator": torch.Generator().manual_seed(0)} if method == "smoothgradcampp" else {}
        explanations[method] = camscope.explain(model, batch, method=method, **options)
    first = explanations[methods[0]]
    probabilities = first.logits.softmax(dim=1)
    top = probabilities.topk(5, dim=1)
    written = []
    for index, name in enumerate(labels):
        predictions = [(names[int(i)], float(p)) for p, i in zip(top.values[index], top.indices[index])]
        c = int(top.indices[index, 0])  # the predicted class is the explained one
        figure = explanation_figure(
            shown[index],
            {m: e.maps[index] for m, e in explanations.items()},
            predictions,
            title=name,
            explained=f"{shorten(names[c], 24)} {float(probabilities[index, c]) * 100:.1f}%",
            layer=str(first.layer),
            model="efficientnet_lite0",
            style=style,
        )
        written.append(save_figure(files[name], figure, style=style))
    row_labels = [
        f"{name}\n{shorten(names[int(top.indices[i, 0])], 18)} {float(top.values[i, 0]) * 100:.0f}%"
        for i, name in enumerate(labels)
    ]
    maps = {m: e.maps for m, e in explanations.items()}
    figure = overview_figure(
        shown, maps, row_labels, style=style, heading=f"model efficientnet_lite0 | layer {first.layer}"
    )
    written.append(save_figure(overview_file, figure, style=style))
    return written


@dataclass
class Comparisons:
    """Everything the demo's comparison figures show, computed once (one row per photo).

    ``predicted`` and ``runner_up`` are the top two classes, ``rejected`` the class of another photo
    that this photo's model output rates least likely; ``shifts`` holds :class:`MassShift` of each
    comparison against its base map: ``finer`` (Finer-CAM vs Grad-CAM of c), ``diffcam`` (vs Grad-CAM of
    c), ``why`` (Finer-CAM c vs d against Grad-CAM of c) and ``why_not`` (Finer-CAM d vs c against Grad-CAM of d).
    """

    labels: list[str]
    names: list[str]
    layer: str
    probabilities: torch.Tensor
    predicted: torch.Tensor
    runner_up: torch.Tensor
    rejected: torch.Tensor
    references: torch.Tensor
    maps: dict[str, torch.Tensor]
    shifts: dict[str, MassShift]

    def named(self, cls: int, row: int) -> str:
        """A class with its probability on one photo: ``"tiger cat 39%"`` (``"<0.1%"`` when under 0.1%)."""
        from camscope.viz.style import shorten

        p = float(self.probabilities[row, cls]) * 100
        return f"{shorten(self.names[cls], 22)} {'<0.1' if p < 0.1 else f'{p:.0f}' if p >= 1 else f'{p:.1f}'}%"

    def hesitating(self) -> list[int]:
        """The photos whose runner-up class has at least :data:`HESITATION` of the top class's probability."""
        top = self.probabilities.gather(1, self.predicted[:, None])[:, 0]
        second = self.probabilities.gather(1, self.runner_up[:, None])[:, 0]
        return [i for i in range(len(self.labels)) if float(second[i]) >= HESITATION * float(top[i])]

    def numbers(self) -> dict[str, Any]:
        """The measured shares per photo, for ``comparisons.json``."""

        def share(shift: MassShift, field: str, row: int) -> float | None:
            value = getattr(shift, field)
            return None if value is None else round(float(value[row]), 4)

        return {
            label: {
                "predicted": self.named(int(self.predicted[i]), i),
                "runner_up": self.named(int(self.runner_up[i]), i),
                "rejected": self.named(int(self.rejected[i]), i),
                **{
                    key: {"moved": share(shift, "moved", i), "removed": share(shift, "removed", i)}
                    for key, shift in self.shifts.items()
                },
            }
            for i, label in enumerate(self.labels)
        }


def compare_photos(model: torch.nn.Module, batch: torch.Tensor, names: list[str], labels: list[str]) -> Comparisons:
    """The demo's comparisons of a batch of photos (at least two: DiffCAM compares each with the others).

    * Grad-CAM of the predicted class c, and Finer-CAM (``finer-gradcam``, gamma 0.6) against the next three classes;
    * both directions of the top pair: Finer-CAM of c against the runner-up d alone, and of d against c
      (gamma 0.6), each read against Grad-CAM of its own class;
    * DiffCAM of each photo against the other photos (one reference group per photo);
    * S-CAMs (Grad-CAM on the common ``tanh`` scale of an integrated feature analysis of the photos,
      the paper's 10th and 90th percentiles mapped to 0.1 and 0.9) of c and of a rejected class.
    """
    import torch

    import camscope
    from camscope.viz.compare import explanation_shift, mass_shift

    gradcam = camscope.explain(model, batch, method="gradcam")
    probabilities = gradcam.logits.softmax(dim=1)
    order = probabilities.argsort(dim=1, descending=True)
    c, d = order[:, 0], order[:, 1]
    finer = camscope.explain(model, batch, method="finer-gradcam")
    why = camscope.explain(
        model, batch, method="finer-gradcam", target=camscope.Finer(explained=c, references=d[:, None])
    )
    runner_up = camscope.explain(model, batch, method="gradcam", target=d)
    why_not = camscope.explain(
        model, batch, method="finer-gradcam", target=camscope.Finer(explained=d, references=c[:, None])
    )
    rows = range(batch.shape[0])
    others = [camscope.explain(model, batch[i : i + 1], method="diffcam", reference=_others(batch, i)) for i in rows]
    diffcam_raw, diffcam_maps = torch.cat([e.raw for e in others]), torch.cat([e.maps for e in others])
    rejected = torch.tensor(
        [min((int(c[j]) for j in rows if j != i), key=lambda k: float(probabilities[i, k])) for i in rows]
    )
    analysis = camscope.analyze(model, batch, method="gradcam", progress=False)
    scaled = camscope.explain(model, batch, method="gradcam", scale=analysis)
    scaled_rejected = camscope.explain(model, batch, method="gradcam", scale=analysis, target=rejected)
    references = finer.targets.references() if isinstance(finer.targets, camscope.Finer) else None
    assert references is not None  # a finer-* method explains a Finer target
    shifts = {
        "finer": explanation_shift(gradcam, finer),
        "diffcam": mass_shift(gradcam.raw, diffcam_raw),
        "why": explanation_shift(gradcam, why),
        "why_not": explanation_shift(runner_up, why_not),
    }
    maps = {
        "gradcam": gradcam.maps,
        "finer": finer.maps,
        "diffcam": diffcam_maps,
        "why": why.maps,
        "runner_up": runner_up.maps,
        "why_not": why_not.maps,
        "scaled": scaled.maps,
        "scaled_rejected": scaled_rejected.maps,
    }
    maps.update({f"{key}_difference": shift.display(batch.shape[2:]) for key, shift in shifts.items()})
    return Comparisons(labels, names, str(gradcam.layer), probabilities, c, d, rejected, references, maps, shifts)


def _others(batch: torch.Tensor, i: int) -> torch.Tensor:
    import torch

    return torch.cat([batch[:i], batch[i + 1 :]])


def _moved(shift: MassShift, row: int) -> str:
    from camscope.viz.compare import percent

    text = f"moved {percent(float(shift.moved[row]))}"
    return text if shift.removed is None else f"{text}, removed {percent(float(shift.removed[row]))}"


def comparison_columns(found: Comparisons) -> list[OverviewColumn]:
    """The overview's columns: Grad-CAM, Finer-CAM and what it changed, DiffCAM and what it changed, two S-CAMs.

    The differences are captioned with the share of the map's mass that moved and, for Finer-CAM (in
    Grad-CAM's units), the share of Grad-CAM's evidence it removed (:mod:`camscope.viz.compare`).
    """
    from camscope.viz.overview import OverviewColumn

    rows = range(len(found.labels))
    maps, names = found.maps, found.names
    count = len(found.labels) - 1
    return [
        OverviewColumn(
            "Grad-CAM\nof the predicted class", maps["gradcam"], [found.named(int(found.predicted[i]), i) for i in rows]
        ),
        OverviewColumn(
            "Finer-CAM\nvs the next 3 classes",
            maps["finer"],
            [_versus([names[int(r)] for r in found.references[i]]) for i in rows],
        ),
        OverviewColumn(
            "what Finer-CAM changed\n(mass moved, removed)",
            maps["finer_difference"],
            [_moved(found.shifts["finer"], i) for i in rows],
            kind="difference",
        ),
        OverviewColumn(
            f"DiffCAM\nvs the {count} other photos", maps["diffcam"], [f"vs the {count} other photos" for _ in rows]
        ),
        OverviewColumn(
            "what DiffCAM changed\n(mass moved)",
            maps["diffcam_difference"],
            [_moved(found.shifts["diffcam"], i) for i in rows],
            kind="difference",
        ),
        OverviewColumn(
            "S-CAM of the\npredicted class",
            maps["scaled"],
            [found.named(int(found.predicted[i]), i) for i in rows],
            kind="signed",
        ),
        OverviewColumn(
            "S-CAM of a class\nthe model rejects",
            maps["scaled_rejected"],
            [found.named(int(found.rejected[i]), i) for i in rows],
            kind="signed",
        ),
    ]


def _versus(classes: Sequence[str], width: int = 28) -> str:
    from camscope.viz.style import wrap

    return wrap("vs " + ", ".join(classes), width)


def pair_columns(found: Comparisons, rows: Sequence[int]) -> list[OverviewColumn]:
    """Both directions of the top pair c, d of each photo in ``rows``: why c, not d; why d, not c; and what each changed."""
    from camscope.viz.overview import OverviewColumn

    maps = found.maps

    def pick(key: str) -> torch.Tensor:
        return maps[key][list(rows)]

    def captions(make: Any) -> list[str]:
        return [make(i) for i in rows]

    c, d, names = found.predicted, found.runner_up, found.names
    return [
        OverviewColumn("Grad-CAM\nof the top class c", pick("gradcam"), captions(lambda i: found.named(int(c[i]), i))),
        OverviewColumn("Finer-CAM:\nwhy c, not d", pick("why"), captions(lambda i: _versus([names[int(d[i])]]))),
        OverviewColumn(
            "what it changed\n(mass moved, removed)",
            pick("why_difference"),
            captions(lambda i: _moved(found.shifts["why"], i)),
            kind="difference",
        ),
        OverviewColumn(
            "Grad-CAM\nof the runner-up d", pick("runner_up"), captions(lambda i: found.named(int(d[i]), i))
        ),
        OverviewColumn("Finer-CAM:\nwhy d, not c", pick("why_not"), captions(lambda i: _versus([names[int(c[i])]]))),
        OverviewColumn(
            "what it changed\n(mass moved, removed)",
            pick("why_not_difference"),
            captions(lambda i: _moved(found.shifts["why_not"], i)),
            kind="difference",
        ),
    ]


def photo_comparisons(found: Comparisons, row: int) -> list[Comparison]:
    """Every comparison of one photo: Finer-CAM against the next classes, both directions of the top pair, DiffCAM."""
    from camscope.viz.overview import Comparison
    from camscope.viz.style import shorten, wrap

    names = found.names
    c, d = int(found.predicted[row]), int(found.runner_up[row])
    count = len(found.labels) - 1
    grad_c, grad_d = f"Grad-CAM: {found.named(c, row)}", f"Grad-CAM: {found.named(d, row)}"
    c_name, d_name = shorten(names[c], 18), shorten(names[d], 18)
    rows = [
        ("Finer-CAM\nvs the next 3 classes", "gradcam", grad_c, "finer",
         wrap("Finer-CAM vs " + ", ".join(names[int(r)] for r in found.references[row]), 30)),
        (f"why {c_name},\nnot {d_name}?", "gradcam", grad_c, "why", f"Finer-CAM: {c_name}\nvs {d_name}"),
        (f"why {d_name},\nnot {c_name}?", "runner_up", grad_d, "why_not", f"Finer-CAM: {d_name}\nvs {c_name}"),
        (f"DiffCAM\nvs the {count} other photos", "gradcam", grad_c, "diffcam", f"DiffCAM\nvs the {count} other photos"),
    ]  # fmt: skip
    return [
        Comparison(
            title, found.maps[base][row], base_caption, found.maps[key][row], caption, found.shifts[key].select(row),
            base_name="Grad-CAM",
        )
        for title, base, base_caption, key, caption in rows
    ]  # fmt: skip


def _comparison_figures(
    found: Comparisons, shown: Sequence[Picture], files: dict[str, Path], singles: dict[str, Path], style: FigureStyle
) -> list[Path]:
    """``NAME.png__compare.png`` per photo, ``pairs.png``, ``comparisons.json`` and ``overview.png`` (last)."""
    from camscope.io import atomic_write_bytes
    from camscope.viz.figures import save_figure
    from camscope.viz.overview import comparison_grid, overview_grid
    from camscope.viz.style import shorten

    heading = f"model efficientnet_lite0 | layer {found.layer}"
    written = []
    for row, label in enumerate(found.labels):
        figure = comparison_grid(shown[row], photo_comparisons(found, row), heading=f"{label}: {heading}", style=style)
        written.append(save_figure(files[label], figure, style=style))
    hesitating = found.hesitating() or list(range(len(found.labels)))
    pair_labels = [
        f"{found.labels[i]}\nc: {shorten(found.names[int(found.predicted[i])], 16)}\nd: {shorten(found.names[int(found.runner_up[i])], 16)}"
        for i in hesitating
    ]
    figure = overview_grid(
        [shown[i] for i in hesitating],
        pair_columns(found, hesitating),
        pair_labels,
        heading=heading + " | Finer-CAM gamma 0.6",
        style=style,
    )
    written.append(save_figure(singles["pairs"], figure, style=style))
    numbers = {"model": "efficientnet_lite0", "layer": found.layer, "photos": found.numbers()}
    written.append(atomic_write_bytes(singles["numbers"], (json.dumps(numbers, indent=1) + "\n").encode()))
    heading += " | Finer-CAM gamma 0.6 | S-CAMs on a scale fitted over the photos"
    figure = overview_grid(shown, comparison_columns(found), found.labels, heading=heading, style=style)
    written.append(save_figure(singles["comparisons"], figure, style=style))
    return written


def overview_figure(
    images: Sequence[Picture],
    maps: dict[str, torch.Tensor],
    row_labels: list[str],
    style: FigureStyle | None = None,
    heading: str = "model efficientnet_lite0",
) -> Any:
    """Rows: the images (labelled with their name and explained class); columns: the input and one overlay per method."""
    from camscope.viz.figures import map_title
    from camscope.viz.overview import OverviewColumn, overview_grid

    columns = [OverviewColumn(map_title(method), cams, [""] * len(images)) for method, cams in maps.items()]
    return overview_grid(images, columns, row_labels, heading=heading, style=style)


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("camscope-out/demo"),
    overwrite: OverwriteOption = False,
    fmt: FormatOption = "png",
    dpi: DpiOption = 100,
    cmap: CmapOption = None,
) -> None:
    """Explain the bundled photos with the default model: the comparisons, then every gradient method.

    Writes overview.png (per photo Grad-CAM, Finer-CAM and DiffCAM with what each changed, and S-CAMs),
    pairs.png (why c, not d, and back, where the model hesitates), NAME.png__compare.png,
    comparisons.json (the measured shares), overview__METHODS.png (the classic family),
    NAME.png__METHODS.png (one figure per photo) and photos/NAME.png.
    """
    written = run_demo(out, overwrite=overwrite, style=figure_style(fmt, dpi, cmap))
    typer.echo(f"camscope demo: wrote {len(written)} files (figures, overviews, numbers, photos/) to {out.resolve()}")
    for path in written:
        typer.echo(f"  {path}")

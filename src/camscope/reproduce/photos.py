"""Real photos: how much of Grad-CAM's map Finer-CAM moves, and where, for the classes a real model hesitates between.

The synthetic sections measure claims where the answer is known; this section is their
real-model counterpart, with numbers and no verdict (a photo has no mask of what tells two
ImageNet classes apart). The model is camscope's offline default, EfficientNet-Lite0 on
ImageNet (:func:`camscope.models.load_model`), the photos are the bundled ones
(:func:`camscope.models.sample_images`, prepared by :func:`camscope.models.load_photo`).

For every photo, the model *hesitates* between its top class ``c`` and each class ``d``
of its top 5 with probability at least :data:`HESITATION` (5%). For each such pair:
Grad-CAM of ``c`` and of ``d`` at the default layer, and Finer-CAM of ``c`` against ``d``
alone (gamma 0.6, the paper's default strength). With each map scaled to unit mass
(``P`` Grad-CAM of ``c``, ``Q`` Finer-CAM):

* **moved**: the share of the map's mass that Finer-CAM moves, ``(1/2) sum |P - Q|``
  (the total variation distance: 0 for the same map, 1 for disjoint maps);
* **centroid shift**: how far the mass-weighted centre moves, in pixels of the 224 px input;
* **where**: the mass of each map in four regions made of the two classes' Grad-CAM maps
  (each class's region: its top 20% pixels): both classes' region ("shared"), ``c``'s only,
  ``d``'s only, and elsewhere. Finer-CAM subtracts ``d``'s evidence, so mass leaving the
  shared and ``d``-only regions for ``c``-only is the comparison at work.

Example:
    >>> from camscope.reproduce import reproduce
    >>> report = reproduce("/tmp/report", sections=["photos"], quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import camscope
from camscope.reproduce.report import Context, Section, markdown_table

__all__ = ["HESITATION", "REGION", "PairResult", "mass_moved", "region_masses", "run"]

#: A class of the top 5 the model hesitates over: at least this probability.
HESITATION = 0.05
#: Each class's region: the top share of its Grad-CAM's pixels.
REGION = 0.2
_GAMMA = 0.6
_REGIONS = ("shared", "c only", "d only", "elsewhere")


def mass_moved(before: Tensor, after: Tensor) -> Tensor:
    """``[B]`` total variation distance ``(1/2) sum |P - Q|`` of maps ``[B, H, W]`` scaled to unit mass.

    A map that is zero everywhere counts as uniform.

    Example:
        >>> import torch
        >>> a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
        >>> b = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
        >>> mass_moved(a, b).tolist()
        [0.5]
    """
    return 0.5 * (_unit(before) - _unit(after)).abs().flatten(1).sum(dim=1)


def region_masses(maps: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """``[B, 4]`` mass of each unit-mass map in: both regions, the first only, the second only, neither.

    Example:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])
        >>> first = torch.tensor([[[True, True], [False, False]]])
        >>> second = torch.tensor([[[True, False], [True, False]]])
        >>> region_masses(maps, first, second).tolist()
        [[0.25, 0.25, 0.25, 0.25]]
    """
    unit = _unit(maps)
    regions = (first & second, first & ~second, ~first & second, ~first & ~second)
    return torch.stack([(unit * region).flatten(1).sum(dim=1) for region in regions], dim=1)


def _unit(maps: Tensor) -> Tensor:
    flat = maps.flatten(1).clamp(min=0).double()
    total = flat.sum(dim=1, keepdim=True)
    uniform = torch.full_like(flat, 1.0 / flat.shape[1])
    return torch.where(total > 0, flat / total.clamp(min=1e-30), uniform).view(maps.shape)


def _top_region(maps: Tensor, share: float = REGION) -> Tensor:
    flat = maps.flatten(1)
    count = max(1, round(share * flat.shape[1]))
    threshold = flat.topk(count, dim=1).values[:, -1:]
    return (flat >= threshold).view(maps.shape)


def _centroid(maps: Tensor) -> Tensor:
    unit = _unit(maps)
    h, w = maps.shape[-2:]
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    return torch.stack([(unit * xs).sum(dim=(1, 2)), (unit * ys).sum(dim=(1, 2))], dim=1)


@dataclass
class PairResult:
    """One photo and one pair of classes: probabilities, the maps and the numbers."""

    photo: str
    c: int
    d: int
    p_c: float
    p_d: float
    moved: float
    shift: float
    masses: dict[str, tuple[float, float]]  # region -> (Grad-CAM, Finer-CAM)
    maps: tuple[Tensor, Tensor, Tensor]  # Grad-CAM of c, of d, Finer-CAM of c vs d
    picture: Any


def _pairs(probabilities: Tensor) -> list[tuple[int, int, int]]:
    """``(photo index, c, d)`` for every photo and every top-5 class ``d`` at or above :data:`HESITATION`."""
    found = []
    top = probabilities.topk(5, dim=1)
    for i in range(probabilities.shape[0]):
        c = int(top.indices[i, 0])
        found += [(i, c, int(d)) for p, d in zip(top.values[i, 1:], top.indices[i, 1:]) if float(p) >= HESITATION]
    return found


def _measure(
    model: Any, batch: Tensor, probabilities: Tensor, names: list[str], pictures: list[Any]
) -> list[PairResult]:
    pairs = _pairs(probabilities)
    if not pairs:
        return []
    index = torch.tensor([i for i, _, _ in pairs])
    c = torch.tensor([c for _, c, _ in pairs])
    d = torch.tensor([d for _, _, d in pairs])
    images = batch[index]
    grad_c = camscope.explain(model, images, method="gradcam", target=c).maps.detach()
    grad_d = camscope.explain(model, images, method="gradcam", target=d).maps.detach()
    finer = camscope.explain(
        model, images, method="gradcam", target=camscope.Finer(explained=c, references=d[:, None], gamma=_GAMMA)
    ).maps.detach()
    moved = mass_moved(grad_c, finer)
    shift = (_centroid(finer) - _centroid(grad_c)).norm(dim=1)
    region_c, region_d = _top_region(grad_c), _top_region(grad_d)
    before, after = region_masses(grad_c, region_c, region_d), region_masses(finer, region_c, region_d)
    return [
        PairResult(
            photo=names[i],
            c=int(c[k]),
            d=int(d[k]),
            p_c=float(probabilities[i, c[k]]),
            p_d=float(probabilities[i, d[k]]),
            moved=float(moved[k]),
            shift=float(shift[k]),
            masses={r: (float(before[k, j]), float(after[k, j])) for j, r in enumerate(_REGIONS)},
            maps=(grad_c[k], grad_d[k], finer[k]),
            picture=pictures[i],
        )
        for k, i in enumerate(index.tolist())
    ]


def _figure(context: Context, results: list[PairResult], classes: list[str]) -> str:
    from camscope.viz.figures import new_figure, overlay, save_figure

    figure = new_figure((8.4, 2.3 * len(results) + 0.4))
    axes = figure.subplots(len(results), 4, squeeze=False)
    for row, result in zip(axes, results):
        crop = result.picture.crop
        c, d = classes[result.c], classes[result.d]
        row[0].imshow(crop)
        row[0].set_title(f"{result.photo}\n{c} {100 * result.p_c:.0f}%, {d} {100 * result.p_d:.0f}%", fontsize=7)
        titles = (f"Grad-CAM:\n{c}", f"Grad-CAM:\n{d}", f"Finer-CAM: {c}\nvs {d} (moved {result.moved:.2f})")
        for axis, cam, title in zip(row[1:], result.maps, titles):
            axis.imshow(overlay(crop, cam.numpy()))
            axis.set_title(title, fontsize=7)
        for axis in row:
            axis.axis("off")
    figure.suptitle(
        f"EfficientNet-Lite0 (ImageNet): Grad-CAM and Finer-CAM (gamma {_GAMMA:g}, one reference)", fontsize=9, y=0.998
    )
    figure.tight_layout(rect=(0, 0, 1, 0.985))
    save_figure(context.figures / "photos_finer.png", figure, dpi=100)
    return "figures/photos_finer.png"


def run(context: Context) -> Section:
    """Grad-CAM and Finer-CAM of every pair of classes the default ImageNet model hesitates between."""
    from camscope.models import imagenet_classes, load_model, load_photo, sample_images

    model = load_model()
    photos = sample_images()
    loaded = [load_photo(array) for array in photos.values()]
    batch = torch.cat([tensor for tensor, _ in loaded])
    with torch.no_grad():
        probabilities = model(batch).softmax(dim=1)
    classes = imagenet_classes()
    names = list(photos)
    results = _measure(model, batch, probabilities, names, [picture for _, picture in loaded])
    context.log(f"reproduce: photos: {len(results)} pairs on {len(names)} photos")
    certain = [
        f"{name} ({classes[int(probabilities[i].argmax())]}, {100 * float(probabilities[i].max()):.0f}%)"
        for i, name in enumerate(names)
        if name not in {r.photo for r in results}
    ]
    figure = _figure(context, results, classes) if results else ""
    numbers: dict[str, float] = {"pairs": float(len(results))}
    for result in results:
        numbers[f"{result.photo}.{result.d}.moved"] = result.moved
    if results:
        numbers["moved_mean"] = sum(r.moved for r in results) / len(results)
    return Section(
        title="Real photos: what Finer-CAM moves",
        body=_body(results, classes, certain, figure),
        figures=[figure] if figure else [],
        numbers=numbers,
    )


def _body(results: list[PairResult], classes: list[str], certain: list[str], figure: str) -> str:
    rows = [
        [
            r.photo,
            f"{classes[r.c]} ({100 * r.p_c:.0f}%)",
            f"{classes[r.d]} ({100 * r.p_d:.0f}%)",
            r.moved,
            f"{r.shift:.0f}",
            *[f"{r.masses[region][0]:.2f} → {r.masses[region][1]:.2f}" for region in _REGIONS],
        ]
        for r in results
    ]
    table = markdown_table(
        [
            "photo",
            "c (p)",
            "d (p)",
            "mass moved",
            "centroid shift (px)",
            *(f"mass in: {region}" for region in _REGIONS),
        ],
        rows,
    )
    mean = sum(r.moved for r in results) / max(1, len(results))
    fewer = {region: sum(r.masses[region][1] < r.masses[region][0] for r in results) for region in ("shared", "d only")}
    more_c = sum(r.masses["c only"][1] > r.masses["c only"][0] for r in results)
    certain_text = f" The model does not hesitate on {', '.join(certain)}." if certain else ""
    return f"""
The synthetic sections measure claims where the answer is known; this is their real-model counterpart, with numbers
and no verdict (a photo has no mask of what tells two ImageNet classes apart). Model: EfficientNet-Lite0 on ImageNet
(camscope's offline default), on the bundled photos ({len({r.photo for r in results})} of them have a class `d` of their top 5
with at least {100 * HESITATION:.0f}% probability beside the top class `c`: {len(results)} pairs).{certain_text} For each pair,
Grad-CAM of `c` and of `d` at the default layer, and Finer-CAM of `c` against `d` alone (gamma {_GAMMA:g}). "Mass moved" is
the share of the map's mass Finer-CAM moves (the total variation distance between the two maps scaled to unit mass: 0
the same map, 1 disjoint maps); "where" splits each map's mass (Grad-CAM of `c` → Finer-CAM) over four regions made of
each class's top {100 * REGION:.0f}% Grad-CAM pixels: both classes' ("shared"), `c`'s only, `d`'s only, and elsewhere.

{table}

On average Finer-CAM moves {mean:.2f} of Grad-CAM's mass (from {min((r.moved for r in results), default=0):.2f} to
{max((r.moved for r in results), default=0):.2f}). Of the {len(results)} pairs, the mass in `d`'s own region drops in {fewer["d only"]},
the mass in the shared region in {fewer["shared"]}, and the mass in `c`'s own region rises in {more_c}.

![Grad-CAM of c and d, and Finer-CAM of c against d, on the photos]({figure})
"""

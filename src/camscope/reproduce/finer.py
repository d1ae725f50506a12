"""Finer-CAM against its base methods: the paper's Table 1, Table 2 and Figure 6b on known ground truth.

Finer-CAM (Zhang et al. 2025) explains ``y_c - gamma * y_d`` instead of ``y_c``,
``d`` a similar class, and claims that this raises the relative confidence drop
RD@p (Eq. 10) when the top ``p`` of the map's pixels are masked, leaves the
deletion AUC about where it was, and concentrates the map on the discriminative
details. This section re-measures those claims with the ``species`` model of
:mod:`camscope.models.zoo` on :mod:`camscope.data.synthetic`, where the parts in which
two classes differ are known pixel by pixel.

Protocol:
    * Data: the first test images of ``zoo.dataset("species")`` that the model
      classifies correctly (full run: 512; quick: 32). The explained class is the
      true label (equal to the prediction on these images). Score-CAM costs one
      forward pass per channel (64 here), so it and its Finer variant run on the
      first 256 of those images (quick: 16); their rows say how many.
    * Layer: ``model.features`` (``SmallCNN.cam_layer``), the last convolution
      block, a 16 x 16 grid for the 64 px inputs; maps are upsampled bilinearly,
      ReLU'd and min-max scaled (camscope's ``Explanation.maps``).
    * Methods: ``gradcam``, ``layercam`` and ``scorecam`` against ``finer-gradcam``,
      ``finer-layercam`` and ``finer-scorecam`` with the paper's defaults
      (gamma = 0.6; T = 3 references = the 2nd to 4th predicted classes; weights
      averaged before the ReLU, Eq. 8). Score-CAM uses
      ``normalization="difference"``, the paper's Eq. 3 (and so Eq. 9 for
      Finer), not the softmax over channels of the Score-CAM paper's Algorithm 1,
      so that gamma = 0 is the base exactly; its baseline ``x_b`` is the zero image
      (Eq. 3).
    * RD@p (Eq. 10, :func:`camscope.metrics.relative_drop`): ``d`` is the
      model's 2nd predicted class, as in the paper ("the most similar class").
      Masked pixels are filled with the mean colour of the evaluated images: the
      paper does not say what fills them; its inputs are mean/std normalised, so
      the usual zero fill *is* the dataset mean colour, while the species images
      are in [0, 1], where zero would be black (also the deletion substrate).
    * Deletion AUC (:func:`camscope.metrics.deletion`): softmax probability of
      the explained class, 256 pixels (1/16 of the image) removed per step.
    * Localisation: the paper's "Loc." is the energy-based pointing game in the
      object's bounding box; here also the share of map energy inside the
      *differing parts*: the parts in which the class differs from its most
      similar class. For that ground truth ``d`` is the generator's most similar
      class (:meth:`~camscope.data.synthetic.SyntheticSpecies.most_similar`, the
      other member of the class's family, which differs in exactly one part),
      because the model's 2nd prediction may be a class that differs in several
      parts (the section reports how often the two agree). A map that is zero
      everywhere scores 0 (it points at nothing). The layer's grid is coarse
      (4 px cells) and the parts small (under 2% of an image on average), so the
      energy share stays small even for a map on the right cells; the pointing
      game (:func:`camscope.metrics.pointing_game`: is the map's peak within
      4 px, one cell, of the differing part?) is reported beside it.
    * Comparisons are paired per image: the mean of ``Finer - base`` with a 95%
      normal-approximation interval (``1.96 s / sqrt(n)``, :func:`paired_difference`).
      "Better" means the whole interval lies above 0.
    * Gamma sweep (Figure 6b; App. C.2 for gamma = 2.0): finer-gradcam at
      gamma in {0, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0} (quick: {0, 0.6, 1.0, 2.0})
      with T = 1, 2, 3 references (the 2nd to (T+1)-th predictions); gamma = 0
      is Grad-CAM for every T. RD@5%, the explained class's own confidence drop
      (the figure's bars), the differing-part energy share and pointing game.
    * References (Table 2): gamma = 0.6 with one reference, the 2nd, 3rd or 4th
      predicted class, the 2nd and 3rd, the three aggregated, and (not in the
      paper) the generator's most similar class as the single reference. No
      deletion AUC here (16 passes per image and configuration).
    * A control for "Loc.": the Score-CAM subset rendered again without the
      background's distractor shapes (same poses, classes and boxes), Grad-CAM
      and LayerCAM against their Finer variants.

Verdict rules (computed, never fixed in advance) are stated beside each claim in
the report; in short: a claim about "Finer-CAM vs its base" holds when Finer is
better (interval above 0) for every base method (and both p for RD), partly when
for some, and does not hold when for none.

Example:
    >>> from camscope.reproduce import reproduce
    >>> report = reproduce("/tmp/repro", sections=["finer"], quick=True)  # doctest: +SKIP
    >>> report.section("finer").numbers["finer-gradcam.rd@0.05"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from camscope.reproduce import FAILS, HOLDS, PARTLY, Claim, Context, Section, markdown_table

__all__ = [
    "BASES",
    "GAMMAS",
    "REFERENCES",
    "Comparison",
    "all_or_some",
    "energy_share",
    "paired_difference",
    "run",
]

#: Base methods of the paper's Table 1, in its order.
BASES: tuple[str, ...] = ("gradcam", "layercam", "scorecam")
#: Comparison strengths of the sweep (Figure 6b: 0 to 1; App. C.2: 2.0).
GAMMAS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0)
#: The quick run's grid (the same structure, fewer points).
QUICK_GAMMAS: tuple[float, ...] = (0.0, 0.6, 1.0, 2.0)
#: Numbers of references of the sweep (the paper aggregates the top 3).
REFERENCES: tuple[int, ...] = (1, 2, 3)
#: The paper's defaults.
GAMMA, COUNT = 0.6, 3
FRACTIONS: tuple[float, ...] = (0.05, 0.1)
#: Deletion removes this many pixels per step (1/16 of a 64 x 64 image).
DELETION_STEP = 256
#: Deletion is "about the same" when the means differ by at most this share of the base's.
DELETION_TOLERANCE = 0.1
#: Aggregating T = 3 references is "as good" as the best single choice within this share of its RD@5%.
REFERENCE_TOLERANCE = 0.05
#: The pointing game's tolerance in pixels: the layer's stride (one cell of its 16 x 16 grid).
POINTING_TOLERANCE = 4.0
_SWEEP_KEYS = ("rd@0.05", "drop_target@0.05", "share_differing", "pointing")
_COMPARED = ("deletion", "rd@0.05", "rd@0.1", "share_box", "share_differing", "pointing")
_Z = 1.959963984540054  # the normal distribution's 97.5% quantile
_BATCH = 256
_NAMES = {"gradcam": "Grad-CAM", "layercam": "LayerCAM", "scorecam": "Score-CAM"}
_BASE_OPTIONS: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "layercam": {},
    "scorecam": {"normalization": "difference", "batch_size": _BATCH, "progress": False},
}

# The paper's numbers. Table 1's rows lost their layout in the text copy of the paper (six
# rows, four lines of numbers), so only the Grad-CAM row that Table 2 confirms is quoted
# from it; the complete FishVista rows of Appendix Table 5 (same protocol, CLIP backbone)
# stand for the three base methods.
_PAPER_TABLE5 = {  # FishVista: Del., RD@0.05, RD@0.1
    "gradcam": ((0.037, 0.177, 0.205), (0.039, 0.193, 0.217)),
    "layercam": ((0.049, 0.163, 0.181), (0.049, 0.196, 0.210)),
    "scorecam": ((0.051, 0.158, 0.188), (0.052, 0.174, 0.203)),
}
_PAPER_LOC = {  # Aircraft, Appendix Table 5: Loc. (energy pointing game)
    "gradcam": (0.608, 0.614),
    "layercam": (0.662, 0.664),
    "scorecam": (0.595, 0.602),
}
_PAPER_TABLE2 = {
    "none": (0.079, 0.174),
    "2nd": (0.079, 0.198),
    "3rd": (0.080, 0.178),
    "4th": (0.081, 0.174),
    "agg": (0.076, 0.192),
}


# ----------------------------------------------------------------------------------------------
# Small statistics helpers (tested in tests/test_reproduce_finer.py)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A paired comparison: the mean of ``new - old`` over the images and its 95% interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def better(self) -> bool:
        """The whole interval lies above 0."""
        return self.low > 0

    @property
    def worse(self) -> bool:
        """The whole interval lies below 0."""
        return self.high < 0

    @property
    def outcome(self) -> str:
        return "better" if self.better else "worse" if self.worse else "no clear difference"

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_difference(new: Tensor, old: Tensor) -> Comparison:
    """Mean of ``new - old`` over the pairs where both are finite, with ``mean +- 1.96 s / sqrt(n)``.

    ``s`` is the unbiased standard deviation of the differences (0 for one pair).

    Example:
        >>> import torch
        >>> c = paired_difference(torch.tensor([2.0, 3.0, 4.0]), torch.tensor([1.0, 1.0, 1.0]))
        >>> round(c.mean, 3), c.better
        (2.0, True)
    """
    difference = (new.double() - old.double()).flatten()
    difference = difference[torch.isfinite(difference)]
    n = int(difference.numel())
    if n == 0:
        return Comparison(float("nan"), float("nan"), float("nan"), 0)
    mean = float(difference.mean())
    spread = float(difference.std()) if n > 1 else 0.0
    half = _Z * spread / math.sqrt(n)
    return Comparison(mean, mean - half, mean + half, n)


def energy_share(maps: Tensor, regions: Tensor) -> Tensor:
    """Share of each map's energy inside its region, ``[B]`` (the energy-based pointing game).

    ``sum_{ij in G} L_ij / sum_ij L_ij`` on maps ReLU'd and min-max scaled per image
    (:func:`camscope.metrics.energy_pointing_game`), except that a map that is zero
    everywhere scores 0 instead of NaN: it points at nothing, so it finds nothing.
    An empty region gives NaN (skipped in the means).

    Example:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> regions = torch.tensor([[[False, True], [False, False]], [[True, False], [False, False]]])
        >>> energy_share(maps, regions).tolist()
        [0.6666666865348206, 0.0]
    """
    from camscope.metrics import energy_pointing_game

    share = energy_pointing_game(maps, masks=regions)["proportion"]
    has_region = regions.flatten(1).any(dim=1).to(share.device)
    return torch.where(has_region & torch.isnan(share), torch.zeros_like(share), share)


def all_or_some(results: Sequence[bool]) -> str:
    """HOLDS if every result is True, PARTLY if some are, FAILS if none are."""
    results = list(results)
    if results and all(results):
        return HOLDS
    return PARTLY if any(results) else FAILS


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


@dataclass
class _Data:
    images: Tensor
    labels: Tensor
    logits: Tensor
    ranked: Tensor  # [N, 3] the 2nd to 4th predicted classes
    similar: Tensor  # [N] the generator's most similar class
    differing: Tensor  # [N, H, W] bool, parts where the label differs from `similar`
    objects: Tensor  # [N, H, W] bool, the object's bounding box
    parts: list[str]  # the differing part of each image (names joined by "+")
    fill: Tensor  # [1, 3, 1, 1] mean colour of the images
    batch: Any  # the SpeciesBatch (poses, to render the images again)
    generator: Any  # the SyntheticSpecies

    def __getitem__(self, index: slice) -> _Data:
        return _Data(
            self.images[index], self.labels[index], self.logits[index], self.ranked[index], self.similar[index],
            self.differing[index], self.objects[index], self.parts[index], self.fill, self.batch[index], self.generator,
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _load(context: Context, count: int) -> tuple[torch.nn.Module, _Data, dict[str, float], list[str]]:
    from camscope.metrics import boxes_to_masks

    model = context.model("species")
    limit = count + max(8, count // 20)  # the model is 98.8% accurate: a few spare images
    data = context.data("species", "test", limit)
    with torch.no_grad():
        logits = model(data.images)
    correct = logits.argmax(dim=1) == data.labels
    keep = correct.nonzero().flatten()[:count]
    images, labels, logits = data.images[keep], data.labels[keep], logits[keep]
    generator = data.generator
    similar = generator.most_similar_classes()[labels]
    differing = generator.difference_masks(data.part_masks[keep], labels, similar)
    objects = boxes_to_masks(data.boxes[keep], images.shape[2:])
    ranked = logits.scatter(1, labels[:, None], float("-inf")).topk(3, dim=1).indices
    parts = ["+".join(generator.differing_parts(int(c), int(d))) for c, d in zip(labels, similar)]
    stats = {
        "images": float(len(keep)),
        "accuracy_on_loaded": float(correct.float().mean()),
        "second_is_most_similar": float((ranked[:, 0] == similar).float().mean()),
        "most_similar_in_references": float((ranked == similar[:, None]).any(dim=1).float().mean()),
        "differing_area": float(differing.flatten(1).float().mean(dim=1).mean()),
        "object_area": float(objects.flatten(1).float().mean(dim=1).mean()),
    }
    fill = images.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    kept = _Data(images, labels, logits, ranked, similar, differing, objects, parts, fill, data.batch[keep], generator)
    return model, kept, stats, data.class_names


def _explain(model: torch.nn.Module, data: _Data, method: str, **options: Any) -> Tensor:
    import camscope

    explanation = camscope.explain(
        model, data.images, method=method, layer=model.cam_layer, target=data.labels, **options
    )
    return explanation.maps.detach()


def _measure(
    model: torch.nn.Module, data: _Data, maps: Tensor, *, fractions: Sequence[float] = FRACTIONS, deletion: bool = True
) -> dict[str, Tensor]:
    """Per-image RD@p, the two drops, deletion AUC, and the energy shares."""
    from camscope import metrics

    rd = metrics.relative_drop(
        model, data.images, maps, target=data.labels, fractions=fractions, fill=data.fill, batch_size=_BATCH
    )
    out = {key: value.detach().cpu() for key, value in rd.values.items()}
    if deletion:
        result = metrics.deletion(
            model, data.images, maps, target=data.labels, step=DELETION_STEP, substrate=data.fill, batch_size=_BATCH
        )
        out["deletion"] = result["auc"].detach().cpu()
    out["share_differing"] = energy_share(maps, data.differing)
    out["pointing"] = (
        metrics.pointing_game(maps, masks=data.differing, tolerance=POINTING_TOLERANCE)["hit"].detach().cpu()
    )
    out["share_box"] = energy_share(maps, data.objects)
    out["empty"] = (maps.flatten(1).amax(dim=1) <= 0).float()
    return out


def _mean(values: Tensor) -> float:
    values = values.double()
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else float("nan")


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def _examples(data: _Data, count: int = 4) -> list[int]:
    """Up to ``count`` images whose 2nd prediction is the most similar class, one per differing part first."""
    agree = (data.ranked[:, 0] == data.similar).tolist()
    chosen: list[int] = []
    seen: set[str] = set()
    for index, part in enumerate(data.parts):
        if agree[index] and part not in seen and len(chosen) < count:
            chosen.append(index)
            seen.add(part)
    for index in range(len(data)):
        if len(chosen) >= count:
            break
        if index not in chosen:
            chosen.append(index)
    return chosen


def _example_figure(path: Any, data: _Data, maps: dict[str, Tensor], class_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from camscope.viz.figures import overlay, save_figure

    rows = _examples(data)
    columns = ["image"] + [name for base in BASES for name in (base, f"finer-{base}")]
    figure, axes = plt.subplots(len(rows), len(columns), figsize=(1.55 * len(columns), 1.75 * len(rows)), squeeze=False)
    for r, index in enumerate(rows):
        image = data.images[index].permute(1, 2, 0).numpy()
        mask = data.differing[index].float().numpy()
        for col, name in enumerate(columns):
            axis = axes[r][col]
            if name == "image":
                axis.imshow(image)
                c, d = int(data.labels[index]), int(data.similar[index])
                axis.set_ylabel(f"{class_names[c]}\nvs {class_names[d]}", fontsize=6)
            else:
                cam = maps[name][index]
                axis.imshow(overlay(image, cam.numpy(), alpha=0.55))
                share = float(energy_share(cam[None], data.differing[index][None])[0])
                axis.set_xlabel(f"in part: {share:.2f}", fontsize=6)
            if mask.any():
                axis.contour(mask, levels=[0.5], colors="white", linewidths=0.9)
            if r == 0:
                title = (
                    "image, differing part"
                    if name == "image"
                    else (f"Finer-{_NAMES[name[6:]]}" if name.startswith("finer-") else _NAMES[name])
                )
                axis.set_title(title, fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle(
        f"Base CAMs and Finer-CAM (gamma={GAMMA}, T={COUNT}); white outline: the part in which the class differs "
        "from its most similar class",
        fontsize=7,
    )
    save_figure(path, figure, dpi=130)


def _gamma_figure(
    path: Any, sweep: dict[tuple[int, float], dict[str, float]], chance: float, gammas: Sequence[float]
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from camscope.viz.figures import save_figure

    positions = list(range(len(gammas)))
    labels = [f"{g:g}" for g in gammas]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(13.0, 3.4))
    width = 0.8 / len(REFERENCES)
    for i, count in enumerate(REFERENCES):
        drops = [sweep[(count, g)]["drop_target@0.05"] for g in gammas]
        offsets = [p + (i - (len(REFERENCES) - 1) / 2) * width for p in positions]
        left.bar(offsets, drops, width=width, alpha=0.35, color=f"C{i}")
        left.plot(
            positions, [sweep[(count, g)]["rd@0.05"] for g in gammas], marker="o", color=f"C{i}", label=f"T={count}"
        )
        middle.plot(
            positions,
            [sweep[(count, g)]["share_differing"] for g in gammas],
            marker="o",
            color=f"C{i}",
            label=f"T={count}",
        )
        right.plot(
            positions, [sweep[(count, g)]["pointing"] for g in gammas], marker="o", color=f"C{i}", label=f"T={count}"
        )
    middle.axhline(chance, color="grey", linestyle=":", label="a uniform map")
    left.set_title("RD@5% (lines) and the class's own confidence drop (bars)", fontsize=9)
    middle.set_title("share of map energy in the differing part", fontsize=9)
    right.set_title(f"map's peak within {POINTING_TOLERANCE:g} px of the differing part", fontsize=9)
    for axis in (left, middle, right):
        axis.set_xticks(positions, labels)
        axis.set_xlabel("comparison strength gamma (Finer-Grad-CAM)")
        axis.legend(fontsize=7)
    left.set_ylim(bottom=0)
    save_figure(path, figure, dpi=120)


# ----------------------------------------------------------------------------------------------
# The section
# ----------------------------------------------------------------------------------------------


def run(context: Context) -> Section:
    """Measure Finer-CAM against Grad-CAM, LayerCAM and Score-CAM, sweep gamma and the references."""
    log = context.log
    count = context.count(512, 32)
    score_count = context.count(256, 16)
    gammas = QUICK_GAMMAS if context.quick else GAMMAS
    model, data, stats, class_names = _load(context, count)
    score_data = data[:score_count]
    n, n_score = len(data), len(score_data)
    log(f"finer: {n} correctly classified test images ({n_score} for Score-CAM)")

    # Table 1: base vs Finer (paper defaults), all metrics.
    maps: dict[str, Tensor] = {}
    measured: dict[str, dict[str, Tensor]] = {}
    for base in BASES:
        subset = score_data if base == "scorecam" else data
        for method, options in ((base, {}), (f"finer-{base}", {"gamma": GAMMA, "references": COUNT})):
            maps[method] = _explain(model, subset, method, **_BASE_OPTIONS[base], **options)
            measured[method] = _measure(model, subset, maps[method])
            log(f"finer: {method} done")

    # Figure 6b: gamma x references with Finer-Grad-CAM (gamma = 0 is Grad-CAM for every T).
    sweep: dict[tuple[int, float], dict[str, float]] = {}
    sweep_values: dict[tuple[int, float], dict[str, Tensor]] = {}
    for references in REFERENCES:
        for gamma in gammas:
            if gamma == 0:
                values = measured["gradcam"]
            elif gamma == GAMMA and references == COUNT:
                values = measured["finer-gradcam"]
            else:
                cams = _explain(model, data, "finer-gradcam", gamma=gamma, references=references)
                values = _measure(model, data, cams, fractions=(0.05,), deletion=False)
            sweep_values[(references, gamma)] = values
            sweep[(references, gamma)] = {key: _mean(values[key]) for key in _SWEEP_KEYS}
    log("finer: gamma sweep done")

    # Table 2: which reference(s), at gamma = 0.6.
    choices: dict[str, dict[str, Tensor]] = {"none": measured["gradcam"]}
    for name, column in (("2nd", 0), ("3rd", 1), ("4th", 2)):
        if column == 0:
            choices[name] = sweep_values[(1, GAMMA)]
        else:
            cams = _explain(model, data, "finer-gradcam", gamma=GAMMA, references=data.ranked[:, column : column + 1])
            choices[name] = _measure(model, data, cams, fractions=(0.05,), deletion=False)
    choices["top2"] = sweep_values[(2, GAMMA)]
    choices["agg"] = measured["finer-gradcam"]
    cams = _explain(model, data, "finer-gradcam", gamma=GAMMA, references=data.similar[:, None])
    choices["similar"] = _measure(model, data, cams, fractions=(0.05,), deletion=False)
    log("finer: references done")

    # Control for Loc.: the Score-CAM subset rendered again without the distractor shapes (same poses, same boxes).
    pose = replace(
        score_data.batch.pose, distractor_center=torch.full_like(score_data.batch.pose.distractor_center, -1e4)
    )
    plain = replace(score_data, images=score_data.generator.render(score_data.labels, pose).images)
    controls: dict[str, tuple[Comparison, Comparison]] = {}
    for base in ("gradcam", "layercam"):
        shares = [
            energy_share(_explain(model, plain, method, **options), plain.objects)
            for method, options in ((base, {}), (f"finer-{base}", {"gamma": GAMMA, "references": COUNT}))
        ]
        with_them = paired_difference(
            measured[f"finer-{base}"]["share_box"][:n_score], measured[base]["share_box"][:n_score]
        )
        controls[base] = (with_them, paired_difference(shares[1], shares[0]))

    # ------------------------------------------------------------------ numbers
    numbers: dict[str, float] = {f"data.{key}": value for key, value in stats.items()}
    numbers["data.images_scorecam"] = float(n_score)
    keys = (
        "deletion",
        "rd@0.05",
        "rd@0.1",
        "drop_target@0.05",
        "drop_versus@0.05",
        "share_box",
        "share_differing",
        "pointing",
        "empty",
    )
    for method, values in measured.items():
        for key in keys:
            numbers[f"{method}.{key}"] = _mean(values[key])
    for (references, gamma), values in sweep.items():
        for key, value in values.items():
            numbers[f"sweep.T{references}.gamma{gamma:g}.{key}"] = value
    for name, values in choices.items():
        for key in _SWEEP_KEYS:
            numbers[f"references.{name}.{key}"] = _mean(values[key])

    comparisons = {
        (base, key): paired_difference(measured[f"finer-{base}"][key], measured[base][key])
        for base in BASES
        for key in _COMPARED
    }
    for (base, key), comparison in comparisons.items():
        numbers[f"delta.{base}.{key}"] = comparison.mean
    for base, (_, without) in controls.items():
        numbers[f"delta.{base}.share_box_without_distractors"] = without.mean

    # ------------------------------------------------------------------ claims
    claims: list[Claim] = []
    rd_wins = [comparisons[(b, k)].better for b in BASES for k in ("rd@0.05", "rd@0.1")]
    claims.append(
        Claim(
            "Finer-CAM raises the relative confidence drop RD@5% and RD@10% over Grad-CAM, LayerCAM and Score-CAM "
            "(Table 1; e.g. Grad-CAM on Birds-525 0.174 -> 0.192 at 5%)",
            all_or_some(rd_wins),
            "Finer better (95% interval of the paired difference above 0) in "
            f"{sum(rd_wins)} of 6 base x p cases: "
            + "; ".join(
                f"{_NAMES[b]} {comparisons[(b, 'rd@0.05')].mean:+.3f} / {comparisons[(b, 'rd@0.1')].mean:+.3f}"
                for b in BASES
            )
            + ". Rule: holds if better in all 6, partly if in some, not if in none.",
        )
    )
    similar_deletion = [
        abs(comparisons[(b, "deletion")].mean) <= DELETION_TOLERANCE * abs(numbers[f"{b}.deletion"]) for b in BASES
    ]
    claims.append(
        Claim(
            "The deletion AUC stays about the same (Table 1: 'negligible differences')",
            all_or_some(similar_deletion),
            "deletion AUC base -> Finer: "
            + "; ".join(
                f"{_NAMES[b]} {numbers[f'{b}.deletion']:.3f} -> {numbers[f'finer-{b}.deletion']:.3f}" for b in BASES
            )
            + f". Rule: 'about the same' = means within {100 * DELETION_TOLERANCE:.0f}% of the base's; holds for all 3 "
            "bases, partly for some.",
        )
    )
    box_wins = [comparisons[(b, "share_box")].better for b in BASES]
    claims.append(
        Claim(
            "Finer-CAM localises the object better: more map energy inside its bounding box (Table 1 'Loc.', "
            "energy-based pointing game)",
            all_or_some(box_wins),
            "Finer - base: "
            + "; ".join(f"{_NAMES[b]} {comparisons[(b, 'share_box')].text()}" for b in BASES)
            + ". Rule: holds if the interval is above 0 for all 3 bases, partly for some.",
        )
    )
    part_wins = [comparisons[(b, "share_differing")].better for b in BASES]
    claims.append(
        Claim(
            "Finer-CAM concentrates on the discriminative details: the parts that differ between the class and its "
            "most similar class (Sec. 4.2, Figs. 1, 4, 7)",
            all_or_some(part_wins),
            "share of energy in the differing part, base -> Finer: "
            + "; ".join(
                f"{_NAMES[b]} {numbers[f'{b}.share_differing']:.3f} -> {numbers[f'finer-{b}.share_differing']:.3f}"
                for b in BASES
            )
            + f" (a uniform map: {stats['differing_area']:.3f}); the map's peak on the part (within "
            f"{POINTING_TOLERANCE:g} px): "
            + "; ".join(
                f"{_NAMES[b]} {numbers[f'{b}.pointing']:.2f} -> {numbers[f'finer-{b}.pointing']:.2f}" for b in BASES
            )
            + ". Rule (on the energy share): holds if Finer is better (interval above 0) for all 3 bases, partly for some.",
        )
    )
    peaks: dict[int, float] = {}
    rises: dict[int, Comparison] = {}
    for references in REFERENCES:
        curve = [sweep[(references, g)]["rd@0.05"] for g in gammas]
        peaks[references] = gammas[max(range(len(gammas)), key=lambda i: curve[i])]
        rises[references] = paired_difference(
            sweep_values[(references, GAMMA)]["rd@0.05"], sweep_values[(references, 0.0)]["rd@0.05"]
        )
    shaped = [rises[t].better and 0.6 <= peaks[t] <= 1.0 for t in REFERENCES]
    claims.append(
        Claim(
            "RD@5% rises quickly with gamma, peaks at gamma = 0.8 and drops slightly beyond (Fig. 6b, single and "
            "aggregated references)",
            HOLDS if all(shaped) else PARTLY if any(r.better for r in rises.values()) else FAILS,
            "; ".join(
                f"T={t}: peak at gamma {peaks[t]:g} ({sweep[(t, peaks[t])]['rd@0.05']:.3f}; gamma 2: "
                f"{sweep[(t, gammas[-1])]['rd@0.05']:.3f}), gamma 0.6 - 0: {rises[t].text()}"
                for t in REFERENCES
            )
            + ". Rule: holds if, for every T, RD rises significantly from gamma 0 to 0.6 and peaks in [0.6, 1.0] "
            "(so lower at 2.0); partly if it rises for some T; not if it rises for none.",
        )
    )
    shares = {t: [sweep[(t, g)]["share_differing"] for g in gammas] for t in REFERENCES}
    increasing = [all(b > a for a, b in zip(shares[t], shares[t][1:])) for t in REFERENCES]
    higher = [shares[t][-1] > shares[t][0] for t in REFERENCES]
    claims.append(
        Claim(
            "A larger gamma focuses the map on finer details; gamma = 2.0 highlights subtle details even more tightly "
            "(Fig. 8, App. C.2)",
            HOLDS if all(increasing) else PARTLY if any(higher) else FAILS,
            "share in the differing part at gamma 0 / 0.6 / 1 / 2: "
            + "; ".join(
                f"T={t}: " + " / ".join(f"{sweep[(t, g)]['share_differing']:.3f}" for g in (0.0, 0.6, 1.0, 2.0))
                for t in REFERENCES
            )
            + "; peak on the part: "
            + "; ".join(
                f"T={t}: " + " / ".join(f"{sweep[(t, g)]['pointing']:.2f}" for g in (0.0, 0.6, 1.0, 2.0))
                for t in REFERENCES
            )
            + ". Rule (on the energy share): holds if it increases at every step of the gamma grid for every T, "
            "partly if it only ends higher at gamma 2 than at 0 for some T.",
        )
    )
    rd_choice = {name: _mean(values["rd@0.05"]) for name, values in choices.items()}
    best_single = max(("2nd", "3rd", "4th", "top2", "agg"), key=lambda name: rd_choice[name])
    above_base = paired_difference(choices["agg"]["rd@0.05"], choices["none"]["rd@0.05"]).better
    close = rd_choice["agg"] >= (1 - REFERENCE_TOLERANCE) * rd_choice[best_single]
    claims.append(
        Claim(
            "Aggregating the top 3 references is the best overall choice: RD@5% close to the best single reference "
            "(Table 2: 0.192 vs 0.198 for the 2nd prediction alone; 0.174 without comparison)",
            HOLDS if above_base and close else PARTLY if above_base or close else FAILS,
            f"RD@5% at gamma {GAMMA}: none {rd_choice['none']:.3f}, 2nd {rd_choice['2nd']:.3f}, 3rd {rd_choice['3rd']:.3f}, "
            f"4th {rd_choice['4th']:.3f}, top 2 {rd_choice['top2']:.3f}, top 3 {rd_choice['agg']:.3f} (best: {best_single}). "
            f"Rule: holds if top 3 beats no comparison (interval above 0) and is within {100 * REFERENCE_TOLERANCE:.0f}% "
            "of the best choice, partly if one of the two.",
        )
    )

    # ------------------------------------------------------------------ figures
    _example_figure(
        context.figures / "finer_examples.png", score_data, {k: v[:n_score] for k, v in maps.items()}, class_names
    )
    _gamma_figure(context.figures / "finer_gamma.png", sweep, stats["differing_area"], gammas)

    # ------------------------------------------------------------------ body
    body = _body(n, n_score, stats, numbers, comparisons, sweep, rd_choice, choices, gammas, controls)
    verdicts = dict(
        zip(("rd", "deletion", "box", "parts", "gamma_rd", "gamma_share", "references"), (c.verdict for c in claims))
    )
    body += _notes(verdicts, n_score, stats, numbers, comparisons, peaks, shaped, increasing, rd_choice)
    return Section(
        title="Finer-CAM: comparing with similar classes",
        body=body,
        claims=claims,
        figures=["figures/finer_examples.png", "figures/finer_gamma.png"],
        numbers=numbers,
    )


def _body(
    n: int,
    n_score: int,
    stats: dict[str, float],
    numbers: dict[str, float],
    comparisons: dict[tuple[str, str], Comparison],
    sweep: dict[tuple[int, float], dict[str, float]],
    rd_choice: dict[str, float],
    choices: dict[str, dict[str, Tensor]],
    gammas: Sequence[float],
    controls: dict[str, tuple[Comparison, Comparison]],
) -> str:
    rows = []
    for base in BASES:
        images = n_score if base == "scorecam" else n
        paper_base, paper_finer = _PAPER_TABLE5[base]
        loc_base, loc_finer = _PAPER_LOC[base]
        for method, paper, loc in ((base, paper_base, loc_base), (f"finer-{base}", paper_finer, loc_finer)):
            label = _NAMES[base] if method == base else "+ Finer"
            rows.append(
                [
                    label,
                    images,
                    numbers[f"{method}.deletion"],
                    numbers[f"{method}.rd@0.05"],
                    numbers[f"{method}.rd@0.1"],
                    numbers[f"{method}.share_box"],
                    numbers[f"{method}.share_differing"],
                    numbers[f"{method}.pointing"],
                    " / ".join(f"{v:.3f}" for v in paper) + f" / {loc:.3f}",
                ]
            )
    table1 = markdown_table(
        [
            "method",
            "images",
            "Del. ↓",
            "RD@5% ↑",
            "RD@10% ↑",
            "Loc. (box) ↑",
            "differing part ↑",
            "peak on part ↑",
            "paper: Del. / RD@5% / RD@10% / Loc.",
        ],
        rows,
    )
    deltas = markdown_table(
        ["Finer - base", "Del.", "RD@5%", "RD@10%", "Loc. (box)", "differing part", "peak on part"],
        [[_NAMES[base]] + [comparisons[(base, key)].text() for key in _COMPARED] for base in BASES],
    )
    drops = markdown_table(
        ["method", "drop of p_c @5%", "drop of p_d @5%", "RD@5%", "empty maps"],
        [
            [_NAMES[m] if m in _NAMES else f"Finer-{_NAMES[m[6:]]}", numbers[f"{m}.drop_target@0.05"], numbers[f"{m}.drop_versus@0.05"],
             numbers[f"{m}.rd@0.05"], f"{100 * numbers[f'{m}.empty']:.1f}%"]
            for base in BASES for m in (base, f"finer-{base}")
        ],
    )  # fmt: skip
    sweep_rows = []
    for gamma in gammas:
        sweep_rows.append(
            [f"{gamma:g}"]
            + [sweep[(t, gamma)]["rd@0.05"] for t in REFERENCES]
            + [sweep[(COUNT, gamma)]["drop_target@0.05"]]
            + [sweep[(t, gamma)]["share_differing"] for t in REFERENCES]
            + [sweep[(t, gamma)]["pointing"] for t in REFERENCES]
        )
    sweep_table = markdown_table(
        ["gamma"]
        + [f"RD@5% T={t}" for t in REFERENCES]
        + [f"drop of p_c T={COUNT}"]
        + [f"differing part T={t}" for t in REFERENCES]
        + [f"peak on part T={t}" for t in REFERENCES],
        sweep_rows,
    )
    labels = {
        "none": "none (Grad-CAM)",
        "2nd": "2nd predicted",
        "3rd": "3rd predicted",
        "4th": "4th predicted",
        "top2": "2nd + 3rd (T=2)",
        "agg": "2nd to 4th (T=3, paper's default)",
        "similar": "most similar class by construction",
    }
    reference_rows = [
        [
            label,
            rd_choice[name],
            _mean(choices[name]["share_differing"]),
            _mean(choices[name]["pointing"]),
            f"{_PAPER_TABLE2[name][1]:.3f}" if name in _PAPER_TABLE2 else "–",
        ]
        for name, label in labels.items()
    ]
    reference_table = markdown_table(
        ["reference(s), gamma 0.6", "RD@5% ↑", "differing part ↑", "peak on part ↑", "paper RD@5% (Table 2)"],
        reference_rows,
    )
    control_text = ", ".join(f"{_NAMES[b]} {without.text()}" for b, (_, without) in controls.items())
    box_text = ", ".join(f"{_NAMES[b]} {with_them.text()}" for b, (with_them, _) in controls.items())
    agree = 100 * stats["second_is_most_similar"]
    within = 100 * stats["most_similar_in_references"]
    return f"""
The paper (Zhang et al. 2025) explains `y_c - gamma * y_d` for a similar class `d`, and reports that masking
the top 5% or 10% of Finer-CAM's pixels lowers the explained class's confidence more, *relative to the most
similar class*, than masking the base method's (RD@p, Eq. 10), while the deletion AUC barely moves
(Table 1), and that the maps concentrate on the discriminative details. Here the right answer is known:
every class of the synthetic species has a most similar class that differs from it in exactly **one part**,
and each image comes with that part's mask.

Protocol: {n} correctly classified test images of the `species` model (Score-CAM and Finer-Score-CAM: the
first {n_score} of them, one forward pass per channel), explaining the **true label** (equal to the prediction)
at `model.features` (16 x 16 grid). Finer-CAM uses the paper's defaults: gamma = 0.6 and the 2nd to 4th
*predicted* classes as references, weights averaged before the ReLU. RD's `d` is the model's 2nd prediction,
as in the paper; the differing-part ground truth uses the generator's most similar class. The model's 2nd
prediction is that class for {agree:.0f}% of the images (it is among the 3 references for {within:.0f}%).
Masked and deleted pixels take the images' mean colour (what the zero fill of normalised inputs means). The
differing part covers {100 * stats["differing_area"]:.1f}% of an image on average and the object's box
{100 * stats["object_area"]:.1f}%; as the layer's grid is coarse (4 px cells, 21 px receptive fields) and maps
are upsampled bilinearly, even a map that singles out the part's cells puts much of its energy around it, so
the table also gives how often the map's peak lies within {POINTING_TOLERANCE:g} px (one cell) of the part
(the pointing game). Score-CAM uses the plain score increase (`normalization="difference"`,
Eq. 3 and Eq. 9). The paper's Table 1 lost its row layout in our text copy, so its column quotes the
complete FishVista rows of the paper's Appendix Table 5 (CLIP; Loc. from its Aircraft columns); Table 1's
Grad-CAM row on Birds-525 reads Del. 0.079, RD@5% 0.174, RD@10% 0.245, and Table 2 gives Finer-Grad-CAM
Del. 0.076, RD@5% 0.192.

{table1}

Paired differences over the same images (mean and 95% interval):

{deltas}

Where RD comes from: the drop of the class's probability `p_c` and of the 2nd class's `p_d` (a negative drop
is a rise) when the top 5% are masked, and the share of maps that are zero everywhere:

{drops}

A control for "Loc.": the backgrounds carry distractor shapes drawn in the parts' palette colours and textures,
independent of the class. Rendered again without them (same poses and classes; the first {n_score} images),
Finer - base energy in the box is {control_text} (the same images with them: {box_text}).

![Examples](figures/finer_examples.png)

**Comparison strength and number of references** (Figure 6b; gamma = 2.0 is the paper's extrapolation,
App. C.2). The paper: "as the comparison strength increases, the relative drop is boosted at a fast pace and
reaches the peak when gamma = 0.8. Further strengthening the comparison leads to slight performance drops",
and its Fig. 8: a large gamma focuses on fine-grained details. Finer-Grad-CAM on the {n} images; gamma = 0 is
Grad-CAM:

{sweep_table}

![Gamma sweep](figures/finer_gamma.png)

**Which references** (Table 2, gamma = 0.6; the last row is not in the paper: the one class that differs in
a single part, known here by construction):

{reference_table}

Reading the numbers: the species model is far more confident than the paper's linear probes on CLIP
features (its top probability is close to 1), so masking 5% of the pixels, an area more than half the
object's, removes most of `p_c` whatever the map, and RD is much larger than the paper's and close to
saturation: only the differences between rows carry information, not the absolute values.
"""


def _notes(
    verdicts: dict[str, str],
    n_score: int,
    stats: dict[str, float],
    numbers: dict[str, float],
    comparisons: dict[tuple[str, str], Comparison],
    peaks: dict[int, float],
    shaped: list[bool],
    increasing: list[bool],
    rd_choice: dict[str, float],
) -> str:
    """Plausible reasons for the claims that do not (fully) hold in this run, from its own numbers."""
    notes = []
    if verdicts["rd"] != HOLDS:
        missing = [
            f"{_NAMES[b]} at {p}"
            for b in BASES
            for p, k in (("5%", "rd@0.05"), ("10%", "rd@0.1"))
            if not comparisons[(b, k)].better
        ]
        notes.append(
            "**RD** (no clear gain for "
            + ", ".join(missing)
            + "): the model is nearly certain of its class, and masking "
            f"5% of the pixels removes {numbers['gradcam.drop_target@0.05']:.2f} of `p_c` on average with Grad-CAM and "
            f"{numbers['finer-gradcam.drop_target@0.05']:.2f} with Finer-Grad-CAM, so RD is close to saturation; "
            "Finer's gains come from the rise of `p_d` (the masked pixels were evidence *against* `d`). At 10% the "
            "masked area is over five times the differing part's for either map, which leaves less room for a difference. "
            f"Score-CAM's rows use only {n_score} images, so their intervals are wider."
        )
    if verdicts["deletion"] != HOLDS:
        notes.append(
            "**Deletion**: the difference exceeds the stated tolerance for some bases; deletion scores the class alone, "
            "and a map that moves to a small part removes the shared evidence later."
        )
    if verdicts["box"] != HOLDS:
        worse = [_NAMES[b] for b in BASES if not comparisons[(b, "share_box")].better]
        notes.append(
            f"**Loc.** (no gain for {', '.join(worse)}; plausibly the distractors): the base maps already put "
            f"{numbers['gradcam.share_box']:.2f} (Grad-CAM) of their energy in the object's box. The backgrounds carry "
            "distractor shapes in the same palette colours and textures as the parts, independent of the class, so "
            "the channels that tell the key-part colours of `c` and `d` apart also respond to distractors of those "
            "colours outside the box (the control above re-renders the images without the distractors). The paper's argument that Finer suppresses background noise assumes a "
            "background that goes with both similar classes (its beach example), which these data do not have."
        )
    if verdicts["parts"] != HOLDS:
        missing = [_NAMES[b] for b in BASES if not comparisons[(b, "share_differing")].better]
        notes.append(
            f"**Differing part** (no clear gain for {', '.join(missing)}): at 4 px per cell and with 21 px receptive "
            "fields, the layer cannot isolate a part of a few cells; see the pointing game for where the peak goes."
        )
    if verdicts["gamma_rd"] != HOLDS:
        off = [f"T={t} (peak at gamma {peaks[t]:g})" for t, ok in zip(REFERENCES, shaped) if not ok]
        notes.append(
            "**Gamma** (" + ", ".join(off) + " does not follow the paper's shape): each synthetic class has a single "
            "close neighbour (families of two), and it is the model's 2nd prediction for "
            f"{100 * stats['second_is_most_similar']:.0f}% of the images; the 3rd and 4th predictions are classes of "
            "other families whose comparisons, averaged in, dilute the one that RD's `d` measures, so a stronger "
            "gamma can keep helping. With few images the interval of the rise may also include 0."
        )
    if verdicts["gamma_share"] != HOLDS:
        off = [f"T={t}" for t, ok in zip(REFERENCES, increasing) if not ok]
        notes.append(
            f"**Gamma and detail** ({', '.join(off)} not increasing at every step): beyond gamma = 1 the explained "
            "score `y_c - gamma y_d` is dominated by `-y_d`, whose positive map lies where `d`'s evidence is weak, "
            "not only on the differing part; the energy share then levels off."
        )
    if verdicts["references"] != HOLDS:
        notes.append(
            f"**References**: comparing with the 3rd or 4th prediction alone gives RD@5% {rd_choice['3rd']:.3f} and "
            f"{rd_choice['4th']:.3f} against {rd_choice['none']:.3f} without comparison: those classes differ from `c` "
            "in several parts, and averaging them into the weights dilutes the comparison with the 2nd prediction, "
            "which is also RD's own `d` (the paper notes that this choice 'directly' optimises RD). The paper's data "
            "sets have several close neighbours per class; these have one."
        )
    if not notes:
        return ""
    return (
        "\n**Why a claim does not (fully) hold here** (plausible reasons, not proofs):\n\n"
        + "\n".join(f"* {note}" for note in notes)
        + "\n"
    )

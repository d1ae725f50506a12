"""Localisation (IoU, AUPRC, pointing games) and the cascading-randomisation sanity check for every method.

Protocol, on the shipped ``species`` model (16 synthetic fine-grained classes,
3x64x64 images, CAM layer ``model.features``: 64 channels at 16x16) and the first
images of the **test** split, whose object masks and boxes are known exactly:

* **Methods.** Every registered method that applies to a plain classifier
  (:func:`camscope.available_methods`): CAM, the gradient family, the
  projection methods, the perturbation methods (Score-CAM, SS-CAM, IS-CAM,
  Ablation-CAM), the ``finer-*`` methods (with their defaults: the target's
  logit minus 0.6 times the 2nd-4th predicted classes' logits) and DiffCAM
  (reference group "others" from a :class:`~camscope.ReferenceBank` built in one
  pass over the first training images). Each explains the image's true class.
  A method that cannot run on this model is listed with the error, not hidden.
* **Sizes.** Perturbation methods cost one forward pass per channel (64) per
  image, times their samples, and SESS one base explanation per patch (122
  patches of a 64 px image at its default 12 scales): they get fewer images (the
  first ``n`` of the same test images, so comparisons with the cheap methods are
  paired on the images both saw), and SS-CAM runs with 10 noise samples instead of
  its paper's 35 (the numbers of images and samples are in the table). Score-family
  and SESS passes run in batches of 256.
* **Metrics** (:mod:`camscope.metrics.localisation`, maps ReLU'd and min-max
  scaled per image): IoU of the map thresholded at 0.5 with the object mask, and
  the best IoU of the mean curve over thresholds 0.05..0.95; pixel AUPRC
  against the object mask; the energy-based pointing game (Score-CAM's metric:
  the share of the map's energy inside the object **box**); the pointing game
  against the object mask with a 4-pixel tolerance (Zhang et al.'s 15 pixels at
  224 px, scaled to 64 px). Two reference rows show what chance and a prior
  achieve: a uniform random map (seeded) and a centred Gaussian (sigma = 1/4 of
  the image). The table is sorted by AUPRC (threshold-free).
* **Sanity check** (:func:`camscope.metrics.sanity_check`, Adebayo et al. 2018):
  the layers are randomised cumulatively from the logits down (``fc``, then the
  last BatchNorm, the last convolution, ...; each parameter redrawn from a
  Gaussian with its original mean and standard deviation, seeded), the maps are
  recomputed for the same classes and compared with the original maps by the
  Spearman rank correlation and SSIM. A map that became constant (e.g. all
  negative before the ReLU) has no ranking left and counts as Spearman 0. A
  method *passes* when its mean Spearman after the whole cascade is below 0.5
  (camscope's convention; the paper judges its curves by eye). ``finer-*``
  methods compare the class with the references chosen on the original model
  at every step (``sanity_check`` freezes the whole comparison), DiffCAM with its bank
  rebuilt for every randomised model (a stale bank would compare the new
  activations with the old model's statistics).

* **ROAD** (DiffCAM's Fig. 6): :func:`camscope.metrics.road` at 25/50/75% removed
  pixels (noisy linear imputation) for DiffCAM and the paper's baselines, on the
  first images.
* **Levels**: everything above runs on the ``species`` model (the easy level of
  :data:`camscope.data.synthetic.LEVELS`); DiffCAM's two claims (Table 1 and ROAD) also
  run at the medium and hard levels with their models, with the same sizes and rules.

Verdict rules: :mod:`camscope.reproduce.localisation.claims` (paired differences
with 95% intervals and the report's effect-size criterion; the sanity check's
pass needs its interval below 0.5; coinciding maps count once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import camscope
from camscope.errors import CamscopeError
from camscope.metrics import auprc, energy_pointing_game, iou, pointing_game, road, sanity_check
from camscope.models.zoo import SmallCNN
from camscope.reproduce.localisation.claims import (
    DIFFCAM_BASELINES,
    RANDOM_MAP,
    ROAD_FRACTIONS,
    claims,
    diffcam_claims,
    sanity_status,
)
from camscope.reproduce.report import Context, Section, markdown_table
from camscope.viz.figures import new_figure

__all__ = ["COSTLY", "PERTURBATION", "SAMPLED", "run"]

#: DiffCAM's two readings of the paper's ImageNet group ("the top 100 most similar mean features"), with k = 5 of
#: the 15 other classes here: every bank sample of the k nearest classes pooled, or the k class means themselves.
KNN_READINGS: dict[str, dict[str, Any]] = {
    "diffcam, knn:5 pooled samples": {"reference": "knn:5", "knn_group": "samples"},
    "diffcam, knn:5 class means": {"reference": "knn:5", "knn_group": "means"},
}
#: Methods with one forward pass per channel (and per sample): fewer images.
PERTURBATION: frozenset[str] = frozenset({"scorecam", "finer-scorecam", "ablationcam", "sscam", "iscam"})
#: Of those, the ones that repeat it for several noise samples or scales.
SAMPLED: frozenset[str] = frozenset({"sscam", "iscam"})
#: Methods that get the perturbation methods' fewer images: those, and SESS (one base explanation per patch: the
#: 122 patches of a 64 px image at its default 12 scales, each a forward and a backward pass).
COSTLY: frozenset[str] = PERTURBATION | {"sess"}
_CHUNK = 128
#: Methods that draw noise, and the seed of their generator (a fresh one per call, so each cascade step draws the same noise).
_NOISY = {"sscam": 101, "smoothgradcampp": 102}
_TOLERANCE = 4.0
_FAMILY = {
    "camscope.methods.gradient": "gradient",
    "camscope.methods.perturbation": "perturbation",
    "camscope.methods.projection": "projection",
    "camscope.methods.finer": "finer",
    "camscope.methods.diffcam": "reference",
}


def _family(name: str, cls: type) -> str:
    if name == "cam":
        return "weights (CAM)"
    if name == "finer-scorecam":
        return "finer, perturbation"
    return _FAMILY.get(cls.__module__, cls.__module__)


def _options(name: str, context: Context, bank: Any) -> dict[str, Any]:
    """Options of a method here (``generator`` entries are replaced by a fresh seeded generator at each call)."""
    options: dict[str, Any] = {}
    if name in PERTURBATION:
        options.update(batch_size=256, progress=False)
    if name == "sess":
        options.update(batch_size=256)
    if name in _NOISY:
        options.update(generator=_NOISY[name])
    if name == "sscam":
        options.update(samples=context.count(10, 1))
    if name == "iscam":
        options.update(samples=context.count(10, 2))
    if name == "smoothgradcampp":
        options.update(samples=context.count(4, 2))
    if name == "diffcam":
        options.update(bank=bank)
    return options


def _fresh(options: dict[str, Any]) -> dict[str, Any]:
    if "generator" in options:
        return {**options, "generator": torch.Generator().manual_seed(int(options["generator"]))}
    return options


def _explain(model: SmallCNN, images: Tensor, labels: Tensor, name: str, options: dict[str, Any]) -> Tensor:
    maps = []
    for start in range(0, images.shape[0], _CHUNK):
        stop = start + _CHUNK
        explanation = camscope.explain(
            model, images[start:stop], method=name, layer=model.cam_layer, target=labels[start:stop], **_fresh(options)
        )
        maps.append(explanation.maps.detach())
    return torch.cat(maps)


def _measure(maps: Tensor, masks: Tensor, boxes: Tensor) -> dict[str, Tensor]:
    """Per-image metrics and the mean IoU curve."""
    overlap = iou(maps, masks=masks)
    return {
        "iou": overlap["iou"],
        "iou_curve": overlap.curves["iou"],
        "thresholds": overlap.steps["iou"],
        "auprc": auprc(maps, masks=masks)["auprc"],
        "energy": energy_pointing_game(maps, boxes=boxes)["proportion"],
        "hit": pointing_game(maps, masks=masks, tolerance=_TOLERANCE)["hit"],
    }


def _mean(values: Tensor) -> float:
    return float(values.nanmean()) if values.numel() else math.nan


def _paired(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over the images where both are defined."""
    count = min(a.numel(), b.numel())
    diff = (a[:count] - b[:count]).double()
    diff = diff[~diff.isnan()]
    if diff.numel() < 2:
        return math.nan, math.nan
    return float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))


def _baselines(context: Context, shape: tuple[int, ...]) -> dict[str, Tensor]:
    count, height, width = shape
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 - height / 2) / (height / 4)
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / (width / 4)
    centre = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / 2).expand(count, height, width).contiguous()
    noise = torch.rand(count, height, width, generator=context.generator(7))
    return {"(reference) centred Gaussian": centre, "(reference) uniform random": noise}


def _layer_labels(model: torch.nn.Module, names: list[str]) -> list[str]:
    modules = dict(model.named_modules())
    return [
        f"{name} ({type(modules[name]).__name__.replace('BatchNorm2d', 'BN').replace('Conv2d', 'conv')})"
        for name in names
    ]


def _sanity_method(
    name: str, model: SmallCNN, options: dict[str, Any], bank_images: Tensor, bank_labels: Tensor
) -> str | Callable[..., Tensor]:
    layer = model.cam_layer
    if name in _NOISY:

        def method(network: torch.nn.Module, inputs: Tensor, target: Any) -> Tensor:
            return camscope.explain(network, inputs, method=name, layer=layer, target=target, **_fresh(options)).maps

        method.__name__ = name
        return method
    if name == "diffcam":

        def diffcam(network: torch.nn.Module, inputs: Tensor, target: Any) -> Tensor:
            bank = camscope.ReferenceBank.build(network, [(bank_images, bank_labels)], layer=layer, batch_size=256)
            return camscope.explain(
                network, inputs, method="diffcam", layer=layer, target=target.classes(), bank=bank
            ).maps

        diffcam.__name__ = name
        return diffcam
    return name


def _figures(
    context: Context,
    images: Tensor,
    masks: Tensor,
    examples: dict[str, Tensor],
    sanity: dict[str, Any],
    layers: list[str],
) -> list[str]:
    """The example maps and the sanity check's curves, on the easy level's ``species`` model."""
    _examples_figure(context, images, masks, examples)
    _sanity_figure(context, sanity, layers)
    return ["figures/localisation_examples.png", "figures/localisation_sanity.png"]


def _examples_figure(context: Context, images: Tensor, masks: Tensor, examples: dict[str, Tensor]) -> None:
    from camscope.engine.method import display_name

    shown = [
        name
        for name in ("gradcam", "gradcampp", "layercam", "scorecam", "eigencam", "diffcam", "finer-gradcam")
        if name in examples
    ]
    rows = min([3, images.shape[0], *(examples[name].shape[0] for name in shown)])
    fig = new_figure((1.7 * (len(shown) + 1), 1.8 * rows + 0.4))
    axes = fig.subplots(rows, len(shown) + 1, squeeze=False)
    for r in range(rows):
        axes[r][0].imshow(images[r].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r][0].contour(masks[r].float().numpy(), levels=[0.5], colors="w", linewidths=0.6)
        for c, name in enumerate(shown, start=1):
            axes[r][c].imshow(examples[name][r].numpy(), cmap="jet", vmin=0, vmax=1)
            axes[r][c].contour(masks[r].float().numpy(), levels=[0.5], colors="w", linewidths=0.6)
            if r == 0:
                axes[r][c].set_title(display_name(name), fontsize=8)
        if r == 0:
            axes[r][0].set_title("image, object", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(
        "species model (easy level), first test images, true class; white outline: the object's mask", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(context.figures / "localisation_examples.png", dpi=100)


def _sanity_figure(context: Context, sanity: dict[str, Any], layers: list[str]) -> None:
    """Each method's curves, told apart by colour (20) and line style; one legend beside both panels."""
    from matplotlib import colormaps

    from camscope.engine.method import display_name

    fig = new_figure((14, 4.6))
    axes = fig.subplots(1, 2, squeeze=False)[0]
    steps = list(range(1, len(layers) + 1))
    colours = [colormaps["tab20"](i) for i in range(20)]
    for index, (method, result) in enumerate(sorted(sanity.items())):
        style = {"color": colours[index % 20], "ls": ("-", "--", ":")[index // 20 % 3], "marker": ".", "lw": 1.1}
        axes[0].plot(steps, result["spearman_curve"], label=display_name(method), **style)
        axes[1].plot(steps, result["ssim_curve"], **style)
    for ax, title in zip(axes, ("mean Spearman with the original map", "mean SSIM with the original map")):
        ax.axhline(0.5 if "Spearman" in title else 0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(steps)
        ax.set_xticklabels(layers, rotation=35, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].text(1, 0.52, "pass: below 0.5 after the whole cascade", fontsize=7, color="grey")
    fig.legend(fontsize=6.5, ncol=2, loc="center right", frameon=False)
    fig.suptitle(
        "Cascading randomisation (Adebayo et al. 2018) of the species model (easy level): layers randomised from the "
        "top down, each method's maps compared with its maps on the trained model",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 0.76, 1))
    fig.savefig(context.figures / "localisation_sanity.png", dpi=110)


@dataclass
class _Measured:
    """Per method: the localisation scores, the maps shown, the sanity check; and the methods skipped."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    examples: dict[str, Tensor] = field(default_factory=dict)
    sanity: dict[str, dict[str, Any]] = field(default_factory=dict)
    layer_names: list[str] = field(default_factory=list)
    kept: dict[str, Tensor] = field(default_factory=dict)


def _sizes(context: Context) -> dict[str, int]:
    """How many images each kind of method and check gets."""
    sizes = {
        "main": context.count(512, 12),
        "perturbation": context.count(64, 2),
        "sampled": context.count(16, 1),
        "sanity": context.count(64, 2),
        "sanity_perturbation": context.count(8, 2),
        "sanity_sampled": context.count(4, 2),
        "road": context.count(64, 4),
        "bank": context.count(1024, 128),  # as the IFA section's training split
        "sanity_bank": context.count(256, 128),
    }
    return sizes


def _sanity(
    context: Context,
    model: SmallCNN,
    name: str,
    options: dict[str, Any],
    images: Tensor,
    labels: Tensor,
    train: Any,
    sizes: dict[str, int],
) -> tuple[dict[str, Any], list[str]]:
    """The cascading-randomisation sanity check of one method: its curves, and the layers randomised."""
    spec = "sanity_sampled" if name in SAMPLED else "sanity_perturbation" if name in COSTLY else "sanity"
    check_count = sizes[spec]
    method = _sanity_method(
        name, model, options, train.images[: sizes["sanity_bank"]], train.labels[: sizes["sanity_bank"]]
    )
    check_options = None if callable(method) else {k: v for k, v in options.items() if k != "bank"}
    check = sanity_check(
        model,
        images[:check_count],
        target=labels[:check_count],
        method=method,
        layer=model.cam_layer,
        options=check_options,
        seed=context.seed,
    )
    rho = check.curves["spearman"].nan_to_num(0.0)  # a constant map has no ranking left
    layer_names = check.params["layers"]
    entry: dict[str, Any] = {
        "n": check_count,
        "spearman_curve": rho.mean(dim=0).tolist(),
        "ssim_curve": check.curves["ssim"].nanmean(dim=0).tolist(),
        "constant": float(check.curves["spearman"][:, -1].isnan().float().mean()),
    }
    entry["final"] = entry["spearman_curve"][-1]
    entry["status"] = sanity_status(check.curves["spearman"][:, -1])
    entry["passed"] = entry["status"] == "pass"
    return entry, layer_names


def _measure_methods(
    context: Context,
    model: SmallCNN,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    boxes: Tensor,
    train: Any,
    bank: Any,
    sizes: dict[str, int],
) -> _Measured:
    """Explain, score and sanity-check every registered method."""
    measured = _Measured()
    results, skipped, examples, sanity = measured.results, measured.skipped, measured.examples, measured.sanity
    for name, cls in camscope.available_methods().items():
        kind = "sampled" if name in SAMPLED else "perturbation" if name in COSTLY else "main"
        count = sizes[kind]
        options = _options(name, context, bank)
        started = time.process_time()
        try:
            maps = _explain(model, images[:count], labels[:count], name, options)
        except CamscopeError as error:
            skipped[name] = str(error).split("\n")[0]
            continue
        examples[name] = maps[:3]
        measured.kept[name] = maps[: sizes["road"]]
        results[name] = {"family": _family(name, cls), "n": count, **_measure(maps, masks[:count], boxes[:count])}
        if name == "sscam":
            results[name]["note"] = f"{options['samples']} noise samples"
        elif name == "iscam":
            results[name]["note"] = f"{options['samples']} scales"
        sanity[name], measured.layer_names = _sanity(context, model, name, options, images, labels, train, sizes)
        check_count = sanity[name]["n"]
        context.log(
            f"  localisation: {name} on {count} images, sanity on {check_count}: {time.process_time() - started:.1f} s CPU"
        )
    return measured


def _results_table(
    results: dict[str, dict[str, Any]], sanity: dict[str, dict[str, Any]], numbers: dict[str, float]
) -> str:
    """The localisation table, sorted by AUPRC; adds each method's means to ``numbers``."""
    rows = []
    for name, entry in sorted(results.items(), key=lambda item: -_mean(item[1]["auprc"])):
        curve = entry["iou_curve"].nanmean(dim=0)
        best = int(curve.argmax())
        check = sanity.get(name)
        means = {key: _mean(entry[key]) for key in ("iou", "auprc", "energy", "hit")}
        for key, value in means.items():
            numbers[f"{name}_{key}"] = value
        if check is not None:
            numbers[f"{name}_sanity_spearman"] = check["final"]
        rows.append(
            [
                f"`{name}`" + (f" ({entry['note']})" if "note" in entry else ""),
                entry["family"],
                entry["n"],
                means["iou"],
                f"{float(curve[best]):.3f} @ {float(entry['thresholds'][best]):.2f}",
                means["auprc"],
                means["energy"],
                means["hit"],
                "–" if check is None else f"{check['final']:.2f} / {check['ssim_curve'][-1]:.2f} ({check['n']} img)",
                "–" if check is None else (check["status"] if check["status"] != "fail" else "**fail**"),
            ]
        )
    return markdown_table(
        [
            "method",
            "family",
            "images",
            "IoU@0.5",
            "best IoU (threshold)",
            "AUPRC",
            "energy PG (box)",
            "pointing game",
            "sanity: Spearman / SSIM after cascade",
            "sanity",
        ],
        rows,
    )


def _sanity_table(sanity: dict[str, dict[str, Any]], labels_pretty: list[str]) -> str:
    """The sanity check per layer."""
    sanity_rows = [
        [
            f"`{name}`",
            *[f"{rho:.2f} / {s:.2f}" for rho, s in zip(entry["spearman_curve"], entry["ssim_curve"])],
            f"{100 * entry['constant']:.0f}%",
        ]
        for name, entry in sorted(sanity.items())
    ]
    return markdown_table(["method (Spearman / SSIM)", *labels_pretty, "constant after cascade"], sanity_rows)


def _body(
    sizes: dict[str, int],
    skipped: dict[str, str],
    table: str,
    sanity_table: str,
    figures: list[str],
    road_table: str,
    groups: list[list[str]],
) -> str:
    """The section's text."""
    skipped_text = (
        "Not measured: " + "; ".join(f"`{name}` ({reason})" for name, reason in skipped.items()) + "."
        if skipped
        else "Every registered method ran."
    )
    return f"""
Every registered CAM method on the `species` test images (the easy level; true class explained), against the exact object masks
and boxes of the synthetic data. Gradient, projection, CAM, finer and DiffCAM rows use the first
{sizes["main"]} test images; Score-CAM, finer-Score-CAM, Ablation-CAM and SESS the first {sizes["perturbation"]}; SS-CAM
and IS-CAM the first {sizes["sampled"]} (one forward pass per channel and sample: 64 channels here). DiffCAM's
reference group is "others" from a bank of {sizes["bank"]} training images. The reference rows show what a map
that knows nothing about the image achieves. Sorted by AUPRC; the sanity columns are the mean Spearman rank
correlation and SSIM between the original maps and the maps after randomising every layer (on the first
{sizes["sanity"]} images, {sizes["sanity_perturbation"]} for perturbation and {sizes["sanity_sampled"]} for SS-CAM and IS-CAM);
a method passes when the 95% interval of that mean lies below 0.5, fails when above, and is "undecided" when the
interval contains 0.5 (too few images to tell). Methods whose maps coincide on this model (equal to 1e-4 on the first
{sizes["road"]} images) count once in the verdicts: {"; ".join(" = ".join(g) for g in groups if len(g) > 1) or "none"}.
{skipped_text}

{table}

**DiffCAM's faithfulness (its Fig. 6, ROAD)**: the drop of the explained class's probability when the top 25, 50
and 75% of the pixels by each map are removed and filled by noisy linear imputation (`camscope.metrics.road`, MoRF;
higher is better), on the first {sizes["road"]} test images, DiffCAM against the paper's baselines
(Score-CAM's 64 channels cost one pass each: the same first images as its row above) and a uniform random map (the
floor: removing that many pixels at random). Every map's top quarter removes most of the confidence of this nearly
certain model, so the maps differ little from each other, but all of them far from the random floor:

{road_table}

The DiffCAM paper's ImageNet group is "the top 100 most similar mean features": read literally, the group is the
100 class means themselves (`knn_group="means"`: their mean and the scatter of the means, at most 99 directions
in 2048, so the regularisation decides the rest); pooling every sample of the 100 nearest classes
(`knn_group="samples"`, camscope's default) is the other reading. Here, with 16 classes, both rows use the 5 classes
whose means are nearest to the image (its own class excluded), beside the "others" group of the `diffcam` row; the
verdicts use the `diffcam` row.

![Maps of a few methods on the first test images; white: object mask]({figures[0]})

**Sanity check per layer** (cascading randomisation, top layer first; each cell: mean Spearman / mean SSIM with
the original maps after randomising this layer and all those above it):

{sanity_table}

![Sanity check curves]({figures[1]})

"Constant after cascade": the share of images whose map became constant (all negative before the ReLU) after the
whole cascade; such a map has no ranking left and counts as Spearman 0.

Reading the tables: the species model ends with global average pooling and one linear layer, so CAM, Grad-CAM,
HiResCAM and XGrad-CAM give the same map here (see the IFA section) and their rows coincide. EigenCAM and DiffCAM
(bank rebuilt for each randomised model) do not read the classifier's weights, so randomising `fc` alone cannot
change them; methods whose channel weights keep only positive gradient parts (Grad-CAM++, LayerCAM) or come from
the softmax of masked scores (the Score-CAM family) can stay close to a class-agnostic "sum of active channels"
after `fc` is randomised, because the object is where every channel fires. Whether a map changes *after the whole
cascade* is the verdict; the first column shows how much the map depends on the classifier itself.
"""


def _groups(kept: dict[str, Tensor]) -> list[list[str]]:
    """Methods grouped by map: two methods whose maps agree to 1e-4 on every kept image are one map."""
    groups: list[list[str]] = []
    for name, maps in kept.items():
        for group in groups:
            other = kept[group[0]]
            count = min(other.shape[0], maps.shape[0])
            if torch.allclose(maps[:count], other[:count], atol=1e-4, rtol=0):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def _road(
    model: SmallCNN, images: Tensor, labels: Tensor, kept: dict[str, Tensor], seed: int
) -> dict[str, dict[str, Tensor]]:
    """ROAD (noisy linear imputation, MoRF) at DiffCAM's 25/50/75% for DiffCAM and the paper's baselines."""
    found = {}
    for name in ("diffcam", *KNN_READINGS, *DIFFCAM_BASELINES, RANDOM_MAP):
        if name not in kept:
            continue
        count = kept[name].shape[0]
        result = road(model, images[:count], kept[name], target=labels[:count], percentages=ROAD_FRACTIONS, seed=seed)
        found[name] = {"drop": result["score"][:, None] - result.curves["morf"], "morf": result.curves["morf"]}
    return found


def _road_table(found: dict[str, dict[str, Tensor]], numbers: dict[str, float]) -> str:
    rows = []
    for name, entry in found.items():
        drops = entry["drop"].mean(dim=0).tolist()
        for fraction, value in zip(ROAD_FRACTIONS, drops):
            numbers[f"{name}_road_drop_{round(100 * fraction)}"] = value
        rows.append([f"`{name}`", entry["drop"].shape[0], *drops])
    return markdown_table(["method", "images", *[f"drop @{round(100 * f)}% ↑" for f in ROAD_FRACTIONS]], rows)


def _level_diffcam(context: Context, level: str, sizes: dict[str, int]) -> tuple[list[Any], list[list[Any]]]:
    """DiffCAM's Table 1 and ROAD claims at another difficulty level: DiffCAM, its baselines and the random map."""
    name = context.levels[level]
    model = context.model(name)
    count = sizes["main"]
    test = context.data(name, "test", count)
    images, labels = test.images[:count], test.labels[:count]
    masks, boxes = test.batch.object_masks[:count].bool(), test.boxes[:count]
    train = context.data(name, "train", sizes["bank"])
    bank = camscope.ReferenceBank.build(model, [(train.images, train.labels)], layer=model.cam_layer, batch_size=256)
    results: dict[str, dict[str, Any]] = {}
    kept: dict[str, Tensor] = {}
    for method in ("diffcam", *DIFFCAM_BASELINES):
        n = sizes["perturbation"] if method in COSTLY else count
        maps = _explain(model, images[:n], labels[:n], method, _options(method, context, bank))
        results[method] = {"family": "", "n": n, **_measure(maps, masks[:n], boxes[:n])}
        kept[method] = maps[: sizes["road"]]
    kept[RANDOM_MAP] = _baselines(context, tuple(masks.shape))[RANDOM_MAP][: sizes["road"]]
    road_found = _road(model, images, labels, kept, context.seed)
    rows = [
        [
            f"{level}",
            f"`{method}`",
            results[method]["n"] if method in results else sizes["road"],
            _mean(results[method]["iou"]) if method in results else math.nan,
            _mean(results[method]["auprc"]) if method in results else math.nan,
            *road_found[method]["drop"].mean(dim=0).tolist(),
        ]
        for method in road_found
    ]
    context.log(f"  localisation: DiffCAM's claims at the {level} level done")
    return diffcam_claims(results, road_found, level), rows


def _levels_text(rows: list[list[Any]], sizes: dict[str, int]) -> str:
    table = markdown_table(
        ["level", "method", "images", "IoU@0.5", "AUPRC", *[f"ROAD drop @{round(100 * f)}% ↑" for f in ROAD_FRACTIONS]],
        rows,
    )
    return f"""
**DiffCAM's Table 1 and Fig. 6 claims at the other levels** (the same protocol on the medium and hard species and
their models: the first {sizes["main"]} test images, {sizes["perturbation"]} for Score-CAM, ROAD on the first
{sizes["road"]}, DiffCAM's "others" group from a bank of {sizes["bank"]} training images; the rest of this section
runs at the easy level only):

{table}
"""


def run(context: Context) -> Section:
    """Localisation and sanity check of every applicable method (see the module docstring)."""
    model = context.model("species")
    sizes = _sizes(context)
    # The same prefixes of the splits as the IFA section, so a whole report renders them once.
    test = context.data("species", "test", context.count(1024, 64))
    count = sizes["main"]
    images, labels = test.images[:count], test.labels[:count]
    masks, boxes = test.batch.object_masks[:count].bool(), test.boxes[:count]
    train = context.data("species", "train", sizes["bank"])
    bank = camscope.ReferenceBank.build(model, [(train.images, train.labels)], layer=model.cam_layer, batch_size=256)

    measured = _measure_methods(context, model, images, labels, masks, boxes, train, bank, sizes)
    results, sanity = measured.results, measured.sanity
    for label, options in KNN_READINGS.items():
        maps = _explain(model, images, labels, "diffcam", {"bank": bank, **options})
        results[label] = {"family": "reference (kNN)", "n": count, **_measure(maps, masks, boxes)}
        measured.kept[label] = maps[: sizes["road"]]
    for label, maps in _baselines(context, tuple(masks.shape)).items():
        results[label] = {"family": "reference", "n": masks.shape[0], **_measure(maps, masks, boxes)}
        if label == RANDOM_MAP:
            measured.kept[label] = maps[: sizes["road"]]

    numbers: dict[str, float] = {}
    table = _results_table(results, sanity, numbers)
    labels_pretty = _layer_labels(model, measured.layer_names)
    sanity_table = _sanity_table(sanity, labels_pretty)
    figures = _figures(context, images[:3], masks[:3], measured.examples, sanity, labels_pretty)
    groups = _groups(measured.kept)
    road_found = _road(model, images, labels, measured.kept, context.seed)
    road_table = _road_table(road_found, numbers)
    claims_found = claims(results, sanity, road_found, groups, numbers)
    body = _body(sizes, measured.skipped, table, sanity_table, figures, road_table, groups)
    level_rows: list[list[Any]] = []
    for level in context.levels:
        if level != "easy":
            found, rows = _level_diffcam(context, level, sizes)
            claims_found += found
            level_rows += rows
    if level_rows:
        body += _levels_text(level_rows, sizes)
    return Section(
        title="Localisation and sanity check", body=body, claims=claims_found, figures=figures, numbers=numbers
    )

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
  image, times their samples: they get fewer images (the first ``n`` of the same
  test images, so comparisons with the cheap methods are paired on the images
  both saw), and SS-CAM runs with 10 noise samples instead of its paper's 35 (the
  numbers of images and samples are in the table). Score-family passes run in
  batches of 256.
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

Verdict rules (computed from the numbers; paired differences over the images both
methods saw, "significant" when the mean difference exceeds twice its standard
error):

* Score-CAM's energy-based pointing game beats Grad-CAM and Grad-CAM++: holds
  when significantly higher than both, partly when significantly higher than one
  or higher on average than both, else fails.
* Grad-CAM++ localises better than Grad-CAM: on IoU@0.5, AUPRC and the energy
  pointing game, holds when significantly better on all three, partly when
  significantly better on at least one and not significantly worse on any, else
  fails.
* Adebayo et al.: a method's maps must change when the weights are randomised;
  holds when every method passes, partly when at least half do, else fails.
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
from camscope.metrics import auprc, energy_pointing_game, iou, pointing_game, sanity_check
from camscope.models.zoo import SmallCNN
from camscope.reproduce.report import FAILS, HOLDS, PARTLY, Claim, Context, Section, markdown_table
from camscope.viz.figures import new_figure

__all__ = ["PERTURBATION", "SAMPLED", "run"]

#: Methods with one forward pass per channel (and per sample): fewer images.
PERTURBATION: frozenset[str] = frozenset({"scorecam", "finer-scorecam", "ablationcam", "sscam", "iscam"})
#: Of those, the ones that repeat it for several noise samples or scales.
SAMPLED: frozenset[str] = frozenset({"sscam", "iscam"})
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

    shown = [
        name
        for name in ("gradcam", "gradcampp", "layercam", "scorecam", "eigencam", "diffcam", "finer-gradcam")
        if name in examples
    ]
    rows = min([3, images.shape[0], *(examples[name].shape[0] for name in shown)])
    fig = new_figure((1.7 * (len(shown) + 1), 1.8 * rows))
    axes = fig.subplots(rows, len(shown) + 1, squeeze=False)
    for r in range(rows):
        axes[r][0].imshow(images[r].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r][0].contour(masks[r].float().numpy(), levels=[0.5], colors="w", linewidths=0.6)
        for c, name in enumerate(shown, start=1):
            axes[r][c].imshow(examples[name][r].numpy(), cmap="jet", vmin=0, vmax=1)
            axes[r][c].contour(masks[r].float().numpy(), levels=[0.5], colors="w", linewidths=0.6)
            if r == 0:
                axes[r][c].set_title(name, fontsize=8)
        if r == 0:
            axes[r][0].set_title("image, object", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(context.figures / "localisation_examples.png", dpi=100)

    fig = new_figure((11, 3.8))

    axes = fig.subplots(1, 2, squeeze=False)
    steps = list(range(1, len(layers) + 1))
    for index, (method, result) in enumerate(sorted(sanity.items())):
        style = "-" if index < 10 else "--"
        axes[0][0].plot(steps, result["spearman_curve"], style, marker=".", lw=1, label=method)
        axes[0][1].plot(steps, result["ssim_curve"], style, marker=".", lw=1, label=method)
    for ax, title in zip(axes[0], ("mean Spearman with the original map", "mean SSIM with the original map")):
        ax.axhline(0.5 if "Spearman" in title else 0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(steps)
        ax.set_xticklabels(layers, rotation=35, ha="right", fontsize=7)
        ax.set_title(title + " (cascade, top layer first)", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0][1].legend(fontsize=6, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(context.figures / "localisation_sanity.png", dpi=100)
    return ["figures/localisation_examples.png", "figures/localisation_sanity.png"]


@dataclass
class _Measured:
    """Per method: the localisation scores, the maps shown, the sanity check; and the methods skipped."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    examples: dict[str, Tensor] = field(default_factory=dict)
    sanity: dict[str, dict[str, Any]] = field(default_factory=dict)
    layer_names: list[str] = field(default_factory=list)


def _sizes(context: Context) -> dict[str, int]:
    """How many images each kind of method and check gets."""
    sizes = {
        "main": context.count(512, 12),
        "perturbation": context.count(64, 2),
        "sampled": context.count(16, 1),
        "sanity": context.count(16, 1),
        "sanity_perturbation": context.count(4, 1),
        "sanity_sampled": context.count(2, 1),
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
    spec = (
        "sanity_sampled"
        if name in SAMPLED | {"smoothgradcampp"}
        else "sanity_perturbation"
        if name in PERTURBATION
        else "sanity"
    )
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
    entry["passed"] = entry["final"] < 0.5
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
        kind = "sampled" if name in SAMPLED else "perturbation" if name in PERTURBATION else "main"
        count = sizes[kind]
        options = _options(name, context, bank)
        started = time.process_time()
        try:
            maps = _explain(model, images[:count], labels[:count], name, options)
        except CamscopeError as error:
            skipped[name] = str(error).split("\n")[0]
            continue
        examples[name] = maps[:3]
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
                "–" if check is None else ("pass" if check["passed"] else "**fail**"),
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


def _claims(
    results: dict[str, dict[str, Any]], sanity: dict[str, dict[str, Any]], numbers: dict[str, float]
) -> list[Claim]:
    """Score-CAM's and Grad-CAM++'s localisation claims and the sanity check's; adds the tallies to ``numbers``."""
    claims = []
    if {"scorecam", "gradcam", "gradcampp"} <= set(results):
        comparisons = {
            other: _paired(results["scorecam"]["energy"], results[other]["energy"])
            for other in ("gradcam", "gradcampp")
        }
        significant = sum(d > 2 * se for d, se in comparisons.values())
        higher = sum(d > 0 for d, _ in comparisons.values())
        verdict = HOLDS if significant == 2 else PARTLY if significant == 1 or higher == 2 else FAILS
        count = results["scorecam"]["n"]
        claims.append(
            Claim(
                "Score-CAM (Wang et al. 2020): its maps put more energy inside the object box than Grad-CAM's and "
                "Grad-CAM++'s (energy-based pointing game, ILSVRC 2012 validation, VGG16)",
                verdict,
                f"on the first {count} test images: Score-CAM {_mean(results['scorecam']['energy'][:count]):.3f}, "
                + ", ".join(
                    f"{o} {_mean(results[o]['energy'][:count]):.3f} (difference {d:+.3f} ± {se:.3f})"
                    for o, (d, se) in comparisons.items()
                )
                + ". Rule: significantly higher (difference > 2 SE) than both → holds; than one, or higher on average than both → partly. "
                + "On the same images its AUPRC differs from Grad-CAM's by {:+.3f} ± {:.3f}: ".format(
                    *_paired(results["scorecam"]["auprc"], results["gradcam"]["auprc"])
                )
                + "the energy game rewards maps whose mass is concentrated, and here Grad-CAM's map is the exact CAM "
                "W_c·A, whose negative parts the ReLU cuts away, while Score-CAM's softmax-normalised channel weights "
                "are all positive and spread the mass over every active channel (a plausible reason; the paper's "
                "VGG16 on ImageNet has no such exact CAM).",
            )
        )
    if {"gradcam", "gradcampp"} <= set(results):
        keys = {"iou": "IoU@0.5", "auprc": "AUPRC", "energy": "energy PG"}
        diffs = {key: _paired(results["gradcampp"][key], results["gradcam"][key]) for key in keys}
        better = sum(d > 2 * se for d, se in diffs.values())
        worse = sum(d < -2 * se for d, se in diffs.values())
        verdict = HOLDS if better == 3 else PARTLY if better >= 1 and worse == 0 else FAILS
        claims.append(
            Claim(
                "Grad-CAM++ (Chattopadhay et al. 2018): better object localisation than Grad-CAM",
                verdict,
                "Grad-CAM++ − Grad-CAM on "
                + f"{results['gradcam']['n']} images: "
                + ", ".join(f"{keys[k]} {d:+.3f} ± {se:.3f}" for k, (d, se) in diffs.items())
                + ". Rule: significantly better on all three → holds; on one or more and worse on none → partly. "
                "Grad-CAM++ keeps only positive gradient parts (all channel weights positive here), so its maps cover "
                "the object more fully (IoU, AUPRC) but put more mass outside the box than the exact CAM that Grad-CAM "
                "equals on this model.",
            )
        )
    passed = [name for name, entry in sanity.items() if entry["passed"]]
    failed = [name for name, entry in sanity.items() if not entry["passed"]]
    verdict = HOLDS if not failed else PARTLY if 2 * len(passed) >= len(sanity) else FAILS
    unchanged_by_fc = [name for name, entry in sorted(sanity.items()) if entry["spearman_curve"][0] > 0.9]
    claims.append(
        Claim(
            "Adebayo et al. (2018): a method that explains the model must give different maps when the model's weights "
            "are randomised (cascading randomisation from the logits down)",
            verdict,
            f"{len(passed)}/{len(sanity)} methods pass (mean Spearman after the cascade < 0.5)"
            + (f"; failing: {', '.join(failed)}" if failed else "")
            + (
                f". Nearly unchanged when only the classifier `fc` is randomised (Spearman > 0.9): {', '.join(unchanged_by_fc)}"
                if unchanged_by_fc
                else ""
            )
            + ". Rule: all pass → holds, at least half → partly.",
        )
    )
    numbers["methods_measured"] = float(len(sanity))
    numbers["methods_passing_sanity"] = float(len(passed))
    return claims


def _body(sizes: dict[str, int], skipped: dict[str, str], table: str, sanity_table: str, figures: list[str]) -> str:
    """The section's text."""
    skipped_text = (
        "Not measured: " + "; ".join(f"`{name}` ({reason})" for name, reason in skipped.items()) + "."
        if skipped
        else "Every registered method ran."
    )
    return f"""
Every registered CAM method on the `species` test images (true class explained), against the exact object masks
and boxes of the synthetic data. Gradient, projection, CAM, finer and DiffCAM rows use the first
{sizes["main"]} test images; Score-CAM, finer-Score-CAM and Ablation-CAM the first {sizes["perturbation"]}; SS-CAM
and IS-CAM the first {sizes["sampled"]} (one forward pass per channel and sample: 64 channels here). DiffCAM's
reference group is "others" from a bank of {sizes["bank"]} training images. The reference rows show what a map
that knows nothing about the image achieves. Sorted by AUPRC; the sanity columns are the mean Spearman rank
correlation and SSIM between the original maps and the maps after randomising every layer (on the first
{sizes["sanity"]} images, {sizes["sanity_perturbation"]} for perturbation and {sizes["sanity_sampled"]} for sampled methods).
{skipped_text}

{table}

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
    for label, maps in _baselines(context, tuple(masks.shape)).items():
        results[label] = {"family": "reference", "n": masks.shape[0], **_measure(maps, masks, boxes)}

    numbers: dict[str, float] = {}
    table = _results_table(results, sanity, numbers)
    labels_pretty = _layer_labels(model, measured.layer_names)
    sanity_table = _sanity_table(sanity, labels_pretty)
    figures = _figures(context, images[:3], masks[:3], measured.examples, sanity, labels_pretty)
    claims = _claims(results, sanity, numbers)
    body = _body(sizes, measured.skipped, table, sanity_table, figures)
    return Section(title="Localisation and sanity check", body=body, claims=claims, figures=figures, numbers=numbers)

"""DiffCAM section: the F1 curves, the species examples and the digits figures (Figures 3, 4 and 9's analogues)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.models.zoo import SmallCNN
from camscope.reproduce.diffcam.measure import DIGIT_METHODS, FINER_GAMMA, METHODS, THRESHOLDS, SettingResult
from camscope.reproduce.report import Context
from camscope.viz.figures import new_figure

__all__ = [
    "FIGURES",
    "digits_figure",
    "draw_figures",
    "f1_figure",
    "intra_figure",
    "species_figure",
    "species_figure_name",
]

#: The section's figures shared by the levels, in the order of the report (each level adds its example figure).
FIGURES: tuple[str, ...] = ("diffcam_f1_curves.png", "diffcam_digits.png", "diffcam_intra.png")


def _grey_rgb(image: Tensor) -> Any:
    return image[0].clamp(0, 1)[..., None].expand(-1, -1, 3).numpy()


def f1_figure(path: Any, levels: dict[str, dict[str, SettingResult]]) -> None:
    """Part F1 against the threshold: one row per level, one column per counterfactual setting."""
    from camscope.viz.figures import save_figure

    columns = max(len(settings) for settings in levels.values())
    figure = new_figure((5.0 * columns, 3.3 * len(levels)))
    axes = figure.subplots(len(levels), columns, squeeze=False)
    styles = {
        "gradcam": "C0-",
        "finer": "C1-",
        "diffcam": "C3-",
        "diffcam_small_lambda": "C3:",
        "diffcam_others": "C7--",
    }
    for row, (level, settings) in zip(axes, levels.items()):
        for axis, (name, result) in zip(row, settings.items()):
            for key, label in METHODS:
                axis.plot(THRESHOLDS, result.curves[key].numpy(), styles[key], marker="o", markersize=3, label=label)
            axis.set_title(f"{level}: {name} counterfactual class ({result.pairs} pairs)", fontsize=10)
            axis.set_xlabel("threshold t")
            axis.set_ylabel("part F1")
            axis.set_ylim(0, 1)
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    save_figure(path, figure)


def species_figure(path: Any, species_data: dict[str, Any], title: str) -> None:
    """Example maps for the most similar counterfactual class, one row per differing part; ``title``: model and level."""

    from camscope.data.synthetic import PARTS
    from camscope.viz.figures import overlay, save_figure

    setting: SettingResult = species_data["settings"]["similar"]
    batch = species_data["batch"]
    counter = species_data["counters"]["similar"]
    versus = species_data["versus"]["similar"]
    species = species_data["species"]
    differs = species.differs()[batch.labels, versus]
    # one row per differing part (wing, body, tail, head, beak) where the sample has one
    rows: list[int] = []
    for p in range(len(PARTS)):
        found = differs[:, p].nonzero().flatten()
        if found.numel():
            rows.append(int(found[0]))
    shown = (("gradcam", "Grad-CAM"), ("finer", "Finer-CAM"), ("diffcam", "DiffCAM why c, not d"))
    figure = new_figure((2.0 * (2 + len(shown)), 2.15 * len(rows)))
    axes = figure.subplots(len(rows), 2 + len(shown), squeeze=False)
    for row, i in enumerate(rows):
        image = batch.images[i].permute(1, 2, 0).numpy()
        mask = species.difference_masks(batch.part_masks[i : i + 1], batch.labels[i : i + 1], versus[i : i + 1])[0]
        c, d = int(batch.labels[i]), int(versus[i])
        parts = ", ".join(species.differing_parts(c, d))
        axes[row][0].imshow(image)
        axes[row][0].contour(mask.float().numpy(), levels=[0.5], colors="white", linewidths=1.0)
        axes[row][0].set_title(f"c: {species.class_names[c]}\n(differs in: {parts})", fontsize=7)
        axes[row][1].imshow(counter.images[i].permute(1, 2, 0).numpy())
        axes[row][1].set_title(f"d: {species.class_names[d]}", fontsize=7)
        for column, (key, label) in enumerate(shown, start=2):
            axes[row][column].imshow(overlay(image, setting.maps[key][i]))
            axes[row][column].contour(mask.float().numpy(), levels=[0.5], colors="white", linewidths=0.8)
            if row == 0:
                axes[row][column].set_title(label, fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle(
        f"{title}: maps of c against its most similar class d (Finer-CAM: Grad-CAM of y_c - {FINER_GAMMA:g} y_d; "
        "DiffCAM: d's training images as the reference group)\nwhite outline: the parts in which c differs from d",
        fontsize=7,
    )
    figure.tight_layout()
    save_figure(path, figure)


def digits_figure(path: Any, model: SmallCNN, digits: dict[str, Any]) -> list[tuple[int, list[int]]]:
    """Figure 3's analogue; returns the (digit, counterfactual digits) shown."""

    from camscope.viz.figures import overlay, save_figure

    bank: ReferenceBank = digits["bank"]
    images, labels, predicted = digits["images"], digits["labels"], digits["predicted"]
    means = bank.means
    distances = torch.cdist(means, means)
    distances.fill_diagonal_(math.inf)
    nearest = distances.argsort(dim=1)[:, :3]
    rows: list[tuple[int, list[int]]] = []
    indices: list[int] = []
    for digit in (3, 7, 9):
        found = ((labels == digit) & (predicted == digit)).nonzero().flatten()
        if found.numel():
            indices.append(int(found[0]))
            rows.append((digit, [bank.labels[int(j)] for j in nearest[bank.labels.index(digit)]]))
    columns = 1 + len(DIGIT_METHODS) + 3
    figure = new_figure((1.45 * columns, 1.6 * len(rows)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, (i, (digit, others)) in enumerate(zip(indices, rows)):
        image = _grey_rgb(images[i])
        axes[row][0].imshow(image)
        axes[row][0].set_title(f"input ({digit})", fontsize=7)
        for column, (key, label) in enumerate(DIGIT_METHODS, start=1):
            axes[row][column].imshow(overlay(image, digits["maps"][key][i]))
            if row == 0:
                axes[row][column].set_title(label, fontsize=7)
        for column, d in enumerate(others, start=1 + len(DIGIT_METHODS)):
            explanation = camscope.explain(
                model,
                images[i : i + 1],
                method="diffcam",
                layer=model.cam_layer,
                target=digit,
                reference=bank.group("class", d),
            )
            axes[row][column].imshow(overlay(image, explanation.maps[0].detach().cpu()))
            axes[row][column].set_title(f"why not {d}", fontsize=7)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    save_figure(path, figure)
    return rows


def intra_figure(path: Any, digits: dict[str, Any], count: int = 8) -> list[int]:
    """Figure 4's analogue: the most atypical test digits and their intra-class DiffCAM maps."""

    from camscope.viz.figures import overlay, save_figure

    order = digits["atypicality"].argsort(descending=True)[:count].tolist()
    figure = new_figure((1.45 * len(order), 3.3))
    axes = figure.subplots(2, len(order), squeeze=False)
    for column, i in enumerate(order):
        image = _grey_rgb(digits["images"][i])
        label, predicted = int(digits["labels"][i]), int(digits["predicted"][i])
        mark = f"{label}→{predicted}" if label != predicted else f"{label}"
        axes[0][column].imshow(image)
        axes[0][column].set_title(f"{mark}  p={float(digits['true_probability'][i]):.2f}", fontsize=7)
        axes[1][column].imshow(overlay(image, digits["intra_maps"][i]))
        axes[1][column].set_title(f"d²={float(digits['atypicality'][i]):.0f}", fontsize=7)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    save_figure(path, figure)
    return order


def draw_figures(
    context: Context, levels: dict[str, dict[str, Any]], digits: dict[str, Any], begin: float
) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """Draw the figures into ``context.figures``; returns the digits shown and the atypical examples."""
    folder = context.figures  # creates out/figures
    f1_figure(
        folder / FIGURES[0], {f"{context.levels[level]} ({level})": data["settings"] for level, data in levels.items()}
    )
    for level, data in levels.items():
        species_figure(folder / species_figure_name(level), data, f"{context.levels[level]} ({level} level)")
    shown = digits_figure(folder / FIGURES[1], context.model("digits"), digits)
    atypical = intra_figure(folder / FIGURES[2], digits)
    context.log(f"reproduce: diffcam: figures done in {time.perf_counter() - begin:.1f} s")
    return shown, atypical


def species_figure_name(level: str) -> str:
    """The file of a level's example figure."""
    return f"diffcam_species_{level}.png"

"""Finer-CAM section: the example maps and the gamma sweep figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from camscope.reproduce.finer.measure import (
    BASES,
    COUNT,
    GAMMA,
    METHOD_NAMES,
    POINTING_TOLERANCE,
    REFERENCES,
    FinerData,
    energy_share,
)
from camscope.viz.figures import new_figure

__all__ = ["example_figure", "gamma_figure"]


def _examples(data: FinerData, count: int = 4) -> list[int]:
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


def example_figure(path: Any, data: FinerData, maps: dict[str, Tensor], class_names: list[str], title: str) -> None:
    """Example maps of every base method and its Finer-CAM, one row per image; ``title`` names the model and level."""

    from camscope.viz.figures import overlay, save_figure

    rows = _examples(data)
    columns = ["image"] + [name for base in BASES for name in (base, f"finer-{base}")]
    figure = new_figure((1.55 * len(columns), 1.75 * len(rows)))
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
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
                heading = (
                    "image, differing part"
                    if name == "image"
                    else (f"Finer-{METHOD_NAMES[name[6:]]}" if name.startswith("finer-") else METHOD_NAMES[name])
                )
                axis.set_title(heading, fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle(
        f"{title}: Grad-CAM, LayerCAM, Score-CAM of the true class (left: class vs its most similar class) and their "
        f"Finer-CAM against the next {COUNT} predictions (gamma={GAMMA})\nwhite outline: the part in which the class "
        "differs from its most similar class; below each map: the share of its energy in that part",
        fontsize=7,
    )
    save_figure(path, figure, dpi=130)


def gamma_figure(
    path: Any,
    sweeps: dict[str, dict[tuple[int, float], dict[str, float]]],
    chances: dict[str, float],
    gammas: Sequence[float],
) -> None:
    """Figure 6b's analogue at every level (one row each): RD@5% and the drop, the part's share, the pointing game."""
    from camscope.viz.figures import save_figure

    positions = list(range(len(gammas)))
    labels = [f"{g:g}" for g in gammas]
    figure = new_figure((13.0, 3.1 * len(sweeps)))
    rows = figure.subplots(len(sweeps), 3, squeeze=False)
    width = 0.8 / len(REFERENCES)
    for (title, sweep), (left, middle, right) in zip(sweeps.items(), rows):
        for i, count in enumerate(REFERENCES):
            drops = [sweep[(count, g)]["drop_target@0.05"] for g in gammas]
            offsets = [p + (i - (len(REFERENCES) - 1) / 2) * width for p in positions]
            left.bar(offsets, drops, width=width, alpha=0.35, color=f"C{i}")
            for axis, key in ((left, "rd@0.05"), (middle, "share_differing"), (right, "pointing")):
                axis.plot(
                    positions, [sweep[(count, g)][key] for g in gammas], marker="o", color=f"C{i}", label=f"T={count}"
                )
        middle.axhline(chances[title], color="grey", linestyle=":", label="a uniform map")
        left.set_title(f"{title}\nRD@5% (lines), the class's own confidence drop (bars)", fontsize=9)
        middle.set_title(f"{title}\nshare of map energy in the differing part", fontsize=9)
        right.set_title(f"{title}\nmap's peak within {POINTING_TOLERANCE:g} px of the differing part", fontsize=9)
        for axis in (left, middle, right):
            axis.set_xticks(positions, labels)
            axis.set_xlabel("comparison strength gamma (Finer-Grad-CAM)", fontsize=8)
            axis.legend(fontsize=7, title="references", title_fontsize=7)
        left.set_ylim(bottom=0)
    figure.suptitle(
        "Finer-Grad-CAM against the comparison strength gamma (0: Grad-CAM) and the number of references T "
        "(the next T predictions), true class, every level's model",
        fontsize=10,
    )
    figure.tight_layout()
    save_figure(path, figure, dpi=110)

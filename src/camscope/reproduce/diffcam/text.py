"""DiffCAM section: the tables beside the paper's Table 2, and the report's text."""

from __future__ import annotations

import math
from typing import Any

from camscope.reproduce.diffcam.measure import (
    DIGIT_METHODS,
    FINER_GAMMA,
    HEADLINE_THRESHOLD,
    METHODS,
    PAPER_TABLE2,
    Comparison,
    SettingResult,
)
from camscope.reproduce.report import Context, markdown_table

__all__ = ["body", "describe", "paper_table", "part_table", "setting_table"]


def setting_table(result: SettingResult, paper: str) -> str:
    keys = [key for key, _ in METHODS]
    headers = ["metric", "paper: GALORE", "paper: DiffCAM"] + [label for _, label in METHODS]
    rows = []
    for metric, paper_key, label in (
        ("recall", "R", f"R (t = {HEADLINE_THRESHOLD})"),
        ("precision", "P", f"P (t = {HEADLINE_THRESHOLD})"),
        ("part_iou", "PIoU", f"PIoU (t = {HEADLINE_THRESHOLD})"),
        ("f1", None, f"F1 (t = {HEADLINE_THRESHOLD})"),
        ("f1_mean", None, "mean F1 over t = 0.1..0.9"),
    ):
        galore = PAPER_TABLE2[paper_key][paper]["GALORE"] if paper_key else math.nan
        diffcam = PAPER_TABLE2[paper_key][paper]["DiffCAM"] if paper_key else math.nan
        rows.append([label, galore, diffcam] + [result.mean(key, metric) for key in keys])
    return markdown_table(headers, rows)


def part_table(result: SettingResult) -> tuple[str, dict[str, float]]:
    """Mean F1 over thresholds by the part in which a one-part pair differs."""
    from camscope.data.synthetic import PARTS

    assert result.differing is not None
    shown = ["gradcam", "finer", "diffcam"]
    rows, numbers = [], {}
    single = result.differing.sum(dim=1) == 1
    for p, part in enumerate(PARTS):
        chosen = single & result.differing[:, p]
        if not bool(chosen.any()):
            continue
        values = [float(result.scores[key]["f1_mean"][chosen].double().nanmean()) for key in shown]
        numbers.update({f"similar_f1_mean_{part}_{key}": value for key, value in zip(shown, values)})
        rows.append([part, int(chosen.sum())] + values)
    labels = dict(METHODS)
    return markdown_table(["differing part", "pairs"] + [labels[key] for key in shown], rows), numbers


def paper_table() -> str:
    methods = ["Goyal", "CounteRGAN", "GALORE", "DiffCAM"]
    headers = ["metric"] + [f"random: {m}" for m in methods] + [f"similar: {m}" for m in methods]
    rows = [
        [metric]
        + [PAPER_TABLE2[metric]["random"][m] for m in methods]
        + [PAPER_TABLE2[metric]["similar"][m] for m in methods]
        for metric in ("R", "P", "PIoU")
    ]
    return markdown_table(headers, rows, digits=2)


def describe(comparisons: dict[str, Comparison], labels: dict[str, str]) -> str:
    return "; ".join(f"vs {labels[key]} {c.text()} ({c.outcome})" for key, c in comparisons.items())


def body(
    context: Context,
    species_data: dict[str, Any],
    digits: dict[str, Any],
    settings: dict[str, SettingResult],
    shown: list[tuple[int, list[int]]],
    atypical: list[int],
    figures: list[str],
    ink_comparisons: dict[str, Comparison],
) -> str:
    similar, random_ = settings["similar"], settings["random"]
    parts_text, _ = part_table(similar)
    mode = "quick mode: few pairs, noisy numbers; " if context.quick else ""
    rho = min(species_data["shrinkage"], 0.999)
    return f"""
DiffCAM explains an example by the direction that best separates its embedding from a reference group
(`w* = (S_v + λI)^-1 (z − μ)`, `M = Σ_k w*_k A_k`). The paper's counterfactual evaluation (Table 2, CUB-200-2011 with
part annotations, GALORE's protocol) asks whether "why a, not b" maps select the parts whose attributes differ between
a and b. Here the synthetic species give that answer exactly: {mode}{species_data["train_size"]} training images in the
reference bank (the species model's accuracy on the {species_data["tested"]} test images rendered: {100 * species_data["accuracy"]:.1f}%),
{similar.pairs} correctly classified test images, each paired with its most similar class (one differing part;
{similar.parts_differing:.2f} visible differing parts on average) and with a random other class ({random_.parts_differing:.2f}
differing parts). Methods at the last conv block: Grad-CAM of c, Finer-CAM (`y_c − {FINER_GAMMA} y_d`), DiffCAM with
reference class d from the bank (OAS-shrunk covariance; mean shrinkage coefficient ρ = {species_data["shrinkage"]:.3f} over the
classes, i.e. a Tikhonov term λ ≈ {rho / (1 - rho):.2g}·tr Σ/K), and two ablations. A part counts as selected when half of its pixels are at or
above the threshold; PIoU compares the parts selected on the image ("why c, not d") and on the same pose rendered as
d ("why d, not c"). A map that selects every visible part would have precision {similar.chance_precision:.3f} (similar) and
{random_.chance_precision:.3f} (random): the chance levels.

The paper's Table 2 (ResNet-50 on CUB; R, P and PIoU only, its thresholds not stated):

{paper_table()}

**Similar counterfactual class** (Table 2's right half; {similar.pairs} pairs):

{setting_table(similar, "similar")}

Mean F1 over thresholds by the part in which the pair differs (the body and wing are large, the head and beak small):

{parts_text}

**Random counterfactual class** (Table 2's left half; {random_.pairs} pairs):

{setting_table(random_, "random")}

The paper's numbers are for other methods (GALORE, CounteRGAN, Goyal), other data and keypoint parts: only the
ranking is comparable, not the values. Part F1 against the threshold (Fig. 9's analogue):

![F1 of the selected parts against the threshold]({figures[0]})

Examples (one per kind of differing part; white outline: the parts where c and d differ):

![why c, not d on the species]({figures[1]})

""" + _digits_text(digits, shown, atypical, figures)


def _digits_text(
    digits: dict[str, Any], shown: list[tuple[int, list[int]]], atypical: list[int], figures: list[str]
) -> str:
    """The digits part of the section (Figures 3 and 4) and the verdict rule."""
    ink = digits["ink"]
    ink_table = markdown_table(
        ["method", "ink recall", "ink precision", "area of the region"],
        [
            [
                label,
                float(ink[key]["recall"].mean()),
                float(ink[key]["precision"].mean()),
                float(ink[key]["area"].mean()),
            ]
            for key, label in DIGIT_METHODS
        ],
    )
    labels, predicted = digits["labels"], digits["predicted"]
    atypical_text = ", ".join(
        f"{int(labels[i])}" + (f"→{int(predicted[i])}" if int(labels[i]) != int(predicted[i]) else "") for i in atypical
    )
    why_not = "; ".join(f"{digit}: {', '.join(map(str, others))}" for digit, others in shown)
    return f"""**Digits** (Figures 3 and 4; scikit-learn's digits at 32 px, the digits model, {100 * digits["accuracy"]:.1f}% test
accuracy, a bank over the {digits["bank"].count} training digits). Figure 3's analogue: "why is it c" with the baselines
and DiffCAM against all other digits, then "why not d" (DiffCAM against class d) for the three digits whose bank means
are nearest ({why_not}):

![why is and why not on the digits]({figures[2]})

How much of the digit each "why is it c" map covers (region: map >= 0.5; ink: pixels > 0.5; means over the
{digits["images"].shape[0]} test digits):

{ink_table}

Figure 4's analogue: the eight most atypical test digits (largest squared Mahalanobis distance from their own class,
`w*ᵀ(z − μ)` with the class's training digits as the reference; label→prediction where the model errs: {atypical_text}),
and DiffCAM's intra-class maps (what departs most from the class) below:

![intra-class variance on the digits]({figures[3]})

Verdict rule: a paired bootstrap (2,000 resamples) of the per-image difference DiffCAM − baseline; "better" when its 95%
interval lies above 0 and the mean gain is at least 5% of the baseline's mean (the report's effect-size criterion). The claim holds when DiffCAM is better than every baseline, partly when better than some.
"""

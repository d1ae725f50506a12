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

__all__ = ["describe", "digits_body", "paper_table", "part_table", "setting_table", "species_body", "species_intro"]


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


def species_intro(context: Context) -> str:
    """The counterfactual-parts protocol, shared by every level."""
    from camscope.reproduce.diffcam.measure import BANK_IMAGES, PAIRS

    mode = "quick mode: few pairs, noisy numbers; " if context.quick else ""
    return f"""
DiffCAM explains an example by the direction that best separates its embedding from a reference group
(`w* = (S_v + λI)^-1 (z − μ)`, `M = Σ_k w*_k A_k`). The paper's counterfactual evaluation (Table 2, CUB-200-2011 with
part annotations, GALORE's protocol) asks whether "why a, not b" maps select the parts whose attributes differ between
a and b. Here the synthetic species give that answer exactly, at each of the three difficulty levels with the level's
model ({mode}the same protocol at every level): a reference bank of the first {context.count(BANK_IMAGES, 256)} training
images, and the first {context.count(PAIRS, 24)} correctly classified test images, each paired with its most similar class
(one differing part) and with a random other class. Methods at the last conv block: Grad-CAM of c, Finer-CAM
(`y_c − {FINER_GAMMA} y_d`), DiffCAM with reference class d from the bank (OAS-shrunk covariance), and two ablations. A
part counts as selected when half of its pixels are at or above the threshold; PIoU compares the parts selected on the
image ("why c, not d") and on the same pose rendered as d ("why d, not c"). A map that selects every visible part has
the "chance" precision given per level.

The paper's Table 2 (ResNet-50 on CUB; R, P and PIoU only, its thresholds not stated):

{paper_table()}

The paper's numbers are for other methods (GALORE, CounteRGAN, Goyal), other data and keypoint parts: only the
ranking is comparable, not the values. Part F1 against the threshold at every level (Fig. 9's analogue):

![F1 of the selected parts against the threshold](figures/diffcam_f1_curves.png)
"""


def species_body(title: str, species_data: dict[str, Any], figure: str) -> str:
    """One level's Table 2 analogue, its F1 by differing part and its example figure."""
    settings: dict[str, SettingResult] = species_data["settings"]
    similar, random_ = settings["similar"], settings["random"]
    parts_text, _ = part_table(similar)
    rho = min(species_data["shrinkage"], 0.999)
    return f"""
### {title}

Bank of {species_data["train_size"]} training images (OAS: mean shrinkage coefficient ρ = {species_data["shrinkage"]:.3f} over
the classes, i.e. a Tikhonov term λ ≈ {rho / (1 - rho):.2g}·tr Σ/K); the model's accuracy on the {species_data["tested"]} test
images rendered: {100 * species_data["accuracy"]:.1f}%. Similar class: {similar.parts_differing:.2f} visible differing parts on
average, chance precision {similar.chance_precision:.3f}; random class: {random_.parts_differing:.2f} differing parts, chance
precision {random_.chance_precision:.3f}.

**Similar counterfactual class** (Table 2's right half; {similar.pairs} pairs):

{setting_table(similar, "similar")}

Mean F1 over thresholds by the part in which the pair differs (the body and wing are large, the head and beak small):

{parts_text}

**Random counterfactual class** (Table 2's left half; {random_.pairs} pairs):

{setting_table(random_, "random")}

Examples (one per kind of differing part; white outline: the parts where c and d differ):

![why c, not d on the species, {title}]({figure})
"""


def digits_body(
    digits: dict[str, Any], shown: list[tuple[int, list[int]]], atypical: list[int], figures: list[str]
) -> str:
    """The digits part: Figures 3 and 4's analogues and the ink table."""
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
    return f"""
### Digits

Figures 3 and 4 (scikit-learn's digits at 32 px, the digits model, {100 * digits["accuracy"]:.1f}% test
accuracy, a bank over the {digits["bank"].count} training digits; no difficulty levels here). Figure 3's analogue: "why is
it c" with the baselines and DiffCAM against all other digits, then "why not d" (DiffCAM against class d) for the three
digits whose bank means are nearest ({why_not}):

![why is and why not on the digits]({figures[0]})

How much of the digit each "why is it c" map covers (region: map >= 0.5; ink: pixels > 0.5; means over the
{digits["images"].shape[0]} test digits):

{ink_table}

Figure 4's analogue: the eight most atypical test digits (largest squared Mahalanobis distance from their own class,
`w*ᵀ(z − μ)` with the class's training digits as the reference; label→prediction where the model errs: {atypical_text}),
and DiffCAM's intra-class maps (what departs most from the class) below:

![intra-class variance on the digits]({figures[1]})

Verdict rule: a paired bootstrap (2,000 resamples) of the per-image difference DiffCAM − baseline; "better" when its 95%
interval lies above 0 and the mean gain is at least 5% of the baseline's mean (the report's effect-size criterion). The
claim holds when DiffCAM is better than every baseline, partly when better than some.
"""

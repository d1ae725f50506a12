"""The localisation section's verdicts: Score-CAM, Grad-CAM++, DiffCAM (Table 1, ROAD) and the sanity check.

Every comparison is paired over the images both methods saw: the mean difference
and its 95% interval (mean ± 1.96 standard errors), judged with the report's
effect-size criterion (:func:`camscope.reproduce.report.judge_difference`: better
or worse only when the interval excludes 0 *and* the mean difference is at least
5% of the baseline's value; a tie otherwise).

* Score-CAM's energy-based pointing game beats Grad-CAM's and Grad-CAM++'s:
  holds when better than both, partly when better than one, else fails.
* Grad-CAM++ localises better than Grad-CAM (IoU@0.5, AUPRC, energy pointing
  game): holds when better on all three, partly when better on at least one and
  worse on none, else fails.
* DiffCAM's Table 1 ("DiffCAM achieves the best overall localization accuracy
  along with LayerCAM"): on IoU@0.5 and AUPRC against each of the paper's
  baselines (Grad-CAM, Score-CAM, LayerCAM, XGrad-CAM): holds when DiffCAM is worse
  than none, partly when worse than some but not all of the (baseline, metric)
  cases, fails when worse in all.
* DiffCAM's faithfulness (ROAD at 25/50/75%, Fig. 6: "competitive level of
  faithfulness among various state-of-the-art baseline methods"): the drop of the
  explained class's probability after removing the top pixels (MoRF, noisy linear
  imputation) against each baseline at each fraction: holds when worse in none
  and better than a uniform random map at every fraction (else the test cannot
  tell maps apart), partly when worse in fewer than half, else fails.
* Adebayo et al.: a method's maps must change after cascading randomisation. A
  method passes when the 95% interval of its mean final Spearman correlation
  lies below 0.5, fails when above, and is undecided otherwise; methods whose maps
  coincide on this model are one map and count once. Holds when every distinct
  map passes, partly when at least half do, else fails.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from camscope.reproduce.report import FAILS, HOLDS, PARTLY, Claim, judge_difference

__all__ = ["DIFFCAM_BASELINES", "RANDOM_MAP", "ROAD_FRACTIONS", "claims", "diffcam_claims", "paired", "sanity_status"]

#: The baselines of DiffCAM's Table 1 and Fig. 6 (the paper's columns).
DIFFCAM_BASELINES: tuple[str, ...] = ("gradcam", "scorecam", "layercam", "xgradcam")
#: The reference row of a uniform random map (ROAD's floor: what removing the pixels does whatever the map).
RANDOM_MAP = "(reference) uniform random"
#: ROAD's removed fractions in the DiffCAM paper.
ROAD_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75)


def paired(a: Tensor, b: Tensor) -> tuple[float, float, float, float]:
    """``(mean of b, low, mean, high)`` of ``a - b`` over the images both have (95% interval), NaN pairs skipped."""
    count = min(a.numel(), b.numel())
    diff = (a[:count] - b[:count]).double()
    keep = ~diff.isnan()
    diff, base = diff[keep], b[:count].double()[keep]
    if diff.numel() < 2:
        return math.nan, math.nan, math.nan, math.nan
    mean, half = float(diff.mean()), 1.96 * float(diff.std()) / math.sqrt(diff.numel())
    return float(base.mean()), mean - half, mean, mean + half


def _judge(a: Tensor, b: Tensor) -> tuple[str, str]:
    """The judgement of ``a`` against ``b`` and a short text of the difference."""
    base, low, mean, high = paired(a, b)
    if math.isnan(mean):
        return "tie", "n/a"
    return judge_difference(base, low, mean, high), f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def sanity_status(final: Tensor) -> str:
    """``"pass"``, ``"fail"`` or ``"undecided"`` from the per-image final Spearman correlations (NaN counts as 0)."""
    values = final.double().nan_to_num(0.0)
    if values.numel() < 2:
        return "undecided"
    mean, half = float(values.mean()), 1.96 * float(values.std()) / math.sqrt(values.numel())
    return "pass" if mean + half < 0.5 else "fail" if mean - half > 0.5 else "undecided"


def _score_cam(results: dict[str, dict[str, Any]]) -> list[Claim]:
    if not {"scorecam", "gradcam", "gradcampp"} <= set(results):
        return []
    judged = {
        other: _judge(results["scorecam"]["energy"], results[other]["energy"]) for other in ("gradcam", "gradcampp")
    }
    better = sum(j == "better" for j, _ in judged.values())
    verdict = HOLDS if better == 2 else PARTLY if better == 1 else FAILS
    _, auprc_text = _judge(results["scorecam"]["auprc"], results["gradcam"]["auprc"])
    return [
        Claim(
            "Score-CAM (Wang et al. 2020): its maps put more energy inside the object box than Grad-CAM's and "
            "Grad-CAM++'s (energy-based pointing game, ILSVRC 2012 validation, VGG16)",
            verdict,
            f"on the first {results['scorecam']['n']} test images, Score-CAM − other: "
            + ", ".join(f"{o} {text} ({j})" for o, (j, text) in judged.items())
            + ". Rule: better (interval above 0 and ≥ 5% of the other's value) than both → holds; than one → partly. "
            f"On the same images its AUPRC differs from Grad-CAM's by {auprc_text}: the energy game rewards maps whose "
            "mass is concentrated, and here Grad-CAM's map is the exact CAM W_c·A, whose negative parts the ReLU cuts "
            "away, while Score-CAM's softmax-normalised channel weights are all positive and spread the mass over every "
            "active channel (a plausible reason; the paper's VGG16 on ImageNet has no such exact CAM).",
            previous=FAILS,
        )
    ]


def _grad_cam_pp(results: dict[str, dict[str, Any]]) -> list[Claim]:
    if not {"gradcam", "gradcampp"} <= set(results):
        return []
    keys = {"iou": "IoU@0.5", "auprc": "AUPRC", "energy": "energy PG"}
    judged = {key: _judge(results["gradcampp"][key], results["gradcam"][key]) for key in keys}
    better = sum(j == "better" for j, _ in judged.values())
    worse = sum(j == "worse" for j, _ in judged.values())
    verdict = HOLDS if better == 3 else PARTLY if better >= 1 and worse == 0 else FAILS
    return [
        Claim(
            "Grad-CAM++ (Chattopadhay et al. 2018): better object localisation than Grad-CAM",
            verdict,
            f"Grad-CAM++ − Grad-CAM on {results['gradcam']['n']} images: "
            + ", ".join(f"{keys[k]} {text} ({j})" for k, (j, text) in judged.items())
            + ". Rule: better on all three → holds; on one or more and worse on none → partly. Grad-CAM++ keeps only "
            "positive gradient parts (all channel weights positive here), so its maps cover the object more fully "
            "(IoU, AUPRC) but put more mass outside the box than the exact CAM that Grad-CAM equals on this model.",
            previous=FAILS,
        )
    ]


def _diffcam_table_1(results: dict[str, dict[str, Any]], level: str = "easy") -> list[Claim]:
    baselines = [b for b in DIFFCAM_BASELINES if b in results]
    if "diffcam" not in results or not baselines:
        return []
    keys = {"iou": "IoU@0.5", "auprc": "AUPRC"}
    cases = {(b, k): _judge(results["diffcam"][k], results[b][k]) for b in baselines for k in keys}
    worse = [case for case, (j, _) in cases.items() if j == "worse"]
    verdict = FAILS if len(worse) == len(cases) else PARTLY if worse else HOLDS
    means = ", ".join(
        f"{name} {float(results[name]['iou'].nanmean()):.3f} / {float(results[name]['auprc'].nanmean()):.3f}"
        for name in ["diffcam", *baselines]
    )
    return [
        Claim(
            "DiffCAM Table 1: 'DiffCAM achieves the best overall localization accuracy along with LayerCAM' "
            "(IoU and AUPRC against the boxes, ImageNet; e.g. ResNet-50 AUPRC DiffCAM 0.741, LayerCAM 0.738, "
            "Grad-CAM 0.727)",
            verdict,
            f"IoU@0.5 / AUPRC (object masks): {means}. DiffCAM − baseline (paired over the images both saw): "
            + "; ".join(f"{b} {keys[k]} {text} ({j})" for (b, k), (j, text) in cases.items())
            + f". Worse in {len(worse)} of {len(cases)} (baseline, metric) cases. Rule: worse (interval below 0 and "
            "≥ 5% of the baseline's value) in none → holds, in some → partly, in all → fails. DiffCAM's reference "
            "group is 'others' from the bank (every other class), not the paper's 100 nearest class means.",
            previous=PARTLY if level == "easy" else None,
            level=level,
        )
    ]


def _diffcam_road(road: dict[str, dict[str, Tensor]], level: str = "easy") -> list[Claim]:
    baselines = [b for b in DIFFCAM_BASELINES if b in road]
    if "diffcam" not in road or not baselines:
        return []
    cases = {}
    for b in baselines:
        for i, fraction in enumerate(ROAD_FRACTIONS):
            cases[(b, fraction)] = _judge(road["diffcam"]["drop"][:, i], road[b]["drop"][:, i])
    worse = [case for case, (j, _) in cases.items() if j == "worse"]
    floor = (
        [_judge(road["diffcam"]["drop"][:, i], road[RANDOM_MAP]["drop"][:, i]) for i in range(len(ROAD_FRACTIONS))]
        if RANDOM_MAP in road
        else []
    )
    informative = bool(floor) and all(j == "better" for j, _ in floor)
    verdict = HOLDS if not worse and informative else PARTLY if 2 * len(worse) < len(cases) else FAILS
    against_random = "; ".join(f"@{round(100 * f)}% {text} ({j})" for f, (j, text) in zip(ROAD_FRACTIONS, floor))
    return [
        Claim(
            "DiffCAM Fig. 6: ROAD at 25/50/75% removed pixels shows 'a competitive level of faithfulness among "
            "various state-of-the-art baseline methods'",
            verdict,
            "drop of the class probability after removing the top pixels (MoRF, higher is better), DiffCAM − "
            "baseline: "
            + "; ".join(f"{b} @{round(100 * f)}% {text} ({j})" for (b, f), (j, text) in cases.items())
            + f". Worse in {len(worse)} of {len(cases)} cases. Against a uniform random map: {against_random or 'n/a'}. "
            "Rule: worse in none and better than the random map at every fraction (else the test cannot tell the "
            "maps apart) → holds; worse in fewer than half → partly; else fails.",
            previous=HOLDS if level == "easy" else None,
            level=level,
        )
    ]


def _sanity(sanity: dict[str, dict[str, Any]], groups: list[list[str]], numbers: dict[str, float]) -> list[Claim]:
    distinct = [[name for name in group if name in sanity] for group in groups]
    distinct = [group for group in distinct if group]
    # A group of coinciding maps passes when every member does (their noise or sample counts may differ).
    status = {
        group[0]: "fail"
        if any(sanity[n]["status"] == "fail" for n in group)
        else "pass"
        if all(sanity[n]["status"] == "pass" for n in group)
        else "undecided"
        for group in distinct
    }
    passed = [g for g in distinct if status[g[0]] == "pass"]
    failed = [g for g in distinct if status[g[0]] == "fail"]
    undecided = [g for g in distinct if status[g[0]] == "undecided"]
    verdict = HOLDS if len(passed) == len(distinct) else PARTLY if 2 * len(passed) >= len(distinct) else FAILS
    unchanged_by_fc = [name for name, entry in sorted(sanity.items()) if entry["spearman_curve"][0] > 0.9]
    numbers["methods_measured"] = float(len(sanity))
    numbers["distinct_maps_measured"] = float(len(distinct))
    numbers["methods_passing_sanity"] = float(sum(len(g) for g in passed))
    numbers["distinct_maps_passing_sanity"] = float(len(passed))

    def names(found: list[list[str]]) -> str:
        return ", ".join(" = ".join(g) for g in found)

    return [
        Claim(
            "Adebayo et al. (2018): a method that explains the model must give different maps when the model's weights "
            "are randomised (cascading randomisation from the logits down)",
            verdict,
            f"{len(passed)}/{len(distinct)} distinct maps pass ({len(sanity)} methods; coinciding maps counted once: "
            + names([g for g in distinct if len(g) > 1])
            + ")"
            + (f"; failing: {names(failed)}" if failed else "")
            + (f"; undecided (the interval straddles 0.5): {names(undecided)}" if undecided else "")
            + (
                f". Nearly unchanged when only the classifier `fc` is randomised (Spearman > 0.9): {', '.join(unchanged_by_fc)}"
                if unchanged_by_fc
                else ""
            )
            + ". Rule: a map passes when the 95% interval of its mean Spearman after the cascade lies below 0.5; all "
            "distinct maps pass → holds, at least half → partly.",
            previous=PARTLY,
        )
    ]


def diffcam_claims(results: dict[str, dict[str, Any]], road: dict[str, dict[str, Tensor]], level: str) -> list[Claim]:
    """DiffCAM's Table 1 and Fig. 6 claims at a difficulty level of the species."""
    return _diffcam_table_1(results, level) + _diffcam_road(road, level)


def claims(
    results: dict[str, dict[str, Any]],
    sanity: dict[str, dict[str, Any]],
    road: dict[str, dict[str, Tensor]],
    groups: list[list[str]],
    numbers: dict[str, float],
) -> list[Claim]:
    """Every claim of the section (see the module docstring); adds the tallies to ``numbers``."""
    return (
        _score_cam(results)
        + _grad_cam_pp(results)
        + _diffcam_table_1(results)
        + _diffcam_road(road)
        + _sanity(sanity, groups, numbers)
    )

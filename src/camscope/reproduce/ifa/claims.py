"""The IFA section's verdicts: Table I (consistency, distinct maps counted once) and Table II (union protocol).

Rules (applied to the measured numbers, stated in the report):

* **Distinct maps.** Grad-CAM, HiResCAM and XGrad-CAM give the same signed map on a
  model that ends with global average pooling and one linear layer (measured: the
  largest relative difference is below :data:`SAME_MAP`); such methods are one map
  and count once in the tallies of Table I.
* **S-CAMs more consistent:** holds when ``r(S) > r(plain)`` for every distinct map of
  both data sets, partly when for at least half, else fails.
* **Near-perfect S-CAM consistency:** holds when every distinct S-map of the
  Grad-CAM / HiResCAM / XGrad-CAM group reaches 0.95, partly when at least half do.
* **Table II, union protocol (headline):** :func:`camscope.metrics.feature_masking_accuracy`
  keeps the union of the classes' top-p principal features (every logit computed
  from the same channels). "Within 10 points" is decided on the 95% interval of
  the accuracy drop (binomial standard errors of the two accuracies, as if
  independent: conservative for these paired measurements): within when the
  interval's upper end is below 10 points, beyond when its lower end is above,
  borderline otherwise (a borderline case does not count as within).

  - *keeps*: holds when on both data sets some ``p <= 25%`` keeps the accuracy
    within 10 points, partly when on one;
  - *the rest loses*: holds when on both data sets some ``p <= 25%`` splits the
    channels into a union that keeps the accuracy and a non-empty rest whose
    accuracy is above chance by less than half of all features' margin over chance
    (``acc_rest - 1/C < (acc_all - 1/C) / 2``), partly when on one.

  The per-class reading (each logit from its own top-p features) is reported in the
  evidence as a secondary reading with the same 10-point interval.
"""

from __future__ import annotations

import math
from typing import Any

from camscope.reproduce.ifa.measured import DATASETS, FRACTIONS, Measured
from camscope.reproduce.report import FAILS, HOLDS, PARTLY, Claim

__all__ = ["SAME_MAP", "claims", "distinct_groups", "drop_interval"]

#: Largest relative difference under which two methods' signed maps count as the same map.
SAME_MAP = 1e-4
_COINCIDING = ("gradcam", "hirescam", "xgradcam")
_POINTS = 0.10


def _verdict(hits: int, total: int) -> str:
    if total and hits == total:
        return HOLDS
    if hits * 2 >= total and hits > 0:
        return PARTLY
    return FAILS


def distinct_groups(methods: list[str], largest_difference: float) -> list[tuple[str, ...]]:
    """Methods grouped by map: Grad-CAM / HiResCAM / XGrad-CAM form one group when their maps coincide.

    Example:
        >>> distinct_groups(["gradcam", "hirescam", "gradcampp", "xgradcam"], 2e-7)
        [('gradcam', 'hirescam', 'xgradcam'), ('gradcampp',)]
    """
    if largest_difference >= SAME_MAP:
        return [(m,) for m in methods]
    same = tuple(m for m in methods if m in _COINCIDING)
    return ([same] if same else []) + [(m,) for m in methods if m not in _COINCIDING]


def drop_interval(all_accuracy: float, accuracy: float, count: int) -> tuple[float, float, float]:
    """The accuracy drop ``all - accuracy`` and its 95% interval (binomial standard errors, as if independent).

    Example:
        >>> low, drop, high = drop_interval(0.9, 0.8, 100)
        >>> round(drop, 3), round(high - drop, 3)  # 1.96 * sqrt((0.9 * 0.1 + 0.8 * 0.2) / 100)
        (0.1, 0.098)
    """
    spread = math.sqrt(all_accuracy * (1 - all_accuracy) / count + accuracy * (1 - accuracy) / count)
    drop = all_accuracy - accuracy
    return drop - 1.96 * spread, drop, drop + 1.96 * spread


def _within(all_accuracy: float, accuracy: float, count: int) -> str:
    low, _, high = drop_interval(all_accuracy, accuracy, count)
    return "within" if high < _POINTS else "beyond" if low > _POINTS else "borderline"


def _table_i(measured: Measured) -> list[Claim]:
    coefficients, numbers = measured.coefficients, measured.numbers
    methods = sorted({m for _, m in coefficients}, key=[m for _, m in coefficients].index)
    rows: list[tuple[str, str, float, float]] = []
    for name in DATASETS:
        for group in distinct_groups(methods, measured.equal[name]):
            plain, scaled = coefficients[(name, group[0])]
            rows.append((name, " = ".join(group), plain, scaled))
    better = sum(s > p for *_, p, s in rows)
    near = [(n, g, s) for n, g, _, s in rows if any(m in g.split(" = ") for m in _COINCIDING)]
    near_hits = sum(s >= 0.95 for *_, s in near)
    numbers["table_i_distinct_maps"] = float(len(rows))
    table_i = ", ".join(f"{n}/{g}: {p:.3f} → {s:.3f}" for n, g, p, s in rows)
    return [
        Claim(
            "IFA Table I: CAMs on the common intensity scale (S-CAMs) are more consistent with the logits than the "
            "usual per-image scaled CAMs (average increase 10.7–64.2 points over eight data sets)",
            _verdict(better, len(rows)),
            f"S higher for {better}/{len(rows)} distinct (data set, map) pairs (methods whose maps coincide counted "
            "once); average increase over the four methods "
            + ", ".join(f"{n} {numbers[f'{n}_average_increase_pp']:+.1f}" for n in DATASETS)
            + f" points. Rule: holds if S > plain for every distinct map, partly for at least half. ({table_i})",
            previous=HOLDS,
        ),
        Claim(
            "IFA Table I: S-Grad-CAM, pixel-wise S-Grad-CAM and S-XGrad-CAM reach near-perfect consistency "
            "(0.995–1.000 on seven of eight data sets)",
            _verdict(near_hits, len(near)),
            f"{near_hits}/{len(near)} distinct maps ≥ 0.95 (rule: all → holds, at least half → partly): "
            + ", ".join(f"{n}/{g} {s:.3f}" for n, g, s in near),
            previous=HOLDS,
        ),
    ]


def _table_ii(measured: Measured) -> list[Claim]:
    accuracy, numbers, sizes = measured.accuracy, measured.numbers, measured.sizes
    keeps, loses, evidence_keep, evidence_rest = 0, 0, [], []
    for name in DATASETS:
        entry, count = accuracy[name], sizes[name][1]
        everything, chance = entry["all"], entry["chance"]
        kept = [i for i, acc in enumerate(entry["union_top"]) if _within(everything, acc, count) == "within"]
        split = [
            i
            for i in kept
            if entry["union_share"][i] < 1.0 and entry["union_rest"][i] - chance < (everything - chance) / 2
        ]
        keeps += bool(kept)
        loses += bool(split)
        index = kept[0] if kept else len(FRACTIONS) - 1
        numbers[f"{name}_smallest_share_keeping_accuracy"] = FRACTIONS[index] if kept else 1.0
        low, drop, high = drop_interval(everything, entry["union_top"][index], count)
        # Secondary: the per-class reading at the same p, with its interval.
        c_low, c_drop, c_high = drop_interval(everything, entry["class_top"][index], count)
        share = round(100 * FRACTIONS[index])
        evidence_keep.append(
            f"{name}: all {everything:.3f}; union of the top {share}% ({100 * entry['union_share'][index]:.0f}% of the "
            f"channels) {entry['union_top'][index]:.3f}, drop {100 * drop:.1f} points [{100 * low:.1f}, {100 * high:.1f}]"
            + ("" if kept else " — no share ≤ 25% within 10 points")
            + f" (per class, secondary: {entry['class_top'][index]:.3f}, drop {100 * c_drop:.1f} [{100 * c_low:.1f}, "
            f"{100 * c_high:.1f}]: {_within(everything, entry['class_top'][index], count)})"
        )
        at = split[0] if split else index
        rest_share = 100 * (1 - entry["union_share"][at])
        evidence_rest.append(
            f"{name}: top {round(100 * FRACTIONS[at])}% kept {entry['union_top'][at]:.3f}, rest ({rest_share:.0f}% of the "
            f"channels) {entry['union_rest'][at]:.3f} vs all {everything:.3f}, chance {chance:.3f}"
            + ("" if split else " — no p gives such a split")
            + f" (per class, secondary: rest of top {round(100 * FRACTIONS[at])}% {entry['class_rest'][at]:.3f})"
        )
    return [
        Claim(
            "IFA Table II: the top 5–25% principal features keep nearly the accuracy of all features "
            "(drop below 10 points on most data sets)",
            _verdict(keeps, len(DATASETS)),
            "; ".join(evidence_keep)
            + ". Rule (union protocol): some p ≤ 25% whose 95% interval of the drop lies below 10 points, per data set.",
            previous=HOLDS,
        ),
        Claim(
            "IFA Table II: the non-principal features (the rest) lose the accuracy (near chance in the paper)",
            _verdict(loses, len(DATASETS)),
            "; ".join(evidence_rest)
            + ". Rule (union protocol): some p ≤ 25% whose union keeps the accuracy and whose non-empty rest is above "
            "chance by less than half of all features' margin.",
            previous=HOLDS,
        ),
    ]


def claims(measured: Measured) -> list[Claim]:
    """Table I's and Table II's claims (see the module docstring); adds tallies to ``measured.numbers``."""
    found: list[Any] = _table_i(measured) + _table_ii(measured)
    return found

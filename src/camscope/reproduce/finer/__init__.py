"""Finer-CAM against its base methods: the paper's Table 1, Table 2 and Figure 6b on known ground truth.

Finer-CAM (Zhang et al. 2025) explains ``y_c - gamma * y_d`` instead of ``y_c``,
``d`` a similar class, and claims that this raises the relative confidence drop
RD@p (Eq. 10) when the top ``p`` of the map's pixels are masked, leaves the
deletion AUC about where it was, and concentrates the map on the discriminative
details. This section re-measures those claims at each difficulty level of
:mod:`camscope.data.synthetic` (``LEVELS``: easy, medium, hard) with the level's
species model of :mod:`camscope.models.zoo` (``zoo.SPECIES_LEVELS``), where the parts in
which two classes differ are known pixel by pixel. Every level runs the same protocol
and rules and gets its own verdict per claim.

Protocol (per level):
    * Data: the first test images of the level's model's data set that the model
      classifies correctly (full run: 384; quick: 24). The explained class is the
      true label (equal to the prediction on these images). Score-CAM costs one
      forward pass per channel (64 here), so it and its Finer variant run on the
      first 192 of those images (quick: 12); their rows say how many.
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
better (interval above 0 and a gain of at least 5% of the base's mean: the
report's effect-size criterion) for every base method (and both p for RD), partly when
for some, and does not hold when for none.

Example:
    >>> from camscope.reproduce import reproduce
    >>> report = reproduce("/tmp/repro", sections=["finer"], quick=True)  # doctest: +SKIP
    >>> report.section("finer").numbers["finer-gradcam.rd@0.05"]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from camscope.reproduce.finer.claims import (
    base_claims,
    collect_numbers,
    gamma_claims,
    reference_claim,
    subtraction_claim,
)
from camscope.reproduce.finer.figures import example_figure, gamma_figure
from camscope.reproduce.finer.measure import (
    BASES,
    GAMMAS,
    QUICK_GAMMAS,
    REFERENCES,
    Comparison,
    all_or_some,
    energy_share,
    load_species,
    measure_all,
    paired_difference,
)
from camscope.reproduce.finer.text import intro, level_body, notes
from camscope.reproduce.report import Claim, Context, Section

__all__ = [
    "BASES",
    "GAMMAS",
    "REFERENCES",
    "Comparison",
    "LevelResult",
    "all_or_some",
    "energy_share",
    "level_title",
    "paired_difference",
    "run",
    "run_level",
]

#: Correctly classified test images per level (full run), and the first of them for Score-CAM (a pass per channel).
IMAGES, SCORE_IMAGES = 384, 192
_VERDICT_KEYS = ("rd", "deletion", "box", "parts", "gamma_rd", "gamma_share", "references", "subtraction")


def level_title(context: Context, level: str) -> str:
    """``"Hard level: `species-hard` (86.1% test accuracy)"``: a level's heading."""
    from camscope.models import zoo

    name = context.levels[level]
    return f"{level.capitalize()} level: `{name}` ({100 * zoo.model_info(name)['test_accuracy']:.1f}% test accuracy)"


@dataclass
class LevelResult:
    """One level's claims, numbers, text and the key statistics for the report's summary."""

    level: str
    claims: list[Claim]
    numbers: dict[str, float]
    text: str
    sweep: dict[tuple[int, float], dict[str, float]]
    differing_area: float


def run_level(context: Context, level: str, gammas: tuple[float, ...]) -> LevelResult:
    """Every Finer-CAM measurement and claim on the level's model and test images."""
    name = context.levels[level]
    count, score_count = context.count(IMAGES, 24), context.count(SCORE_IMAGES, 12)
    model, data, stats, class_names = load_species(context, count, name)
    score_data = data[:score_count]
    context.log(f"finer: {level}: {len(data)} correctly classified test images ({len(score_data)} for Score-CAM)")
    measured = measure_all(context, model, data, score_data, gammas)

    numbers, comparisons = collect_numbers(stats, len(score_data), measured)
    gamma = gamma_claims(measured.sweep, measured.sweep_values, gammas, level)
    reference, rd_choice = reference_claim(measured.choices, level)
    subtraction = subtraction_claim(comparisons, level)
    claims = base_claims(numbers, comparisons, stats, level) + gamma.claims + [reference]
    claims += [subtraction] if subtraction is not None else []

    figure = f"figures/finer_examples_{level}.png"
    maps = {k: v[: len(score_data)] for k, v in measured.maps.items()}
    example_figure(context.out / figure, score_data, maps, class_names, f"{name} ({level} level)")
    title = level_title(context, level)
    text = level_body(level, title, stats, numbers, comparisons, measured, rd_choice, gammas, figure)
    verdicts = dict(zip(_VERDICT_KEYS, (c.verdict for c in claims)))
    text += notes(verdicts, len(score_data), stats, numbers, comparisons, gamma, rd_choice)
    return LevelResult(level, claims, numbers, text, measured.sweep, stats["differing_area"])


def run(context: Context) -> Section:
    """Measure Finer-CAM against Grad-CAM, LayerCAM and Score-CAM, sweep gamma and the references, at every level."""
    gammas = QUICK_GAMMAS if context.quick else GAMMAS
    results = [run_level(context, level, gammas) for level in context.levels]
    titles = {r.level: f"{context.levels[r.level]} ({r.level})" for r in results}
    gamma_figure(
        context.figures / "finer_gamma.png",
        {titles[r.level]: r.sweep for r in results},
        {titles[r.level]: r.differing_area for r in results},
        gammas,
    )
    numbers = {f"{r.level}.{key}": value for r in results for key, value in r.numbers.items()}
    text = intro(context.count(IMAGES, 24), context.count(SCORE_IMAGES, 12)) + "".join(r.text for r in results)
    return Section(
        title="Finer-CAM: comparing with similar classes",
        body=text,
        claims=[claim for r in results for claim in r.claims],
        figures=["figures/finer_gamma.png", *(f"figures/finer_examples_{r.level}.png" for r in results)],
        numbers=numbers,
    )

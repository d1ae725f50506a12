"""DiffCAM section of ``camscope reproduce``: counterfactual parts (Table 2's analogue) and the digits figures.

What is measured (the DiffCAM paper, CVPR 2025, Sec. 4.1 and 4.2.3):

**Counterfactual parts on the synthetic species** (Table 2 and Fig. 9's analogue).
The paper scores "why ``a``, not ``b``" maps on CUB-200-2011 against the parts
whose attributes differ between the two classes (GALORE's protocol), for a
*similar* and a *random* counterfactual class. Here the species models of
:mod:`camscope.models.zoo` (one per difficulty level of :data:`camscope.data.synthetic.LEVELS`,
each measured with the same protocol and its own verdicts) and their generators give the
exact answer: for a test image of
class ``c`` (kept when the model classifies it correctly) and a counterfactual
class ``d``, the ground truth is the visible parts in which ``c`` and ``d``
differ (:meth:`~camscope.data.synthetic.SyntheticSpecies.differs`), as masks
(``part_masks``). ``d`` is either the most similar class
(:meth:`~camscope.data.synthetic.SyntheticSpecies.most_similar_classes`: it
differs in exactly one part) or a class drawn uniformly among the other 15
(seeded; it differs in 2 to 5 parts). The methods, all at ``model.cam_layer``
(the last conv block, 16x16 maps upsampled to 64x64):

* Grad-CAM of ``c`` (ignores ``d``);
* Finer-CAM: Grad-CAM of ``y_c - gamma y_d`` with the paper's ``gamma = 0.6``
  and the one reference class ``d`` (``camscope.Finer(references=[[d]])``);
* DiffCAM "why ``c``, not ``d``": ``reference = bank.group("class", d)``, the
  class-``d`` statistics of a :class:`~camscope.methods.diffcam.ReferenceBank` built
  over the first 4,096 images of the TRAIN split (256 in quick mode), with camscope's
  default OAS-shrunk covariance (the paper only says "a small Tikhonov term";
  with ~256 training images per class and K = 64 channels the OAS coefficient is
  small, i.e. the paper's regime);
* two ablations, not part of any verdict: DiffCAM with a fixed small Tikhonov
  term ``lambda = 1e-3 tr(Sigma) / K``, and DiffCAM "why is it ``c``"
  (reference: all other classes), which does not know ``d``.

Scores: :func:`camscope.metrics.part_scores`: a part is *selected* when at
least half of its pixels lie where the min-max-scaled map is ``>= t``;
precision ``P``, recall ``R`` and ``F1`` of the selected parts against the
differing ones, and part IoU (``PIoU``) between the parts selected on the
image ("why ``c``, not ``d``") and on its counterfactual, the same pose rendered
as ``d`` (:meth:`~camscope.data.synthetic.SyntheticSpecies.counterfactual`)
and explained "why ``d``, not ``c``". The headline threshold is ``t = 0.5``
(the paper does not give its thresholds); "mean F1" is the per-image F1
averaged over ``t = 0.1 .. 0.9`` (the normalised area under Fig. 9's F1 curve),
which does not depend on one threshold. Means skip undefined values (NaN,
e.g. precision when no part is selected).

**Digits** (Figures 3 and 4; the paper uses MNIST, here scikit-learn's digits
at 32 px with the shipped digits model, a bank over the whole digits train split):

* Figure 3's analogue: digits 3, 7 and 9 (the first correctly classified test
  example of each) with Grad-CAM, Grad-CAM++, LayerCAM and DiffCAM "why is it
  ``c``" (reference: all other classes, as in the paper), then DiffCAM "why not
  ``d``" for the three classes whose bank means are nearest to ``c``'s (the
  paper does not say how it chose its counterfactual digits).
  Its claim, "DiffCAM highlights more comprehensive object patterns instead
  of a small region", is measured as *ink recall*: the share of the digit's
  ink (pixels ``> 0.5``) inside the map's region ``>= 0.5``, per test digit,
  with the share of that region on ink (ink precision) and its area beside.
* Figure 4's analogue: DiffCAM against the example's own class (intra-class,
  ``reference = "intra"``). The paper suggests the most atypical examples are
  those the model gets wrong; the atypicality here is the squared Mahalanobis
  distance ``w*^T (z - mu)`` of the example's embedding from its class (the
  quantity DiffCAM's weights maximise), measured against the model's errors
  (AUROC) and its probability of the true class (Spearman). The figure shows
  the eight most atypical test digits (any class) and their maps.

**Verdicts** (computed, never written in): a comparison of DiffCAM with a
baseline is *better* or *worse* when the 95% interval of a paired bootstrap
(2,000 seeded resamples of the test images) of the mean per-image difference
excludes 0 and the mean difference is at least 5% of the baseline's mean (the
report's effect-size criterion), else a *tie*. A claim that DiffCAM beats the baselines **holds**
when it is better than all of them, **partly holds** when better than some,
and **does not hold** otherwise. The intra-class claim holds when the
atypicality separates the errors (AUROC >= 0.75) and correlates with
``1 - p(true class)`` (Spearman ``rho > 0`` with ``p < 0.01``), partly when one of
the two does.

The section also breaks the similar-class F1 down by the differing part
(body and wing are large, head and beak small) and shows one example pair per
part (Grad-CAM, Finer-CAM and DiffCAM over the image, the differing part outlined).

The full run scores the first 1,024 correctly classified test images per setting and
level. Quick mode (a pipeline check) builds each species bank from 256 training images
and scores 24 test pairs per setting; the digits part is the same in both modes.

Example:
    >>> from camscope.reproduce import reproduce
    >>> report = reproduce("/tmp/report", sections=["diffcam"], quick=True)  # doctest: +SKIP
    >>> report.section("diffcam").numbers["similar_f1_mean_diffcam"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

from camscope.reproduce.diffcam.claims import ink_claim, intra_claim, species_claims, species_numbers
from camscope.reproduce.diffcam.figures import FIGURES, draw_figures, species_figure_name
from camscope.reproduce.diffcam.measure import (
    SettingResult,
    comparison_verdict,
    measure_digits,
    measure_species,
    paired_bootstrap,
)
from camscope.reproduce.diffcam.text import digits_body, part_table, species_body, species_intro
from camscope.reproduce.report import Claim, Context, Section

__all__ = ["comparison_verdict", "paired_bootstrap", "run"]


def _level_claims(context: Context, level: str, species_data: dict[str, Any]) -> tuple[list[Claim], dict[str, float]]:
    """A level's counterfactual-parts claims and numbers (keys prefixed by the level)."""
    settings: dict[str, SettingResult] = species_data["settings"]
    numbers, comparisons = species_numbers(context, settings)
    part_numbers = part_table(settings["similar"])[1]
    numbers.update(part_numbers)
    numbers.update(
        {
            "species_train_images": float(species_data["train_size"]),
            "species_test_accuracy": species_data["accuracy"],
            "species_oas_shrinkage": species_data["shrinkage"],
        }
    )
    claims = species_claims(settings, comparisons, part_numbers, level)
    return claims, {f"{level}.{key}": value for key, value in numbers.items()}


def run(context: Context) -> Section:
    """Measure DiffCAM's counterfactual parts at every level and draw the digits figures (see the module docstring)."""
    from camscope.reproduce.finer import level_title

    begin = time.perf_counter()
    levels = {level: measure_species(context, level) for level in context.levels}
    context.log(f"reproduce: diffcam: species done in {time.perf_counter() - begin:.1f} s")
    digits = measure_digits(context)
    context.log(f"reproduce: diffcam: digits done in {time.perf_counter() - begin:.1f} s")
    shown, atypical = draw_figures(context, levels, digits, begin)

    claims: list[Claim] = []
    numbers: dict[str, float] = {}
    text = species_intro(context)
    for level, species_data in levels.items():
        level_claims, level_numbers = _level_claims(context, level, species_data)
        claims += level_claims
        numbers.update(level_numbers)
        text += species_body(level_title(context, level), species_data, f"figures/{species_figure_name(level)}")
    ink, _ = ink_claim(context, digits, numbers)
    claims += [ink, intra_claim(digits, numbers)]
    numbers["digits_test_accuracy"] = digits["accuracy"]
    figures = [f"figures/{name}" for name in FIGURES] + [f"figures/{species_figure_name(level)}" for level in levels]
    text += digits_body(digits, shown, atypical, [f"figures/{FIGURES[1]}", f"figures/{FIGURES[2]}"])
    return Section(
        title="DiffCAM: counterfactual parts and the digits figures",
        body=text,
        claims=claims,
        figures=figures,
        numbers=numbers,
    )

"""Finer-CAM section: data, statistics and the measurements (Table 1, the gamma sweep, the references, a control).

Example:
    >>> import torch
    >>> from camscope.reproduce.finer.measure import paired_difference
    >>> paired_difference(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 1.0])).mean
    1.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from camscope.models.zoo import SmallCNN
from camscope.reproduce.report import FAILS, HOLDS, PARTLY, Context, judge_difference

__all__ = [
    "BASES",
    "COMPARED",
    "COUNT",
    "GAMMA",
    "GAMMAS",
    "METHOD_NAMES",
    "POINTING_TOLERANCE",
    "QUICK_GAMMAS",
    "REFERENCES",
    "SWEEP_KEYS",
    "Comparison",
    "FinerData",
    "Measurements",
    "all_or_some",
    "cam_subtraction_maps",
    "energy_share",
    "explain_maps",
    "finite_mean",
    "load_species",
    "measure",
    "measure_all",
    "paired_difference",
    "test_limit",
]

BASES: tuple[str, ...] = ("gradcam", "layercam", "scorecam")
#: Comparison strengths of the sweep (Figure 6b: 0 to 1; App. C.2: 2.0).
GAMMAS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0)
#: The quick run's grid (the same structure, fewer points).
QUICK_GAMMAS: tuple[float, ...] = (0.0, 0.6, 1.0, 2.0)
#: Numbers of references of the sweep (the paper aggregates the top 3).
REFERENCES: tuple[int, ...] = (1, 2, 3)
#: The paper's defaults.
GAMMA, COUNT = 0.6, 3
FRACTIONS: tuple[float, ...] = (0.05, 0.1)
#: Deletion removes this many pixels per step (1/16 of a 64 x 64 image).
DELETION_STEP = 256
#: The pointing game's tolerance in pixels: the layer's stride (one cell of its 16 x 16 grid).
POINTING_TOLERANCE = 4.0
SWEEP_KEYS = ("rd@0.05", "drop_target@0.05", "share_differing", "pointing")
COMPARED = ("deletion", "rd@0.05", "rd@0.1", "share_box", "share_differing", "pointing")
_Z = 1.959963984540054  # the normal distribution's 97.5% quantile
_BATCH = 256
METHOD_NAMES = {"gradcam": "Grad-CAM", "layercam": "LayerCAM", "scorecam": "Score-CAM"}
_BASE_OPTIONS: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "layercam": {},
    "scorecam": {"normalization": "difference", "batch_size": _BATCH, "progress": False},
}


# ----------------------------------------------------------------------------------------------
# Small statistics helpers (tested in tests/reproduce/test_reproduce_finer.py)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A paired comparison: the mean of ``new - old`` over the images and its 95% interval."""

    mean: float
    low: float
    high: float
    n: int
    base: float = math.nan

    @property
    def significant(self) -> bool:
        """The whole interval lies above 0 (significance alone, without the effect-size criterion)."""
        return self.low > 0

    @property
    def better(self) -> bool:
        """The whole interval lies above 0 and the gain is at least 5% of the base's mean (the report's rule)."""
        return judge_difference(self.base, self.low, self.mean, self.high) == "better"

    @property
    def worse(self) -> bool:
        """The whole interval lies below 0 and the loss is at least 5% of the base's mean."""
        return judge_difference(self.base, self.low, self.mean, self.high) == "worse"

    @property
    def relative(self) -> float:
        """The mean difference relative to the base's mean."""
        return self.mean / abs(self.base) if self.base else math.nan

    @property
    def outcome(self) -> str:
        return "better" if self.better else "worse" if self.worse else "no clear difference"

    def text(self, digits: int = 3) -> str:
        relative = f", {100 * self.relative:+.1f}%" if math.isfinite(self.relative) else ""
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{relative}"


def paired_difference(new: Tensor, old: Tensor) -> Comparison:
    """Mean of ``new - old`` over the pairs where both are finite, with ``mean +- 1.96 s / sqrt(n)``.

    ``s`` is the unbiased standard deviation of the differences (0 for one pair).

    Example:
        >>> import torch
        >>> c = paired_difference(torch.tensor([2.0, 3.0, 4.0]), torch.tensor([1.0, 1.0, 1.0]))
        >>> round(c.mean, 3), c.better
        (2.0, True)
    """
    difference = (new.double() - old.double()).flatten()
    finite = torch.isfinite(difference)
    difference = difference[finite]
    n = int(difference.numel())
    if n == 0:
        return Comparison(float("nan"), float("nan"), float("nan"), 0)
    base = float(old.double().flatten()[finite].mean())
    mean = float(difference.mean())
    spread = float(difference.std()) if n > 1 else 0.0
    half = _Z * spread / math.sqrt(n)
    return Comparison(mean, mean - half, mean + half, n, base)


def energy_share(maps: Tensor, regions: Tensor) -> Tensor:
    """Share of each map's energy inside its region, ``[B]`` (the energy-based pointing game).

    ``sum_{ij in G} L_ij / sum_ij L_ij`` on maps ReLU'd and min-max scaled per image
    (:func:`camscope.metrics.energy_pointing_game`), except that a map that is zero
    everywhere scores 0 instead of NaN: it points at nothing, so it finds nothing.
    An empty region gives NaN (skipped in the means).

    Example:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> regions = torch.tensor([[[False, True], [False, False]], [[True, False], [False, False]]])
        >>> energy_share(maps, regions).tolist()
        [0.75, 0.0]
    """
    from camscope.metrics import energy_pointing_game

    share = energy_pointing_game(maps, masks=regions)["proportion"]
    has_region = regions.flatten(1).any(dim=1).to(share.device)
    return torch.where(has_region & torch.isnan(share), torch.zeros_like(share), share)


def all_or_some(results: Sequence[bool]) -> str:
    """HOLDS if every result is True, PARTLY if some are, FAILS if none are."""
    results = list(results)
    if results and all(results):
        return HOLDS
    return PARTLY if any(results) else FAILS


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


@dataclass
class FinerData:
    images: Tensor
    labels: Tensor
    logits: Tensor
    ranked: Tensor  # [N, 3] the 2nd to 4th predicted classes
    similar: Tensor  # [N] the generator's most similar class
    differing: Tensor  # [N, H, W] bool, parts where the label differs from `similar`
    objects: Tensor  # [N, H, W] bool, the object's bounding box
    parts: list[str]  # the differing part of each image (names joined by "+")
    fill: Tensor  # [1, 3, 1, 1] mean colour of the images
    batch: Any  # the SpeciesBatch (poses, to render the images again)
    generator: Any  # the SyntheticSpecies

    def __getitem__(self, index: slice) -> FinerData:
        return FinerData(
            self.images[index], self.labels[index], self.logits[index], self.ranked[index], self.similar[index],
            self.differing[index], self.objects[index], self.parts[index], self.fill, self.batch[index], self.generator,
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def test_limit(name: str, count: int) -> int:
    """How many test images to render to keep ``count`` correctly classified ones (by the model's test accuracy)."""
    from camscope.models import zoo

    accuracy = float(zoo.model_info(name)["test_accuracy"])
    return min(int(zoo.model_info(name)["data"]["test_size"]), math.ceil(count / max(accuracy - 0.04, 0.3)) + 8)


def load_species(
    context: Context, count: int, name: str = "species"
) -> tuple[SmallCNN, FinerData, dict[str, float], list[str]]:
    """The first ``count`` correctly classified test images of species model ``name``, their ground truth and stats."""
    from camscope.metrics import boxes_to_masks

    model = context.model(name)
    limit = test_limit(name, count)
    data = context.data(name, "test", limit)
    logits = context.predictions(name, "test", limit)
    correct = logits.argmax(dim=1) == data.labels
    keep = correct.nonzero().flatten()[:count]
    images, labels, logits = data.images[keep], data.labels[keep], logits[keep]
    generator = data.generator
    similar = generator.most_similar_classes()[labels]
    differing = generator.difference_masks(data.part_masks[keep], labels, similar)
    objects = boxes_to_masks(data.boxes[keep], images.shape[2:])
    ranked = logits.scatter(1, labels[:, None], float("-inf")).topk(3, dim=1).indices
    parts = ["+".join(generator.differing_parts(int(c), int(d))) for c, d in zip(labels, similar)]
    stats = {
        "images": float(len(keep)),
        "accuracy_on_loaded": float(correct.float().mean()),
        "second_is_most_similar": float((ranked[:, 0] == similar).float().mean()),
        "most_similar_in_references": float((ranked == similar[:, None]).any(dim=1).float().mean()),
        "differing_area": float(differing.flatten(1).float().mean(dim=1).mean()),
        "object_area": float(objects.flatten(1).float().mean(dim=1).mean()),
    }
    fill = images.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    kept = FinerData(
        images, labels, logits, ranked, similar, differing, objects, parts, fill, data.batch[keep], generator
    )
    return model, kept, stats, data.class_names


def explain_maps(model: SmallCNN, data: FinerData, method: str, **options: Any) -> Tensor:
    import camscope

    explanation = camscope.explain(
        model, data.images, method=method, layer=model.cam_layer, target=data.labels, **options
    )
    return explanation.maps.detach()


def cam_subtraction_maps(model: SmallCNN, data: FinerData, gamma: float = GAMMA, references: int = COUNT) -> Tensor:
    """Finer-CAM's Fig. 9b baseline: subtract the reference classes' Grad-CAMs *after* their ReLU.

    ``L = ReLU(ReLU(M_c) - gamma * mean_d ReLU(M_d))`` at the layer's resolution (``M``: the signed
    Grad-CAM maps of the class and of the 2nd to ``references + 1``-th predicted classes), then
    upsampled and min-max scaled like every map. Finer-CAM instead subtracts the *weights* before the
    ReLU, so evidence shared by both classes cancels inside each cell.

    Example:
        >>> import torch
        >>> relu = torch.relu
        >>> m_c, m_d = torch.tensor([2.0, -1.0]), torch.tensor([-3.0, 1.0])
        >>> relu(relu(m_c) - 0.6 * relu(m_d)).tolist(), [round(v, 4) for v in relu(m_c - 0.6 * m_d).tolist()]
        ([2.0, 0.0], [3.8, 0.0])
    """
    import camscope
    from camscope.engine.maps import final_maps

    def raw(target: Tensor) -> Tensor:
        return camscope.explain(model, data.images, "gradcam", layer=model.cam_layer, target=target).raw.detach()

    subtracted = torch.stack([raw(data.ranked[:, j]).clamp(min=0) for j in range(references)]).mean(dim=0)
    return final_maps(raw(data.labels).clamp(min=0) - gamma * subtracted, data.images.shape[-2:])


def measure(
    model: SmallCNN,
    data: FinerData,
    maps: Tensor,
    *,
    fractions: Sequence[float] = FRACTIONS,
    deletion: bool = True,
) -> dict[str, Tensor]:
    """Per-image RD@p, the two drops, deletion AUC, and the energy shares."""
    from camscope import metrics

    rd = metrics.relative_drop(
        model, data.images, maps, target=data.labels, fractions=fractions, fill=data.fill, batch_size=_BATCH
    )
    out = {key: value.detach().cpu() for key, value in rd.values.items()}
    if deletion:
        result = metrics.deletion(
            model, data.images, maps, target=data.labels, step=DELETION_STEP, substrate=data.fill, batch_size=_BATCH
        )
        out["deletion"] = result["auc"].detach().cpu()
    out["share_differing"] = energy_share(maps, data.differing)
    out["pointing"] = (
        metrics.pointing_game(maps, masks=data.differing, tolerance=POINTING_TOLERANCE)["hit"].detach().cpu()
    )
    out["share_box"] = energy_share(maps, data.objects)
    out["empty"] = (maps.flatten(1).amax(dim=1) <= 0).float()
    return out


def finite_mean(values: Tensor) -> float:
    values = values.double()
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else float("nan")


# ----------------------------------------------------------------------------------------------
# The measurements of the section
# ----------------------------------------------------------------------------------------------


@dataclass
class Measurements:
    """Everything the section measured: maps and per-image scores of Table 1, the sweep, the references, the control."""

    maps: dict[str, Tensor]
    measured: dict[str, dict[str, Tensor]]
    sweep: dict[tuple[int, float], dict[str, float]]
    sweep_values: dict[tuple[int, float], dict[str, Tensor]]
    choices: dict[str, dict[str, Tensor]]
    controls: dict[str, tuple[Comparison, Comparison]]


def measure_bases(
    model: SmallCNN, data: FinerData, score_data: FinerData, log: Callable[[str], None]
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Table 1: every base method and its Finer variant (paper defaults), all metrics."""
    maps: dict[str, Tensor] = {}
    measured: dict[str, dict[str, Tensor]] = {}
    for base in BASES:
        subset = score_data if base == "scorecam" else data
        for method, options in ((base, {}), (f"finer-{base}", {"gamma": GAMMA, "references": COUNT})):
            maps[method] = explain_maps(model, subset, method, **_BASE_OPTIONS[base], **options)
            measured[method] = measure(model, subset, maps[method])
            log(f"finer: {method} done")
    maps["cam-subtraction"] = cam_subtraction_maps(model, data)
    measured["cam-subtraction"] = measure(model, data, maps["cam-subtraction"])
    return maps, measured


def sweep_gamma(
    model: SmallCNN, data: FinerData, measured: dict[str, dict[str, Tensor]], gammas: Sequence[float]
) -> tuple[dict[tuple[int, float], dict[str, float]], dict[tuple[int, float], dict[str, Tensor]]]:
    """Figure 6b: gamma x references with Finer-Grad-CAM (gamma = 0 is Grad-CAM for every T)."""
    sweep: dict[tuple[int, float], dict[str, float]] = {}
    sweep_values: dict[tuple[int, float], dict[str, Tensor]] = {}
    for references in REFERENCES:
        for gamma in gammas:
            if gamma == 0:
                values = measured["gradcam"]
            elif gamma == GAMMA and references == COUNT:
                values = measured["finer-gradcam"]
            else:
                cams = explain_maps(model, data, "finer-gradcam", gamma=gamma, references=references)
                values = measure(model, data, cams, fractions=(0.05,), deletion=False)
            sweep_values[(references, gamma)] = values
            sweep[(references, gamma)] = {key: finite_mean(values[key]) for key in SWEEP_KEYS}
    return sweep, sweep_values


def reference_choices(
    model: SmallCNN,
    data: FinerData,
    measured: dict[str, dict[str, Tensor]],
    sweep_values: dict[tuple[int, float], dict[str, Tensor]],
) -> dict[str, dict[str, Tensor]]:
    """Table 2: which reference(s), at gamma = 0.6."""
    # Table 2: which reference(s), at gamma = 0.6.
    choices: dict[str, dict[str, Tensor]] = {"none": measured["gradcam"]}
    for name, column in (("2nd", 0), ("3rd", 1), ("4th", 2)):
        if column == 0:
            choices[name] = sweep_values[(1, GAMMA)]
        else:
            cams = explain_maps(
                model, data, "finer-gradcam", gamma=GAMMA, references=data.ranked[:, column : column + 1]
            )
            choices[name] = measure(model, data, cams, fractions=(0.05,), deletion=False)
    choices["top2"] = sweep_values[(2, GAMMA)]
    choices["agg"] = measured["finer-gradcam"]
    cams = explain_maps(model, data, "finer-gradcam", gamma=GAMMA, references=data.similar[:, None])
    choices["similar"] = measure(model, data, cams, fractions=(0.05,), deletion=False)
    return choices


def distractor_controls(
    model: SmallCNN, score_data: FinerData, measured: dict[str, dict[str, Tensor]]
) -> dict[str, tuple[Comparison, Comparison]]:
    """Control for Loc.: the Score-CAM subset rendered again without the distractor shapes (same poses, same boxes).

    Returns, per base, Finer - base energy in the box with the distractors and without them.
    """
    n_score = len(score_data)
    pose = replace(
        score_data.batch.pose, distractor_center=torch.full_like(score_data.batch.pose.distractor_center, -1e4)
    )
    plain = replace(score_data, images=score_data.generator.render(score_data.labels, pose).images)
    controls: dict[str, tuple[Comparison, Comparison]] = {}
    for base in ("gradcam", "layercam"):
        shares = [
            energy_share(explain_maps(model, plain, method, **options), plain.objects)
            for method, options in ((base, {}), (f"finer-{base}", {"gamma": GAMMA, "references": COUNT}))
        ]
        with_them = paired_difference(
            measured[f"finer-{base}"]["share_box"][:n_score], measured[base]["share_box"][:n_score]
        )
        controls[base] = (with_them, paired_difference(shares[1], shares[0]))
    return controls


def measure_all(
    context: Context, model: SmallCNN, data: FinerData, score_data: FinerData, gammas: Sequence[float]
) -> Measurements:
    """Run every measurement of the section, in order, logging progress."""
    log = context.log
    maps, measured = measure_bases(model, data, score_data, log)
    sweep, sweep_values = sweep_gamma(model, data, measured, gammas)
    log("finer: gamma sweep done")
    choices = reference_choices(model, data, measured, sweep_values)
    log("finer: references done")
    controls = distractor_controls(model, score_data, measured)
    return Measurements(maps, measured, sweep, sweep_values, choices, controls)

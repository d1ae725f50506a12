"""DiffCAM section: constants, paired bootstrap verdicts, and the species and digits measurements.

Example:
    >>> import torch
    >>> from camscope.reproduce.diffcam.measure import auroc
    >>> auroc(torch.tensor([0.1, 0.9, 0.8, 0.2]), torch.tensor([False, True, True, False]))
    1.0
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.metrics import part_scores
from camscope.models.zoo import SmallCNN
from camscope.reproduce.report import FAILS, HOLDS, PARTLY, Context, Verdict, judge_difference

__all__ = [
    "BANK_IMAGES",
    "BASELINES",
    "DIGIT_METHODS",
    "FINER_GAMMA",
    "HEADLINE_THRESHOLD",
    "METHODS",
    "PAIRS",
    "PAPER_TABLE2",
    "RESAMPLES",
    "SMALL_LAMBDA",
    "THRESHOLDS",
    "Comparison",
    "SettingResult",
    "auroc",
    "build_bank",
    "comparison_verdict",
    "diffcam_versus",
    "measure_digits",
    "measure_species",
    "paired_bootstrap",
    "score_setting",
    "species_maps",
]

#: Thresholds of the part curves and the headline one.
THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
HEADLINE_THRESHOLD = 0.5
#: Finer-CAM's comparison strength (the paper's default).
FINER_GAMMA = 0.6
#: The fixed Tikhonov term of the ablation, relative to tr(Sigma) / K.
SMALL_LAMBDA = 1e-3
#: Bootstrap resamples of the verdicts.
RESAMPLES = 2000
#: Species images per batch of explanations.
_CHUNK = 512

#: The paper's Table 2 (CUB-200-2011, ResNet-50), as printed: metric -> setting -> method -> value.
PAPER_TABLE2: dict[str, dict[str, dict[str, float]]] = {
    "R": {
        "random": {"Goyal": 0.03, "CounteRGAN": 0.06, "GALORE": 0.09, "DiffCAM": 0.15},
        "similar": {"Goyal": 0.12, "CounteRGAN": 0.17, "GALORE": 0.16, "DiffCAM": 0.17},
    },
    "P": {
        "random": {"Goyal": 0.77, "CounteRGAN": 0.74, "GALORE": 0.81, "DiffCAM": 0.83},
        "similar": {"Goyal": 0.57, "CounteRGAN": 0.56, "GALORE": 0.60, "DiffCAM": 0.61},
    },
    "PIoU": {
        "random": {"Goyal": 0.18, "CounteRGAN": 0.20, "GALORE": 0.16, "DiffCAM": 0.18},
        "similar": {"Goyal": 0.15, "CounteRGAN": 0.14, "GALORE": 0.15, "DiffCAM": 0.20},
    },
}

# Method keys of the species comparison: (key, label, in the verdict).
METHODS: tuple[tuple[str, str], ...] = (
    ("gradcam", "Grad-CAM"),
    ("finer", f"Finer-CAM (γ = {FINER_GAMMA})"),
    ("diffcam", "DiffCAM why c, not d"),
    ("diffcam_small_lambda", f"DiffCAM, λ = {SMALL_LAMBDA:g}·tr Σ/K (ablation)"),
    ("diffcam_others", "DiffCAM why is c (ablation)"),
)
BASELINES = ("gradcam", "finer")
DIGIT_METHODS: tuple[tuple[str, str], ...] = (
    ("gradcam", "Grad-CAM"),
    ("gradcampp", "Grad-CAM++"),
    ("layercam", "LayerCAM"),
    ("diffcam", "DiffCAM why is c"),
)


# --------------------------------------------------------------------------------------
# Statistics and verdicts
# --------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """A paired comparison: mean difference ``a - b`` and its bootstrap 95% interval."""

    difference: float
    low: float
    high: float
    count: int
    base: float = math.nan

    @property
    def outcome(self) -> str:
        """``"better"`` / ``"worse"``: the interval excludes 0 and the mean difference is at least 5% of the
        baseline's mean (:func:`~camscope.reproduce.report.judge_difference`); ``"tie"`` otherwise."""
        if math.isnan(self.base):
            return "better" if self.low > 0 else "worse" if self.high < 0 else "tie"
        return judge_difference(self.base, self.low, self.difference, self.high)

    def text(self, digits: int = 3) -> str:
        return f"{self.difference:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_bootstrap(a: Tensor, b: Tensor, generator: torch.Generator, resamples: int = RESAMPLES) -> Comparison:
    """Mean of ``a - b`` over the samples where both are defined, with a percentile bootstrap 95% interval.

    Args:
        a, b: ``[N]`` per-sample values (NaN where undefined).
        generator: the seeded CPU generator of the resamples.
        resamples: number of resamples.

    Example:
        >>> import torch
        >>> c = paired_bootstrap(torch.ones(50), torch.zeros(50), torch.Generator().manual_seed(0))
        >>> (c.difference, c.low, c.high, c.outcome)
        (1.0, 1.0, 1.0, 'better')
    """
    difference = (a.double() - b.double()).flatten().cpu()
    defined = ~torch.isnan(difference)
    difference = difference[defined]
    count = int(difference.numel())
    if count == 0:
        return Comparison(math.nan, math.nan, math.nan, 0)
    base = float(b.double().flatten().cpu()[defined].mean())
    index = torch.randint(0, count, (resamples, count), generator=generator)
    means = difference[index].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return Comparison(float(difference.mean()), float(low), float(high), count, base)


def comparison_verdict(outcomes: Sequence[str]) -> Verdict:
    """HOLDS when better than every baseline, PARTLY when better than some, FAILS otherwise."""
    better = sum(outcome == "better" for outcome in outcomes)
    if outcomes and better == len(outcomes):
        return HOLDS
    return PARTLY if better else FAILS


# --------------------------------------------------------------------------------------
# Species: counterfactual parts
# --------------------------------------------------------------------------------------


def build_bank(model: SmallCNN, images: Tensor, labels: Tensor, class_names: Sequence[str]) -> ReferenceBank:
    batches = [(images[i : i + _CHUNK], labels[i : i + _CHUNK]) for i in range(0, images.shape[0], _CHUNK)]
    return ReferenceBank.build(model, batches, layer=model.cam_layer, class_names=list(class_names), progress=False)


def diffcam_versus(
    model: SmallCNN, images: Tensor, explained: Tensor, versus: Tensor, bank: ReferenceBank, regularization: Any
) -> Tensor:
    """DiffCAM "why ``explained``, not ``versus``" maps: one explain call per counterfactual class."""
    maps = torch.empty(images.shape[0], *images.shape[2:])
    for d in versus.unique().tolist():
        index = (versus == d).nonzero().flatten()
        explanation = camscope.explain(
            model,
            images[index],
            method="diffcam",
            layer=model.cam_layer,
            target=explained[index],
            bank=bank,
            reference=bank.group("class", int(d)),
            regularization=regularization,
        )
        maps[index] = explanation.maps.detach().cpu()
    return maps


def species_maps(
    key: str, model: SmallCNN, images: Tensor, explained: Tensor, versus: Tensor, bank: ReferenceBank
) -> Tensor:
    """``[B, H, W]`` maps of method ``key`` explaining ``explained`` against ``versus``."""
    layer = model.cam_layer
    if key == "gradcam":
        return camscope.explain(model, images, method="gradcam", layer=layer, target=explained).maps.detach().cpu()
    if key == "finer":
        target = camscope.Finer(references=versus[:, None], gamma=FINER_GAMMA, explained=explained)
        return camscope.explain(model, images, method="gradcam", layer=layer, target=target).maps.detach().cpu()
    if key == "diffcam":
        return diffcam_versus(model, images, explained, versus, bank, "oas")
    if key == "diffcam_small_lambda":
        return diffcam_versus(model, images, explained, versus, bank, SMALL_LAMBDA)
    if key == "diffcam_others":
        explanation = camscope.explain(
            model, images, method="diffcam", layer=layer, target=explained, bank=bank, reference="others"
        )
        return explanation.maps.detach().cpu()
    raise KeyError(key)


@dataclass
class SettingResult:
    """The part scores of every method for one choice of counterfactual classes."""

    name: str
    pairs: int
    parts_differing: float
    chance_precision: float
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # method -> metric -> [B]
    curves: dict[str, Tensor] = field(default_factory=dict)  # method -> mean F1 curve [T]
    maps: dict[str, Tensor] = field(default_factory=dict)  # method -> [B, H, W] maps (for the figure)
    differing: Tensor | None = None  # [B, P] the parts in which the pair's classes differ

    def mean(self, method: str, metric: str) -> float:
        values = self.scores[method][metric]
        return float(values.double().nanmean()) if values.numel() else math.nan


def score_setting(
    name: str,
    model: SmallCNN,
    batch: Any,
    generator: Any,
    versus: Tensor,
    bank: ReferenceBank,
    log: Callable[[str], None],
) -> tuple[SettingResult, Any]:
    """Explain the pairs ``(labels, versus)`` and their counterfactual images with every method and score them."""
    labels = batch.labels
    counter = generator.counterfactual(batch, versus)
    differing = generator.differs()[labels, versus]  # [B, P]
    visible = batch.part_masks.flatten(2).any(dim=2)
    truth = differing & visible
    result = SettingResult(
        name=name,
        pairs=int(labels.shape[0]),
        parts_differing=float(truth.sum(dim=1).double().mean()),
        chance_precision=float((truth.sum(dim=1) / visible.sum(dim=1).clamp(min=1)).double().mean()),
        differing=differing,
    )
    for key, _label in METHODS:
        begin = time.perf_counter()
        maps = species_maps(key, model, batch.images, labels, versus, bank)
        counter_maps = species_maps(key, model, counter.images, versus, labels, bank)
        scores = part_scores(
            maps,
            parts=batch.part_masks,
            differing=differing,
            thresholds=THRESHOLDS,
            threshold=HEADLINE_THRESHOLD,
            counter_maps=counter_maps,
            counter_parts=counter.part_masks,
        )
        per_image = {metric: scores[metric].detach().cpu() for metric in ("precision", "recall", "f1", "part_iou")}
        f1_curve = scores.curves["f1"].detach().cpu()
        per_image["f1_mean"] = f1_curve.double().nanmean(dim=1).float()
        result.scores[key] = per_image
        result.curves[key] = f1_curve.double().nanmean(dim=0).float()
        result.maps[key] = maps
        log(f"reproduce: diffcam: {name} pairs, {key}: {time.perf_counter() - begin:.1f} s")
    return result, counter


#: Training images in a level's reference bank, and correctly classified test images (pairs) per setting.
BANK_IMAGES, PAIRS = 4096, 1024


def measure_species(context: Context, level: str = "easy") -> dict[str, Any]:
    """Both counterfactual settings on the level's model: the first correctly classified test images, a bank."""
    from camscope.reproduce.finer.measure import test_limit

    name = context.levels[level]
    model = context.model(name)
    train = context.data(name, "train", limit=context.count(BANK_IMAGES, 256))
    pairs = context.count(PAIRS, 24)
    # render enough test images to keep `pairs` correctly classified ones
    limit = test_limit(name, pairs)
    test = context.data(name, "test", limit=limit)
    begin = time.perf_counter()
    bank = build_bank(model, train.images, train.labels, train.class_names)
    context.log(
        f"reproduce: diffcam: {level}: bank of {bank.count} training images in {time.perf_counter() - begin:.1f} s"
    )
    predicted = context.predictions(name, "test", limit).argmax(dim=1)
    correct = (predicted == test.labels).nonzero().flatten()[:pairs]
    batch = test.batch[correct]
    species = test.generator
    labels = batch.labels
    similar = species.most_similar_classes()[labels]
    classes = species.num_classes
    shift = torch.randint(1, classes, labels.shape, generator=context.generator(101))
    random_classes = (labels + shift) % classes
    settings = {}
    counters = {}
    for setting, versus in (("similar", similar), ("random", random_classes)):
        settings[setting], counters[setting] = score_setting(setting, model, batch, species, versus, bank, context.log)
    return {
        "level": level,
        "name": name,
        "settings": settings,
        "batch": batch,
        "counters": counters,
        "versus": {"similar": similar, "random": random_classes},
        "species": species,
        "bank": bank,
        "train_size": int(train.images.shape[0]),
        "tested": len(test),
        "accuracy": float((predicted == test.labels).double().mean()),
        "shrinkage": _mean_shrinkage(bank),
    }


def _mean_shrinkage(bank: ReferenceBank) -> float:
    return float(sum(bank.group("class", label).shrinkage() for label in bank.labels) / max(1, len(bank.labels)))


# --------------------------------------------------------------------------------------
# Digits: why is, why not, intra-class
# --------------------------------------------------------------------------------------


def measure_digits(context: Context) -> dict[str, Any]:
    model = context.model("digits")
    layer = model.cam_layer
    train = context.data("digits", "train")
    test = context.data("digits", "test")
    bank = build_bank(model, train.images, train.labels, train.class_names)
    images, labels = test.images, test.labels
    with torch.no_grad():
        logits = model(images)
    probabilities = logits.softmax(dim=1)
    predicted = logits.argmax(dim=1)

    # "why is it c": ink recall of each method's maps
    ink = images[:, 0] > 0.5
    ink_area = ink.sum(dim=(1, 2)).clamp(min=1)
    maps: dict[str, Tensor] = {}
    ink_scores: dict[str, dict[str, Tensor]] = {}
    for key, _label in DIGIT_METHODS:
        options: dict[str, Any] = {"bank": bank, "reference": "others"} if key == "diffcam" else {}
        explanation = camscope.explain(model, images, method=key, layer=layer, target=labels, **options)
        maps[key] = explanation.maps.detach().cpu()
        region = maps[key] >= 0.5
        inside = (region & ink).sum(dim=(1, 2)).double()
        ink_scores[key] = {
            "recall": inside / ink_area,
            "precision": inside / region.sum(dim=(1, 2)).clamp(min=1),
            "area": region.double().mean(dim=(1, 2)),
        }

    # intra-class: atypicality = squared Mahalanobis distance from the example's own class
    explanation = camscope.explain(
        model, images, method="diffcam", layer=layer, target=labels, bank=bank, reference="intra"
    )
    intra_maps = explanation.maps.detach().cpu()
    class_means = torch.stack([bank.group("intra", label).mean.cpu() for label in bank.labels])
    means = class_means[torch.tensor([bank.labels.index(int(c)) for c in labels.tolist()])]
    assert explanation.activations is not None and explanation.weights is not None  # DiffCAM keeps both
    z = explanation.activations.mean(dim=(2, 3)).double().cpu()
    atypicality = (explanation.weights.double().cpu() * (z - means.cpu())).sum(dim=1)
    errors = predicted != labels
    true_probability = probabilities[torch.arange(labels.shape[0]), labels]
    return {
        "bank": bank,
        "images": images,
        "labels": labels,
        "predicted": predicted,
        "probabilities": probabilities,
        "maps": maps,
        "ink": ink_scores,
        "atypicality": atypicality,
        "intra_maps": intra_maps,
        "errors": errors,
        "true_probability": true_probability,
        "auroc": auroc(atypicality, errors),
        "spearman": _spearman(atypicality, 1 - true_probability.double()),
        "accuracy": float((~errors).double().mean()),
    }


def auroc(scores: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the ``positives`` (Mann-Whitney, ties counted half)."""
    positives = positives.bool()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _ranks(scores.double())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ranks(values: Tensor) -> Tensor:
    """1-based ranks with ties averaged."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(values.numpy())).double()


def _spearman(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy)."""
    from scipy.stats import spearmanr

    result = spearmanr(a.double().numpy(), b.double().numpy())
    return float(result.statistic), float(result.pvalue)

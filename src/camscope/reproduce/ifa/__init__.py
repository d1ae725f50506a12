"""Integrated feature analysis (Li et al.): consistency with the common scale (Table I) and principal features (Table II).

Protocol, for each shipped model (``species``: 16 synthetic fine-grained classes,
3x64x64; ``digits``: scikit-learn's digits at 1x32x32), at its CAM layer
``model.features`` (K = 64 channels, 16x16):

1. **Analysis on the training split.** :func:`camscope.analyze` runs Grad-CAM,
   HiResCAM (the paper's "pixel-wise Grad-CAM"), Grad-CAM++ and XGrad-CAM once
   over the first training images (explaining each image's predicted class, the
   paper's default) and keeps the distribution of the signed map
   ``M = sum_k w_k A_k`` (for the common scale ``tanh(a x + b)`` with
   ``sigma(P10) = 0.1``, ``sigma(P90) = 0.9``) and the importance matrix of Eq. 4
   (each sample's true class).
2. **Consistency on the test split (Table I's analogue).**
   :func:`camscope.metrics.consistency`: over the test images, the correlation
   between the per-image sum of the CAM (64x64 or 32x32 pixels) and the logit of
   one selected class (``SELECTED_CLASS`` for every image, as the paper's plots:
   "selected class dog / 7 / lesion"), Pearson when Mardia's test accepts bivariate
   normality at 5%, else Spearman, as the paper prescribes; each image's predicted
   class is reported as a secondary reading. The usual CAMs are
   ReLU'd and min-max scaled per image; the S-CAMs are ``tanh(a up(M) + b)`` with
   the scale of step 1 (fitted for the same method).
3. **Accuracy with principal features (Table II's analogue).** The principal
   features of class ``c`` are the top ``p`` = 5, 10, 20, 25% of the Grad-CAM
   importance column ``IM[:, c]`` (train split); the accuracy is measured on the
   test split with the other channels blocked inside the network. Two readings of
   "blocking", both reported:

   * **union** (:func:`camscope.metrics.feature_masking_accuracy`, the library's
     protocol and the headline: the paper's MNIST result, most features kept and
     near-chance accuracy for the rest, reads as this mask): at inference the class is unknown, so the union of all classes'
     principal features is kept (its share of the K channels is given: with many
     classes it is far more than ``p``); "rest" keeps the complement of the union;
   * **per class**: the logit of each class ``c`` is computed from class ``c``'s
     own principal features only (for the shipped SmallCNN the layer is followed
     by global average pooling and the linear head, so this is
     ``b_c + sum_{k in P_c} W_ck mean_ij A_k``); "rest" computes each logit from
     the other features. This keeps exactly ``p`` of the channels per class, the
     FS-CAM reading of the paper, reported as a secondary reading.

   A control the paper does not have: the same number of channels drawn at random
   (5 seeded draws, mean), per class and as a union.

Choices and caveats, stated in the report: the paper's MNIST model is a
transformer and its other models are ImageNet-scale CNNs; here both models end
with global average pooling and one linear layer, for which Grad-CAM, HiResCAM
and XGrad-CAM give the same map (the gradient of the logit is ``W_ck / Z`` at
every pixel), ``W_c . A / Z``, whose pixel sum is exactly the logit minus the
bias: the measured difference between the three is reported. The paper's
"Ave. Inc." is the mean over the four methods of the difference of the
coefficients (S minus plain), in percentage points (this reproduces its printed
23.1% for ImageNet from its Table I).

Verdict rules: see :mod:`camscope.reproduce.ifa.claims` (distinct maps counted once in
Table I; the union protocol is Table II's headline, with a 95% interval on the
10-point rule, and the per-class reading its secondary).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

import camscope
from camscope.metrics import consistency, feature_masking_accuracy
from camscope.metrics.consistency import Consistency
from camscope.models.zoo import SmallCNN
from camscope.reproduce.ifa.claims import claims as ifa_claims
from camscope.reproduce.ifa.measured import DATASETS, FRACTIONS, Measured
from camscope.reproduce.report import Context, Section, markdown_table
from camscope.viz.figures import new_figure

__all__ = ["DATASETS", "FRACTIONS", "METHODS", "PAPER_TABLE_I", "PAPER_TABLE_II", "Measured", "run"]

#: The paper's four methods (Table I columns), camscope names and display names.
METHODS: tuple[tuple[str, str], ...] = (
    ("gradcam", "Grad-CAM"),
    ("hirescam", "HiResCAM (pixel-wise Grad-CAM)"),
    ("gradcampp", "Grad-CAM++"),
    ("xgradcam", "XGrad-CAM"),
)
#: Table I of the paper (plain, S-) per method, three of its eight rows, and its "Ave. Inc.".
PAPER_TABLE_I: dict[
    str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float], float]
] = {
    "ImageNet2012": ((0.892, 0.999), (0.891, 0.999), (0.048, 0.651), (0.892, 0.999), 23.1),
    "Cats&Dogs": ((0.754, 0.995), (0.686, 0.999), (-0.422, 0.820), (0.729, 0.999), 51.6),
    "MNIST": ((-0.678, -0.811), (0.545, 0.999), (0.019, 0.029), (0.708, 0.998), 15.5),
}
#: Table II of the paper (all, principal, non-principal features), rows whose extraction is legible.
PAPER_TABLE_II: dict[str, tuple[float, float, float]] = {
    "Cats&Dogs (top 5%)": (0.985, 0.902, 0.507),
    "MNIST (top 20%)": (0.994, 0.955, 0.075),
    "MRI (top 5%)": (0.851, 0.772, 0.532),
    "Ultrasound (top 5%)": (0.764, 0.642, 0.511),
}
#: The one class whose logit every image's CAM is compared with (the paper's plots: "selected class dog / 7").
SELECTED_CLASS = 0
_RANDOM_DRAWS = 5
_BATCH = 256


def _identity(values: Tensor) -> Tensor:
    """No scaling at all: the signed map ``M`` itself (upsampled), for the "raw M" column."""
    return values


def _batches(images: Tensor, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
    return [(images[i : i + _BATCH], labels[i : i + _BATCH]) for i in range(0, len(labels), _BATCH)]


def _pooled(model: SmallCNN, images: Tensor) -> Tensor:
    """``mean_ij A`` at the CAM layer of a SmallCNN (checked against the model's logits)."""
    chunks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], _BATCH):
            chunks.append(model.pool(model.features(images[start : start + _BATCH])).flatten(1))
    pooled = torch.cat(chunks)
    with torch.no_grad():
        full = model.fc(pooled)
        check = model(images[:_BATCH])
    if not torch.allclose(full[: check.shape[0]], check, atol=1e-4, rtol=1e-4):
        raise RuntimeError("the per-class readout assumes logits = fc(mean_ij A); this model differs")
    return pooled


def _per_class_accuracy(model: SmallCNN, pooled: Tensor, labels: Tensor, masks: Tensor) -> float:
    """Accuracy when the logit of class c is computed from the features ``masks[c]`` only."""
    weight = model.fc.weight.detach() * masks.to(pooled.dtype)  # [C, K]
    logits = pooled @ weight.T + model.fc.bias.detach()
    return float((logits.argmax(dim=1) == labels).float().mean())


def _random_masks(generator: torch.Generator, classes: int, features: int, keep: int) -> Tensor:
    order = torch.rand(classes, features, generator=generator).argsort(dim=1)[:, :keep]
    return torch.zeros(classes, features, dtype=torch.bool).scatter_(1, order, True)


def _max_difference(model: SmallCNN, images: Tensor, layer: str) -> float:
    """Largest |raw map difference| between Grad-CAM, HiResCAM and XGrad-CAM, relative to the maps' range."""
    raws = [camscope.explain(model, images, method=m, layer=layer).raw for m in ("gradcam", "hirescam", "xgradcam")]
    span = float(raws[0].abs().max()) or 1.0
    return max(float((raws[0] - other).abs().max()) / span for other in raws[1:])


def _figure(context: Context, scatter: dict[str, dict[str, Any]], accuracy: dict[str, dict[str, Any]]) -> list[str]:

    figures = []
    fig = new_figure((8.5, 7))
    axes = fig.subplots(2, 2, squeeze=False)
    for row, name in enumerate(DATASETS):
        plain, scaled = scatter[name]["plain"], scatter[name]["scaled"]
        for col, (result, label) in enumerate(((plain, "Grad-CAM"), (scaled, "S-Grad-CAM"))):
            ax = axes[row][col]
            ax.scatter(result.logits.numpy(), result.cam_sums.numpy(), s=4, alpha=0.4, color="C0" if col == 0 else "C3")
            ax.set_title(f"{name}: {label} ({result.logit.method} r = {result.coefficient:.3f})", fontsize=9)
            ax.set_xlabel("logit of the explained class", fontsize=8)
            ax.set_ylabel("sum of the CAM over pixels", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle("IFA Table I analogue: CAM sum vs logit, test split", fontsize=10)
    fig.tight_layout()
    path = context.figures / "ifa_consistency.png"
    fig.savefig(path, dpi=110)
    figures.append("figures/ifa_consistency.png")

    fig = new_figure((9, 3.6))

    axes = fig.subplots(1, 2, squeeze=False)
    for col, name in enumerate(DATASETS):
        ax = axes[0][col]
        entry = accuracy[name]
        shares = [100 * f for f in FRACTIONS]
        ax.axhline(entry["all"], color="k", lw=1, ls="--", label="all features")
        ax.axhline(entry["chance"], color="grey", lw=1, ls=":", label="chance")
        ax.plot(shares, entry["class_top"], "o-", color="C3", label="principal (per class)")
        ax.plot(shares, entry["class_rest"], "s-", color="C0", label="rest (per class)")
        ax.plot(shares, entry["class_random"], "^--", color="C2", label="random (per class)")
        ax.plot(shares, entry["union_top"], "o:", color="C1", label="principal (union)")
        ax.set_title(f"{name}", fontsize=9)
        ax.set_xlabel("share of principal features kept per class (%)", fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    axes[0][1].legend(fontsize=7, loc="center right")
    fig.suptitle("IFA Table II analogue: accuracy with the principal features only", fontsize=10)
    fig.tight_layout()
    fig.savefig(context.figures / "ifa_accuracy.png", dpi=110)
    figures.append("figures/ifa_accuracy.png")
    return figures


def _consistency_table(
    context: Context,
    name: str,
    model: SmallCNN,
    train_batches: list[tuple[Tensor, Tensor]],
    test_batches: list[tuple[Tensor, Tensor]],
    measured: Measured,
) -> Any:
    """Table I's analogue on one data set: consistency without and with the common scale; returns Grad-CAM's analysis."""
    layer = model.cam_layer
    numbers, consistency_rows, scatter = measured.numbers, measured.consistency_rows, measured.scatter
    coefficients = measured.coefficients
    analyses = {}
    for method, title in METHODS:
        context.log(f"  ifa: {name} {method}")
        analysis = camscope.analyze(model, train_batches, method=method, layer=layer, progress=False)
        analyses[method] = analysis
        scales = [None, analysis, _identity]
        found = consistency(
            model, test_batches, method=method, layer=layer, scale=scales, target=SELECTED_CLASS, progress=False
        )
        plain, scaled, raw = cast(list[Consistency], found)  # a list of scales gives a list of results
        found = consistency(model, test_batches, method=method, layer=layer, scale=scales[:2], progress=False)
        predicted_plain, predicted_scaled = cast(list[Consistency], found)  # each image's own predicted class
        coefficients[(name, method)] = (plain.coefficient, scaled.coefficient)
        numbers[f"{name}_{method}_consistency"] = plain.coefficient
        numbers[f"{name}_{method}_consistency_scaled"] = scaled.coefficient
        numbers[f"{name}_{method}_consistency_raw"] = raw.coefficient
        numbers[f"{name}_{method}_consistency_predicted"] = predicted_plain.coefficient
        numbers[f"{name}_{method}_consistency_predicted_scaled"] = predicted_scaled.coefficient
        consistency_rows.append(
            [
                name,
                title,
                f"{plain.coefficient:.3f} ({plain.logit.method[0].upper()})",
                f"{scaled.coefficient:.3f} ({scaled.logit.method[0].upper()})",
                scaled.coefficient - plain.coefficient,
                f"{raw.coefficient:.3f} ({raw.logit.method[0].upper()})",
                f"{predicted_plain.coefficient:.3f} → {predicted_scaled.coefficient:.3f}",
            ]
        )
        if method == "gradcam":
            scatter[name] = {"plain": plain, "scaled": scaled}
    increase = 100 * sum(coefficients[(name, m)][1] - coefficients[(name, m)][0] for m, _ in METHODS) / len(METHODS)
    numbers[f"{name}_average_increase_pp"] = increase
    consistency_rows.append([name, "**Ave. Inc.**", "", "", f"{increase:+.1f} points", "", ""])
    return analyses["gradcam"]


#: The columns of Table II's analogue.
_PRINCIPAL_COLUMNS = [
    "top p of K=64 (per class)",
    "all",
    "union share of K",
    "**principal, union**",
    "**rest of union**",
    "random, union size",
    "principal, per class",
    "rest, per class",
    "random, per class",
]


def _principal_table(
    name: str,
    model: SmallCNN,
    analysis: Any,
    test: Any,
    test_batches: list[tuple[Tensor, Tensor]],
    generator: torch.Generator,
    measured: Measured,
) -> None:
    """Table II's analogue on one data set: accuracy with the principal features of the training split's analysis."""
    layer = model.cam_layer
    numbers, accuracy, sizes, accuracy_tables = (
        measured.numbers,
        measured.accuracy,
        measured.sizes,
        measured.accuracy_tables,
    )
    classes, features = analysis.num_classes, analysis.num_features
    chance = 1.0 / classes
    pooled = _pooled(model, test.images)
    labels = test.labels
    masks_by_fraction = {f: analysis.principal_features(f) for f in FRACTIONS}
    union_masks = _union_masks(masks_by_fraction, analysis.class_counts.cpu() > 0, features, generator)
    found = feature_masking_accuracy(model, test_batches, layer, union_masks, progress=False)
    union_accuracy = cast(dict[str, float], found)  # a dict of masks gives a dict of accuracies
    entry: dict[str, Any] = {"all": union_accuracy["all"], "chance": chance}
    for key in (
        "class_top",
        "class_rest",
        "class_random",
        "union_top",
        "union_rest",
        "union_random",
        "union_share",
    ):
        entry[key] = []
    rows = []
    for f, masks in masks_by_fraction.items():
        keep = int(masks[0].sum())
        random_accuracy = (
            sum(
                _per_class_accuracy(model, pooled, labels, _random_masks(generator, classes, features, int(keep)))
                for _ in range(_RANDOM_DRAWS)
            )
            / _RANDOM_DRAWS
        )
        union = union_masks[f"top{f}"]
        values = {
            "class_top": _per_class_accuracy(model, pooled, labels, masks),
            "class_rest": _per_class_accuracy(model, pooled, labels, ~masks),
            "class_random": random_accuracy,
            "union_top": union_accuracy[f"top{f}"],
            "union_rest": union_accuracy[f"rest{f}"],
            "union_random": sum(union_accuracy[f"random{f}_{d}"] for d in range(_RANDOM_DRAWS)) / _RANDOM_DRAWS,
            "union_share": float(union.float().mean()),
        }
        for key, value in values.items():
            entry[key].append(value)
            numbers[f"{name}_{key}_{round(100 * f)}"] = value
        rows.append(
            [
                f"{round(100 * f)}% ({int(keep)})",
                entry["all"],
                f"{100 * values['union_share']:.0f}%",
                values["union_top"],
                values["union_rest"],
                values["union_random"],
                values["class_top"],
                values["class_rest"],
                values["class_random"],
            ]
        )
    numbers[f"{name}_accuracy_all"] = entry["all"]
    accuracy[name] = entry
    accuracy_tables.append(
        f"*{name}* (test split, {sizes[name][1]} images, {classes} classes, chance {chance:.3f}; "
        f"importance matrix from {sizes[name][0]} training images):\n\n" + markdown_table(_PRINCIPAL_COLUMNS, rows)
    )


def _union_masks(
    masks_by_fraction: dict[float, Tensor], present: Tensor, features: int, generator: torch.Generator
) -> dict[str, Any]:
    """Per fraction: the union over the present classes of their principal features, its complement, and
    random feature sets of the union's size (``_RANDOM_DRAWS`` each); ``"all"``: no mask."""
    union_masks: dict[str, Any] = {"all": None}
    for f, masks in masks_by_fraction.items():
        union = masks[present].any(dim=0)
        union_masks[f"top{f}"] = union
        union_masks[f"rest{f}"] = ~union
        for draw in range(_RANDOM_DRAWS):
            shuffled = torch.zeros(features, dtype=torch.bool)
            shuffled[torch.randperm(features, generator=generator)[: int(union.sum())]] = True
            union_masks[f"random{f}_{draw}"] = shuffled
    return union_masks


def _measure(context: Context) -> Measured:
    """Both tables on both shipped models."""
    """Measure Table I's and Table II's analogues on both shipped models (see the module docstring)."""
    limits = {
        "species": (context.count(1024, 128), context.count(1024, 64)),
        "digits": (context.count(None, 128), context.count(None, 96)),  # type: ignore[arg-type]
    }
    measured = Measured()
    numbers, sizes, equal = measured.numbers, measured.sizes, measured.equal
    generator = context.generator(31)
    for name in DATASETS:
        model = context.model(name)
        layer = model.cam_layer
        train_limit, test_limit = limits[name]
        train = context.data(name, "train", train_limit)
        test = context.data(name, "test", test_limit)
        sizes[name] = (len(train), len(test))
        train_batches, test_batches = _batches(train.images, train.labels), _batches(test.images, test.labels)
        equal[name] = _max_difference(model, test.images[:16], layer)
        numbers[f"{name}_gradcam_hirescam_xgradcam_max_rel_difference"] = equal[name]
        analysis = _consistency_table(context, name, model, train_batches, test_batches, measured)
        # Table II: principal features from the Grad-CAM importance matrix of the training split.
        _principal_table(name, model, analysis, test, test_batches, generator, measured)
    return measured


def _body(measured: Measured, figures: list[str]) -> str:
    """The section's text and tables beside the paper's."""
    numbers, sizes, equal = measured.numbers, measured.sizes, measured.equal
    consistency_rows, accuracy_tables = measured.consistency_rows, measured.accuracy_tables
    paper_i = markdown_table(
        [
            "paper's data set",
            "Grad-CAM",
            "S-Grad-CAM",
            "pixel-wise",
            "pixel-wise S-",
            "Grad-CAM++",
            "S-Grad-CAM++",
            "XGrad-CAM",
            "S-XGrad-CAM",
            "Ave. Inc.",
        ],
        [[k, *[v for pair in row[:4] for v in pair], f"{row[4]:.1f}%"] for k, row in PAPER_TABLE_I.items()],
    )
    paper_ii = markdown_table(
        ["paper's data set", "all features", "principal", "non-principal"], [[k, *v] for k, v in PAPER_TABLE_II.items()]
    )
    return f"""
Li et al. scale CAMs with a common intensity scale fitted on a data set (S-CAMs) and keep only the principal
features of an importance matrix (FS-CAMs). Here the analysis (scale and importance matrix) comes from the
**training** split and everything is measured on the **test** split ({", ".join(f"{n}: {a} train / {b} test images" for n, (a, b) in sizes.items())}).
Consistency is the correlation of the per-image CAM sum with the logit of **one selected class, class
{SELECTED_CLASS}, for every image**, as in the paper's plots (Figs. 2, 6–8: "selected class dog / 7 / lesion") and
`camscope.metrics.consistency(target=...)`: Pearson (P) when Mardia's test accepts bivariate normality, else Spearman
(S). The last column is the variant with each image's own *predicted* class (CAM → S-CAM): these confident models'
predicted logits span a narrow range, so that reading says less about the scale (it is the protocol of earlier
versions of this report).

**Table I analogue: consistency with the logits, without and with the common scale**

{markdown_table(["data set", "method", "CAM", "S-CAM", "S − plain", "raw M (no scaling)", "predicted class: CAM → S-CAM"], consistency_rows)}

The paper's Table I (three of its eight data sets; "pixel-wise" is pixel-wise Grad-CAM, HiResCAM here):

{paper_i}

![CAM sum against logit, with and without the common scale]({figures[0]})

Both models end with global average pooling and one linear layer, so Grad-CAM, HiResCAM and XGrad-CAM produce
the same signed map `W_c · A / Z` (largest relative difference between the three:
{", ".join(f"{n} {v:.1e}" for n, v in equal.items())}), and its pixel sum is exactly the logit minus the bias.
The "raw M" column (the signed map, upsampled, no ReLU and no scaling) shows that the level is in the map
({", ".join(f"{n} r = {numbers[f'{n}_gradcam_consistency_raw']:.3f}" for n in DATASETS)} for Grad-CAM; bilinear
upsampling keeps it from being exactly 1). The per-image min-max scaling of the usual CAMs discards that level, and
the common scale restores most of it; but `tanh` compresses every pixel beyond P10 and P90 towards ±1, so an
S-CAM's sum is not a linear function of the logit when many pixels lie in the saturated tails (how many depends on
how peaked the maps are), which can keep an S-CAM's coefficient below the raw map's.
Grad-CAM++'s weights are a different function of the gradients, so its maps are not the logit's decomposition.

**Table II analogue: accuracy with only the principal features (Grad-CAM importance matrix, Eq. 4)**

{chr(10).join(chr(10) + t + chr(10) for t in accuracy_tables)}
"Union" (the headline, in bold): the library's inference-time protocol (`feature_masking_accuracy` with the
per-class masks keeps their union, since the class is unknown, and every logit is computed from the same channels);
the paper's MNIST result (20% per class kept, near-chance accuracy for the rest) reads as this mask. With 10–16
classes the union covers much more than p of the channels (its share is given), and once it covers all of them the
"rest" has no channel left and sits at chance by construction: the verdict only uses a p whose rest is non-empty.
"Per class" (secondary): each class's logit from its own top-p features only (the FS-CAM reading; earlier versions
of this report used it for the verdicts).
"Random": the same number of channels drawn at random (mean of {_RANDOM_DRAWS} seeded draws), a control the paper
does not report.

The paper's Table II (rows legible in the extracted text; the extraction garbled the others):

{paper_ii}

![Accuracy against the share of principal features]({figures[1]})
"""


def run(context: Context) -> Section:
    """Measure Table I's and Table II's analogues on both shipped models (see the module docstring)."""
    measured = _measure(context)
    figures = _figure(context, measured.scatter, measured.accuracy)
    claims = ifa_claims(measured)
    body = _body(measured, figures)
    return Section(
        title="Integrated feature analysis (IFA)", body=body, claims=claims, figures=figures, numbers=measured.numbers
    )

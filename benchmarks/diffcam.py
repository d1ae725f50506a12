"""DiffCAM speed: explanation vs forward pass, bank building vs forward passes, kNN class selection.

Run: ``.venv/bin/python benchmarks/diffcam.py`` (``--quick`` for a short run,
``--device cuda`` on a GPU, ``--study`` for the regularisation study behind the
``"oas"`` default). Random weights: speed does not depend on them.

Rows:
* DiffCAM on ResNet-50, batch 8 at 224 px, with a cached reference group,
  against the plain forward pass (the issue asks for at most 1.1x);
* building a bank over N batches against the forward passes over the same
  batches (at most 1.2x);
* kNN selection of 100 of 1000 class means of 2048 dimensions, per image
  (well under a millisecond).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _compare(
    base: Callable[[], object], other: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, float, float]:
    """Medians of ``base`` and ``other`` timed alternately (so that a changing machine load hits both),
    and the median of the per-round ratios ``other / base``."""
    base()
    other()
    base_s, other_s = [], []
    for _ in range(repeats):
        for fn, samples in ((base, base_s), (other, other_s)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples.append(time.perf_counter() - start)
    ratios = [o / b for b, o in zip(base_s, other_s)]
    return statistics.median(base_s), statistics.median(other_s), statistics.median(ratios)


def bench_explain(repeats: int, device: torch.device) -> list[tuple[str, str]]:
    from torchvision.models import resnet50

    import camscope
    from camscope.accumulators.reference_bank import ReferenceBank
    from camscope.methods.diffcam import DiffCAM
    from camscope.models.fingerprint import model_fingerprint

    torch.manual_seed(0)
    model = resnet50().eval().to(device)
    x = torch.randn(8, 3, 224, 224, device=device)
    # a bank of this model's layer4 (random embeddings stand in for a dataset pass: 10 classes x 500)
    bank = ReferenceBank(2048, "layer4", model=model_fingerprint(model), device=device)
    generator = torch.Generator().manual_seed(0)
    for label in range(10):
        bank.update(torch.randn(500, 2048, generator=generator).relu().to(device), torch.full((500,), label))
    start = time.perf_counter()
    group = bank.group("others", 3)
    group.weights(torch.zeros(1, 2048, device=device))  # OAS + Cholesky, once per group
    _sync(device)
    factor_s = time.perf_counter() - start
    explainer = camscope.Explainer(model, layer="layer4", method=DiffCAM(reference=group))

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    forward_s, diffcam_s, ratio = _compare(forward, lambda: explainer(x), repeats, device)
    gradcam = camscope.Explainer(model, layer="layer4", method="gradcam")
    _, gradcam_s, gradcam_ratio = _compare(forward, lambda: gradcam(x), max(repeats // 2, 2), device)
    per_class = camscope.Explainer(model, layer="layer4", method=DiffCAM(bank=bank, reference="others"))
    _, others_s, others_ratio = _compare(
        forward, lambda: per_class(x, target=[0, 1, 2, 3, 4, 5, 6, 7]), max(repeats // 2, 2), device
    )
    return [
        ("ResNet-50 forward, batch 8 at 224 (no_grad)", f"{forward_s * 1e3:8.1f} ms"),
        ("DiffCAM explain, batch 8, cached group", f"{diffcam_s * 1e3:8.1f} ms  ({ratio:.3f}x forward)"),
        (
            "DiffCAM 'others', 8 classes, groups cached after the warm-up",
            f"{others_s * 1e3:8.1f} ms  ({others_ratio:.3f}x forward)",
        ),
        ("Grad-CAM explain, batch 8 (for comparison)", f"{gradcam_s * 1e3:8.1f} ms  ({gradcam_ratio:.3f}x forward)"),
        ("new group: pooled scatter + OAS + Cholesky, K=2048 (once per group)", f"{factor_s * 1e3:8.1f} ms"),
    ]


def bench_build(batches: int, repeats: int, device: torch.device) -> list[tuple[str, str]]:
    from torchvision.models import resnet50

    from camscope.accumulators.reference_bank import ReferenceBank

    torch.manual_seed(0)
    model = resnet50().eval().to(device)
    generator = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(8, 3, 224, 224, generator=generator).to(device), torch.randint(0, 4, (8,), generator=generator))
        for _ in range(batches)
    ]

    def forward() -> None:
        with torch.no_grad():
            for inputs, _ in data:
                model(inputs)

    def build() -> ReferenceBank:
        return ReferenceBank.build(model, data, layer="layer4", progress=False)

    forward_s, build_s, ratio = _compare(forward, build, repeats, device)
    return [
        (f"forward passes, {batches} batches of 8", f"{forward_s * 1e3:8.1f} ms"),
        (
            "bank build, same data (4 classes, per-class 2048x2048 scatters)",
            f"{build_s * 1e3:8.1f} ms  ({ratio:.3f}x forward)",
        ),
    ]


def bench_knn(repeats: int, device: torch.device) -> list[tuple[str, str]]:
    from camscope.accumulators.reference_bank import ReferenceBank

    generator = torch.Generator().manual_seed(0)
    classes, features = 1000, 2048
    bank = ReferenceBank(features, "layer4", scatter="shared", device=device)  # 1000 x 2048^2 doubles would not fit
    for start in range(0, classes, 100):
        labels = torch.arange(start, start + 100).repeat_interleave(2)
        bank.update(torch.randn(200, features, generator=generator).relu().to(device), labels)
    rows = []
    default_threads = torch.get_num_threads()
    # on a busy machine, intra-op threads can wait on each other: show one thread too
    for threads in sorted({1, default_threads}) if device.type == "cpu" else [default_threads]:
        torch.set_num_threads(threads)
        for batch in (1, 8, 64):
            z = torch.randn(batch, features, generator=generator).relu().to(device)
            exclude = torch.randint(0, classes, (batch,), generator=generator)
            bank.nearest_classes(z, 100, exclude=exclude)  # builds the cached index
            seconds = _time(
                lambda z=z, exclude=exclude: bank.nearest_classes(z, 100, exclude=exclude), repeats * 5, device
            )
            where = f", {threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu" else ""
            rows.append(
                (
                    f"kNN: 100 of 1000 class means (2048-d), batch {batch}{where}",
                    f"{seconds / batch * 1e6:8.1f} us per image",
                )
            )
    torch.set_num_threads(default_threads)
    return rows


def regularization_study(features: int = 256, trials: int = 10) -> list[tuple[str, str]]:
    """Cosine between the finite-sample w* and the population w* for several lambdas (float64, numpy)."""
    rng = np.random.default_rng(0)
    rows = []
    for exponent in (0.5, 1.2, 2.0):
        for n in (32, 128, 512, 2048, 8192):
            scores: dict[str, list[float]] = {}
            for _ in range(trials):
                basis, _ = np.linalg.qr(rng.standard_normal((features, features)))
                spectrum = 1.0 / (1 + np.arange(features)) ** exponent
                root = basis * np.sqrt(spectrum)
                population = (basis * spectrum) @ basis.T
                mean = rng.standard_normal(features)
                samples = mean + rng.standard_normal((n, features)) @ root.T
                direction = rng.standard_normal(features)
                z = mean + rng.standard_normal(features) @ root.T + 0.5 * direction / np.linalg.norm(direction)
                truth = np.linalg.solve(population, z - mean)
                mu = samples.mean(0)
                covariance = (samples - mu).T @ (samples - mu) / n
                trace, trace2 = np.trace(covariance), np.sum(covariance**2)
                rho = min(1.0, (trace2 + trace**2) / ((n + 1) * (trace2 - trace**2 / features)))
                for name, lam in [
                    ("1e-3", 1e-3),
                    ("1e-2", 1e-2),
                    ("1e-1", 1e-1),
                    ("oas", rho / (1 - rho) if rho < 1 else np.inf),
                ]:
                    if np.isinf(lam):
                        w = z - mu
                    else:
                        w = np.linalg.solve(covariance + lam * trace / features * np.eye(features), z - mu)
                    scores.setdefault(name, []).append(float(w @ truth / np.linalg.norm(w) / np.linalg.norm(truth)))
            summary = "  ".join(f"{name}={np.mean(values):.3f}" for name, values in scores.items())
            rows.append((f"spectrum 1/i^{exponent}, n={n}, K={features}", summary))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batches")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--study", action="store_true", help="also run the regularisation study")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 3 if args.quick else 10
    rows = []
    rows += bench_explain(repeats, device)
    rows += bench_build(2 if args.quick else 8, 2 if args.quick else 5, device)
    rows += bench_knn(repeats, device)
    if args.study:
        rows += regularization_study(trials=4 if args.quick else 10)
    label = f"device {device}" + (f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
    print(f"| DiffCAM benchmark ({label}) | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value.strip()} |")


if __name__ == "__main__":
    main()

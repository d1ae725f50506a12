"""FullGrad, Guided Grad-CAM, SESS and Deep Feature Factorization against the forward pass and pytorch-grad-cam 1.5.7.

ResNet-18 (random weights, seeded), ``--batch`` images at ``--size`` px (SESS:
``--sess-batch`` images, its defaults: twelve scales, 117 patches per 224 px
image), explicit classes, layer4 where a layer applies. The peers run as their
documentation shows: ``FullGrad`` (every bias layer); ``GradCAM`` plus
``GuidedBackpropReLUModel`` one image at a time (it takes one image per call and
replaces the model's ReLUs, so it gets a copy of the model), the product as
their example forms it; ``SESS`` with its default ``GradCAM``;
``DeepFeatureFactorization`` with ``computation_on_concepts=model.fc`` (5
concepts; camscope's ``dff`` also back-propagates to the layer for the concept
scores). Every contender runs in each round, the order rotating round to round;
the table gives medians, their ratio to the plain forward pass (``torch.no_grad``)
and to the peer. Peak memory, in separate untimed runs: the peak of live bytes
allocated by torch (CPU allocator, from the profiler's memory events; CUDA's
peak statistics on a GPU) and the peak of Python/NumPy allocations
(``tracemalloc``, where the peers keep their maps).

Usage: ``python benchmarks/methods_b.py [--repeats 3] [--threads N] [--device cpu] [--only fullgrad ...]``
"""

from __future__ import annotations

import copy
import tracemalloc
from collections.abc import Callable

import numpy as np
import torch
from measure import FORWARD, Runs, arguments, forward_pass, peak_bytes, peer_rows, prepare
from torchvision.models import resnet18

import camscope


def _python_peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _guided_peer(model: torch.nn.Module, x: torch.Tensor, classes: list[int]) -> object:
    from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    guided = GuidedBackpropReLUModel(model, device=x.device)
    return [heat[i][:, :, None] * guided(x[i : i + 1].clone(), target_category=c) for i, c in enumerate(classes)]


def contenders(model: torch.nn.Module, x: torch.Tensor, classes: list[int], sess_x: torch.Tensor) -> dict[str, Runs]:
    """``{method: {contender: run}}``: camscope first, then the peer."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import DeepFeatureFactorization
    from pytorch_grad_cam.sess import SESS
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(c) for c in classes]
    sess_classes = classes[: sess_x.shape[0]]
    peer_model = copy.deepcopy(model)  # GuidedBackpropReLUModel leaves new, not in-place, ReLUs behind

    def ours(method: str, inputs: torch.Tensor = x, target: list[int] = classes, **options: object) -> Runs:
        explainer = camscope.Explainer(model, layer="layer4", method=method, **options)
        return {"camscope": lambda: explainer(inputs, target=target)}

    def fullgrad_peer() -> object:
        with pgc.FullGrad(model, []) as cam:
            return cam(input_tensor=x, targets=targets)

    def sess_peer() -> object:
        with SESS(model, [model.layer4]) as cam:
            return cam(sess_x, [ClassifierOutputTarget(c) for c in sess_classes])

    def dff_peer() -> object:
        return DeepFeatureFactorization(model, model.layer4, computation_on_concepts=model.fc)(x, n_components=5)

    return {
        "fullgrad": {**ours("fullgrad"), "grad-cam FullGrad": fullgrad_peer},
        "guided-gradcam": {
            **ours("guided-gradcam"),
            "grad-cam GradCAM + GuidedBackpropReLUModel": lambda: _guided_peer(peer_model, x, classes),
        },
        "sess": {**ours("sess", sess_x, sess_classes), "grad-cam SESS": sess_peer},
        "dff": {**ours("dff"), "grad-cam DeepFeatureFactorization": dff_peer},
    }


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], repeats=3, batch=4)
    parser.add_argument("--sess-batch", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="methods to run (default: all)")
    args = parser.parse_args()
    device = prepare(args)
    model = resnet18().eval().to(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device)
    sess_x = x[: args.sess_batch]
    classes = [(7 * i) % 1000 for i in range(args.batch)]
    print(
        f"ResNet-18 (random weights), batch {args.batch} (SESS {args.sess_batch}), {args.size} px, {device.type}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved runs, torch {torch.__version__}, "
        f"numpy {np.__version__}\n"
    )
    print("| method | contender | median (s) | vs forward | vs peer | torch peak (MB) | Python peak (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    peaks = [lambda fn: peak_bytes(fn, device), _python_peak]
    for method, runs in contenders(model, x, classes, sess_x).items():
        if not args.only or method in args.only:
            every = {FORWARD: forward_pass(model, sess_x if method == "sess" else x), **runs}
            peer_rows(method, every, args.repeats, device, peaks, not args.no_memory)


if __name__ == "__main__":
    main()

"""The newer methods' speed and memory against the forward pass and pytorch-grad-cam 1.5.7 (and torchcam 0.5.0).

Grad-CAM Element-Wise, KPCA-CAM, ShapleyCAM, FEM, RefineCAM, Seg-Eigen-CAM,
Random-CAM and the ``eigen_smooth`` / ``aug_smooth`` options, each with its peer
on the same model, input, targets and layer: ResNet-50 (random weights,
seeded), a batch of ``--batch`` images at ``--size`` px, layer4 (RefineCAM:
layer2, layer3 and layer4), explicit classes (ShapleyCAM: the paper's ReST
utility ``y_c + log softmax(y)_c`` for both, so that its Hessian term is not
zero). Every contender runs in each round, the order rotating round to round so
that a drift in the machine's load hits all alike; the table gives medians,
their ratio to the plain forward pass (``torch.no_grad``) and to the peer.
Peer objects are built inside their timed call, so their hooks never slow the
other contenders. Peak memory is the peak of live bytes allocated by torch
(CPU allocator, from the profiler's memory events; CUDA's peak statistics on a
GPU), measured in a separate, untimed run.

Usage: ``python benchmarks/methods.py [--repeats 3] [--threads N] [--device cpu] [--only kpcacam ...]``
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from measure import FORWARD, Runs, arguments, forward_pass, peak_bytes, peer_rows, prepare
from torchvision.models import resnet50

import camscope


def _rest_target(classes: list[int]) -> camscope.ScoreTarget:
    index = torch.tensor(classes)

    def rest(outputs: torch.Tensor) -> torch.Tensor:
        return (outputs + outputs.log_softmax(dim=1)).gather(1, index.to(outputs.device)[:, None])[:, 0]

    return camscope.ScoreTarget(rest, name="ReST")


def _peer(cls: type, model: torch.nn.Module, layers: list[torch.nn.Module], targets: list, **call: object) -> object:
    with cls(model=model, target_layers=layers) as cam:
        return cam(input_tensor=call.pop("x"), targets=targets, **call)


def contenders(model: torch.nn.Module, x: torch.Tensor, classes: list[int]) -> dict[str, Runs]:
    """``{method: {contender: run}}``: camscope first, then the peers."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget
    from torchcam.methods import RefineCAM as TorchcamRefineCAM

    targets = [ClassifierOutputTarget(c) for c in classes]
    layer4 = [model.layer4]

    def ours(method: str, **options: object) -> Callable[[], object]:
        explainer = camscope.Explainer(model, layer=options.pop("layer", "layer4"), method=method, **options)
        target = _rest_target(classes) if method == "shapleycam" else classes
        return lambda: explainer(x, target=target)

    def peer(cls: type, peer_targets: list = targets, **call: object) -> Callable[[], object]:
        return lambda: _peer(cls, model, layer4, peer_targets, x=x, **call)

    def refine_peer() -> object:
        cam = pgc.RefineCAM(model, [model.layer2, model.layer3, model.layer4])
        try:
            return cam(x, targets)
        finally:
            for base in cam.base_cam_per_layer:
                base.activations_and_grads.release()

    def refine_torchcam() -> object:
        with TorchcamRefineCAM(model, ["layer2", "layer3", "layer4"], input_shape=tuple(x.shape[1:])) as extractor:
            return extractor(class_idx=classes, scores=model(x))

    stages = ["layer2", "layer3", "layer4"]
    return {
        "gradcam-elementwise": {
            "camscope": ours("gradcam-elementwise"),
            "grad-cam GradCAMElementWise": peer(pgc.GradCAMElementWise),
        },
        "kpcacam": {"camscope": ours("kpcacam"), "grad-cam KPCA_CAM": peer(pgc.KPCA_CAM)},
        "shapleycam": {
            "camscope": ours("shapleycam"),
            "grad-cam ShapleyCAM": peer(pgc.ShapleyCAM, [ClassifierOutputReST(c) for c in classes]),
        },
        "fem": {
            "camscope (summed='activations', as the peer)": ours("fem", summed="activations"),
            "camscope (the paper's, default)": ours("fem"),
            "grad-cam FEM": peer(pgc.FEM),
        },
        "refinecam": {
            "camscope": ours("refinecam", layer=stages),
            "grad-cam RefineCAM": refine_peer,
            "torchcam RefineCAM": refine_torchcam,
        },
        "segeigencam": {"camscope": ours("segeigencam"), "grad-cam SegEigenCAM": peer(pgc.SegEigenCAM)},
        "randomcam": {"camscope": ours("randomcam"), "grad-cam RandomCAM": peer(pgc.RandomCAM)},
        "gradcam eigen_smooth": {
            "camscope": ours("gradcam", eigen_smooth=True),
            "grad-cam GradCAM": peer(pgc.GradCAM, eigen_smooth=True),
        },
        "gradcam aug_smooth": {
            "camscope": ours("gradcam", aug_smooth=True),
            "grad-cam GradCAM": peer(pgc.GradCAM, aug_smooth=True),
        },
    }


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], repeats=3, batch=8)
    parser.add_argument("--only", nargs="*", help="methods to run (default: all)")
    args = parser.parse_args()
    device = prepare(args)
    model = resnet50().eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    classes = [(7 * i) % 1000 for i in range(args.batch)]
    print(
        f"ResNet-50 (random weights), batch {args.batch}, {args.size} px, {device.type}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved runs, torch {torch.__version__}\n"
    )
    print("| method | contender | median (s) | vs forward | vs peer | peak memory (MB) |")
    print("|---|---|---:|---:|---:|---:|")
    for method, runs in contenders(model, x, classes).items():
        if not args.only or method in args.only:
            every = {FORWARD: forward_pass(model, x), **runs}
            peer_rows(method, every, args.repeats, device, [lambda fn: peak_bytes(fn, device)], not args.no_memory)


if __name__ == "__main__":
    main()

"""Images per second of the dataset passes (reference bank, analysis) with 1 and 2 processes, 0/1/2 loader workers.

The folder holds random PNG images, so the time splits between decoding and
resizing them (what ``--workers`` parallelises) and the model (what more
processes split). Two processes form a gloo process group on this machine,
each with ``torch.get_num_threads() // 2`` threads, exactly as
``torchrun --nproc_per_node=2 -m camscope bank build ...`` would run; the
``merge`` column is the time the ranks spend combining their accumulators
(:func:`camscope.passes.distributed.merge_across_ranks`) and its share of the pass.

A second table runs each pass in one process at ``--precision`` fp32 and bf16
(autocast of the model's forward) and reports the speed and how far the
results move: the bank's class means and the analysis's importance matrix,
as the largest difference relative to the largest fp32 value, and the
correlation of the DiffCAM weights of the images against the others.

Usage:
    python benchmarks/passes.py                       # resnet18 (random weights), 128 images at 160 px
    python benchmarks/passes.py --images 512 --size 224 --batch-size 32 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PASSES = ("bank", "analyze")


def _folder(root: Path, images: int, size: int) -> Path:
    from PIL import Image

    g = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 255, (size + 32, size + 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _model(device: str) -> torch.nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=10).eval().to(device)


def _run(kind: str, data: Path, args: Any, workers: int, precision: str = "fp32") -> tuple[float, Any]:
    import camscope
    from camscope.accumulators.reference_bank import ReferenceBank

    model = _model(args.device)
    options = dict(size=args.size, batch_size=args.batch_size, workers=workers, progress=False, precision=precision)
    start = time.perf_counter()
    if kind == "bank":
        result: Any = ReferenceBank.build(model, data, "layer4", **options)
    else:
        result = camscope.analyze(model, data, layer="layer4", **options)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def _timed_merges() -> list[float]:
    """Wrap the engine's merge so that its time is recorded (the benchmark's own instrumentation)."""
    from camscope.passes import engine

    seconds: list[float] = []
    merge = engine.merge_across_ranks

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = merge(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return result

    engine.merge_across_ranks = timed
    return seconds


def _rank(rank: int, world: int, init: str, kind: str, data: str, args: Any, workers: int, out: str) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        merges = _timed_merges()
        seconds, _ = _run(kind, Path(data), args, workers)
        if rank == 0:
            Path(out).write_text(f"{seconds} {sum(merges)}")
    finally:
        dist.destroy_process_group()


def _scaling(root: Path, data: Path, args: Any) -> None:
    print(f"{'pass':>7} {'processes':>9} {'workers':>7} {'images/s':>9} {'merge (s)':>9} {'share':>6}")
    for kind in PASSES:
        for processes in (1, 2):
            for workers in (0, 1, 2):
                merge = 0.0
                if processes == 1:
                    seconds, _ = _run(kind, data, args, workers)
                else:
                    init, out = root / f"init-{kind}-{workers}", root / f"time-{kind}-{workers}"
                    arguments = (processes, str(init), kind, str(data), args, workers, str(out))
                    mp.spawn(_rank, args=arguments, nprocs=processes, join=True)
                    seconds, merge = (float(v) for v in out.read_text().split())
                share = f"{merge / seconds:6.1%}" if processes > 1 else "     -"
                merge_text = f"{merge:9.3f}" if processes > 1 else "        -"
                print(f"{kind:>7} {processes:>9} {workers:>7} {args.images / seconds:>9.1f} {merge_text} {share}")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _diffcam_weights(bank: Any, z: torch.Tensor) -> torch.Tensor:
    """DiffCAM's ``(S + lambda I)^-1 (z - mu)`` of every class mean against the bank's pooled group."""
    scatter = bank.moments.within() / max(bank.count - 1, 1)
    ridge = 1e-3 * scatter.diagonal().mean() * torch.eye(scatter.shape[0], dtype=scatter.dtype)
    return torch.linalg.solve(scatter + ridge, (z - bank.means.mean(0)).T).T


def _precision(data: Path, args: Any) -> None:
    print(f"\n{'pass':>7} {'precision':>9} {'images/s':>9} {'max rel. difference':>20} {'other':>28}")
    for kind in PASSES:
        base_seconds, base = _run(kind, data, args, 0)
        print(f"{kind:>7} {'fp32':>9} {args.images / base_seconds:>9.1f} {'-':>20} {'-':>28}")
        for precision in ("bf16", "fp16"):
            try:
                seconds, result = _run(kind, data, args, 0, precision)
            except Exception as error:  # noqa: BLE001 - a device without that autocast: say so and go on
                print(f"{kind:>7} {precision:>9} unavailable: {error}")
                continue
            if kind == "bank":
                difference = _relative(result.means, base.means)
                a, b = _diffcam_weights(result, result.means), _diffcam_weights(base, base.means)
                other = f"DiffCAM weights corr {torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]:.5f}"
            else:
                difference = _relative(result.importance, base.importance)
                slope = abs(result.scale().a / base.scale().a - 1)
                other = f"S-CAM slope differs by {slope:.2%}"
            print(f"{kind:>7} {precision:>9} {args.images / seconds:>9.1f} {difference:>20.2e} {other:>28}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the scaling table runs on the CPU only)")
    parser.add_argument("--skip-scaling", action="store_true", help="only the precision table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        data = _folder(root / "data", args.images, args.size)
        print(f"{args.images} images at {args.size} px, batch {args.batch_size}, resnet18 to layer4, {args.device}")
        if not args.skip_scaling and args.device == "cpu":
            _scaling(root, data, args)
        _precision(data, args)


if __name__ == "__main__":
    main()

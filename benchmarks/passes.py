"""Images per second of a dataset pass (a reference bank over an image folder) with 1 and 2 processes and 0/1/2 loader workers.

The folder holds random PNG images, so the time splits between decoding and
resizing them (what ``--workers`` parallelises) and the model's forward pass
(what more processes split). Two processes form a gloo process group on this
machine, each with ``torch.get_num_threads() // 2`` threads, exactly as
``torchrun --nproc_per_node=2 -m camscope bank build ...`` would run.

Usage:
    python benchmarks/passes.py                       # resnet18 (random weights), 128 images at 160 px
    python benchmarks/passes.py --images 512 --size 224 --batch-size 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _folder(root: Path, images: int, size: int) -> Path:
    from PIL import Image

    g = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 255, (size + 32, size + 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _build(data: Path, size: int, batch_size: int, workers: int) -> float:
    from torchvision.models import resnet18

    from camscope.stats.reference_bank import ReferenceBank

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    start = time.perf_counter()
    ReferenceBank.build(model, data, "layer4", size=size, batch_size=batch_size, workers=workers, progress=False)
    return time.perf_counter() - start


def _rank(rank: int, world: int, init: str, data: str, size: int, batch_size: int, workers: int, out: str) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        seconds = _build(Path(data), size, batch_size, workers)
        if rank == 0:
            Path(out).write_text(str(seconds))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        data = _folder(root / "data", args.images, args.size)
        print(f"{args.images} images at {args.size} px, batch {args.batch_size}, resnet18 to layer4")
        print(f"{'processes':>9} {'workers':>7} {'images/s':>9}")
        for processes in (1, 2):
            for workers in (0, 1, 2):
                if processes == 1:
                    seconds = _build(data, args.size, args.batch_size, workers)
                else:
                    init, out = root / f"init{workers}", root / f"time{workers}"
                    arguments = (processes, str(init), str(data), args.size, args.batch_size, workers, str(out))
                    mp.spawn(_rank, args=arguments, nprocs=processes, join=True)
                    seconds = float(out.read_text())
                print(f"{processes:>9} {workers:>7} {args.images / seconds:>9.1f}")


if __name__ == "__main__":
    main()
